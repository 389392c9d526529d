"""Keep libraries' chatter out of a run's output while the suite builds and loads models.

torch's ``W... _pytree`` warnings, ONNX Runtime's calibration prints and "Failed to infer data type"
log lines, transformers' load reports (which list a new classifier head as "MISSING" before the
fine-tune trains it), its "Loading weights" bars, and the libraries' Python warnings (the ONNX
exporter's TracerWarnings, torch's deprecations on loading a quantized model, the sparse CSR "beta"
notice) say nothing a benchmark user needs. Inside :func:`quiet_libraries` they are held back:
logging below ERROR disabled, transformers' progress bars off, stdout buffered, warnings recorded;
the suite's own progress bars (tqdm on stderr) and its own warnings (categories defined in
compressors, bench and reports, e.g. a corrupt cache entry) still show. If the block fails, what
was held back is written out, so a failure keeps its context.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import warnings

OWN_PACKAGES = ("compressors", "bench", "reports")


@contextlib.contextmanager
def quiet_libraries():
    held = io.StringIO()
    handler = logging.StreamHandler(held)
    # logging.disable, not the loggers' levels: a library imported for the first time inside the block
    # sets its loggers' levels again (torch, transformers, nncf do).
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    logging.getLogger().addHandler(handler)
    bars_were_on = False
    if importlib.util.find_spec("transformers") is not None:  # its progress bars: imported now, off
        from transformers.utils import logging as hf_logging

        bars_were_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    caught: list[warnings.WarningMessage] = []
    try:
        with contextlib.redirect_stdout(held), warnings.catch_warnings(record=True) as caught:
            try:
                yield held
            finally:
                for w in caught:
                    if not _own(w.category):
                        held.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        for w in caught:
            if _own(w.category):  # the suite's own warnings go on, to pytest's summary
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        logging.getLogger().removeHandler(handler)
        logging.disable(disabled)
        if bars_were_on:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


def _own(category: type) -> bool:
    return category.__module__.split(".")[0] in OWN_PACKAGES
