"""Temporary folders that name their owner, and the sweep that removes what dead processes left.

Every temporary folder the suite makes is ``compressbench-<kind>-<pid>-<random>`` (:func:`scratch_dir`),
and every cache staging folder is ``.<entry>.building-<pid>-<random>``: a process killed with
``kill -9`` cannot clean up, so :func:`sweep_stale` (run when a bench session starts) removes those
whose process no longer exists, in the temporary folder and across the whole cache.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "compressbench-"
TEMP_RE = re.compile(r"^compressbench-[a-z0-9-]+?-(\d+)-[^/]+$")
# a build's staging folder, and a remote cache's download or adoption folders (compressors/core/remote_cache.py)
STAGING_RE = re.compile(r"^\..+\.(?:building|pulling|adopting|replaced)-(\d+)-[0-9a-f]+$")


def scratch_dir(kind: str) -> tempfile.TemporaryDirectory:
    """A temporary folder ``compressbench-<kind>-<this pid>-...``, removed when the block ends."""
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{kind}-{os.getpid()}-")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def sweep_stale(cache_root: Path | None = None, temp_root: Path | None = None) -> list[Path]:
    """Remove temporary and staging folders of processes that no longer run; returns what was removed."""
    removed = []
    temp_root = Path(temp_root or tempfile.gettempdir())
    candidates = [(p, TEMP_RE) for p in temp_root.glob(f"{PREFIX}*") if p.is_dir()]
    if cache_root is not None and Path(cache_root).is_dir():
        candidates += [(p, STAGING_RE) for p in Path(cache_root).glob("*/.*.*-*") if p.is_dir()]
    for path, pattern in candidates:
        match = pattern.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed
