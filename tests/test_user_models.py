"""Models given on the command line (compressors/builders/models/user.py): a folder or ``hub:org/name`` next to
registered names, checked at collection with one-line messages, built into the artifact cache keyed on
its files' content. The models are tiny random ones written in the test."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from compressors.builders.context import BuildContext
from compressors.builders.models import ModelUnavailable
from compressors.builders.models.user import (
    RepeatedModelWarning,
    UserModelError,
    detect_task,
    model_slug,
    parse_model_argument,
    repeated_model,
    user_model_spec,
)
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from tests.conftest import SENTENCES, save_tiny_bert_classifier, save_tiny_causal_lm


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return save_tiny_bert_classifier(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture
def my_model(bert_folder, tmp_path) -> Path:
    """A private copy of the tiny BERT classifier, for a test to break or change."""
    return Path(shutil.copytree(bert_folder, tmp_path / "my-model"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))


# ----------------------------------------------------------------------------- naming

@pytest.mark.parametrize(("arg", "expected"), [
    ("minilm-sst2", ("registered", "minilm-sst2")),
    ("./my-model", ("local", "./my-model")),
    ("..", ("local", "..")),
    ("/abs/path", ("local", "/abs/path")),
    ("~/models/m", ("local", "~/models/m")),
    ("models/m", ("local", "models/m")),  # a separator makes it a path, never a hub id
    ("hub:org/name", ("hub", "org/name")),
    ("hub:distilbert/distilgpt2", ("hub", "distilbert/distilgpt2")),
])
def test_parse_model_argument(arg, expected):
    assert parse_model_argument(arg) == expected


@pytest.mark.parametrize("arg", ["hub:org", "hub:a/b/c", "hub:org/", "hub:/name", "hub:org/na me", "hub:org/a--b"])
def test_malformed_hub_id_is_refused(arg):
    with pytest.raises(UserModelError, match=rf"^--models {re.escape(arg)}: a hub id is hub:org/name"):
        parse_model_argument(arg)


def test_task_is_detected_from_the_architecture_class():
    assert detect_task({"architectures": ["BertForSequenceClassification"]}, "x") == TASK_CLASSIFICATION
    assert detect_task({"architectures": ["LlamaForCausalLM"]}, "x") == TASK_CAUSAL_LM
    with pytest.raises(UserModelError, match=re.escape(
            "--models ./m: BertModel is neither *ForSequenceClassification (sequence-classification) "
            "nor *ForCausalLM (causal-lm)")):
        detect_task({"architectures": ["BertModel"]}, "--models ./m")
    with pytest.raises(UserModelError, match=r'^--models ./m: config.json has no "architectures".*task is unknown'):
        detect_task({"model_type": "bert"}, "--models ./m")


@pytest.mark.parametrize(("given", "taken", "slug"), [
    ("./My Model_v2!", set(), "my-model-v2"),
    ("/models/gpt2/", {"gpt2"}, "gpt2-2"),  # a registered name is never shadowed
    ("gpt2", {"gpt2", "gpt2-2"}, "gpt2-3"),
    ("org/Name.V2", set(), "name.v2"),
    ("___", set(), "model"),
    (".", set(), "model"),
])
def test_model_slug(given, taken, slug):
    assert model_slug(given, taken) == slug



def test_one_folder_spelled_three_ways_is_one_model_said_once_each(bert_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(bert_folder.parent)
    (tmp_path / "link").symlink_to(bert_folder)
    seen: dict[str, str] = {}
    assert not repeated_model("./tiny-bert", "./tiny-bert", seen)
    with pytest.warns(RepeatedModelWarning, match=re.escape(
            f"--models ./tiny-bert/: the same folder as ./tiny-bert ({bert_folder}); benchmarked once")) as said:
        assert repeated_model("./tiny-bert/", "./tiny-bert/", seen)
    assert len(said) == 1
    with pytest.warns(RepeatedModelWarning, match=re.escape(f"--models {tmp_path}/link: the same folder as ")):
        assert repeated_model(f"{tmp_path}/link", f"{tmp_path}/link", seen)
    # a model named in the settings table is matched by the folder it names
    with pytest.warns(RepeatedModelWarning, match=r"^--models reviews: the same folder as ./tiny-bert"):
        assert repeated_model("reviews", str(bert_folder / ".." / "tiny-bert"), seen)
    assert seen == {str(bert_folder): "./tiny-bert"}


def test_other_folders_hub_ids_and_registered_names_are_not_repeats(bert_folder, tmp_path):
    import warnings

    seen: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not repeated_model(str(bert_folder), str(bert_folder), seen)
        assert not repeated_model("./other", "./other", seen)
        assert not repeated_model("hub:org/name", "hub:org/name", seen)
        assert not repeated_model("minilm-sst2", "minilm-sst2", seen)
    with pytest.warns(RepeatedModelWarning, match=r"the same hub model as hub:org/name \(hub:org/name\)"):
        assert repeated_model("team", "hub:org/name", seen)


# ----------------------------------------------------------------------------- bad folders

def no_such_folder(folder):
    return str(folder / "absent"), rf"no such folder {re.escape(str(folder / 'absent'))}$"


def not_a_folder(folder):
    return str(folder / "config.json"), re.escape(f"{folder}/config.json is not a folder (give the folder that "
                                                  "holds config.json)")


def missing_config(folder):
    (folder / "config.json").unlink()
    return str(folder), re.escape(f"no config.json in {folder} (a model folder as save_pretrained writes it)")


def bad_json(folder):
    (folder / "config.json").write_text('{"architectures": ["BertForSequenceClassification"],')
    return str(folder), re.escape(f"{folder}/config.json is not valid JSON (Expecting property name")


def unsupported_class(folder):
    edit_config(folder, architectures=["BertModel"])
    return str(folder), re.escape("BertModel is neither *ForSequenceClassification (sequence-classification) nor "
                                  "*ForCausalLM (causal-lm)")


def no_architectures(folder):
    edit_config(folder, architectures=None)
    return str(folder), r'config.json has no "architectures"'


def remote_code(folder):
    edit_config(folder, auto_map={"AutoModelForSequenceClassification": "modeling_mine.MineModel"})
    return str(folder), re.escape("needs remote code (auto_map in config.json); pass --trust-remote-code if you "
                                  "trust it") + "$"


def missing_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    # transformers 5 would make a BERT tokenizer of its special tokens alone: every word [UNK]
    return str(folder), (re.escape("missing tokenizer files (tokenizer.json / vocab.txt / tokenizer_config.json ...)")
                         + re.escape(f" in {folder}: AutoTokenizer made a BertTokenizer with no vocabulary beyond its "
                                     "5 special tokens"))


def missing_weights(folder):
    (folder / "model.safetensors").unlink()
    return str(folder), re.escape(f"no weights in {folder} (model.safetensors, sharded")


def corrupt_safetensors(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # an interrupted copy
    return str(folder), r"weights do not load: model.safetensors: Error while deserializing header"


def missing_shard(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"bert.embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
                            "classifier.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return str(folder), r"weights do not load: model.safetensors.index.json names model-00002-of-00002.safetensors"


BAD_FOLDERS = [no_such_folder, not_a_folder, missing_config, bad_json, unsupported_class, no_architectures,
               remote_code, missing_tokenizer, missing_weights, corrupt_safetensors, missing_shard]


@pytest.mark.parametrize("breaks", BAD_FOLDERS, ids=[f.__name__ for f in BAD_FOLDERS])
def test_bad_folder_is_refused_at_collection_in_one_line(my_model, breaks):
    arg, message = breaks(my_model)
    with pytest.raises(UserModelError, match=rf"^--models {re.escape(arg)}: {message}") as caught:
        user_model_spec(arg)
    assert "\n" not in str(caught.value)


def test_causal_lm_without_tokenizer_files_is_refused(tmp_path):
    folder = save_tiny_causal_lm(tmp_path / "lm")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(UserModelError, match=r"missing tokenizer files \(tokenizer.json / .*\) in .*lm: ") as caught:
        user_model_spec(str(folder))
    assert "\n" not in str(caught.value)  # transformers' own message spans lines


def test_remote_code_is_accepted_when_trusted(my_model):
    edit_config(my_model, auto_map={"AutoModelForSequenceClassification": "modeling_mine.MineModel"})
    spec = user_model_spec(str(my_model), trust_remote_code=True)
    assert spec.trust_remote_code and spec.task == TASK_CLASSIFICATION


def test_registered_name_is_not_a_user_model():
    with pytest.raises(UserModelError, match="not a folder .* or hub id"):
        user_model_spec("minilm-sst2")



# ----------------------------------------------------------------------------- pickle weights

def to_pickle_weights(folder: Path) -> Path:
    """The folder with its weights as ``torch.save`` writes a state dict (``pytorch_model.bin``), the only
    weight file left, as in checkpoints saved before safetensors."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder / "pytorch_model.bin"


class RunsCode:
    """Unpickled in full, it would run a shell command (``marker`` touched): the classic pickle payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickle_weights_with_a_payload_stop_at_collection_in_one_line(my_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    marker = tmp_path / "payload-ran"
    state = {**load_file(my_model / "model.safetensors"), "classifier.extra": RunsCode(marker)}
    torch.save(state, my_model / "pytorch_model.bin")
    (my_model / "model.safetensors").unlink()
    with pytest.raises(UserModelError, match=rf"^--models {re.escape(str(my_model))}: weights do not load: "
                                             r"pytorch_model.bin: refused by PyTorch's weights-only loader.*"
                                             r"GLOBAL (posix|os).system") as caught:
        user_model_spec(str(my_model))
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)
    assert not marker.exists()  # refused before the call: the payload never ran


def test_truncated_bin_weights_stop_at_collection_in_one_line(my_model):
    weights = to_pickle_weights(my_model)
    weights.write_bytes(weights.read_bytes()[:2000])  # an interrupted copy
    with pytest.raises(UserModelError, match=rf"^--models {re.escape(str(my_model))}: weights do not load: "
                                             r"pytorch_model.bin: not a complete PyTorch checkpoint \(.*zip archive"
                                             ) as caught:
        user_model_spec(str(my_model))
    assert "\n" not in str(caught.value)


def test_a_bin_shard_named_by_its_index_is_checked_too(my_model):
    import torch
    from safetensors.torch import load_file

    state = load_file(my_model / "model.safetensors")
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[:3], "pytorch_model-00002-of-00002.bin": names[3:]}
    for shard, keys in halves.items():
        torch.save({k: state[k] for k in keys}, my_model / shard)
    (my_model / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {k: shard for shard, keys in halves.items() for k in keys}}))
    (my_model / "model.safetensors").unlink()
    assert user_model_spec(str(my_model)).task == TASK_CLASSIFICATION  # whole shards load
    (my_model / "pytorch_model-00002-of-00002.bin").write_bytes(b"\x80\x02}q\x00(X")  # a cut legacy pickle
    with pytest.raises(UserModelError, match=r"weights do not load: pytorch_model-00002-of-00002.bin: not a "
                                             r"complete PyTorch checkpoint"):
        user_model_spec(str(my_model))


def test_a_pickle_of_something_else_than_tensors_is_refused(my_model):
    import torch

    to_pickle_weights(my_model)
    torch.save({"epoch": 3, "state_dict": {}}, my_model / "pytorch_model.bin")  # a trainer's checkpoint
    with pytest.raises(UserModelError, match=r"pytorch_model.bin: holds int under 'epoch', not a state dict"):
        user_model_spec(str(my_model))


def test_bin_weights_build_with_the_original_logits(my_model, ctx):
    import torch
    from transformers import AutoModelForSequenceClassification

    from compressors.execution.runtime import load_predictor

    reference = AutoModelForSequenceClassification.from_pretrained(my_model).eval()
    to_pickle_weights(my_model)
    spec = user_model_spec(str(my_model))
    artifact = spec.build_base(spec, ctx)
    assert artifact.manifest["weights"] == ["model.safetensors"]  # re-saved as safetensors
    assert "pytorch_model.bin" in artifact.manifest["recipe"]["files"]  # keyed on the pickle's content
    predictor = load_predictor(artifact)
    ids = {"input_ids": np.array([[2, 7, 9, 3]]), "attention_mask": np.ones((1, 4), dtype=np.int64)}
    with torch.no_grad():
        torch.testing.assert_close(predictor.run(predictor.prepare(ids)),
                                   reference(**{k: torch.from_numpy(v) for k, v in ids.items()}).logits)


def test_weights_are_the_files_transformers_loads_first(my_model):
    from compressors.builders.models.user import weight_files

    (my_model / "model.safetensors.index.json").write_text('{"weight_map": {"x": "absent.safetensors"}}')
    assert weight_files(my_model, "x") == [my_model / "model.safetensors"]  # the single file wins, as there


# ----------------------------------------------------------------------------- building

def test_folder_builds_a_base_with_the_original_logits_keyed_on_content(my_model, ctx):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compressors.execution.runtime import load_predictor
    from compressors.quality.metrics import encode_sentences

    spec = user_model_spec(str(my_model), taken={"minilm-sst2", "my-model"})
    assert (spec.name, spec.task, spec.source, spec.origin, spec.user) == (
        "my-model-2", TASK_CLASSIFICATION, "local", str(my_model), True)
    assert spec.description == f"{my_model} (BertForSequenceClassification, given on the command line)"
    assert spec.to_dict()["origin"] == str(my_model) and spec.to_dict()["user"] is True
    assert spec.encoder_layers() == 2  # from config.json, as for registered models
    spec.check_available(spec, ctx)

    artifact = spec.build_base(spec, ctx)
    assert artifact.kind == "hf-torch" and artifact.manifest["weights"] == ["model.safetensors"]
    assert artifact.meta["origin"] == str(my_model) and artifact.meta["task"] == TASK_CLASSIFICATION
    assert artifact.meta["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    assert sorted(artifact.manifest["recipe"]["files"]) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    predictor = load_predictor(artifact)
    batch = encode_sentences(AutoTokenizer.from_pretrained(artifact.path), SENTENCES, batch_size=len(SENTENCES))[0]
    reference = AutoModelForSequenceClassification.from_pretrained(my_model).eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor.run(predictor.prepare(batch)),
                                   reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits)

    (my_model / "README.md").write_text("# my model\n")  # not part of the model
    again = user_model_spec(str(my_model), taken={"minilm-sst2", "my-model"})
    assert again.build_base(again, ctx).path == artifact.path  # built once, then read from the cache

    save_tiny_bert_classifier(my_model, seed=1)  # new weights in the same folder
    changed = user_model_spec(str(my_model), taken={"minilm-sst2", "my-model"})
    assert changed.build_base(changed, ctx).key != artifact.key


def test_causal_lm_folder_builds_with_the_original_logits(tmp_path, ctx):
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.execution.runtime import load_predictor

    folder = save_tiny_causal_lm(tmp_path / "Tiny_Llama")
    spec = user_model_spec(str(folder))
    assert (spec.name, spec.task) == ("tiny-llama", TASK_CAUSAL_LM)
    artifact = spec.build_base(spec, ctx)
    assert artifact.meta["architecture"] == "LlamaForCausalLM" and "id2label" not in artifact.meta
    predictor = load_predictor(artifact)
    ids = predictor.prepare({"input_ids": np.array([[3, 9, 12, 4, 7]])})
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor.run(ids), reference(**ids).logits)


# ----------------------------------------------------------------------------- hub ids

REPO = "compressbench-test/Tiny-User-BERT"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def populate_hf_cache(hub_cache: Path, source: Path) -> None:
    """Lay files out the way huggingface_hub stores a downloaded snapshot."""
    repo_dir = hub_cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    shutil.copytree(source, snapshot)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)


def test_cached_hub_id_is_checked_at_collection_and_builds(bert_folder, tmp_path, cache):
    populate_hf_cache(tmp_path / "hub", bert_folder)
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "hub", hf_local_only=True, progress=False)
    spec = user_model_spec(f"hub:{REPO}", ctx=ctx, taken={"minilm-sst2"})
    assert (spec.name, spec.source, spec.repo_id, spec.task, spec.origin) == (
        "tiny-user-bert", "hub", REPO, TASK_CLASSIFICATION, f"hub:{REPO}")
    assert spec.is_hub and spec.encoder_layers() == 2
    artifact = spec.build_base(spec, ctx)
    assert (artifact.meta["repo_id"], artifact.meta["commit"]) == (REPO, COMMIT)


def test_cached_hub_id_gets_the_folder_checks(bert_folder, tmp_path, cache):
    populate_hf_cache(tmp_path / "hub", bert_folder)
    (tmp_path / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT / "model.safetensors").unlink()
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "hub", hf_local_only=True, progress=False)
    with pytest.raises(UserModelError, match=rf"^--models hub:{REPO}: no weights in "):
        user_model_spec(f"hub:{REPO}", ctx=ctx)


def test_unavailable_hub_id_is_deferred_to_a_skip(tmp_path, cache):
    ctx = BuildContext(cache=cache, hf_cache_dir=tmp_path / "empty", hf_local_only=True, progress=False)
    spec = user_model_spec(f"hub:{REPO}", ctx=ctx)  # no error at collection: nothing could be checked
    assert spec.repo_id == REPO and spec.user and "not in the local Hugging Face cache" in spec.description
    with pytest.raises(ModelUnavailable, match=rf"{REPO} is not in the local Hugging Face cache.*hf download"):
        spec.check_available(spec, ctx)
