"""The contract every registered technique keeps (peft's ``TEST_CASES`` style: one table, shared tests).

For every registered technique (and the default names of parametrised families), on a tiny random
model of every task it applies to: it builds, its artifact reloads from the cache alone (manifest
verified) through the loader registered for its kind, the predictor runs, its placement is JSON,
and its logits stay within the technique's stated ``tolerance`` of fp32. Techniques that retrain
or remove layers state ``tolerance=None`` and are held to finite logits of the right shape.
Also: every registered technique is in some default matrix, and every artifact kind has a loader
and a technique that produces it. A plug-in that misses any of this fails here, not in a user's run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest

from compressors.cache import verify_entry
from compressors.hardware import this_cpu
from compressors.models import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS
from compressors.runtime import ARTIFACT_LOADERS, load_predictor
from compressors.techniques import TECHNIQUES, build_chain, default_techniques, get_technique, parse_chain
from compressors.techniques.base import FAMILY_DEFAULTS
from tests.conftest import SENTENCES, make_tiny_tokenizer, save_tiny_causal_lm
from tests.techniques.test_layerdrop import toy_train

NAMES = [*TECHNIQUES.names(), *FAMILY_DEFAULTS]
CASES = [(name, task) for name in NAMES for task in TASKS if task in get_technique(name).tasks]


def _tiny_classifier(folder):
    """A random 4-layer BERT classifier, hidden 64 (bitsandbytes' CPU 4-bit kernels need in % 64 == 0; four
    layers so that the default layerdrop-2 and distill-l3 have layers to remove)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2, initializer_range=0.2)
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_encoder(folder):
    """The tiny classifier's pretrained-style encoder (no head): what LoRA trains from."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(folder)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def contract_ctx(ctx, tmp_path, monkeypatch):
    """A build context whose model has a tiny pretrained encoder, and a toy SST-2 train split for
    every technique that trains, calibrates or measures sensitivity."""
    from compressors.data import TextCorpus
    from tests.conftest import LM_TEXT

    corpus = TextCorpus("valid", LM_TEXT, 1, "toy", "toy-checksum")
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("compressors") and hasattr(module, "load_sst2"):
            monkeypatch.setattr(module, "load_sst2", lambda split, data_dir=None, **kw: toy_train(160))
    monkeypatch.setattr("compressors.data.load_wikitext", lambda split, data_dir=None, **kw: corpus)
    encoder = _tiny_encoder(tmp_path / "encoder")

    class Spec:
        name = "tiny"
        pretrained = staticmethod(lambda spec, c: encoder)

    return dataclasses.replace(ctx, model=Spec())


def _base(task, tmp_path, cache):
    source = (_tiny_classifier(tmp_path / "cls") if task == TASK_CLASSIFICATION
              else save_tiny_causal_lm(tmp_path / "lm", "llama"))
    return cache.get_or_build(artifact_kind="hf-torch", name=f"tiny-{task}", recipe={"contract": task},
                              build=lambda out: [shutil.copy2(f, out / f.name) for f in source.iterdir()] and None,
                              weights=["model.safetensors"])


def _inputs(task, base):
    from transformers import AutoTokenizer

    from compressors.metrics import encode_sentences

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if task == TASK_CLASSIFICATION:
        return encode_sentences(tokenizer, SENTENCES, batch_size=len(SENTENCES))[0]
    ids = np.asarray([tokenizer("the movie is good. the film was awful.")["input_ids"]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


@pytest.mark.parametrize("name, task", CASES, ids=[f"{n}-{'cls' if t == TASK_CLASSIFICATION else 'lm'}"
                                                   for n, t in CASES])
def test_technique_builds_reloads_runs_and_stays_within_its_tolerance(name, task, contract_ctx, cache, tmp_path):
    technique = get_technique(name)
    missing = technique.missing_requirements()
    if missing:
        pytest.skip(f"{name} needs {missing}: pip install -e '.[bench]'")
    base = _base(task, tmp_path, cache)
    chain = parse_chain(name)
    built = build_chain(base, chain, contract_ctx, "tiny")

    # Reload from the cache alone: the manifest verifies, and the registered loader of its kind reads it.
    manifest, reason = verify_entry(built.path)
    assert manifest is not None, f"{name}: artifact not intact: {reason}"
    assert built.kind in ARTIFACT_LOADERS, f"{name}: no loader for artifact kind {built.kind!r}"
    again = build_chain(base, chain, contract_ctx, "tiny")
    assert again.key == built.key, f"{name}: rebuilt instead of reusing its cached artifact"
    predictor = load_predictor(again)
    json.dumps(predictor.placement())  # saved in every result row

    inputs = _inputs(task, base)
    got = predictor.logits(predictor.prepare(inputs))
    reference = load_predictor(base)
    ref = reference.logits(reference.prepare(inputs))
    assert got.shape == ref.shape, f"{name}: logits {got.shape}, fp32 {ref.shape}"
    assert np.isfinite(got).all(), f"{name}: non-finite logits"
    if technique.tolerance is not None:
        error = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        cpu = this_cpu()
        assert error <= technique.tolerance, (f"{name} on a tiny {task} model: relative logit error {error:.3f} > "
                                              f"its stated tolerance {technique.tolerance} ({cpu.name}, {cpu.isa})")
    if task == TASK_CAUSAL_LM and hasattr(predictor, "generate"):
        generated = predictor.generate(predictor.prepare(inputs), 2)
        assert generated.shape[1] == inputs["input_ids"].shape[1] + 2


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_technique_is_in_a_default_matrix(name):
    assert any(name in default_techniques(task) for task in TASKS), (
        f"{name} is registered but no task's default matrix runs it: set default_for on its Technique")


def test_every_artifact_kind_has_a_loader_and_a_producer():
    produced = {get_technique(n).artifact_kind for n in NAMES} - {None}
    assert produced <= set(ARTIFACT_LOADERS.names())
    assert set(ARTIFACT_LOADERS.names()) <= produced, "a loader whose kind no technique writes"


def test_registering_a_kind_without_a_loader_fails_loudly():
    from compressors.config import Config
    from compressors.techniques import ChainError, Technique, register_technique
    from compressors.techniques.base import TORCH_FINAL, TORCH_MODEL

    orphan = Technique(name="orphan-kind", summary="x", config=Config(), consumes=TORCH_MODEL, produces=TORCH_FINAL,
                       tasks=frozenset({TASK_CLASSIFICATION}), devices=frozenset({"cpu"}), build=lambda *a: {},
                       artifact_kind="no-such-kind", weights=("w",))
    with pytest.raises(ChainError, match="no loader is registered for that kind"):
        register_technique(orphan)
    assert "orphan-kind" not in TECHNIQUES


def test_default_matrices_are_derived_from_the_registry():
    lm = default_techniques(TASK_CAUSAL_LM)
    assert lm[0] == "fp32" and "dynamic-int8-attn" in lm and "layerdrop-2" not in lm
    cls = default_techniques(TASK_CLASSIFICATION)
    assert {"layerdrop-2", "layerdrop-2-noft", "distill-l3", "layerdrop-2+onnx-int8"} <= set(cls)
    assert "dynamic-int8-attn" not in cls  # registered for causal LMs only
