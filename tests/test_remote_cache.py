"""The shared remote artifact cache (compressors/core/remote_cache.py) on memory://, file:// and a real S3
HTTP endpoint on 127.0.0.1 (moto's threaded server, as s3fs's own tests do): pull before build, push
after build, the manifest last and create-only, faults that never cost a run."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import types
import uuid
import warnings

import pytest

from compressors.core.cache import ArtifactCache
from compressors.core.remote_cache import (
    PARTIAL_MAX_AGE_S,
    RemoteCache,
    RemoteCacheError,
    RemoteCacheWarning,
    unusable_reason,
)


def writer(calls: list, payload: bytes | None = None, files=("model.safetensors",), wait=None):
    """A build that writes ``files`` (random bytes unless ``payload``: two builds of one key differ, as
    two trainings on two machines do) and counts its calls."""

    def build(out):
        calls.append(out)
        if wait is not None:
            wait()
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(payload if payload is not None else os.urandom(64))
        (out / "config.json").write_text('{"layers": 2}')
        return {"note": "built"}

    return build


def build(cache: ArtifactCache, calls: list, **kwargs):
    return cache.get_or_build(artifact_kind="hf-torch", name="m", recipe={"x": 1},
                              build=writer(calls, **kwargs), weights=["model.safetensors"])


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path):
    if request.param == "memory":
        return f"memory://bucket-{uuid.uuid4().hex[:8]}/cache"
    return f"file://{tmp_path / 'bucket' / 'cache'}"


def _files(artifact) -> dict[str, bytes]:
    return {p.relative_to(artifact.path).as_posix(): p.read_bytes() for p in artifact.path.rglob("*") if p.is_file()}


def test_pull_push_round_trip_is_byte_identical(url, tmp_path):
    builder = RemoteCache(url, "rw")
    calls: list = []
    built = build(ArtifactCache(tmp_path / "a", remote=builder), calls)
    assert [e.action for e in builder.events] == ["built", "pushed"]

    reader = RemoteCache(url, "ro")
    other: list = []
    pulled = build(ArtifactCache(tmp_path / "b", remote=reader), other)
    assert other == [] and [e.action for e in reader.events] == ["pulled"]
    assert _files(pulled) == _files(built) and pulled.key == built.key and pulled.meta == {"note": "built"}
    # layout: content-addressed blobs and one manifest per entry
    remote = reader.fs
    assert remote.exists(reader.entry_path("hf-torch", built.path.name))
    sha = built.manifest["files"]["model.safetensors"]["sha256"]
    assert remote.cat_file(reader.blob_path(sha)) == (built.path / "model.safetensors").read_bytes()


def test_read_only_mode_pushes_nothing(url, tmp_path):
    remote = RemoteCache(url, "ro")
    build(ArtifactCache(tmp_path / "a", remote=remote), [])
    assert [e.action for e in remote.events] == ["built"]
    assert not remote.fs.exists(remote._path("entries")) and not remote.fs.exists(remote._path("blobs"))


def test_a_crash_between_files_and_manifest_leaves_the_entry_invisible(url, tmp_path, monkeypatch):
    builder = RemoteCache(url, "rw")

    def crash(path, body):
        raise KeyboardInterrupt  # the machine dies after the files, before the manifest

    monkeypatch.setattr(builder, "_create_only", crash)
    with pytest.raises(KeyboardInterrupt):
        build(ArtifactCache(tmp_path / "a", remote=builder), [])
    assert builder.fs.exists(builder._path("blobs"))  # the files went up

    reader = RemoteCache(url, "ro")
    calls: list = []
    build(ArtifactCache(tmp_path / "b", remote=reader), calls)
    assert len(calls) == 1 and [e.action for e in reader.events] == ["built"]  # a miss, built locally


def test_a_corrupt_remote_file_is_refused_and_built_locally(url, tmp_path):
    builder = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=builder), [])
    sha = built.manifest["files"]["model.safetensors"]["sha256"]
    builder.fs.pipe_file(builder.blob_path(sha), b"flipped bits" * 6)

    reader = RemoteCache(url, "ro")
    calls: list = []
    with pytest.warns(RemoteCacheWarning, match=r"entry hf-torch/m-\w+ refused \(model.safetensors: .*building it"):
        local = build(ArtifactCache(tmp_path / "b", remote=reader), calls)
    assert len(calls) == 1 and reader.enabled  # only that entry is rebuilt; the remote stays on
    assert [e.action for e in reader.events] == ["refused", "built"]
    assert not list(local.path.parent.glob(".*pulling*"))  # nothing half-downloaded is left


@pytest.mark.parametrize("bad, reason", [
    ({"../../etc/passwd.json": None}, "leaves the entry's folder"),
    ({"/abs/model.safetensors": None}, "is not a relative path"),
    ({"pytorch_model.bin": None}, "could be read with pickle"),
])
def test_a_manifest_naming_unsafe_paths_or_pickles_is_refused(url, tmp_path, bad, reason):
    builder = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=builder), [])
    manifest = json.loads(builder.fs.cat_file(builder.entry_path("hf-torch", built.path.name)))
    info = next(iter(manifest["files"].values()))
    manifest["files"].update({name: info for name in bad})
    builder.fs.pipe_file(builder.entry_path("hf-torch", built.path.name), json.dumps(manifest).encode())

    reader = RemoteCache(url, "ro")
    with pytest.warns(RemoteCacheWarning, match=reason):
        build(ArtifactCache(tmp_path / "b", remote=reader), [])
    assert [e.action for e in reader.events] == ["refused", "built"]
    assert not (tmp_path / "etc").exists()


def test_kinds_that_unpickle_never_travel(url, tmp_path):
    remote = RemoteCache(url, "rw", local_only_kinds=frozenset({"torch-dynamic-int8"}))
    ArtifactCache(tmp_path / "a", remote=remote).get_or_build(
        artifact_kind="torch-dynamic-int8", name="q", recipe={}, build=writer([], files=("model.pt",)),
        weights=["model.pt"])
    assert [e.action for e in remote.events] == ["skipped"] and not remote.fs.exists(remote._path("entries"))


def test_two_concurrent_pushes_of_one_key_one_wins_the_other_adopts(url, tmp_path):
    """Two machines miss the remote, train (different weights), push: one manifest is created, the other
    machine sees it and swaps its own build for the winner's, so both measure the same weights."""
    barrier = threading.Barrier(2)
    remotes = [RemoteCache(url, "rw") for _ in range(2)]
    caches = [ArtifactCache(tmp_path / f"machine{i}", remote=r) for i, r in enumerate(remotes)]
    results: dict = {}

    def machine(i):
        results[i] = build(caches[i], [], wait=barrier.wait)  # both have missed the remote before either pushes

    threads = [threading.Thread(target=machine, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    actions = sorted(e.action for r in remotes for e in r.events if e.action != "built")
    assert actions == ["adopted", "pushed"]
    assert _files(results[0]) == _files(results[1])  # the loser now holds the winner's bytes
    winner = json.loads(remotes[0].fs.cat_file(remotes[0].entry_path("hf-torch", results[0].path.name)))
    assert winner["files"] == results[1].manifest["files"] == results[0].manifest["files"]


def test_a_warm_local_entry_is_pushed_by_a_rw_run_and_present_after(url, tmp_path):
    local = ArtifactCache(tmp_path / "a")
    build(local, [])  # built before the fleet had a remote
    remote = RemoteCache(url, "rw")
    build(ArtifactCache(tmp_path / "a", remote=remote), [])
    build(ArtifactCache(tmp_path / "a", remote=remote), [])
    assert [e.action for e in remote.events] == ["pushed", "present"]


class Down:
    """A storage whose every call fails as an unreachable endpoint does."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("Could not connect to the endpoint URL: 'http://127.0.0.1:9/'")

        return fail


def test_remote_down_builds_locally_with_one_warning_and_turns_the_remote_off(tmp_path):
    remote = RemoteCache("s3://bucket/cache", "rw")
    remote._fs = Down()
    cache = ArtifactCache(tmp_path / "a", remote=remote)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(cache, [])
        cache.get_or_build(artifact_kind="onnx", name="n", recipe={}, build=writer([], files=("model.onnx",)),
                           weights=["model.onnx"])
    messages = [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert len(messages) == 1 and "ConnectionError" in messages[0] and "off for the rest of this session" in messages[0]
    assert not remote.enabled and "turned off" in remote.summary_line()


def test_required_remote_makes_a_fault_an_error(tmp_path):
    remote = RemoteCache("s3://bucket/cache", "ro", required=True)
    remote._fs = Down()
    with pytest.raises(RemoteCacheError, match="--cache-remote-required"):
        build(ArtifactCache(tmp_path / "a", remote=remote), [])


def test_the_run_books_pull_and_push_time_apart(url, tmp_path):
    from compressors.machine.timing import TimeAccount

    account = TimeAccount()
    remote = RemoteCache(url, "rw")
    remote.timer = account.phase
    with account.phase("build"):
        build(ArtifactCache(tmp_path / "a", remote=remote), [])
    reader = RemoteCache(url, "ro")
    reader.timer = account.phase
    with account.phase("build"):
        build(ArtifactCache(tmp_path / "b", remote=reader), [])
    assert account.seconds["push"] > 0 and account.seconds["pull"] > 0
    assert reader.summary()["counts"] == {"pulled": 1}


# ----------------------------------------------------------------------------- a URL that cannot work


@pytest.mark.slow
def test_unknown_protocol_warns_at_start_even_with_warm_local_cache(tmp_path):
    from bench.conftest import remote_cache
    from tests.test_suite_options import run_pytest

    warm = tmp_path / "warm"
    calls: list = []
    build(ArtifactCache(warm), calls)  # the local cache holds the entry: no pull would ever be tried
    # the session's remote, as the bench_session fixture makes it: turned off, saying why, nothing tried
    settings = types.SimpleNamespace(cache_remote="foo://x", cache_remote_mode="ro", cache_remote_required=False)
    remote = remote_cache(settings)
    assert "unknown protocol 'foo'" in remote.check() and not remote.enabled
    build(ArtifactCache(warm, remote=remote), calls)
    assert len(calls) == 1 and remote.events == []
    assert remote.summary_line().startswith("remote cache foo://x (ro): nothing pulled or pushed (turned off: "
                                            "unknown protocol 'foo'")

    # the run says it at its start, before collection, naming the URL, where it came from and the fix
    out = run_pytest("bench", "--collect-only", "-m", "cpu", "--models", "minilm-sst2", "--techniques", "fp32",
                     "-k", "bs1", "--cache-dir", str(warm), env_extra={"COMPRESSBENCH_CACHE_REMOTE": "foo://x"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    header = out.stdout.split("collected")[0]
    assert ("compressbench: WARNING: remote cache foo://x (--cache-remote, from $COMPRESSBENCH_CACHE_REMOTE) "
            "cannot be used: unknown protocol 'foo': fsspec has no filesystem by that name (fix the URL: ") in header
    assert "RemoteCacheWarning: remote cache foo://x" in out.stdout.split("warnings summary")[1]


def test_unknown_protocol_is_an_error_when_required(tmp_path):
    from tests.test_suite_options import run_pytest

    out = run_pytest("bench", "--collect-only", "-q", "-m", "cpu", "--models", "minilm-sst2", "--cache-dir",
                     str(tmp_path), "--cache-remote", "foo://x", "--cache-remote-required")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors == ["ERROR: remote cache foo://x (--cache-remote, from command line) cannot be used: unknown "
                      "protocol 'foo': fsspec has no filesystem by that name (fix the URL: s3://bucket/prefix, "
                      "gs://..., az://..., file:///mnt/...) (--cache-remote-required)"]
    with pytest.raises(RemoteCacheError, match=r"foo://x cannot be used: unknown protocol 'foo'.*required"):
        RemoteCache("foo://x", required=True).check()


def test_missing_filesystem_package_is_said_at_start_with_what_to_install(monkeypatch, tmp_path):
    import sys

    from fsspec.registry import _registry

    from bench.plugin.remote import check_remote_url

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed: its import fails
    monkeypatch.delitem(_registry, "s3", raising=False)  # fsspec caches the class once imported
    reason = unusable_reason("s3://bucket/cache")
    assert reason.startswith("the s3:// filesystem cannot be imported (Install s3fs to access S3; ")
    assert reason.endswith("pip install s3fs (or compressbench[remote])")
    assert unusable_reason(f"file://{tmp_path}") is None and unusable_reason("memory://b/c") is None

    warned: list = []
    config = types.SimpleNamespace(issue_config_time_warning=lambda w, stacklevel: warned.append(w))
    settings = types.SimpleNamespace(cache_remote="s3://bucket/cache", cache_remote_required=False,
                                     sources={"cache_remote": "pyproject.toml"})
    said = check_remote_url(config, settings)
    assert len(warned) == 1 and isinstance(warned[0], RemoteCacheWarning)
    assert str(warned[0]).startswith("remote cache s3://bucket/cache (--cache-remote, from pyproject.toml) cannot "
                                     "be used: the s3:// filesystem cannot be imported")
    assert said == str(warned[0])
    with pytest.raises(pytest.UsageError, match=r"pip install s3fs .*\(--cache-remote-required\)$"):
        check_remote_url(config, dataclasses_replace(settings, cache_remote_required=True))

    remote = RemoteCache("s3://bucket/cache", "rw")
    assert remote.check() == reason and "turned off: the s3:// filesystem" in remote.summary_line()
    assert remote.push("hf-torch", "m-1", tmp_path, {"files": {}}) is None and remote.sweep_partials() == 0


def dataclasses_replace(namespace, **changes):
    return types.SimpleNamespace(**{**vars(namespace), **changes})


# ----------------------------------------------------------------------------- the remote heals


def _corrupt_blob(remote: RemoteCache, artifact) -> str:
    """Flip every bit of the weights' blob, keeping its size: only its digest tells."""
    sha = artifact.manifest["files"]["model.safetensors"]["sha256"]
    remote.fs.pipe_file(remote.blob_path(sha), _flipped(remote.fs.cat_file(remote.blob_path(sha))))
    return sha


def _flipped(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


def _partials(remote: RemoteCache) -> list[str]:
    return sorted(remote.fs.find(remote._path("partial")))


def test_rw_run_repairs_a_corrupt_blob_and_a_fresh_machine_pulls_it_byte_identical(url, tmp_path):
    weights = b"deterministic weights" * 8  # the same build on every machine, as an export or a seeded fine-tune
    first = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=first), [], payload=weights)
    sha = _corrupt_blob(first, built)
    manifest_path = first.entry_path("hf-torch", built.path.name)
    manifest_before = first.fs.cat_file(manifest_path)

    healer = RemoteCache(url, "rw")
    calls: list = []
    with pytest.warns(RemoteCacheWarning, match=r"refused \(model.safetensors: does not match its sha256"):
        build(ArtifactCache(tmp_path / "b", remote=healer), calls, payload=weights)
    assert len(calls) == 1 and [e.action for e in healer.events] == ["refused", "built", "repaired"]
    assert healer.summary()["counts"] == {"refused": 1, "built": 1, "repaired": 1}
    assert ": 1 built, 1 refused, 1 repaired" in healer.summary_line()
    assert healer.events[-1].bytes == len(weights) and "model.safetensors" in healer.events[-1].note
    assert healer.fs.cat_file(healer.blob_path(sha)) == weights
    assert healer.fs.cat_file(manifest_path) == manifest_before  # the manifest is never rewritten
    assert _partials(healer) == []  # the verified upload was moved into place

    fresh = RemoteCache(url, "ro")
    other: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RemoteCacheWarning)
        pulled = build(ArtifactCache(tmp_path / "c", remote=fresh), other)
    assert other == [] and [e.action for e in fresh.events] == ["pulled"]
    assert _files(pulled) == _files(built)


def test_a_required_builder_heals_a_refused_entry_and_a_required_reader_stops_on_it(url, tmp_path):
    """--cache-remote-required: a measuring job (ro) must not retrain, so a corrupt entry stops it; the builder job
    (rw) is the one that heals, so the same fault is a warning there and the entry is rebuilt and repaired."""
    weights = b"deterministic weights" * 8
    first = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=first), [], payload=weights)
    sha = _corrupt_blob(first, built)
    with pytest.raises(RemoteCacheError, match=r"refused .*\(--cache-remote-required\)$"):
        build(ArtifactCache(tmp_path / "reader", remote=RemoteCache(url, "ro", required=True)), [], payload=weights)
    builder = RemoteCache(url, "rw", required=True)
    with pytest.warns(RemoteCacheWarning, match="refused"):
        build(ArtifactCache(tmp_path / "builder", remote=builder), [], payload=weights)
    assert [e.action for e in builder.events] == ["refused", "built", "repaired"]
    assert builder.fs.cat_file(builder.blob_path(sha)) == weights


def test_a_repair_whose_upload_reads_back_wrong_leaves_no_bad_blob_in_place(url, tmp_path, monkeypatch):
    weights = b"deterministic weights" * 8
    first = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=first), [], payload=weights)
    sha = _corrupt_blob(first, built)

    healer = RemoteCache(url, "rw")
    put_file = healer.fs.put_file

    def flaky_put(local, remote_path, **kwargs):  # the store keeps other bytes than it was sent
        put_file(local, remote_path, **kwargs)
        if "/partial/" in remote_path:
            healer.fs.pipe_file(remote_path, b"x" * len(weights))

    monkeypatch.setattr(healer.fs, "put_file", flaky_put)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(ArtifactCache(tmp_path / "b", remote=healer), [], payload=weights)
    messages = [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert any("read back" in m and "another sha256" in m for m in messages), messages
    assert "repaired" not in [e.action for e in healer.events] and not healer.enabled
    assert healer.fs.cat_file(healer.blob_path(sha)) == _flipped(weights) and _partials(healer) == []


def _leave_partial(remote: RemoteCache, name: str, body: bytes = b"half a blob") -> str:
    """What a pusher killed between its upload and the move leaves on the remote."""
    path = remote.partial_path(name)
    remote.fs.pipe_file(path, body)
    return path


def test_stale_partial_uploads_are_swept_and_counted(url, tmp_path):
    remote = RemoteCache(url, "rw")
    built = build(ArtifactCache(tmp_path / "a", remote=remote), [])
    stale = [_leave_partial(remote, "ab" * 32), _leave_partial(remote, "m-0123.json", b"{}")]
    day_later = time.time() + PARTIAL_MAX_AGE_S + 60

    reader = RemoteCache(url, "ro")
    assert reader.sweep_partials(now=day_later) == 0 and _partials(reader) == sorted(stale)  # ro deletes nothing

    assert remote.sweep_partials(now=day_later) == 2 and _partials(remote) == []
    assert remote.summary()["counts"] == {"built": 1, "pushed": 1, "swept": 2}
    assert remote.summary_line().endswith(": 1 built, 1 pushed, 2 swept")
    swept = [e for e in remote.events if e.action == "swept"]
    assert sorted(e.entry for e in swept) == sorted(p[len(remote._prefix):].lstrip("/") for p in stale)
    assert all(e.entry.startswith("partial/") and e.bytes > 0 for e in swept)
    pulled = build(ArtifactCache(tmp_path / "b", remote=reader), [])  # complete entries are untouched
    assert _files(pulled) == _files(built)


def test_recent_partial_upload_is_left_alone(url, tmp_path):
    remote = RemoteCache(url, "rw")
    in_flight = _leave_partial(remote, "cd" * 32)  # another machine's push, still going
    assert remote.sweep_partials() == 0
    assert remote.sweep_partials(now=time.time() + PARTIAL_MAX_AGE_S - 600) == 0
    assert _partials(remote) == [in_flight] and remote.events == []
    assert remote.summary_line().endswith("nothing pulled or pushed")


# ----------------------------------------------------------------------------- a real S3 endpoint


@contextlib.contextmanager
def moto_s3(bucket: str):
    """moto's S3 server on 127.0.0.1 (HTTP, the real S3 wire protocol) with ``bucket``, test credentials in
    the environment while it runs; yields ``(server, endpoint)``."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True).mkdir(bucket)
        yield server, endpoint
    finally:
        server.stop()  # a second stop (the dropped-connection test's) is harmless
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def s3_server():
    with moto_s3("fleet") as running:
        yield running


def _s3(endpoint: str, mode: str, prefix: str) -> RemoteCache:
    return RemoteCache(f"s3://fleet/{prefix}", mode, storage_options={
        "client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True})


@pytest.mark.slow
def test_s3_push_pull_and_create_only_conflict(s3_server, tmp_path):
    _, endpoint = s3_server
    prefix = uuid.uuid4().hex[:8]
    builder = _s3(endpoint, "rw", prefix)
    built = build(ArtifactCache(tmp_path / "a", remote=builder), [])
    assert [e.action for e in builder.events] == ["built", "pushed"]

    reader = _s3(endpoint, "ro", prefix)
    pulled = build(ArtifactCache(tmp_path / "b", remote=reader), [])
    assert [e.action for e in reader.events] == ["pulled"] and _files(pulled) == _files(built)

    # S3's If-None-Match: a second create of the same manifest is refused by the server, not overwritten
    path = builder.entry_path("hf-torch", built.path.name)
    assert builder._create_only(path, b"{}") is False
    assert json.loads(builder.fs.cat_file(path))["files"] == built.manifest["files"]

    # another machine's build of the same key adopts the one on S3
    late = _s3(endpoint, "rw", prefix)
    late_cache = ArtifactCache(tmp_path / "c")
    mine = build(late_cache, [])  # built locally before it had the remote: other bytes
    assert _files(mine) != _files(built)
    adopted = build(ArtifactCache(tmp_path / "c", remote=late), [])
    assert [e.action for e in late.events] == ["adopted"] and _files(adopted) == _files(built)


@pytest.mark.slow
def test_s3_dropped_connection_builds_locally_with_one_warning(tmp_path):
    bucket = f"dropped-{uuid.uuid4().hex[:8]}"  # moto's state is shared by every server in the process
    with moto_s3(bucket) as (server, endpoint):
        remote = RemoteCache(f"s3://{bucket}/x", "rw", storage_options={
            "client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True,
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}}})
        cache = ArtifactCache(tmp_path / "a", remote=remote)
        build(cache, [])
        server.stop()  # the connection drops: the endpoint is gone
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache.get_or_build(artifact_kind="onnx", name="n", recipe={}, build=writer([], files=("model.onnx",)),
                               weights=["model.onnx"])
            cache.get_or_build(artifact_kind="onnx", name="o", recipe={}, build=writer([], files=("model.onnx",)),
                               weights=["model.onnx"])
    messages = [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert len(messages) == 1 and "onnx/n-" in messages[0] and "built locally" in messages[0], messages
    assert [e.action for e in remote.events] == ["built", "pushed", "built", "built"]


@pytest.mark.slow
def test_s3_rw_run_repairs_a_corrupt_blob_and_sweeps_a_stale_partial(s3_server, tmp_path):
    """On S3 a move is a server-side copy over the bad object, and ages come from LastModified."""
    _, endpoint = s3_server
    prefix = uuid.uuid4().hex[:8]
    weights = b"deterministic weights" * 8
    built = build(ArtifactCache(tmp_path / "a", remote=_s3(endpoint, "rw", prefix)), [], payload=weights)
    healer = _s3(endpoint, "rw", prefix)
    sha = _corrupt_blob(healer, built)
    stale = _leave_partial(healer, "ef" * 32)
    with pytest.warns(RemoteCacheWarning, match="refused"):
        build(ArtifactCache(tmp_path / "b", remote=healer), [], payload=weights)
    assert healer.sweep_partials() == 0 and _partials(healer) == [stale]  # seconds old: left alone
    assert healer.sweep_partials(now=time.time() + PARTIAL_MAX_AGE_S + 60) == 1 and _partials(healer) == []
    assert healer.summary()["counts"] == {"refused": 1, "built": 1, "repaired": 1, "swept": 1}
    assert healer.fs.cat_file(healer.blob_path(sha)) == weights

    fresh = _s3(endpoint, "ro", prefix)
    pulled = build(ArtifactCache(tmp_path / "c", remote=fresh), [])
    assert [e.action for e in fresh.events] == ["pulled"] and _files(pulled) == _files(built)


def test_a_kind_pulls_the_file_types_its_loader_declares_and_is_refused_others(url, tmp_path):
    """File types beyond the common safe ones come from each kind's loader (``ArtifactLoader.remote_file_types``),
    as the suite builds its remote cache: an OpenVINO IR's ``.bin`` weights are pulled; a remote that was not
    told refuses the entry and builds it locally; pickled kinds stay local."""
    import types

    from bench.conftest import remote_cache
    from compressors.execution.runtime import ARTIFACT_LOADERS

    def build_ir(cache, calls):
        return cache.get_or_build(artifact_kind="openvino", name="ov", recipe={"x": 1},
                                  build=writer(calls, files=("openvino_model.xml", "openvino_model.bin")),
                                  weights=["openvino_model.bin"])

    build_ir(ArtifactCache(tmp_path / "a", remote=RemoteCache(url, "rw")), [])
    suite = remote_cache(types.SimpleNamespace(cache_remote=url, cache_remote_mode="ro", cache_remote_required=False))
    assert suite.kind_file_types["openvino"] == ARTIFACT_LOADERS.get("openvino").remote_file_types
    assert "torch-absmax-int8" in suite.local_only_kinds and "torch-absmax-int8" not in suite.kind_file_types
    calls: list = []
    build_ir(ArtifactCache(tmp_path / "b", remote=suite), calls)
    assert calls == [] and [e.action for e in suite.events] == ["pulled"]

    untold = RemoteCache(url, "ro")
    with pytest.warns(RemoteCacheWarning, match=r"openvino_model\.bin.*never pulled \(\.bin\)"):
        build_ir(ArtifactCache(tmp_path / "c", remote=untold), calls)
    assert len(calls) == 1 and [e.action for e in untold.events] == ["refused", "built"]
