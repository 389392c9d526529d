"""Content-addressed artifact cache.

Every built artifact (fine-tuned model, quantized weights, ONNX graph) lives in
its own folder ``<root>/<kind>/<name>-<key>/`` where ``key`` hashes everything
that changes the result: the parent artifact's key, the recipe or technique
config, the data checksum and the library versions.

Writes are atomic: a build happens in a temporary sibling folder and is renamed
into place only after ``manifest.json`` (which lists every file's size and
sha256) is written, so an interrupted build (Ctrl-C, kill, crash) leaves nothing
that can be loaded. Loading re-checks the manifest; a truncated or corrupted
entry is moved aside (never silently used) and rebuilt, with a warning that
says so. Concurrent builders (pytest-xdist workers) serialise on a file lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from compressors import CompressbenchError
from compressors.core.hashing import sha256_file

CACHE_ENV = "COMPRESSBENCH_CACHE"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CacheError(CompressbenchError):
    """A cache entry could not be built or read."""


KEEP_CORRUPT = 3  # corrupt copies of one entry kept aside for inspection


class CacheReadOnly(CompressbenchError):
    """An artifact must be built but the cache folder cannot be written."""


class CorruptCacheWarning(UserWarning):
    """A cache entry failed its integrity check and is being rebuilt."""


def default_cache_root() -> Path:
    """``$COMPRESSBENCH_CACHE``, else ``$XDG_CACHE_HOME/compressbench``, else ``~/.cache/compressbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "compressbench"


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (``"absent"`` when not installed), for cache keys and reports."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def content_key(parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts`` (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A validated cache entry: its folder and its manifest."""

    path: Path
    manifest: dict

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def kind(self) -> str:
        return self.manifest["artifact_kind"]

    @property
    def meta(self) -> dict:
        return self.manifest.get("meta", {})

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def weight_bytes(self) -> int:
        """Bytes of the files the manifest lists as weights: the artifact's size metric."""
        files = self.manifest["files"]
        return sum(files[name]["bytes"] for name in self.manifest.get("weights", []))


def _write_manifest(folder: Path, key: str, artifact_kind: str, recipe: Any, weights: list[str], meta: dict) -> dict:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    missing = [w for w in weights if w not in files]
    if missing:
        raise CacheError(f"build wrote no {missing} in {folder}; files present: {sorted(files)}")
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "artifact_kind": artifact_kind,
        "recipe": recipe,
        "weights": weights,
        "files": files,
        "meta": meta,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def verify_entry(folder: Path) -> tuple[dict | None, str]:
    """Return ``(manifest, "")`` for an intact entry, else ``(None, reason)``."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None, f"{manifest_path} is missing"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return None, f"{manifest_path} is unreadable ({exc})"
    if manifest.get("format") != FORMAT_VERSION:
        return None, f"{manifest_path} has format {manifest.get('format')!r}, expected {FORMAT_VERSION}"
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            return None, f"{path} is missing"
        if path.stat().st_size != info["bytes"]:
            return None, f"{path} has {path.stat().st_size} bytes, manifest says {info['bytes']} (truncated?)"
        if sha256_file(path) != info["sha256"]:
            return None, f"{path} does not match its sha256 in the manifest (corrupted)"
    return manifest, ""


class ArtifactCache:
    """Build-once storage for artifacts.

    Args:
        root: cache folder; defaults to :func:`default_cache_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None, remote=None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        # a compressors.core.remote_cache.RemoteCache shared by a fleet: pulled on a miss, pushed after a build
        self.remote = remote

    def entry_dir(self, artifact_kind: str, name: str, key: str) -> Path:
        return self.root / artifact_kind / f"{name}-{key}"

    def get_or_build(
        self,
        *,
        artifact_kind: str,
        name: str,
        recipe: Any,
        build: Callable[[Path], dict | None],
        weights: list[str],
    ) -> Artifact:
        """Return the cached artifact for ``recipe``, building it first if needed.

        Args:
            artifact_kind: how the artifact is loaded (``"hf-torch"``, ``"onnx"``, ...);
                also the first folder level.
            name: human-readable prefix of the folder name.
            recipe: JSON-serialisable description of everything that changes the
                result; hashed into the key and stored in the manifest.
            build: writes the artifact's files into the folder it is given and
                may return a dict of metadata stored in the manifest.
            weights: files (relative to the folder) counted as the artifact's size.
        """
        key = content_key({"kind": artifact_kind, "recipe": recipe})
        final = self.entry_dir(artifact_kind, name, key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(final) + ".lock")
            lock.acquire()
        except OSError as exc:  # a read-only cache: usable for what it holds
            manifest, reason = verify_entry(final) if final.exists() else (None, "not built")
            if manifest is not None:
                return Artifact(final, manifest)
            raise CacheReadOnly(f"the artifact cache {self.root} cannot be written ({exc.strerror}) and "
                                f"{final.name} must be built ({reason}): point --cache-dir (or "
                                f"{CACHE_ENV}) at a writable folder") from None
        remote = self.remote
        try:
            if final.exists():
                manifest, reason = verify_entry(final)
                if manifest is not None:
                    if remote is not None and remote.mode == "rw":  # refresh: a fleet's first builder pushes
                        manifest = self._publish(remote, artifact_kind, final, manifest)
                    return Artifact(final, manifest)
                stamp = time.strftime("%Y%m%d-%H%M%S")  # sortable by age; the suffix keeps two in one second apart
                aside = final.with_name(f"{final.name}.corrupt-{stamp}-{uuid.uuid4().hex[:8]}")
                while aside.exists():  # os.replace onto an existing folder fails (ENOTEMPTY): never reuse a name
                    aside = final.with_name(f"{final.name}.corrupt-{stamp}-{uuid.uuid4().hex[:8]}")
                os.replace(final, aside)
                dropped = self._bound_corrupt(final)
                warnings.warn(
                    f"cache entry {final} failed its integrity check ({reason}); moved it to {aside} (kept for "
                    f"inspection; the newest {KEEP_CORRUPT} are kept{', older ones deleted' if dropped else ''}) "
                    "and rebuilding it",
                    CorruptCacheWarning,
                    stacklevel=2,
                )
            self._remove_stale_builds(final)
            if remote is not None:
                pulled = remote.pull(artifact_kind, final.name, key, final)
                if pulled is not None:
                    return Artifact(final, pulled)
            staging = final.with_name(f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            staging.mkdir()
            try:
                meta = build(staging) or {}
                manifest = _write_manifest(staging, key, artifact_kind, recipe, weights, meta)
                os.replace(staging, final)
            except BaseException:
                # KeyboardInterrupt included: never leave a half-written entry behind.
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if remote is not None:
                remote.record(f"{artifact_kind}/{final.name}",
                              "skipped" if artifact_kind in remote.local_only_kinds else "built")
                manifest = self._publish(remote, artifact_kind, final, manifest)
        finally:
            lock.release()
        return Artifact(final, manifest)

    @staticmethod
    def _publish(remote, artifact_kind: str, final: Path, manifest: dict) -> dict:
        """Push a local entry (``rw``); when another machine's build of the same key is already on the
        remote, adopt it: download it beside ours, then swap it in, so the fleet measures one set of
        weights. Returns the manifest of what is in ``final`` now."""
        theirs = remote.push(artifact_kind, final.name, final, manifest)
        if theirs is None:
            return manifest
        adopting = final.with_name(f".{final.name}.adopting-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        adopted = remote.pull(artifact_kind, final.name, manifest["key"], adopting, action="adopted")
        if adopted is None:  # their entry could not be had: ours stands
            return manifest
        aside = final.with_name(f".{final.name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(final, aside)
        os.replace(adopting, final)
        shutil.rmtree(aside, ignore_errors=True)
        return adopted

    @staticmethod
    def _bound_corrupt(final: Path) -> list[Path]:
        """Keep the newest :data:`KEEP_CORRUPT` corrupt copies of an entry; delete older ones."""
        copies = sorted(final.parent.glob(f"{final.name}.corrupt-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in copies[KEEP_CORRUPT:]:
            shutil.rmtree(old, ignore_errors=True)
        return copies[KEEP_CORRUPT:]

    @staticmethod
    def _remove_stale_builds(final: Path) -> None:
        # Held under the entry's lock, so any staging folder left is from a dead build.
        for stale in final.parent.glob(f".{final.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
