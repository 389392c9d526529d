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
