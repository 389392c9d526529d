import json
import os

import pytest

from compressors.core.cache import ArtifactCache, CorruptCacheWarning, content_key


def writer(calls, payload=b"weights"):
    def build(out):
        calls.append(out)
        (out / "w.bin").write_bytes(payload)
        return {"note": "built"}

    return build


def test_builds_once_then_reuses(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []
    a = cache.get_or_build(artifact_kind="k", name="m", recipe={"x": 1}, build=writer(calls), weights=["w.bin"])
    b = cache.get_or_build(artifact_kind="k", name="m", recipe={"x": 1}, build=writer(calls), weights=["w.bin"])
    assert len(calls) == 1 and a.path == b.path and a.meta == {"note": "built"}
    assert a.weight_bytes == len(b"weights")


def test_key_depends_on_recipe(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []
    a = cache.get_or_build(artifact_kind="k", name="m", recipe={"x": 1}, build=writer(calls), weights=["w.bin"])
    b = cache.get_or_build(artifact_kind="k", name="m", recipe={"x": 2}, build=writer(calls), weights=["w.bin"])
    assert a.key != b.key and len(calls) == 2
    assert content_key({"a": 1, "b": 2}) == content_key({"b": 2, "a": 1})


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path, damage):
    cache, calls = ArtifactCache(tmp_path), []
    a = cache.get_or_build(artifact_kind="k", name="m", recipe={}, build=writer(calls), weights=["w.bin"])
    target = a.path / "w.bin"
    if damage == "truncate":
        target.write_bytes(b"wei")
    elif damage == "flip":
        target.write_bytes(b"WEIGHTS")
    elif damage == "delete":
        target.unlink()
    else:
        (a.path / "manifest.json").write_text("{not json")
    with pytest.warns(CorruptCacheWarning, match="rebuilding"):
        b = cache.get_or_build(artifact_kind="k", name="m", recipe={}, build=writer(calls), weights=["w.bin"])
    assert len(calls) == 2 and (b.path / "w.bin").read_bytes() == b"weights"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_build_leaves_nothing_loadable(tmp_path, exc):
    cache = ArtifactCache(tmp_path)

    def dies(out):
        (out / "w.bin").write_bytes(b"half")
        raise exc("stopped")

    with pytest.raises(exc):
        cache.get_or_build(artifact_kind="k", name="m", recipe={}, build=dies, weights=["w.bin"])
    assert not [p for p in (tmp_path / "k").iterdir() if p.is_dir()]
    calls = []
    a = cache.get_or_build(artifact_kind="k", name="m", recipe={}, build=writer(calls), weights=["w.bin"])
    assert len(calls) == 1 and (a.path / "w.bin").read_bytes() == b"weights"


def test_stale_staging_folder_of_a_killed_build_is_removed(tmp_path):
    cache = ArtifactCache(tmp_path)
    final = cache.entry_dir("k", "m", content_key({"kind": "k", "recipe": {}}))
    stale = final.with_name(f".{final.name}.building-999-dead")
    stale.mkdir(parents=True)
    (stale / "w.bin").write_bytes(b"half")
    cache.get_or_build(artifact_kind="k", name="m", recipe={}, build=writer([]), weights=["w.bin"])
    assert not stale.exists()


def test_build_without_declared_weights_fails(tmp_path):
    from compressors.core.cache import CacheError

    with pytest.raises(CacheError, match="wrote no"):
        ArtifactCache(tmp_path).get_or_build(artifact_kind="k", name="m", recipe={}, build=lambda out: None,
                                             weights=["w.bin"])


def test_manifest_records_recipe_and_hashes(tmp_path):
    a = ArtifactCache(tmp_path).get_or_build(artifact_kind="k", name="m", recipe={"r": [1, 2]}, build=writer([]),
                                             weights=["w.bin"])
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert manifest["recipe"] == {"r": [1, 2]} and len(manifest["files"]["w.bin"]["sha256"]) == 64


def test_cache_root_from_environment(tmp_path, monkeypatch):
    from compressors.core.cache import default_cache_root

    monkeypatch.setenv("COMPRESSBENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("COMPRESSBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "compressbench"
    assert os.fspath(ArtifactCache().root) == os.fspath(tmp_path / "compressbench")
