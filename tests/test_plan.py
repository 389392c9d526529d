"""The plan line (bench/plan.py): what a run will build, train and measure for a model given by path, and
an estimate; what the cache already holds is not counted."""

from __future__ import annotations

import csv

import pytest

from bench.cases import cases
from bench.plan import plan_model
from compressors.builders.context import BuildContext
from compressors.builders.models.user import user_model_spec
from compressors.core.cache import ArtifactCache
from compressors.core.task_kinds import TASK_CLASSIFICATION
from compressors.machine.hardware import this_cpu
from compressors.quality.taskdata import FileClassificationData
from compressors.quality.userdata import Columns
from tests.conftest import SENTENCES, save_tiny_bert_classifier

PROBE = {"kernels": {"fp32-gemm": {"gops": 100.0}}}
TECHNIQUES = ["fp32", "onnx-int8", "onnx-int8-static", "layerdrop-1"]


@pytest.fixture
def model_and_files(tmp_path):
    folder = save_tiny_bert_classifier(tmp_path / "Tiny Model")
    spec = user_model_spec(str(folder))
    for name, n in (("dev.csv", 16), ("train.csv", 400)):
        with open(tmp_path / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence", "label"])
            writer.writerows([SENTENCES[i % 8], i % 2] for i in range(n))
    return spec, tmp_path / "dev.csv", tmp_path / "train.csv"


def _plan(spec, data, cache):
    selected = cases(TASK_CLASSIFICATION, [spec], TECHNIQUES, tiers=("cpu",), batch_sizes=(32,))
    return plan_model(spec, selected, data, cache, this_cpu(), PROBE)


def test_plan_counts_builds_trainings_and_measurements_and_skips_what_needs_train_rows(model_and_files, tmp_path):
    spec, dev, train = model_and_files
    labels = ((0, "LABEL_0"), (1, "LABEL_1"))
    cache = ArtifactCache(tmp_path / "cache")
    with_train = _plan(spec, FileClassificationData(dev, train, Columns(), labels), cache)
    assert with_train.builds == ["tiny-model (copy of the folder)", "tiny-model-onnx-fp32", "tiny-model-onnx-int8",
                                 "tiny-model-onnx-int8-static", "tiny-model-layerdrop-1"]
    assert with_train.trainings == ["tiny-model-layerdrop-1"] and len(with_train.measurements) == 4
    assert with_train.train_rows == 400 and with_train.eval_rows == 16 and with_train.tests == 4
    # a tiny model trains in no time; the fixed costs of building, measuring and timing stay
    assert all(with_train.seconds[k] > 0 for k in ("building", "measuring", "timing")), with_train.seconds
    assert "5 artifact(s) to build (1 training)" in with_train.line() and "GFLOP/s" in with_train.line()

    eval_only = _plan(spec, FileClassificationData(dev, None, Columns(), labels), cache)
    assert len(eval_only.builds) == 3 and not eval_only.trainings and eval_only.seconds["training"] == 0
    assert len(eval_only.measurements) == 2 and "no train rows" in eval_only.line()


def test_what_the_cache_holds_is_not_counted(model_and_files, tmp_path):
    spec, dev, _ = model_and_files
    data = FileClassificationData(dev, None, Columns(), ((0, "LABEL_0"), (1, "LABEL_1")))
    cache = ArtifactCache(tmp_path / "cache")
    before = _plan(spec, data, cache)
    spec.build_base(spec, BuildContext(cache=cache, progress=False, data=data))
    after = _plan(spec, data, cache)
    assert before.builds[0].endswith("(copy of the folder)") and after.builds == before.builds[1:]
    assert after.seconds["building"] < before.seconds["building"]


def test_plan_counts_parameters_of_bin_weights(model_and_files, tmp_path):
    """A folder whose only weights are pytorch_model.bin is counted from the pickle's tensor table (read by the
    weights-only loader), as a safetensors folder is from its header: the same model, the same count."""
    import shutil
    from pathlib import Path

    from bench.plan import parameter_counts
    from compressors.builders.models.user import local_folder
    from tests.test_user_models import to_pickle_weights

    spec, dev, _ = model_and_files
    safetensors_folder = local_folder(spec)
    expected = parameter_counts(safetensors_folder)
    folder = Path(shutil.copytree(safetensors_folder, tmp_path / "Bin Model"))
    to_pickle_weights(folder)
    assert parameter_counts(folder) == expected and expected[0] > expected[1] > 0
    bin_spec = user_model_spec(str(folder))
    plan = _plan(bin_spec, FileClassificationData(dev, None, Columns(), ((0, "LABEL_0"), (1, "LABEL_1"))),
                 ArtifactCache(tmp_path / "cache"))
    assert plan.parameters == expected[0]  # was 0: only *.safetensors were counted
