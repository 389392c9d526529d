"""The evaluation layer: a task's whole evaluation of one artifact (``tasks``) and the fresh process that
loads and measures it (``probe``). The top of the library; ``bench/`` builds on it.
"""
