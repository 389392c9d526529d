"""Hub loading, tested against a pre-populated local Hugging Face cache holding a tiny random model."""

import shutil

import pytest

from compressors.context import BuildContext
from compressors.models import MODELS, ModelUnavailable, hub_classifier
from tests.conftest import save_tiny_bert_classifier

REPO = "compressbench-test/tiny-bert-sst2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hf_cache(hub_cache, source):
    """Lay files out the way huggingface_hub stores a downloaded snapshot."""
    repo_dir = hub_cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for item in source.iterdir():
        shutil.copy2(item, snapshot / item.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def tiny_hub_spec():
    return hub_classifier("tiny-hub-sst2", REPO, 50.0, "test", "tiny random BERT in a local HF cache")


def test_hub_model_loads_from_local_cache(tmp_path, cache, tiny_hub_spec):
    populate_hf_cache(tmp_path / "hub", save_tiny_bert_classifier(tmp_path / "src"))
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "hub", hf_local_only=True, progress=False)
    tiny_hub_spec.check_available(tiny_hub_spec, ctx)
    artifact = tiny_hub_spec.build_base(tiny_hub_spec, ctx)
    assert artifact.kind == "hf-torch" and artifact.meta["commit"] == COMMIT
    assert artifact.manifest["recipe"]["repo_id"] == REPO
    from compressors.runtime import load_predictor

    assert load_predictor(artifact).placement()["parameter_devices"] == ["cpu"]


def test_missing_hub_model_is_unavailable_with_how_to(tmp_path, cache, tiny_hub_spec):
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "empty", hf_local_only=True, progress=False)
    with pytest.raises(ModelUnavailable, match=rf"{REPO}.*not in the local Hugging Face cache.*hf download"):
        tiny_hub_spec.check_available(tiny_hub_spec, ctx)


def test_unreachable_hub_is_reported_quickly(tmp_path, cache, tiny_hub_spec, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "empty", hf_local_only=False, progress=False)
    with pytest.raises(ModelUnavailable, match="unreachable"):
        tiny_hub_spec.check_available(tiny_hub_spec, ctx)


def test_embedded_model_is_available():
    spec = MODELS.get("minilm-sst2")
    spec.check_available(spec, BuildContext(progress=False))
    assert spec.source == "embedded" and not spec.is_hub
