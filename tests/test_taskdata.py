"""The data set as a parameter (compressors/quality/taskdata.py): evaluation rows apart from train rows, what a
technique may read while it builds, pair encoding, where evaluation rows are cut, what a run records."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from compressors.quality.data import DataError
from compressors.quality.metrics import encode_sentences, eval_max_length, make_eval_set
from compressors.quality.taskdata import (
    FileClassificationData,
    InMemoryData,
    MissingTrainData,
    UndeclaredDataUse,
    default_data,
    model_id2label,
    user_data,
)
from compressors.quality.userdata import Columns

LABELS = ((0, "negative"), (1, "positive"))


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


@pytest.fixture
def files(tmp_path):
    train = _csv(tmp_path / "train.csv", [(f"train row {i}", ["negative", "positive"][i % 2]) for i in range(200)])
    dev = _csv(tmp_path / "dev.csv", [(f"dev row {i}", ["Positive", "NEGATIVE"][i % 2]) for i in range(20)])
    return train, dev


def test_calibration_and_training_rows_come_from_train_and_never_from_evaluation(files):
    train, dev = files
    data = FileClassificationData(dev, train, Columns("review", None, "sentiment"), LABELS)
    evaluated = set(data.eval().sentences)
    rest, held = data.held_apart()
    assert len(held) == 20 and len(rest) == 180  # a tenth of a small train file, never all of it
    assert not (set(held.sentences) | set(rest.sentences)) & evaluated
    assert set(held.sentences).isdisjoint(rest.sentences)
    assert data.eval().labels[:2] == (1, 0)  # names mapped case-insensitively through the model's labels


def test_evaluation_file_alone_has_no_train_rows_and_says_which_option_gives_them(files):
    _, dev = files
    data = FileClassificationData(dev, None, Columns("review", None, "sentiment"), LABELS)
    assert not data.has_train
    with pytest.raises(MissingTrainData, match="give --dataset-train FILE"):
        data.train()


def test_a_stage_sees_train_rows_only_and_only_when_declared(files):
    train, dev = files
    data = FileClassificationData(dev, train, Columns("review", None, "sentiment"), LABELS)
    assert len(data.for_stage("onnx-int8-static", uses_data=True).train()) == 200
    with pytest.raises(UndeclaredDataUse, match="without declaring uses_data"):
        data.for_stage("onnx-int8", uses_data=False).held_apart()
    with pytest.raises(UndeclaredDataUse, match="evaluation rows"):
        data.for_stage("onnx-int8-static", uses_data=True).eval()


def test_two_data_sets_have_two_train_checksums(files, tmp_path):
    train, dev = files
    other = _csv(tmp_path / "other.csv", [(f"other {i}", ["negative", "positive"][i % 2]) for i in range(50)])
    columns = Columns("review", None, "sentiment")
    one = FileClassificationData(dev, train, columns, LABELS)
    two = FileClassificationData(dev, other, columns, LABELS)
    assert one.train_checksum() != two.train_checksum()


def test_the_run_records_sources_counts_checksums_and_label_map(files):
    train, dev = files
    data = FileClassificationData(dev, train, Columns("review", None, "sentiment"), LABELS)
    described = data.describe(train_used=True)
    assert described["name"] == "file:dev.csv" and described["eval"]["rows"] == 20
    assert described["train"]["rows"] == 200 and described["eval"]["labels"] == {"0": 10, "1": 10}
    assert described["label_map"] == {"0": "negative", "1": "positive"} and len(described["eval"]["checksum"]) == 64
    assert described["columns"] == {"text": "review", "pair": None, "label": "sentiment"}
    assert "train" not in data.describe(train_used=False)


def test_pairs_are_encoded_as_true_pairs(tmp_path):
    from tests.conftest import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "tok")
    single = encode_sentences(tokenizer, ["the movie is good"], batch_size=1)[0]
    paired = encode_sentences(tokenizer, ["the movie is good"], batch_size=1, pairs=["a great film"])[0]
    sep = tokenizer.sep_token_id
    ids = list(paired["input_ids"][0])
    assert ids.count(sep) == 2 and ids[: len(single["input_ids"][0])] == list(single["input_ids"][0])
    assert paired["token_type_ids"][0].tolist() == [0] * 6 + [1] * 4  # [CLS] 4 words [SEP] | 3 words [SEP]


def test_pair_rows_change_the_checksum_and_the_batches(tmp_path):
    from compressors.quality.data import TextClassificationSplit, content_checksum
    from tests.conftest import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "tok")
    texts, labels = ("the movie is good", "very poor"), (1, 0)
    single = TextClassificationSplit("eval", texts, labels, "t", content_checksum(texts, labels))
    pairs = ("a great film", "the film was awful")
    paired = TextClassificationSplit("eval", texts, labels, "t", content_checksum(texts, labels, pairs), pairs)
    assert single.checksum != paired.checksum
    assert make_eval_set(tokenizer, single).checksum != make_eval_set(tokenizer, paired).checksum


def test_evaluation_rows_are_cut_at_the_model_maximum_not_at_128(tmp_path):
    from tests.conftest import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "tok")
    assert eval_max_length(tokenizer, {"max_position_embeddings": 512}) == 512
    assert eval_max_length(tokenizer, {"max_position_embeddings": 514, "model_type": "roberta"}) == 512
    assert eval_max_length(tokenizer, {"n_positions": 64}) == 64
    long_row = " ".join(["good"] * 300)
    batch = encode_sentences(tokenizer, [long_row], max_length=eval_max_length(tokenizer, {"max_position_embeddings":
                                                                                            512}))[0]
    assert batch["input_ids"].shape[1] == 302  # every word read, not 128


def test_registered_models_keep_their_own_data():
    assert default_data("sequence-classification").name == "sst2"
    assert default_data("causal-lm").name == "wikitext-2"
    with pytest.raises(DataError, match="no registered data for task 'vision'"):
        default_data("vision")


def test_user_data_for_a_classifier_needs_a_file_and_reads_it_now(files):
    train, dev = files
    values = {"dataset": str(dev), "dataset_eval": None, "dataset_train": str(train), "text_column": "review",
              "text_pair_column": None, "label_column": "sentiment", "label_map": None}
    config = {"id2label": {"0": "negative", "1": "positive"}}
    data = user_data("sequence-classification", config, values, "--models ./m")
    assert len(data.eval()) == 20 and len(data.train()) == 200
    with pytest.raises(DataError, match="give its labelled evaluation data with --dataset FILE"):
        user_data("sequence-classification", config, {**values, "dataset": None}, "--models ./m")
    with pytest.raises(DataError, match="no column 'sentence'"):
        user_data("sequence-classification", config, {**values, "text_column": "sentence"}, "--models ./m")
    assert user_data("causal-lm", {}, {"text_file": None, "text_file_train": None}, "--models ./lm") is None


def test_model_labels_default_to_label_i():
    assert model_id2label({"num_labels": 3}) == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert model_id2label({"id2label": {"1": "pos", "0": "neg"}}) == {0: "neg", 1: "pos"}


def test_in_memory_data_for_programmatic_use():
    data = InMemoryData(eval_rows=None, train_rows=None)
    with pytest.raises(DataError, match="no evaluation rows"):
        data.eval()
    with pytest.raises(MissingTrainData, match="no train rows"):
        data.train()


# ----------------------------------------------------------------------------- train rows that are evaluation rows

CLASSIFIER = {"id2label": {"0": "negative", "1": "positive"}}


def _values(dev: Path, train: Path) -> dict:
    return {"dataset": str(dev), "dataset_eval": None, "dataset_train": str(train), "text_column": "review",
            "text_pair_column": None, "label_column": "sentiment", "label_map": None}


def test_train_file_sharing_eval_rows_warns_with_count(files, tmp_path):
    from compressors.quality.taskdata import TrainEvalOverlapWarning

    train, dev = files
    # 7 dev rows re-exported into the train file, one lower-cased and re-spaced: still the same row
    leaked = [(f"dev row {i}", "negative") for i in range(6)] + [("DEV  row 6 ", "positive")]
    mixed = _csv(tmp_path / "mixed.csv", [(f"train row {i}", "negative") for i in range(40)] + leaked)
    with pytest.warns(TrainEvalOverlapWarning) as said:
        user_data("sequence-classification", CLASSIFIER, _values(dev, mixed), "--models ./m")
    assert [str(w.message) for w in said] == [
        f"--dataset-train {mixed} shares 7 of 20 evaluation rows with --dataset {dev} (by text)"]


def test_train_file_that_is_the_eval_file_warns_by_path_and_by_content(files, tmp_path):
    import shutil

    from compressors.quality.taskdata import TrainEvalOverlapWarning

    _, dev = files
    copy = Path(shutil.copy(dev, tmp_path / "copy-of-dev.csv"))
    for train in (dev, copy):
        with pytest.warns(TrainEvalOverlapWarning, match=f"^--dataset-train {train} is the evaluation file --dataset "
                                                         f"{dev} \\(the same bytes\\): all 20 evaluation rows are"):
            user_data("sequence-classification", CLASSIFIER, _values(dev, train), "--models ./m")


def test_disjoint_train_and_eval_files_do_not_warn(files):
    import warnings

    train, dev = files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = user_data("sequence-classification", CLASSIFIER, _values(dev, train), "--models ./m")
    assert data.train_eval_overlap().shared_rows == 0


def test_pair_rows_are_shared_only_when_both_texts_are(tmp_path):
    def pairs(path, rows):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("premise", "hypothesis", "label"), *rows])
        return path

    dev = pairs(tmp_path / "dev.csv", [("a", "b", 0), ("c", "d", 1), ("e", "f", 0)])
    train = pairs(tmp_path / "train.csv", [("a", "b", 1), ("c", "not d", 1), ("x", "y", 0)])
    data = FileClassificationData(dev, train, Columns("premise", "hypothesis", "label"), LABELS)
    overlap = data.train_eval_overlap()
    assert (overlap.shared_rows, overlap.eval_rows, overlap.by, overlap.same_file) == (1, 3, "text and pair", False)


def test_saved_run_records_both_files_and_their_overlap(files, tmp_path):
    from compressors.core.hashing import sha256_file

    train, dev = files
    mixed = _csv(tmp_path / "mixed.csv", [("dev row 3", "positive"), ("new", "negative")])
    data = FileClassificationData(dev, mixed, Columns("review", None, "sentiment"), LABELS)
    for train_used in (False, True):  # recorded whether or not this configuration trained
        described = data.describe(train_used=train_used)
        assert described["files"] == {"eval": {"path": str(dev), "sha256": sha256_file(dev), "rows": 20},
                                      "train": {"path": str(mixed), "sha256": sha256_file(mixed), "rows": 2}}
        assert described["train_eval_overlap"] == {"same_file": False, "shared_rows": 1, "eval_rows": 20,
                                                   "by": "text"}
    eval_only = FileClassificationData(dev, None, Columns("review", None, "sentiment"), LABELS).describe()
    assert set(eval_only["files"]) == {"eval"} and "train_eval_overlap" not in eval_only


def test_text_file_train_that_is_the_eval_text_warns_and_is_recorded(tmp_path):
    from compressors.quality.taskdata import TrainEvalOverlapWarning

    text = tmp_path / "wiki.txt"
    text.write_text(" = Title = \n\n A first line of text . \n A second one . \n", encoding="utf-8")
    values = {"text_file": str(text), "text_file_train": str(text)}
    with pytest.warns(TrainEvalOverlapWarning, match=f"^--text-file-train {text} is the evaluation file --text-file "
                                                     f"{text} \\(the same bytes\\)"):
        data = user_data("causal-lm", {}, values, "--models ./lm")
    described = data.describe(train_used=True)
    assert described["files"]["eval"] == described["files"]["train"] and described["files"]["eval"]["rows"] == 4
    assert described["train_eval_overlap"] == {"same_file": True, "shared_rows": None, "eval_rows": 4, "by": "file"}
