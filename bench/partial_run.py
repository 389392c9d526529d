"""What a run keeps as it goes, so that a stopped run loses nothing it measured.

pytest-benchmark writes its JSON only when the session ends. A long run stopped by Ctrl-C, SIGTERM
(``timeout``, a cancelled CI job) or a crash would lose every finished configuration. So after each
benchmark test the suite rewrites ``<storage>/partial/<start time>_<save name>.json`` (atomically):
pytest-benchmark's format, every finished row, and ``"compressbench": {"partial": true, "status": ...}``.
It lives in its own folder, which pytest-benchmark's ``--benchmark-compare`` and ``list`` never read,
so a partial run is never taken for a complete baseline; ``python -m reports table/build PATH`` read
it and say it is partial, ``reports compare`` refuses it unless told ``--allow-partial``.

A run that ends normally removes its partial file (the full run is what pytest-benchmark saved, if
asked to). An interrupted run keeps it, marked ``interrupted``, and the file pytest-benchmark saves
for it on the way out is marked partial too (``pytest_benchmark_update_json``).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from urllib.parse import urlparse

PARTIAL_FOLDER = "partial"


def storage_folder(storage_option: str | None) -> Path:
    """pytest-benchmark's ``--benchmark-storage`` (``file://./.benchmarks`` by default) as a folder."""
    value = storage_option or "file://./.benchmarks"
    parsed = urlparse(value)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"--benchmark-storage {value!r}: only file storage keeps partial runs")
    return Path(parsed.netloc + parsed.path if parsed.scheme == "file" else value)


class PartialRun:
    """The rows of this run so far, rewritten to one file after each finished benchmark."""

    def __init__(self, storage: Path, save_name: str | None, selected: int | None = None):
        started = datetime.datetime.now(datetime.UTC)
        self.started = started.isoformat(timespec="seconds")
        self.path = storage / PARTIAL_FOLDER / f"{started:%Y%m%d_%H%M%S}_{save_name or 'unsaved'}_{os.getpid()}.json"
        self.save_name = save_name
        self.selected = selected
        self.benchmarks: list[dict] = []

    def add(self, nodeid: str, median_s: float | None, extra_info: dict) -> None:
        name = nodeid.split("::")[-1]
        self.benchmarks.append({"name": name, "fullname": nodeid, "stats": {"median": median_s},
                                "extra_info": extra_info})
        self.write("in progress")

    def write(self, status: str) -> None:
        data = {
            "datetime": self.started, "version": "compressbench partial run",
            "machine_info": {"node": os.uname().nodename if hasattr(os, "uname") else None},
            "benchmarks": self.benchmarks,
            "compressbench": {"partial": True, "status": status, "save_name": self.save_name,
                              "tests_selected": self.selected, "tests_finished": len(self.benchmarks)},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.tmp")
        staging.write_text(json.dumps(data))
        staging.replace(self.path)

    def finish(self, interrupted: bool, reason: str | None = None) -> Path | None:
        """Remove the file after a complete run; keep it (marked) after an interrupted one."""
        if not self.benchmarks:
            return None
        if interrupted:
            self.write(f"interrupted ({reason or 'stopped'})")
            return self.path
        self.path.unlink(missing_ok=True)
        return None
