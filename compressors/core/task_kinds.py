"""The tasks a model can do, by name: what a model spec, a technique, the data and the evaluation agree on.

Kept at the bottom of the layers so that a technique or the data layer names a task without importing
the model catalog.
"""

TASK_CLASSIFICATION = "sequence-classification"
TASK_CAUSAL_LM = "causal-lm"
TASKS = (TASK_CLASSIFICATION, TASK_CAUSAL_LM)
