"""The contract every registered technique keeps (peft's ``TEST_CASES`` style: one table, shared tests).

For every registered technique (and the default names of parametrised families), on a tiny random
model of every task it applies to: it builds, its artifact reloads from the cache alone (manifest
verified) through the loader registered for its kind, the predictor runs, its placement is JSON,
and its logits stay within the technique's stated ``tolerance`` of fp32. Techniques that retrain
or remove layers state ``tolerance=None`` and are held to finite logits of the right shape.
Its artifact's files can travel through the remote cache (each of a type the remote cache pulls, or declared
by its kind's loader), or, where its loader unpickles, every class the pickle names is keyed (the library's
version in the cache key, or the package's own class path in the loader's ``pickles``).
Also: every registered technique is in some default matrix, and every artifact kind has a loader in the
execution layer and a technique that produces it. A plug-in that misses any of this fails here, not in a
user's run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest

from compressors.builders.techniques import TECHNIQUES, build_chain, default_techniques, get_technique, parse_chain
from compressors.builders.techniques.base import FAMILY_DEFAULTS, ONNX_GRAPH, OPENVINO_IR
from compressors.core.cache import verify_entry
from compressors.core.remote_cache import safe_relpath
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS
from compressors.execution.runtime import ARTIFACT_LOADERS, load_predictor
from compressors.machine.hardware import this_cpu
from tests.conftest import SENTENCES, make_tiny_tokenizer, pickled_classes, save_tiny_causal_lm, toy_data

NAMES = [*TECHNIQUES.names(), *FAMILY_DEFAULTS]
CASES = [(name, task) for name in NAMES for task in TASKS if task in get_technique(name).tasks]
# Over 5 s each on 2 cores, so out of `pytest -m "not slow"`: a stage that runs torch.compile when loaded
# (tens of seconds), an export to another runtime (ONNX Runtime, OpenVINO: 4-8 s of CPU each, even for
# the tiny model), and the family defaults that re-fine-tune the tiny model for many steps; LoRA and QLoRA train
# too (over a second each on an idle 2-core AMD EPYC Zen 4, which keeps the quick loop under a minute).
SLOW_TRAINING = {"distill-l3", "layerdrop-2", "lora", "qlora"}
EXPORTED = {ONNX_GRAPH, OPENVINO_IR}


def _case(name: str, task: str):
    chain = parse_chain(name)
    slow = name in SLOW_TRAINING or any(stage.compiles or stage.produces in EXPORTED for stage in chain.build_stages)
    return pytest.param(name, task, id=f"{name}-{'cls' if task == TASK_CLASSIFICATION else 'lm'}",
                        marks=[pytest.mark.slow] if slow else [])


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
def contract_ctx(ctx, tmp_path):
    """A build context whose model has a tiny pretrained encoder (its data is set per task: toy_data)."""
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

    from compressors.quality.metrics import encode_sentences

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if task == TASK_CLASSIFICATION:
        return encode_sentences(tokenizer, SENTENCES, batch_size=len(SENTENCES))[0]
    ids = np.asarray([tokenizer("the movie is good. the film was awful.")["input_ids"]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


@pytest.mark.parametrize("name, task", [_case(name, task) for name, task in CASES])
def test_technique_builds_reloads_runs_and_stays_within_its_tolerance(name, task, contract_ctx, cache, tmp_path):
    technique = get_technique(name)
    missing = technique.missing_requirements()
    if missing:
        pytest.skip(f"{name} needs {missing}: pip install -e '.[bench]'")
    base = _base(task, tmp_path, cache)
    chain = parse_chain(name)
    # Only a technique declaring uses_data may read the train rows (compressors.quality.taskdata.StageData):
    # one that reads them undeclared fails here with UndeclaredDataUse, so no data-built artifact
    # can be cached without its data's checksum.
    contract_ctx = dataclasses.replace(contract_ctx, data=toy_data(task))
    built = build_chain(base, chain, contract_ctx, "tiny")

    # Reload from the cache alone: the manifest verifies, and the registered loader of its kind reads it.
    manifest, reason = verify_entry(built.path)
    assert manifest is not None, f"{name}: artifact not intact: {reason}"
    assert built.kind in ARTIFACT_LOADERS, f"{name}: no loader for artifact kind {built.kind!r}"
    _check_files_travel_or_pickles_are_keyed(name, built, manifest, chain.build_stages[-1], contract_ctx)
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


def _check_files_travel_or_pickles_are_keyed(name, built, manifest, stage, ctx) -> None:
    loader = ARTIFACT_LOADERS.get(built.kind)
    if not loader.pickled:  # a file type the remote cache refuses would make every machine rebuild it
        for rel in manifest["files"]:
            safe_relpath(rel, built.kind, loader.remote_file_types)  # BadEntry: declare it on the kind's loader
        return
    # what unpickling imports: the standard library, the libraries whose versions key the artifact, or the
    # package's own classes the loader names (in the key too, so a moved class rebuilds instead of failing)
    recipe = stage.cache_recipe(built, stage.config.for_machine(ctx.cpu), ctx.data)
    keyed = set(recipe["versions"])
    for weights in stage.weights:
        for path in pickled_classes(built.file(weights)):
            top = path.split(".")[0]
            assert top in sys.stdlib_module_names or top in keyed or path in recipe.get("pickles", ()), (
                f"{name}: its pickle names {path}, which its cache key does not hold: add the package to "
                f"version_packages, or the class to its loader's pickles")


@pytest.mark.parametrize("name", NAMES)
def test_a_technique_built_from_data_has_the_data_checksum_in_its_cache_key(name, tiny_base):
    """Same model, two data sets: two artifacts for a technique that uses data, one for one that does not."""
    technique = get_technique(name)
    task = next(iter(technique.tasks))
    keys = [technique.cache_recipe(tiny_base, data=toy_data(task, data_name)) for data_name in ("one", "two")]
    if technique.uses_data:
        assert keys[0] != keys[1] and keys[0]["data"]["train_checksum"] == "one-checksum"
    else:
        assert keys[0] == keys[1] and "data" not in keys[0]


def test_data_built_techniques_are_the_ones_that_train_or_calibrate():
    uses = {n for n in NAMES if get_technique(n).uses_data}
    assert {"onnx-int8-static", "openvino-int8", "openvino-int4-wo", "layerdrop-2", "layerdrop-2-noft", "distill-l3",
            "lora-unmerged", "qlora", "lowrank-50-ft"} <= uses
    assert not uses & {"fp32", "dynamic-int8", "onnx-int8", "lowrank-50", "l1-50", "openvino-int8-wo", "bnb-nf4"}
    assert all(get_technique(n).uses_data for n in NAMES if get_technique(n).trains)


def test_a_technique_that_reads_rows_undeclared_is_stopped(tiny_base, ctx):
    from compressors.builders.techniques.base import Technique
    from compressors.quality.taskdata import UndeclaredDataUse

    sneaky = dataclasses.replace(get_technique("dynamic-int8"), name="sneaky",
                                 build=lambda parent, out, config, c: c.data.train())
    chain = dataclasses.replace(parse_chain("dynamic-int8"), name="sneaky", stages=(sneaky,), build_stages=(sneaky,))
    assert isinstance(sneaky, Technique)
    with pytest.raises(UndeclaredDataUse, match="without declaring uses_data"):
        build_chain(tiny_base, chain, dataclasses.replace(ctx, data=toy_data(TASK_CLASSIFICATION)), "tiny")
    reader = dataclasses.replace(sneaky, uses_data=True, build=lambda parent, out, config, c: c.data.eval())
    chain = dataclasses.replace(chain, stages=(reader,), build_stages=(reader,))
    with pytest.raises(UndeclaredDataUse, match="evaluation rows"):
        build_chain(tiny_base, chain, dataclasses.replace(ctx, data=toy_data(TASK_CLASSIFICATION)), "tiny")


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_technique_is_in_a_default_matrix(name):
    assert any(name in default_techniques(task) for task in TASKS), (
        f"{name} is registered but no task's default matrix runs it: set default_for on its Technique")


def test_every_artifact_kind_has_a_loader_in_the_execution_layer_and_a_producer():
    produced = {get_technique(n).artifact_kind for n in NAMES} - {None}
    assert produced <= set(ARTIFACT_LOADERS.names())
    assert set(ARTIFACT_LOADERS.names()) <= produced, "a loader whose kind no technique writes"
    for kind in ARTIFACT_LOADERS.names():  # techniques only build; the measuring process never imports them
        loader = ARTIFACT_LOADERS.get(kind)
        for function in (loader.load, loader.module):
            if function is not None:
                assert function.__module__.startswith("compressors.execution.loaders."), (
                    f"{kind}: its loader {function.__module__}.{function.__qualname__} is outside "
                    "compressors.execution.loaders")


def test_the_execution_layer_loads_every_kind_without_the_techniques():
    """The measuring process imports the runtime, not the builders: the loaders alone fill the registry."""
    import subprocess

    code = ("import sys; from compressors.execution.runtime import ARTIFACT_LOADERS; "
            "print(sorted(ARTIFACT_LOADERS.names())); "
            "print(any(m.startswith('compressors.builders') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    produced = sorted({get_technique(n).artifact_kind for n in NAMES} - {None})
    assert out == [str(produced), "False"]


def test_registering_a_kind_without_a_loader_fails_loudly():
    from compressors.builders.techniques import ChainError, Technique, register_technique
    from compressors.builders.techniques.base import TORCH_FINAL, TORCH_MODEL
    from compressors.core.config import Config

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


@pytest.mark.parametrize("fields, message", [
    (dict(remote_file_types=frozenset({"bin"})), "lowercase suffixes with their dot"),
    (dict(remote_file_types=".bin"), "give a set of suffixes"),
    (dict(pickled=True), "names the distributions"),
    (dict(pickles=("compressors.x.Cls",), pickle_packages=("torch",)), "give pickled=True"),
    (dict(pickled=True, pickle_packages=("torch",), remote_file_types=frozenset({".pt"})), "never travels"),
])
def test_a_malformed_loader_declaration_fails_when_declared(fields, message):
    from compressors.execution.runtime import ArtifactLoader

    with pytest.raises(ValueError, match=message):
        ArtifactLoader("torch", load_predictor, **fields)
