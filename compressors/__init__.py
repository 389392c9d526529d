"""compressbench's library: load, compress, run and measure transformer models.

Nothing in this package imports pytest; ``bench/`` wires it into benchmarks.
"""

__version__ = "0.1.0"


class CompressbenchError(Exception):
    """Base class of every error this package raises on purpose.

    Its message is meant for the person running the suite: it names the bad
    value and says what to do, so the suite prints it without a traceback.
    """


def warn_user(warning: Warning) -> None:
    """Issue ``warning``, a warning about the user's input (their model, their files), so that Python shows
    it as one line, ``compressbench: Category: message``, like an error's one line: ``warnings.warn`` would
    add the suite's source line that issued it, which says nothing to the person who gave the input.
    Filters (``-W``, ``filterwarnings``) match it by its category as usual."""
    import warnings

    warnings.warn_explicit(warning, type(warning), "compressbench", 0, module="compressbench")
