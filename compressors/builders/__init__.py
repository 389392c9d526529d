"""The build layer: turning a model name and a chain of techniques into cached artifacts: the build
context, training loops, the model catalog (``models``) and the techniques (``techniques``).
"""
