"""Your own model and your own data through the suite's command line: collection, bad input (one line,
before any work), the settings table and its precedence, the plan line, and one end-to-end run of a
tiny three-class pair-input model with string labels through the real harness."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from compressors.core.settings import SettingsError, read_table, resolve_settings
from tests.test_suite_options import ROOT, run_pytest

NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
PREMISES = ["the movie is good", "a great film", "the film was awful", "very poor", "a very good movie",
            "the film is not great", "fine movie", "not bad"]


def save_nli_model(folder: Path) -> Path:
    """A random 2-layer BERT with a 3-label head named like an NLI model's."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tests.conftest import make_tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = make_tiny_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3, id2label=NLI_LABELS,
                        label2id={v: k for k, v in NLI_LABELS.items()}, initializer_range=0.2)
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def nli_rows(n: int = 24) -> list[list]:
    return [[PREMISES[i % 8], PREMISES[(3 * i + 1) % 8], ["Entailment", "neutral", "CONTRADICTION"][i % 3]]
            for i in range(n)]


@pytest.fixture(scope="module")
def nli(tmp_path_factory):
    root = tmp_path_factory.mktemp("nli")
    model = save_nli_model(root / "My NLI model")
    data = write_csv(root / "dev.csv", ["premise", "hypothesis", "gold"], nli_rows())
    train = write_csv(root / "train.csv", ["premise", "hypothesis", "gold"], nli_rows(64))
    return model, data, train


def _nli_args(model, data, *extra):
    return (str(ROOT / "bench"), "--collect-only", "-q", "-m", "cpu", "--models", f"{model},minilm-sst2",
            "--dataset", str(data), "--text-column", "premise", "--text-pair-column", "hypothesis",
            "--label-column", "gold", *extra)


@pytest.mark.slow
def test_a_folder_and_a_registered_model_are_collected_side_by_side_with_a_plan(nli, tmp_path):
    model, data, _ = nli
    out = run_pytest(*_nli_args(model, data, "--techniques", "fp32,onnx-int8,onnx-int8-static,layerdrop-1",
                                "--cache-dir", str(tmp_path / "cache"), "-k", "bs32"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ids = {line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "::" in line}
    assert {"my-nli-model-fp32-cpu-bs32", "my-nli-model-onnx-int8-cpu-bs32", "minilm-sst2-fp32-cpu-bs32"} <= ids
    plan = next(line for line in out.stdout.splitlines() if line.startswith("plan: my-nli-model"))
    # no train rows: onnx-int8-static (calibration) and layerdrop-1 (sensitivity, re-finetune) are not planned
    assert "no train rows" in plan and "3 artifact(s) to build (0 training)" in plan and "GFLOP/s" in plan


@pytest.mark.slow
def test_calibrating_and_training_techniques_skip_without_train_rows_and_run_with_them(nli, tmp_path):
    model, data, train = nli
    base = _nli_args(model, data, "--techniques", "onnx-int8-static", "-k", "my-nli and bs32", "-rs",
                     "--cache-dir", str(tmp_path / "cache"))
    out = run_pytest(*[a for a in base if a != "--collect-only"], "--benchmark-disable", cwd=tmp_path)
    assert "1 skipped" in out.stdout and "give --dataset-train FILE" in out.stdout, out.stdout[-3000:]
    planned = run_pytest(*base, "--dataset-train", str(train), cwd=tmp_path)
    assert "64 train rows" in planned.stdout and "onnx" in planned.stdout, planned.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(("change", "message"), [
    ({"model": "nowhere"}, "no such folder"),
    ({"data": "missing.csv"}, "--dataset {dir}/missing.csv: no such file"),
    ({"data": "dev.txt"}, "unsupported file type '.txt'"),
    ({"flags": ["--label-column", "label"]}, "no column 'label' (set by --label-column); the file has columns"),
    ({"rows": [["a", "b", "positive"], ["c", "d", "negative"]]}, "are not the model's labels"),
    ({"rows": [["a", "b", "neutral"], ["c", "d", "neutral"]]}, "at least 2 distinct labels"),
    ({"rows": []}, "no data rows"),
    ({"bytes": b"premise,hypothesis,gold\n\xe9t\xe9,b,neutral\n"}, "not UTF-8 text"),
    ({"no_data": True}, "give its labelled evaluation data with --dataset FILE"),
])
def test_bad_input_is_one_line_at_collection(nli, tmp_path, change, message):
    model, _, _ = nli
    data = tmp_path / change.get("data", "dev.csv")
    if "bytes" in change:
        data.write_bytes(change["bytes"])
    elif data.suffix == ".txt":
        data.write_text("premise,hypothesis,gold\na,b,neutral\n")
    elif "rows" in change:
        write_csv(data, ["premise", "hypothesis", "gold"], change["rows"])
    elif "data" not in change:
        write_csv(data, ["premise", "hypothesis", "gold"], nli_rows())
    args = [str(ROOT / "bench"), "--collect-only", "-q", "--models", str(tmp_path / change.get("model", model)),
            "--text-column", "premise", "--text-pair-column", "hypothesis", "--label-column", "gold",
            *change.get("flags", [])]
    if not change.get("no_data"):
        args += ["--dataset", str(data)]
    out = run_pytest(*args, cwd=tmp_path)
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    assert message.format(dir=tmp_path) in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_same_folder_twice_is_one_model(nli, tmp_path):
    """``./m,./m/`` and a symlink to ``./m``: one model, its tests and its plan once, each repeat said in one
    warning line (before: benchmarked as m, m-2, m-3, each plan announcing a build that never happened)."""
    model, data, _ = nli
    (tmp_path / "link").symlink_to(model)
    out = run_pytest(*_nli_args(f"{model},{model}/,{tmp_path / 'link'}", data, "--techniques", "fp32", "-k",
                                "my-nli and bs1", "--cache-dir", str(tmp_path / "cache")), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ids = [line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "::" in line]
    assert ids == ["my-nli-model-fp32-cpu-bs1"]
    plans = [line for line in out.stdout.splitlines() if line.startswith("plan: ")]
    assert len(plans) == 1 and plans[0].startswith("plan: my-nli-model ("), plans
    said = [line for line in out.stderr.splitlines() if "RepeatedModelWarning" in line]
    assert said == [f"compressbench:0: RepeatedModelWarning: --models {model}/: the same folder as {model} "
                    f"({model.resolve()}); benchmarked once",
                    f"compressbench:0: RepeatedModelWarning: --models {tmp_path / 'link'}: the same folder as "
                    f"{model} ({model.resolve()}); benchmarked once"], out.stderr[-2000:]


@pytest.mark.slow
def test_pickle_weights_with_a_payload_stop_the_run_at_collection_in_one_line(nli, tmp_path):
    """Through the command line: before, the weights-only loader refused the file only mid-test (a traceback of
    about 390 lines); now collection stops with the one line, and the payload never runs."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from tests.test_user_models import RunsCode

    model, data, _ = nli
    folder = Path(shutil.copytree(model, tmp_path / "pickled"))
    marker = tmp_path / "payload-ran"
    torch.save({**load_file(folder / "model.safetensors"), "x": RunsCode(marker)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    out = run_pytest(*_nli_args(folder, data, "--techniques", "fp32"), cwd=tmp_path)
    assert out.returncode == 4, out.stdout[-2000:] + out.stderr[-2000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert "Traceback" not in out.stderr and len(error) == 1, out.stderr[-2000:]
    assert error[0].startswith(f"ERROR: --models {folder}: weights do not load: pytorch_model.bin: refused by "
                               "PyTorch's weights-only loader")
    assert not marker.exists()


def test_data_options_without_a_user_model_are_refused(tmp_path):
    out = run_pytest("bench", "--collect-only", "-q", "--models", "minilm-sst2", "--dataset", str(tmp_path / "x.csv"))
    assert out.returncode == 4 and "apply to models given by path or hub id" in out.stderr


def test_settings_precedence_defaults_table_command_line(tmp_path):
    table = {"max-build-seconds": 600, "techniques": ["fp32", "onnx-int8"], "text_column": "review",
             "dataset": "data/dev.csv"}
    settings = resolve_settings({"max_build_seconds": None, "techniques": "fp32"}, table, tmp_path / "pyproject.toml")
    assert settings.max_build_seconds == 600.0 and settings.sources["max_build_seconds"].endswith("pyproject.toml")
    assert settings.techniques == ["fp32"] and settings.sources["techniques"] == "command line"  # the flag wins
    assert settings.max_measure_seconds == 900.0 and settings.sources["max_measure_seconds"] == "default"
    assert settings.text_column == "review" and settings.dataset == str(tmp_path / "data" / "dev.csv")  # file-relative
    assert set(settings.to_dict()) == {"max_build_seconds", "techniques", "text_column", "dataset"}


@pytest.mark.parametrize(("table", "message"), [
    ({"max-build-second": 1}, "unknown key 'max-build-second'"),
    ({"max-build-seconds": "soon"}, "expected a finite number of seconds > 0"),
    ({"malloc": "fast"}, "valid choices: steady, as-is"),
    ({"model": {"m": {"path": "x", "hub": "a/b"}}}, "exactly one of path"),
    ({"model": {"m": {"path": "x", "colour": "red"}}}, "unknown keys ['colour']"),
])
def test_bad_settings_tables_name_the_key(tmp_path, table, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_settings({}, table, tmp_path / "pyproject.toml")


@pytest.mark.slow
def test_a_pyproject_table_names_a_model_with_its_data(nli, tmp_path):
    model, data, train = nli
    (tmp_path / "pyproject.toml").write_text(f"""
[tool.compressbench]
techniques = "fp32,onnx-int8"
[tool.compressbench.model.nli]
path = "{model}"
dataset-eval = "{data}"
dataset-train = "{train}"
text-column = "premise"
text-pair-column = "hypothesis"
label-column = "gold"
""")
    assert read_table(tmp_path / "pyproject.toml")["model"]["nli"]["label-column"] == "gold"
    out = run_pytest(str(ROOT / "bench"), "--collect-only", "-q", "-m", "cpu", "--models", "nli", "-k", "bs1",
                     "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = sorted(line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "::" in line)
    assert ids == ["nli-fp32-cpu-bs1", "nli-onnx-int8-cpu-bs1"]
    assert "plan: nli" in out.stdout and "64 train rows" in out.stdout
    # the command line wins over the table
    out = run_pytest(str(ROOT / "bench"), "--collect-only", "-q", "-m", "cpu", "--models", "nli", "-k", "bs1",
                     "--techniques", "fp32", cwd=tmp_path)
    assert [line for line in out.stdout.splitlines() if "::" in line][0].endswith("[nli-fp32-cpu-bs1]")


@pytest.mark.slow
def test_a_three_class_pair_input_model_with_string_labels_runs_end_to_end(nli, tmp_path):
    """fp32, dynamic-int8 and onnx-int8 through the real harness: built, measured in isolated processes,
    timed, paired with fp32, judged (budgets from --budgets FILE, in bench/budgets.toml's form, since a
    random model's accuracy moves by whole rows), saved with the rows it used."""
    model, data, train = nli
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("".join(f'["{t}".models.my-nli-model]\nmax_accuracy_drop_pp = 100\n'
                               f'max_peak_memory_vs_fp32 = 50\n' for t in ("dynamic-int8", "onnx-int8")))
    storage = tmp_path / "store"
    out = run_pytest("bench", "-m", "cpu", "--models", str(model), "--dataset-eval", str(data), "--dataset-train",
                     str(train), "--text-column", "premise", "--text-pair-column", "hypothesis", "--label-column",
                     "gold", "--techniques", "fp32,dynamic-int8,onnx-int8", "-k", "bs1", "--budgets", str(budgets),
                     "--cache-dir", str(tmp_path / "cache"), "--benchmark-min-rounds=1", "--benchmark-max-time=0.02",
                     f"--benchmark-storage=file://{storage}", "--benchmark-save=mine", cwd=ROOT)
    assert "3 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
    saved = json.loads(next(storage.rglob("*_mine.json")).read_text())
    rows = {b["extra_info"]["technique"]: b["extra_info"] for b in saved["benchmarks"]}
    assert set(rows) == {"fp32", "dynamic-int8", "onnx-int8"}
    used = rows["onnx-int8"]["data"]
    assert used["eval"]["rows"] == 24 and used["eval"]["pairs"] and used["eval"]["labels"] == {"0": 8, "1": 8, "2": 8}
    assert used["label_map"] == {"0": "entailment", "1": "neutral", "2": "contradiction"} and "train" not in used
    assert used["columns"] == {"text": "premise", "pair": "hypothesis", "label": "gold"}
    assert rows["onnx-int8"]["eval"]["split"] == "file:dev.csv"
    assert rows["onnx-int8"]["budget"]["max_peak_memory_vs_fp32"] == 50
    assert saved["compressbench"]["plans"][0]["model"] == "my-nli-model"


@pytest.mark.slow
def test_a_second_machine_pulls_from_the_remote_cache_and_only_measures(nli, tmp_path):
    """Through the real harness: a rw run builds and pushes to a file:// remote; a run with an empty local
    cache pulls every artifact (no build), measures on its own, and its time line books the pull."""
    model, data, _ = nli
    remote = f"file://{tmp_path / 'bucket'}"
    common = ["bench", "-m", "cpu", "--models", str(model), "--dataset", str(data), "--text-column", "premise",
              "--text-pair-column", "hypothesis", "--label-column", "gold", "--techniques", "fp32,onnx-int8", "-k",
              "bs1", "--budgets", str(_generous_budgets(tmp_path)), "--benchmark-min-rounds=1",
              "--benchmark-max-time=0.02", f"--benchmark-storage=file://{tmp_path / 'store'}", "--cache-remote", remote]
    first = run_pytest(*common, "--cache-dir", str(tmp_path / "builder"), "--cache-remote-mode", "rw",
                       "--benchmark-save=builder", cwd=ROOT)
    assert "2 passed" in first.stdout, first.stdout[-3000:] + first.stderr[-2000:]
    assert "3 built, 3 pushed" in first.stdout  # the folder's copy, the ONNX export, its int8 quantization
    second = run_pytest(*common, "--cache-dir", str(tmp_path / "measurer"), "--benchmark-save=measurer", cwd=ROOT)
    assert "2 passed" in second.stdout, second.stdout[-3000:] + second.stderr[-2000:]
    assert f"remote cache {remote} (ro): 3 pulled" in second.stdout
    saved = json.loads(next((tmp_path / "store").rglob("*_measurer.json")).read_text())["compressbench"]
    assert saved["remote_cache"]["counts"] == {"pulled": 3} and "pull" in saved["time_s"]["phases_s"]
    assert all(e["seconds"] > 0 and e["bytes"] > 0 for e in saved["remote_cache"]["events"])  # a tiny model's pull
    # takes milliseconds, under the time line's half-second floor: the README's MiniLM run shows it there
    assert not list((tmp_path / "measurer").rglob("*.building-*"))


def _generous_budgets(tmp_path: Path) -> Path:
    budgets = tmp_path / "generous.toml"
    budgets.write_text('["onnx-int8".models.my-nli-model]\nmax_accuracy_drop_pp = 100\nmax_peak_memory_vs_fp32 = 50\n')
    return budgets


def test_fp32_accuracy_near_chance_warns_once_naming_the_labels(tmp_path):
    import types

    from bench.resources import Resources
    from bench.rows import NearChanceWarning, Rows
    from compressors.builders.context import BuildContext
    from compressors.core.cache import ArtifactCache
    from compressors.quality.data import TextClassificationSplit
    from compressors.quality.taskdata import InMemoryData

    rows = TextClassificationSplit("eval", ("a",) * 10, (0,) * 6 + (1,) * 4, "mine.csv", "x")
    data = InMemoryData(eval_rows=rows, labels=((0, "negative"), (1, "positive")))
    resources = Resources(BuildContext(cache=ArtifactCache(tmp_path), progress=False), types.SimpleNamespace())
    checker = Rows(resources, {})
    model = types.SimpleNamespace(name="mine")
    with pytest.warns(NearChanceWarning, match=r"mine: fp32 accuracy 62.00% on mine.csv is within 5 pp of chance "
                                               r"\(60.00%\).*\{0: 'negative', 1: 'positive'\}"):
        checker.warn_near_chance(model, 62.0, data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checker.warn_near_chance(model, 62.0, data)  # once per model
        checker.warn_near_chance(types.SimpleNamespace(name="good"), 90.0, data)  # well above chance: silent


def test_setting_choices_are_the_ones_their_consumers_know():
    from compressors.core.remote_cache import MODES
    from compressors.core.settings import BY_NAME
    from compressors.machine.allocator import MALLOC_MODES
    from compressors.machine.placement import ON_FALLBACK

    assert BY_NAME["on_fallback"].choices == tuple(ON_FALLBACK)
    assert BY_NAME["cache_remote_mode"].choices == MODES
    assert set(BY_NAME["malloc"].choices) == set(MALLOC_MODES)
