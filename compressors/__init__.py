"""compressbench's library: load, compress, run and measure transformer models.

Nothing in this package imports pytest; ``bench/`` wires it into benchmarks.
"""

__version__ = "0.1.0"


class CompressbenchError(Exception):
    """Base class of every error this package raises on purpose.

    Its message is meant for the person running the suite: it names the bad
    value and says what to do, so the suite prints it without a traceback.
    """
