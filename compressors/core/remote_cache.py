"""A shared remote layer over the local artifact cache, on object storage named by an fsspec URL.

Build once, measure everywhere: a local miss asks the remote for the entry by its exact key (no
listings); a hit is downloaded into a staging folder, every file checked against the manifest's size
and sha256, and renamed into place under the local entry's lock, so a partial download is never
loadable. A remote miss is built locally and, in ``rw`` mode, pushed: files first, the manifest last as
a create-only write, so an entry is visible only once complete (the commit record). Only artifacts
travel; quality and memory measurements stay with the machine that made them.

Remote layout (content-addressed, like a Nix binary cache or a Bazel CAS)::

    <prefix>/blobs/sha256/<first 2 hex>/<sha256>        every file, once, by its content
    <prefix>/entries/<kind>/<name>-<key>.json           the entry's manifest (as in the local folder)
    <prefix>/partial/<name>.partial-<8 hex>             uploads in flight, moved into place when whole

Uploads in flight have a folder of their own so that an object store's lifecycle rule (a prefix filter)
can expire the ones a killed pusher left, and so that an ``rw`` run can sweep them
(:meth:`RemoteCache.sweep_partials`, those older than :data:`PARTIAL_MAX_AGE_S`) without listing every blob.

Two machines that built the same key: the second's create-only write of the manifest fails, so it
reads the first's manifest and *adopts* that entry (downloads it and swaps it in for its own build),
so every machine of a fleet measures the same fine-tuned weights.

The remote heals, as Bazel's remote cache and sccache do: a blob that fails its digest on a pull is
remembered, and when the ``rw`` run that refused it has built the entry and holds the same bytes (the
same sha256), it replaces the bad blob, the upload verified before it is moved into place. A blob is
content-addressed, so overwriting a corrupt one with the right bytes is safe; a manifest is never
overwritten (create-only), so a rebuild with other bytes cannot heal its entry (``docs/fleet.md`` says
what the operator does then).

A URL that cannot work on this machine (a protocol fsspec does not know, a filesystem package that is
not installed) is found by :meth:`RemoteCache.check` without touching the network; the suite calls it at
session start, so it is said whatever the local cache holds.

Faults never cost a run: a remote that is unreachable, times out or denies access gives one warning
and is turned off for the rest of the session; a corrupt or truncated file, or a manifest naming an
absolute path or ``..``, gives one warning naming the entry, which is then built locally.
``required=True`` (``--cache-remote-required``) makes each of these an error instead. Nothing pulled is
ever unpickled: entries of kinds whose loader unpickles (``local_only_kinds``) never travel, and a
pulled entry may hold only file types that load without pickle (:data:`SAFE_SUFFIXES`: safetensors, ONNX,
JSON, tokenizer files, ...; plus the types its kind's loader declares, ``kind_file_types``: OpenVINO's
``.bin`` weights, the ``.pt`` that torchao's loader reads with ``torch.load(weights_only=True)``).

Credentials and endpoints come from the storage library's usual environment (AWS variables,
``FSSPEC_S3_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...); none live in this project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from compressors import CompressbenchError

REMOTE_ENV = "COMPRESSBENCH_CACHE_REMOTE"
MODES = ("ro", "rw")
MANIFEST = "manifest.json"
# File types a pulled entry may hold: none of them is read with pickle.
SAFE_SUFFIXES = frozenset({".safetensors", ".json", ".onnx", ".data", ".xml", ".txt", ".model", ".jinja",
                           ".tiktoken", ".npy"})
# Other suffixes that are still not a pickle are declared per kind by its loader (ArtifactLoader.remote_file_types)
# and handed to RemoteCache as kind_file_types.
_SHA256 = re.compile(r"[0-9a-f]{64}")
PARTIAL_DIR = "partial"
# A pusher killed mid-push leaves its partial upload behind; rw runs delete those older than this. An upload
# in flight lives minutes even for gigabytes on a slow link, so a day is far beyond any live push, and
# beyond any clock skew between the sweeping machine and the store; it is also the smallest age an S3 or
# GCS lifecycle rule can state (days), so the two ways of cleaning up agree.
PARTIAL_MAX_AGE_S = 24 * 3600


class RemoteCacheError(CompressbenchError):
    """The remote cache failed and the run asked for it to be required (``--cache-remote-required``)."""


class RemoteCacheWarning(UserWarning):
    """The remote cache failed or held a bad entry; the run goes on (locally)."""


class BadEntry(Exception):
    """A remote entry that must not be used: its manifest or a file does not check out. ``blobs``: the
    sha256 of the blobs found missing, truncated or corrupt (a run that builds the same bytes replaces them)."""

    def __init__(self, message: str, blobs: frozenset[str] = frozenset()):
        super().__init__(message)
        self.blobs = frozenset(blobs)


@dataclasses.dataclass
class RemoteEvent:
    """One thing the remote layer did for an entry: ``pulled``, ``built`` (locally, after a remote miss),
    ``pushed``, ``present`` (already on the remote), ``adopted`` (another machine's build of the same
    key), ``refused`` (a bad remote entry, built locally), ``repaired`` (a refused entry's bad blobs
    replaced by this run's build of the same bytes), ``skipped`` (a kind that never travels), ``swept``
    (a stale partial upload deleted; ``entry`` is its path under the prefix)."""

    entry: str
    action: str
    seconds: float = 0.0
    bytes: int = 0
    note: str | None = None


def safe_relpath(rel: str, kind: str, kind_suffixes: frozenset[str] = frozenset()) -> str:
    """``rel`` if it is a plain relative path inside the entry with an allowed suffix (:data:`SAFE_SUFFIXES`, or
    ``kind_suffixes``: those ``kind`` declares), else BadEntry."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith("/") or ":" in rel:
        raise BadEntry(f"file name {rel!r} is not a relative path")
    parts = PurePosixPath(rel).parts
    if any(part in ("..", ".", "") for part in parts):
        raise BadEntry(f"file name {rel!r} leaves the entry's folder")
    suffix = PurePosixPath(rel).suffix.lower()
    if rel != MANIFEST and suffix not in SAFE_SUFFIXES | kind_suffixes:
        raise BadEntry(f"file {rel!r} is of a type that is never pulled ({suffix or 'no suffix'}): it could "
                       "be read with pickle")
    return rel


def unusable_reason(url: str) -> str | None:
    """Why ``url`` cannot work on this machine, or None; nothing is opened or sent. fsspec must know its
    protocol, and the filesystem package for it (s3fs, gcsfs, adlfs, ...) must import. The reason says what
    to install or fix."""
    import fsspec
    from fsspec.core import split_protocol
    from fsspec.registry import known_implementations

    protocol = split_protocol(url)[0] or "file"
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        examples = "s3://bucket/prefix, gs://..., az://..., file:///mnt/..."
        return f"unknown protocol {protocol!r}: fsspec has no filesystem by that name (fix the URL: {examples})"
    except ImportError as exc:
        package = known_implementations.get(protocol, {}).get("class", "").split(".")[0] or f"the {protocol} package"
        cause = f"; {type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ is not None else ""
        extra = " (or compressbench[remote])" if package == "s3fs" else ""  # the extra carries s3fs only
        return f"the {protocol}:// filesystem cannot be imported ({exc}{cause}): pip install {package}{extra}"
    return None


def check_manifest(manifest, kind: str, key: str, kind_suffixes: frozenset[str] = frozenset()) -> dict:
    """The manifest of a remote entry, checked before any file is fetched (``kind_suffixes``: the file types
    ``kind`` may hold beyond :data:`SAFE_SUFFIXES`)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BadEntry("manifest is not an object with a files table")
    if manifest.get("key") != key or manifest.get("artifact_kind") != kind:
        raise BadEntry(f"manifest is for {manifest.get('artifact_kind')!r}/{manifest.get('key')!r}, "
                       f"not {kind!r}/{key!r}")
    for rel, info in manifest["files"].items():
        safe_relpath(rel, kind, kind_suffixes)
        if not isinstance(info, dict) or not _SHA256.fullmatch(str(info.get("sha256"))) \
                or not isinstance(info.get("bytes"), int) or info["bytes"] < 0:
            raise BadEntry(f"manifest entry of {rel!r} has no valid size and sha256")
    return manifest


class RemoteCache:
    """The remote layer (see the module docstring).

    Args:
        url: an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``az://...``, ``file:///mnt/...``,
            ``memory://...``).
        mode: ``ro`` (pull only; the default, for safety) or ``rw`` (pull and push).
        required: a fault is an error instead of a warning (CI jobs that must not silently rebuild).
        local_only_kinds: artifact kinds that never travel (their loader unpickles).
        kind_file_types: kind -> file suffixes its entries may hold beyond :data:`SAFE_SUFFIXES` (what each
            kind's loader declares as ``remote_file_types``); an entry holding any other type is refused.
        storage_options: passed to the filesystem (tests, programmatic use); the CLI leaves it to the
            storage library's environment.
    """

    def __init__(self, url: str, mode: str = "ro", required: bool = False,
                 local_only_kinds: frozenset[str] = frozenset(), storage_options: dict | None = None,
                 kind_file_types: dict[str, frozenset[str]] | None = None):
        if mode not in MODES:
            raise ValueError(f"remote cache mode {mode!r}; valid: {', '.join(MODES)}")
        self.url, self.mode, self.required = url, mode, required
        self.local_only_kinds = frozenset(local_only_kinds)
        self.kind_file_types = {kind: frozenset(types) for kind, types in (kind_file_types or {}).items()}
        self.storage_options = dict(storage_options or {})
        self.enabled = True
        self.disabled_reason: str | None = None
        self.events: list[RemoteEvent] = []
        self.timer: Callable[[str], contextlib.AbstractContextManager] | None = None
        self._fs = None
        self._prefix = ""
        self._warned_create_only = False
        # entry -> sha256 of its blobs that a pull of this run found bad: replaced when this run pushes the same bytes
        self._bad_blobs: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------ plumbing
    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            options = dict(self.storage_options)
            if self.url.startswith(("s3://", "s3a://")):
                # Fail fast on a dead endpoint (botocore's default waits a minute per try); the user's
                # FSSPEC_S3_* environment still wins over these.
                from fsspec.config import conf

                if "config_kwargs" not in conf.get("s3", {}) and "config_kwargs" not in options:
                    options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60,
                                                "retries": {"max_attempts": 2}}
            self._fs, self._prefix = fsspec.url_to_fs(self.url, **options)
            self._prefix = self._prefix.rstrip("/")
        return self._fs

    @property
    def _local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def _path(self, *parts: str) -> str:
        if self._fs is None:
            self.fs  # noqa: B018  (opening the filesystem is what splits the URL into its prefix)
        return "/".join([self._prefix, *parts]) if self._prefix else "/".join(parts)

    def check(self) -> str | None:
        """Whether the URL can work on this machine (:func:`unusable_reason`; no network). Returns None, or
        the reason it cannot after turning the remote off for the session (the caller says it: the suite
        does at session start); with ``required``, a RemoteCacheError instead."""
        reason = unusable_reason(self.url)
        if reason is None:
            return None
        if self.required:
            raise RemoteCacheError(f"remote cache {self.url} cannot be used: {reason} (--cache-remote-required)")
        self.enabled, self.disabled_reason = False, reason
        return reason

    def entry_path(self, kind: str, folder_name: str) -> str:
        return self._path("entries", kind, f"{folder_name}.json")

    def blob_path(self, sha256: str) -> str:
        return self._path("blobs", "sha256", sha256[:2], sha256)

    def partial_path(self, name: str) -> str:
        """A fresh name for an upload in flight, in the partial folder (see the module docstring)."""
        if self._local:  # a shared file system needs the folder; object stores have none
            self.fs.makedirs(self._path(PARTIAL_DIR), exist_ok=True)
        return self._path(PARTIAL_DIR, f"{name}.partial-{uuid.uuid4().hex[:8]}")

    def _phase(self, name: str):
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()

    def travels(self, kind: str) -> bool:
        return self.enabled and kind not in self.local_only_kinds

    def record(self, entry: str, action: str, **fields) -> None:
        self.events.append(RemoteEvent(entry, action, **fields))

    def _fault(self, entry: str, doing: str, exc: BaseException) -> None:
        """The remote failed (unreachable, timed out, access denied, ...): off for the rest of the session."""
        message = (f"remote cache {self.url}: {doing} {entry} failed ({type(exc).__name__}: {exc})".rstrip()
                   + "; the remote is off for the rest of this session, artifacts are built locally")
        if self.required:
            raise RemoteCacheError(message.split("; the remote")[0] + " (--cache-remote-required)") from exc
        self.enabled, self.disabled_reason = False, f"{type(exc).__name__}: {exc}"
        warnings.warn(message, RemoteCacheWarning, stacklevel=3)

    def _refuse(self, entry: str, reason: str) -> None:
        """A bad remote entry: this entry is built locally, the remote stays on. With ``required`` it is an
        error for a reader (``ro``: a job that must not retrain), but not for a writer (``rw``): the builder
        job is the one that heals the entry, so it builds it and replaces the bad blobs."""
        self.record(entry, "refused", note=reason)
        message = f"remote cache {self.url}: entry {entry} refused ({reason}); building it locally"
        if self.required and self.mode != "rw":
            raise RemoteCacheError(message + " (--cache-remote-required)")
        warnings.warn(message, RemoteCacheWarning, stacklevel=3)

    # ------------------------------------------------------------------ pull
    def pull(self, kind: str, folder_name: str, key: str, target: Path, action: str = "pulled") -> dict | None:
        """Download the entry into ``target`` (which must not exist; renamed into place only when every
        file checks out), recorded as ``action``. Returns its manifest, or None: a miss, a fault, a refused
        entry."""
        entry = f"{kind}/{folder_name}"
        if not self.travels(kind):
            return None
        start = time.perf_counter()
        with self._phase("pull"):
            try:
                raw = self.fs.cat_file(self.entry_path(kind, folder_name))
            except FileNotFoundError:
                return None
            except Exception as exc:  # any storage library's error: the remote is off, the run goes on
                self._fault(entry, "reading the manifest of", exc)
                return None
            staging = target.with_name(f".{target.name}.pulling-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                manifest = check_manifest(json.loads(raw), kind, key, self.kind_file_types.get(kind, frozenset()))
                staging.mkdir(parents=True)
                size = self._download_files(manifest, staging)
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
                os.replace(staging, target)
            except (BadEntry, json.JSONDecodeError, UnicodeDecodeError) as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if getattr(exc, "blobs", None):
                    self._bad_blobs[entry] = exc.blobs
                self._refuse(entry, str(exc))
                return None
            except Exception as exc:
                shutil.rmtree(staging, ignore_errors=True)
                self._fault(entry, "downloading", exc)
                return None
            except BaseException:  # Ctrl-C: never leave a half-downloaded entry behind
                shutil.rmtree(staging, ignore_errors=True)
                raise
        self.record(entry, action, seconds=round(time.perf_counter() - start, 3), bytes=size)
        return manifest

    def _download_files(self, manifest: dict, staging: Path) -> int:
        from compressors.core.hashing import sha256_file

        # Every file is checked, also after a bad one, so that a run that rebuilds the entry knows each blob to
        # replace (a refusal at the first bad file would heal one blob per rw run).
        total, bad = 0, {}
        for rel, info in sorted(manifest["files"].items()):
            if rel == MANIFEST:
                continue
            local = staging / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(self.blob_path(info["sha256"]), str(local))
            except FileNotFoundError:
                bad[info["sha256"]] = f"{rel}: its blob {info['sha256'][:12]}... is missing on the remote"
                continue
            if local.stat().st_size != info["bytes"]:
                bad[info["sha256"]] = (f"{rel}: {local.stat().st_size} bytes, the manifest says {info['bytes']} "
                                       "(truncated?)")
            elif sha256_file(local) != info["sha256"]:
                bad[info["sha256"]] = f"{rel}: does not match its sha256 in the manifest (corrupt)"
            total += info["bytes"]
        if bad:
            raise BadEntry("; ".join(bad.values()), blobs=frozenset(bad))
        return total

    # ------------------------------------------------------------------ push
    def push(self, kind: str, folder_name: str, folder: Path, manifest: dict) -> dict | None:
        """Upload a local entry (``rw`` mode): files not yet there, then the manifest, create-only. Returns
        the remote's manifest when another machine's entry of this key was there first (to adopt), else
        None (pushed, already the same, read-only, off, or failed with a warning)."""
        entry = f"{kind}/{folder_name}"
        if self.mode != "rw" or not self.travels(kind):
            return None
        start = time.perf_counter()
        bad = self._bad_blobs.pop(entry, frozenset())  # this run refused these blobs of the entry: replace them
        with self._phase("push"):
            path = self.entry_path(kind, folder_name)
            try:
                if not self.fs.exists(path):
                    sent = self._upload_files(manifest, folder, bad)
                    bad = frozenset()  # replaced with the rest of the files
                    body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
                    if self._create_only(path, body):
                        self.record(entry, "pushed", seconds=round(time.perf_counter() - start, 3), bytes=sent)
                        return None
                theirs = json.loads(self.fs.cat_file(path))
                ours = {info["sha256"]: rel for rel, info in manifest["files"].items()}
                theirs_shas = {info.get("sha256") for info in (theirs.get("files") or {}).values()
                               if isinstance(info, dict)}
                # only blobs their manifest names and our build holds: a blob is healed by its own bytes
                healable = {sha: ours[sha] for sha in bad if sha in ours and sha in theirs_shas}
                sent = sum(self._put_blob(folder / rel, sha, manifest["files"][rel]["bytes"], verify=True)
                           for sha, rel in sorted(healable.items(), key=lambda item: item[1]))
            except Exception as exc:
                self._fault(entry, "pushing", exc)
                return None
        if healable:
            self.record(entry, "repaired", seconds=round(time.perf_counter() - start, 3), bytes=sent,
                        note=f"replaced the bad blob(s) of {', '.join(sorted(healable.values()))}")
        if theirs.get("files") == manifest.get("files"):
            if not healable:
                self.record(entry, "present", note="the same files are on the remote")
            return None
        return theirs  # another machine's build of this key: the caller adopts it

    def _upload_files(self, manifest: dict, folder: Path, replace: frozenset[str] = frozenset()) -> int:
        """Upload the blobs of ``manifest`` not yet on the remote, and those in ``replace`` (found bad)."""
        sent = 0
        for rel, info in sorted(manifest["files"].items()):
            sha = info["sha256"]
            if sha not in replace and self.fs.exists(self.blob_path(sha)):
                continue  # content-addressed: whoever wrote it wrote the same bytes
            sent += self._put_blob(folder / rel, sha, info["bytes"], verify=sha in replace)
        return sent

    def _put_blob(self, local: Path, sha256: str, size: int, verify: bool = False) -> int:
        """Upload ``local`` as the blob ``sha256``: to a partial name, then moved into place, so a blob's final
        name never holds half its bytes. ``verify`` (a replacement of a bad blob): the uploaded bytes are
        read back and checked against ``sha256`` before the move, so a repair never writes another bad blob."""
        import hashlib

        blob, partial = self.blob_path(sha256), self.partial_path(sha256)
        try:
            self.fs.put_file(str(local), partial)
            if verify:
                digest, got = hashlib.sha256(), 0
                with self.fs.open(partial, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                        got += len(chunk)
                if got != size or digest.hexdigest() != sha256:
                    raise OSError(f"the upload of blob {sha256[:12]}... read back {got} bytes with another sha256 "
                                  "(the store changed the bytes)")
            if self._local:  # a shared file system needs the folders; object stores have none
                self.fs.makedirs(blob.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(partial, blob)  # over a corrupt blob too: content-addressed, so these are its right bytes
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(partial)
            raise
        return size

    def sweep_partials(self, max_age_s: float = PARTIAL_MAX_AGE_S, now: float | None = None) -> int:
        """Delete the partial uploads older than ``max_age_s`` (pushers killed mid-push) in ``rw`` mode, each
        recorded as ``swept``; returns how many. ``now``: the time to measure ages from (default: this clock).
        A store that cannot be listed (a bucket policy without ``s3:ListBucket``) gives one warning and the
        remote stays on; the lifecycle rule in ``docs/fleet.md`` does the same job on the store's side."""
        if self.mode != "rw" or not self.enabled:
            return 0
        now = time.time() if now is None else now
        swept = 0
        with self._phase("push"):
            try:
                found = self.fs.find(self._path(PARTIAL_DIR), detail=True)
            except FileNotFoundError:
                return 0
            except Exception as exc:
                warnings.warn(f"remote cache {self.url}: could not list the partial uploads to sweep "
                              f"({type(exc).__name__}: {exc}); the remote stays on", RemoteCacheWarning, stacklevel=2)
                return 0
            for path, info in sorted(found.items()):
                if ".partial-" not in path.rsplit("/", 1)[-1]:
                    continue
                try:
                    modified = self.fs.modified(path)
                    stamp = modified.timestamp() if modified.tzinfo is not None \
                        else modified.replace(tzinfo=datetime.UTC).timestamp()
                    if now - stamp <= max_age_s:
                        continue  # maybe a push in flight on another machine
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    continue  # moved into place, or swept by another machine, meanwhile
                except Exception as exc:
                    warnings.warn(f"remote cache {self.url}: could not sweep {path} ({type(exc).__name__}: {exc})",
                                  RemoteCacheWarning, stacklevel=2)
                    return swept
                self.record(path[len(self._prefix):].lstrip("/"), "swept", bytes=int(info.get("size") or 0),
                            note=f"a partial upload {(now - stamp) / 3600:.0f} h old")
                swept += 1
        return swept

    def _create_only(self, path: str, body: bytes) -> bool:
        """Write ``path`` only if it does not exist; True when this call created it."""
        from fsspec.implementations.local import LocalFileSystem
        from fsspec.spec import AbstractFileSystem

        fs = self.fs
        if isinstance(fs, LocalFileSystem):  # a shared file system: link(2) is atomic and create-only
            fs.makedirs(os.path.dirname(path), exist_ok=True)
            partial = self.partial_path(os.path.basename(path))
            Path(partial).write_bytes(body)
            try:
                os.link(partial, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(partial)
        if type(fs).pipe_file is AbstractFileSystem.pipe_file and not hasattr(fs, "_pipe_file") \
                and not self._warned_create_only:
            self._warned_create_only = True
            warnings.warn(f"remote cache {self.url}: {type(fs).__name__} has no create-only write; the manifest is "
                          "written after an existence check (two machines pushing one key at the same moment could "
                          "both write it)", RemoteCacheWarning, stacklevel=3)
        try:
            fs.pipe_file(path, body, mode="create")  # S3 If-None-Match, GCS generation 0, memory: exclusive
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, TypeError, ValueError, OSError) as exc:
            if isinstance(exc, OSError) and "NotImplemented" not in str(exc):
                raise
            # a store without conditional writes (older S3-compatible servers): a plain write after a check
            warnings.warn(f"remote cache {self.url}: the store refused a create-only write ({exc}); the manifest is "
                          "written after an existence check instead", RemoteCacheWarning, stacklevel=3)
            if fs.exists(path):
                return False
            fs.pipe_file(path, body)
            return True

    # ------------------------------------------------------------------ what the run records
    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event.action] = counts.get(event.action, 0) + 1
        return {"url": self.url, "mode": self.mode, "required": self.required, "enabled": self.enabled,
                "disabled_reason": self.disabled_reason, "counts": counts,
                "events": [dataclasses.asdict(e) for e in self.events]}

    def summary_line(self) -> str:
        counts = self.summary()["counts"]
        parts = ", ".join(f"{counts[a]} {a}" for a in ("pulled", "built", "pushed", "present", "adopted", "refused",
                                                        "repaired", "skipped", "swept") if counts.get(a))
        state = "" if self.enabled else f" (turned off: {self.disabled_reason})"
        return f"remote cache {self.url} ({self.mode}): {parts or 'nothing pulled or pushed'}{state}"
