"""A user's own files: labelled data in every supported format, plain text, and one clear error per bad input."""

import json
import re
from pathlib import Path

import pytest

from compressors.quality.data import DataError, content_checksum, load_wikitext
from compressors.quality.userdata import (
    SUPPORTED_EXTENSIONS,
    Columns,
    LabelledRows,
    load_labelled_split,
    load_text_file,
    parse_label_map,
    read_labelled_file,
    resolve_labels,
)

SENTIMENT = {0: "negative", 1: "positive"}
UNNAMED = {0: "LABEL_0", 1: "LABEL_1"}
OPTION = "--dataset-eval"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_jsonl(folder: Path, name: str, records: list[dict]) -> Path:
    return write(folder, name, "".join(json.dumps(record) + "\n" for record in records))


def rows_with(labels: tuple) -> LabelledRows:
    """Rows as read, for label resolution alone (no file needed)."""
    texts = tuple(f"text {i}" for i in range(len(labels)))
    return LabelledRows(Path("/data/x.csv"), OPTION, texts, None, labels, "0" * 64, Columns())


# --------------------------------------------------------------------------- reading each format


def test_csv_keeps_texts_as_written(tmp_path):
    # Quoted commas, surrounding spaces, and texts pandas would take for missing values ("NA") or numbers.
    path = write(tmp_path, "eval.csv", 'sentence,label\n"good, really",1\n  spaced  ,0\nNA,1\n42,0\n')
    split = load_labelled_split(path, Columns(), SENTIMENT, "user-eval", OPTION)
    assert split.sentences == ("good, really", "  spaced  ", "NA", "42")
    assert split.labels == (1, 0, 1, 0)
    assert split.pairs is None
    assert split.source == str(path) and split.name == "user-eval"
    assert split.checksum == content_checksum(split.sentences, split.labels)


def test_tsv_takes_quotes_literally(tmp_path):
    # GLUE TSVs hold unescaped quotes; a quoting reader would join lines up to the next quote.
    path = write(tmp_path, "dev.tsv", 'sentence\tlabel\nhe said "hi\t1\nthen " left\t0\nend\t1\n')
    split = load_labelled_split(path, Columns(), SENTIMENT, "dev", OPTION)
    assert split.sentences == ('he said "hi', 'then " left', "end")
    assert split.labels == (1, 0, 1)


@pytest.mark.parametrize("name", ["eval.jsonl", "eval.json"])
def test_json_lines(tmp_path, name):
    path = write_jsonl(tmp_path, name, [{"sentence": "fine", "label": 1}, {"sentence": "poor", "label": 0.0}])
    rows = read_labelled_file(path, Columns(), OPTION)
    assert rows.texts == ("fine", "poor") and rows.raw_labels == (1, 0)
    assert all(type(label) is int for label in rows.raw_labels)  # 0.0 is read as the class id 0


def test_json_array(tmp_path):
    path = write(tmp_path, "eval.json", json.dumps([{"sentence": "a", "label": 0}, {"sentence": "b", "label": 1}]))
    assert read_labelled_file(path, Columns(), OPTION).raw_labels == (0, 1)


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"sentence": ["up", "down"], "label": [1, 0]}), path)
    rows = read_labelled_file(path, Columns(), OPTION)
    assert rows.texts == ("up", "down") and rows.raw_labels == (1, 0)
    assert len(rows.file_sha256) == 64


def test_pair_input(tmp_path):
    path = write(tmp_path, "mnli.csv", "premise,hypothesis,label\nA man sleeps.,A person rests.,0\n"
                                       "A man sleeps.,Nobody sleeps.,2\nA dog runs.,An animal moves.,1\n")
    columns = Columns(text="premise", pair="hypothesis")
    split = load_labelled_split(path, columns, {0: "entailment", 1: "neutral", 2: "contradiction"}, "mnli", OPTION)
    assert split.pairs == ("A person rests.", "Nobody sleeps.", "An animal moves.")
    assert split.texts == (split.sentences, split.pairs)
    assert split.checksum == content_checksum(split.sentences, split.labels, split.pairs)
    assert split.checksum != content_checksum(split.sentences, split.labels)


def test_three_classes_by_name_case_insensitive(tmp_path):
    path = write(tmp_path, "topics.csv", "text,topic\nstocks fell,Business\ngoal scored,SPORTS\nnew chip,tech\n"
                                         "rates rose,business\n")
    split = load_labelled_split(path, Columns(text="text", label="topic"),
                                {0: "business", 1: "sports", 2: "tech"}, "topics", OPTION)
    assert split.labels == (0, 1, 2, 0)


def test_sst2_like_csv_with_named_columns_and_string_labels(tmp_path):
    path = write(tmp_path, "reviews.csv", "review,sentiment\nA joy to watch.,positive\nDull.,negative\n"
                                          "Loved it,positive\n")
    split = load_labelled_split(path, Columns(text="review", label="sentiment"), SENTIMENT, "reviews", OPTION)
    assert split.sentences == ("A joy to watch.", "Dull.", "Loved it")
    assert split.labels == (1, 0, 1)


def test_file_name_is_not_a_glob_pattern(tmp_path):
    write(tmp_path, "a1.csv", "sentence,label\nwrong file,0\nwrong,1\n")
    path = write(tmp_path, "a[1].csv", "sentence,label\nright file,0\nright,1\n")
    assert read_labelled_file(path, Columns(), OPTION).texts == ("right file", "right")


# --------------------------------------------------------------------------- bad files: one clear line each

BAD_FILES = [
    pytest.param("notes.txt", "sentence,label\nx,1\n", r"unsupported file type '\.txt'; use one of \.csv, \.tsv, "
                 r"\.json, \.jsonl, \.parquet", id="unknown-extension"),
    pytest.param("eval.csv", "", r"the file is empty \(0 bytes\)", id="zero-bytes"),
    pytest.param("eval.csv", "sentence,label\n", "the file has no data rows", id="header-only"),
    pytest.param("eval.jsonl", "", r"the file is empty \(0 bytes\)", id="zero-bytes-json"),
    pytest.param("eval.csv", b"sentence,label\nok,1\ncaf\xe9,0\n", r"not UTF-8 text: byte 0xe9 on line 3 "
                 r"\(byte offset 23\) is invalid; save the file as UTF-8", id="latin-1-csv"),
    pytest.param("eval.jsonl", b'{"sentence": "\xff", "label": 1}\n', "not UTF-8 text: byte 0xff on line 1",
                 id="bad-bytes-json"),
    pytest.param("eval.parquet", b"not parquet at all", r"could not read it as PARQUET \(", id="corrupt-parquet"),
    pytest.param("eval.csv", "text,label\nx,1\n", r"no column 'sentence' \(set by --text-column\); the file has "
                 r"columns: 'text', 'label'", id="missing-text-column"),
    pytest.param("eval.csv", "sentence,target\nx,1\n", r"no column 'label' \(set by --label-column\); the file "
                 r"has columns: 'sentence', 'target'", id="missing-label-column"),
    pytest.param("eval.csv", "sentence,label\nfine,1\n,0\n", r"row 2: no text in column 'sentence'",
                 id="null-text"),
    pytest.param("eval.csv", "sentence,label\nfine,1\n   ,0\n", r"row 2: empty text in column 'sentence'",
                 id="blank-text"),
    pytest.param("eval.jsonl", '{"sentence": "a", "label": 1}\n{"label": 0}\n', r"row 2: no text in column",
                 id="missing-text-json"),
    pytest.param("eval.csv", "sentence,label\na,1\nb,0\nc,\n", r"row 3: no label in column 'label'",
                 id="null-label"),
    pytest.param("eval.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": null}\n',
                 r"row 2: no label", id="null-label-json"),
    pytest.param("eval.csv", "sentence,label\na,1\nb,1\n", r"every row has label 1; a classification set needs "
                 r"at least 2 distinct labels", id="one-label"),
    pytest.param("eval.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": "positive"}\n',
                 r"labels in column 'label' mix integers and strings \(row 1: 1, row 2: 'positive'\)",
                 id="mixed-labels"),
    pytest.param("eval.csv", "sentence,label\na,positive\nb,0\n", r"mix integers and strings \(row 1: 'positive', "
                 r"row 2: '0'\)", id="mixed-labels-csv"),
    pytest.param("eval.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": 0.5}\n',
                 r"row 2: label 0\.5 in column 'label' is neither an integer class id nor a class name",
                 id="fractional-label"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_file_is_one_line_naming_option_and_file(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        read_labelled_file(path, Columns(), OPTION)
    text = str(info.value)
    assert text.startswith(f"{OPTION} {path}: ") and "\n" not in text



# --------------------------------------------------------------------------- parse errors name the line

GOOD_LINES = ['{"sentence": "fine", "label": 1}', '{"sentence": "poor", "label": 0}']


def _parse_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        read_labelled_file(path, Columns(), OPTION)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_jsonl_parse_error_names_the_line(tmp_path):
    path = write(tmp_path, "eval.jsonl", "\n".join([*GOOD_LINES, *GOOD_LINES, '{"sentence": "x" "label": 0}',
                                                     *GOOD_LINES]) + "\n")
    # pyarrow said "in row 4", a row counted from 0, of the fifth line
    assert _parse_error(path) == f"{OPTION} {path}, line 5: not valid JSON: Expecting ',' delimiter (column 18)"


def test_jsonl_line_that_is_not_an_object_names_the_line(tmp_path):
    path = write(tmp_path, "eval.jsonl", "\n".join([*GOOD_LINES, "[1, 2]", *GOOD_LINES]) + "\n")
    assert _parse_error(path) == (f"{OPTION} {path}, line 3: a JSON list, not an object (JSON lines hold one "
                                  "object a row)")


def test_json_array_parse_error_names_the_line(tmp_path):
    path = write(tmp_path, "eval.json", "[\n" + ",\n".join([*GOOD_LINES, '{"sentence": "x" "label": 0}']) + "\n]\n")
    # was "at position 87", a character offset into the file
    assert _parse_error(path) == f"{OPTION} {path}, line 4: not valid JSON: Expecting ',' delimiter (column 18)"


def test_csv_row_with_too_many_fields_names_the_line(tmp_path):
    path = write(tmp_path, "eval.csv", 'sentence,label\n"a, quoted text",1\nb,0\n\nan unquoted, comma,1\nc,0\n')
    # the header is line 1, the blank line 4 counts as a line
    assert _parse_error(path) == (f"{OPTION} {path}, line 5: 3 fields where the header has 2 (a ',' inside a text "
                                  "not in quotes?)")


def test_csv_unterminated_quote_names_the_line_it_opens_on(tmp_path):
    path = write(tmp_path, "eval.csv", 'sentence,label\n"two\nlines",1\nb,0\n"never closed,1\nc,0\nd,1\n')
    # pandas said "EOF inside string starting at row 3" (from 0, the record, not the line)
    assert _parse_error(path) == (f'{OPTION} {path}, line 5: a quoted field opens here and its closing " never '
                                  "comes")


def test_tsv_row_with_too_many_fields_names_the_line(tmp_path):
    path = write(tmp_path, "eval.tsv", 'sentence\tlabel\n"quotes" are text\t1\nb\t0\nc\tx\t1\n')
    assert _parse_error(path) == f"{OPTION} {path}, line 4: 3 fields where the header has 2 (a tab inside a text?)"


def test_missing_pair_column_names_its_option(tmp_path):
    path = write(tmp_path, "pairs.csv", "premise,label\nx,1\ny,0\n")
    with pytest.raises(DataError, match=r"no column 'hypothesis' \(set by --text-pair-column\); the file has "
                                        r"columns: 'premise', 'label'"):
        read_labelled_file(path, Columns(text="premise", pair="hypothesis"), OPTION)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=rf"^--dataset-train {re.escape(str(path))}: no such file$"):
        read_labelled_file(path, Columns(), "--dataset-train")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError, match=rf"^{OPTION} {re.escape(str(tmp_path))}: is a folder, not a file$"):
        read_labelled_file(tmp_path, Columns(), OPTION)


def test_columns_must_differ():
    with pytest.raises(DataError, match="--text-column and --label-column both name column 'x'"):
        Columns(text="x", label="x")


# --------------------------------------------------------------------------- label resolution


def test_integer_labels_are_class_ids():
    assert resolve_labels(rows_with((0, 2, 1)), {0: "a", 1: "b", 2: "c"}) == (0, 2, 1)


def test_integer_label_outside_the_model_prints_both_label_sets():
    with pytest.raises(DataError, match=r"^--dataset-eval /data/x\.csv: labels \[2\] are not class ids of the "
                                        r"model \(0 to 1\); the file has labels \[0, 1, 2\], the model has "
                                        r"\{0: 'negative', 1: 'positive'\}$"):
        resolve_labels(rows_with((0, 1, 2)), SENTIMENT)


def test_integer_labels_from_one_are_not_shifted():
    # 1-based ids (1, 2) must not be silently re-indexed to (0, 1).
    with pytest.raises(DataError, match=r"labels \[2\] are not class ids"):
        resolve_labels(rows_with((1, 2)), SENTIMENT)


def test_unknown_string_label_suggests_label_map():
    with pytest.raises(DataError, match=r"labels \['pos'\] are not the model's labels; the file has labels "
                                        r"\['negative', 'pos'\], the model has \{0: 'negative', 1: 'positive'\}; "
                                        r"map them with --label-map, e\.g\. --label-map negative=0,pos=1$"):
        resolve_labels(rows_with(("pos", "negative")), SENTIMENT)


def test_unnamed_model_needs_label_map():
    with pytest.raises(DataError, match=r"the model's labels are unnamed \(LABEL_0 to LABEL_1\), so string labels "
                                        r"need --label-map to say which is which, e\.g\. --label-map "
                                        r"negative=0,positive=1"):
        resolve_labels(rows_with(("positive", "negative")), UNNAMED)


def test_unnamed_model_accepts_its_own_names_and_a_label_map():
    assert resolve_labels(rows_with(("LABEL_1", "label_0")), UNNAMED) == (1, 0)
    label_map = parse_label_map("Negative=0,positive=1")
    assert resolve_labels(rows_with(("positive", "negative", "POSITIVE")), UNNAMED, label_map) == (1, 0, 1)


def test_label_map_adds_names_the_model_lacks():
    labels = resolve_labels(rows_with(("pos", "neg", "positive")), SENTIMENT, {"pos": 1, "NEG": 0})
    assert labels == (1, 0, 1)


@pytest.mark.parametrize(("label_map", "message"), [
    ({"pos": 2}, r"--label-map maps 'pos' to 2, not a class id of the model \(0 to 1\)"),
    ({"positive": 0, "pos": 1}, r"--label-map maps 'positive' to 0, but the model calls class 1 'positive'"),
    ({"neg": 0}, r"labels \['pos'\] are neither the model's labels nor in --label-map"),
])
def test_bad_label_map(label_map, message):
    with pytest.raises(DataError, match=message):
        resolve_labels(rows_with(("pos", "neg")), SENTIMENT, label_map)


def test_label_map_with_integer_labels_is_an_error():
    with pytest.raises(DataError, match="--label-map maps string labels, but this file's labels are integers"):
        resolve_labels(rows_with((0, 1)), SENTIMENT, {"negative": 0})


@pytest.mark.parametrize(("text", "expected"), [
    ("negative=0,positive=1", {"negative": 0, "positive": 1}),
    (" Very Bad = 0 , good=1 ", {"Very Bad": 0, "good": 1}),
    ('{"a,b": 0, "c": 1}', {"a,b": 0, "c": 1}),
    ("x=y=0,z=1", {"x=y": 0, "z": 1}),
])
def test_parse_label_map(text, expected):
    assert parse_label_map(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("negative:0", r"'negative:0' has no '='"),
    ("a=one", r"the id of 'a' is 'one', not a non-negative integer"),
    ("a=-1", r"the id of 'a' is '-1'"),
    ("=0", "an entry has no label name"),
    ("a=0,A=1", r"'a' and 'A' name the same label"),
    ('{"a": 0,', "not valid JSON"),
    ('{"a": true}', r"the id of 'a' is True"),
    ("{}", "no labels"),
])
def test_parse_label_map_errors(text, message):
    with pytest.raises(DataError, match=message) as info:
        parse_label_map(text)
    assert str(info.value).startswith(f"--label-map {text!r}: ")


# --------------------------------------------------------------------------- plain text


def test_text_file_reads_like_wikitext(tmp_path):
    path = write(tmp_path, "notes.md", " = Title = \n\nFirst line.\n   \nLast line.")
    corpus = load_text_file(path)
    assert corpus.name == "notes" and corpus.source == str(path)
    assert corpus.rows == 5
    assert corpus.text == " = Title = " + "\n" * 5 + "First line." + "\n" * 5 + "Last line."


@pytest.mark.parametrize(("content", "message"), [
    ("", r"the file is empty \(0 bytes\)"),
    (" \n\t\n", "the file holds only whitespace"),
    (b"fine\nline \x80 two\n", r"not UTF-8 text: byte 0x80 on line 2 \(byte offset 10\)"),
])
def test_bad_text_file(tmp_path, content, message):
    path = write(tmp_path, "corpus.txt", content)
    with pytest.raises(DataError, match=rf"^--text-file {re.escape(str(path))}: {message}"):
        load_text_file(path)


def test_text_file_missing_or_folder(tmp_path):
    with pytest.raises(DataError, match=rf"^--eval-text {re.escape(str(tmp_path / 'x.txt'))}: no such file$"):
        load_text_file(tmp_path / "x.txt", "--eval-text")
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_text_file(tmp_path)


def test_text_file_matches_the_suites_wikitext_reader(tmp_path, monkeypatch):
    from compressors.quality import data

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    spec = data.WIKITEXT_FILES["test"]
    raw = tmp_path / "wiki.test.raw"  # the published file, as a user would pass it with --text-file
    raw.write_bytes(data.embedded_bytes(spec, "WikiText-2 test"))
    mine = load_text_file(raw)
    suite = load_wikitext("test")
    assert (mine.text, mine.checksum, mine.rows) == (suite.text, suite.checksum, suite.rows)


def _write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)


# How to write each supported type: a type added to SUPPORTED_EXTENSIONS without a writer here fails below.
WRITERS = {
    ".csv": lambda path, records: path.write_text(
        "sentence,label\n" + "".join(f"{r['sentence']},{r['label']}\n" for r in records), encoding="utf-8"),
    ".tsv": lambda path, records: path.write_text(
        "sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in records), encoding="utf-8"),
    ".json": lambda path, records: path.write_text(json.dumps(records), encoding="utf-8"),
    ".jsonl": lambda path, records: write_jsonl(path.parent, path.name, records),
    ".parquet": _write_parquet,
}


@pytest.mark.slow
def test_every_supported_extension_is_read_and_any_other_refused_naming_them(tmp_path):
    records = [{"sentence": "up", "label": 1}, {"sentence": "down", "label": 0}]
    for extension in SUPPORTED_EXTENSIONS:
        for name in (f"eval{extension}", f"EVAL{extension.upper()}"):  # the extension's case does not matter
            path = tmp_path / name
            WRITERS[extension](path, records)
            rows = read_labelled_file(path, Columns(), OPTION)
            assert (rows.texts, rows.raw_labels) == (("up", "down"), (1, 0)), name
    for name in ("eval.txt", "eval.xlsx", "eval.csv.gz", "eval"):
        path = write(tmp_path, name, "sentence,label\nup,1\ndown,0\n")
        with pytest.raises(DataError) as info:
            read_labelled_file(path, Columns(), OPTION)
        message = str(info.value)
        assert message.startswith(f"{OPTION} {path}: unsupported file type "), message
        assert message.split("; use one of ")[1].split(", ") == list(SUPPORTED_EXTENSIONS), message
