"""compressors.core.quiet: the libraries' chatter is held back while the suite builds and loads, and
written out when that fails; the suite's own warnings always go on."""

import logging
import warnings

import pytest

from compressors.core.cache import CorruptCacheWarning
from compressors.core.quiet import quiet_libraries


class LibraryWarning(UserWarning):
    pass


LibraryWarning.__module__ = "somelibrary.internals"  # as if a library defined it


def _chatter():
    print("Loading weights 100%")
    logging.getLogger("transformers").warning("MISSING: classifier.weight")  # below ERROR: dropped
    logging.getLogger("onnxruntime").error("Failed to infer data type")
    warnings.warn("TracerWarning-like notice", LibraryWarning, stacklevel=1)


def test_library_chatter_is_held_and_own_warnings_go_on(capfd):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_libraries() as held:
            _chatter()
            warnings.warn("cache entry unreadable", CorruptCacheWarning, stacklevel=1)
    assert [w.category for w in seen] == [CorruptCacheWarning]  # the library's stayed behind
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and "MISSING" not in out + err and "infer" not in out + err
    text = held.getvalue()
    assert "Loading weights" in text and "Failed to infer" in text and "TracerWarning-like notice" in text


def test_held_chatter_is_written_out_when_the_block_fails(capfd):
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="export failed"), quiet_libraries():
            _chatter()
            raise RuntimeError("export failed")
    _out, err = capfd.readouterr()
    assert "Loading weights" in err and "Failed to infer data type" in err and "TracerWarning-like notice" in err


def test_a_library_configured_inside_the_block_stays_quiet(capfd):
    """torch, transformers and nncf set their loggers' levels and handlers on first import, which
    may happen inside the block (a build importing them): held back all the same."""
    import sys

    library = logging.getLogger("freshlibrary")
    handler = logging.StreamHandler(sys.stderr)
    try:
        with quiet_libraries():
            library.propagate = False
            library.addHandler(handler)
            library.setLevel(logging.INFO)
            library.warning("LOAD REPORT: classifier.weight MISSING")
        library.warning("after the block")
    finally:
        library.removeHandler(handler)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "after the block" in err
