"""The tensor table of a model's weight files (names and shapes), read without building a model, for the
checks made when a run is collected and for the plan's parameter count, whatever the weights' format.

* safetensors: the header alone (its tensor table; no tensor data read).
* pickle checkpoints (``pytorch_model.bin`` and its shards, as ``torch.save`` writes a state dict): PyTorch's
  weights-only loader (``torch.load(weights_only=True)``), whose restricted unpickler admits tensors and
  plain containers and refuses every other global, which is how a pickle runs code, before it is called.
  A pickle is never unpickled in full here. Tensors are loaded onto the ``meta`` device (shapes, no data)
  and a zip checkpoint is memory-mapped, so a large file costs its pickled record, not its size.

A truncated or overwritten file, a pickle that would run code, or one that holds anything but tensors is a
:class:`WeightsUnreadable` with a one-line reason.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

from compressors import CompressbenchError

PICKLE_SUFFIXES = (".bin",)  # what transformers' from_pretrained loads with torch.load (pytorch_model*.bin)


class WeightsUnreadable(CompressbenchError):
    """A weight file that does not load; the message (one line) says why, without the file's name."""


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of one weight file (``.safetensors`` or a pickle ``.bin``), with tensors that
    share storage in a pickle (tied weights, saved twice by ``torch.save``) listed under their first name only.

    Raises :class:`WeightsUnreadable` for a file that does not load, and ``ValueError`` for a suffix that is
    neither.
    """
    if path.suffix == ".safetensors":
        return _safetensors_shapes(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _pickle_shapes(path)
    raise ValueError(f"{path.name}: not a weight file (.safetensors or {', '.join(PICKLE_SUFFIXES)})")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            return {name: tuple(int(d) for d in handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise WeightsUnreadable(_one_line(exc)) from exc


def _pickle_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    import pickle

    import torch

    if path.stat().st_size == 0:
        raise WeightsUnreadable("the file is empty")
    try:
        with warnings.catch_warnings():
            # "Detected pickle protocol N": torch's note on a pickle that torch.save did not write; the
            # loader refuses or reads it all the same.
            warnings.simplefilter("ignore", UserWarning)
            # mmap only for the zip format (torch >= 1.6), as transformers loads it; the legacy format is read.
            loaded = torch.load(path, map_location="meta", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise WeightsUnreadable(f"refused by PyTorch's weights-only loader, it holds more than tensors "
                                f"({_unpickler_reason(exc)}); pickle weights are never unpickled in full: save "
                                "the model as safetensors (save_pretrained's default)") from exc
    except Exception as exc:
        # The reader of a cut or overwritten file fails where the bytes run out or stop making sense: a zip
        # without its central directory (RuntimeError), a cut legacy pickle (EOFError, struct.error), ...
        raise WeightsUnreadable(f"not a complete PyTorch checkpoint ({_first_sentence(exc)}); the file is "
                                "truncated or not what torch.save writes") from exc
    if not isinstance(loaded, dict):
        raise WeightsUnreadable(f"holds a {type(loaded).__name__}, not a state dict (tensor name -> tensor)")
    shapes: dict[str, tuple[int, ...]] = {}
    seen: dict[tuple, str] = {}
    storages = []  # kept alive so their id()s stay unique while they are compared
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsUnreadable(f"holds {type(value).__name__} under {name!r}, not a state dict "
                                    "(tensor name -> tensor)")
        storage = value.untyped_storage()
        storages.append(storage)
        where = (id(storage), value.storage_offset(), tuple(value.shape), tuple(value.stride()))
        if where in seen:
            continue  # a tied weight: one parameter saved under two names
        seen[where] = name
        shapes[name] = tuple(int(d) for d in value.shape)
    return shapes


def _unpickler_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (``unsupported GLOBAL posix.system ...``), without its advice
    to load the file with ``weights_only=False`` (which would run the code)."""
    kept = [p for p in re.split(r"\n\s*\n", str(exc)) if p.strip()
            and not p.lstrip().startswith(("Weights only load failed", "Check the documentation"))]
    reason = " ".join(" ".join(kept).split())
    reason = re.sub(r"^.*WeightsUnpickler error:\s*", "", reason)
    return _shorten(reason or "a pickle the weights-only loader does not accept")


def _first_sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _shorten(text.split(". ")[0].rstrip("."))


def _one_line(exc: BaseException) -> str:
    return _shorten(" ".join(str(exc).split()) or type(exc).__name__)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
