"""The evaluation layer: a task's whole evaluation of one artifact (``tasks``), the isolated measurement
(``isolated``) and the fresh process it starts, which loads and measures the artifact (``probe``). The top of
the library; ``bench/`` builds on it.
"""
