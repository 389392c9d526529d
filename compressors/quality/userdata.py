"""A user's own data: a labelled file to classify, a plain-text file to measure perplexity on.

Labelled files (``.csv``, ``.tsv``, ``.json``/``.jsonl``, ``.parquet``) are read with the ``datasets``
library's packaged builders, so quoting, JSON lines and Parquet types follow its rules, not a parser of
ours. Reading (:func:`read_labelled_file`) and label resolution (:func:`resolve_labels`) are separate
steps: the file's labels are ints or strings as written, and only resolving them against a model's
``id2label`` (optionally through ``--label-map``) turns them into class ids, never by silent re-indexing.

A plain-text file (:func:`load_text_file`) is read exactly the way the suite reads WikiText-2 raw test
(:func:`compressors.quality.data.wikitext_rows`), so a user's perplexity is measured the same way.

Every problem is a :class:`~compressors.quality.data.DataError` whose message is one line starting with the
command-line option and the file, e.g. ``--dataset-eval /x/y.csv: row 3: no label`` (data rows counted from 1),
or, for a file that does not parse, its line (counted from 1, a CSV header included):
``--dataset-eval /x/y.jsonl, line 7: not valid JSON: ...``.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import math
import re
import shlex
import tempfile
from pathlib import Path

from compressors.quality.data import (
    DataError,
    TextClassificationSplit,
    TextCorpus,
    _corpus,
    content_checksum,
    wikitext_rows,
)

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")

# The option that sets each Columns field, named in errors so the user knows what to change.
COLUMN_OPTIONS = {"text": "--text-column", "pair": "--text-pair-column", "label": "--label-column"}

_DEFAULT_LABEL = re.compile(r"LABEL_(\d+)")


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which columns of a labelled file hold what.

    Args:
        text: the text to classify (``--text-column``).
        pair: the second text of a pair task (NLI, paraphrase), or None for single texts
            (``--text-pair-column``).
        label: the label, an int class id or a class name (``--label-column``).
    """

    text: str = "sentence"
    pair: str | None = None
    label: str = "label"

    def __post_init__(self):
        named = [(field, getattr(self, field)) for field in COLUMN_OPTIONS if getattr(self, field) is not None]
        for field, column in named:
            if not isinstance(column, str) or not column:
                raise DataError(f"{COLUMN_OPTIONS[field]}: a column name is required, got {column!r}")
        seen: dict[str, str] = {}
        for field, column in named:
            if column in seen:
                raise DataError(f"{seen[column]} and {COLUMN_OPTIONS[field]} both name column {column!r}")
            seen[column] = COLUMN_OPTIONS[field]


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    """A labelled file as read: texts checked, labels as written (not yet resolved to class ids).

    ``raw_labels`` are all ints or all strings; whole floats (``1.0``, what a CSV column with a
    gap or a JSON writer produces) are already ints.
    """

    path: Path
    option: str  # the command-line option that named the file, e.g. "--dataset-eval"
    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    raw_labels: tuple
    file_sha256: str
    columns: Columns

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled_file(path, columns: Columns, option: str) -> LabelledRows:
    """Read the texts and labels of a user's file.

    Args:
        path: a ``.csv``, ``.tsv`` (tab-separated, quotes taken literally as in GLUE), ``.json`` /
            ``.jsonl`` (JSON lines or one JSON array of objects) or ``.parquet`` file with a header.
        columns: which columns hold the text, the optional pair text and the label.
        option: the command-line option that named the file, put at the start of every error.

    Rows are numbered from 1, counting data rows only (a CSV header is not a row).
    """
    path = _existing_file(path, option)
    where = f"{option} {path}"
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{where}: unsupported file type {path.suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty (0 bytes)")
    file_sha256 = _sha256_checking_utf8(path, where, utf8=suffix != ".parquet")
    table = _read_table(path, suffix, columns, where)
    if not table or not len(next(iter(table.values()))):  # a Parquet file can hold a schema and no rows
        raise DataError(f"{where}: the file has no data rows")
    present = list(table)
    for field, option_key in COLUMN_OPTIONS.items():
        column = getattr(columns, field)
        if column is not None and column not in table:
            raise DataError(f"{where}: no column {column!r} (set by {option_key}); "
                            f"the file has columns: {', '.join(map(repr, present))}")
    texts = _texts(table[columns.text], columns.text, where)
    pairs = None if columns.pair is None else _texts(table[columns.pair], columns.pair, where)
    labels = _labels(table[columns.label], columns.label, where)
    return LabelledRows(path, option, texts, pairs, labels, file_sha256, columns)


def parse_label_map(text: str, option: str = "--label-map") -> dict[str, int]:
    """Parse ``"negative=0,positive=1"`` or a JSON object (``'{"negative": 0, "positive": 1}'``).

    Names keep their case (matching is case-insensitive, see :func:`resolve_labels`); a name may
    hold ``=`` (the id is after the last one), but one with a comma needs the JSON form.
    """
    where = f"{option} {text!r}"
    usage = "expected NAME=ID[,NAME=ID...] or a JSON object, e.g. negative=0,positive=1"
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc}); {usage}") from None
        items = list(loaded.items())
    else:
        items = []
        for item in stripped.split(","):
            name, equals, label_id = item.rpartition("=")
            if not equals:
                raise DataError(f"{where}: {item.strip()!r} has no '='; {usage}")
            items.append((name.strip(), label_id.strip()))
    mapping: dict[str, int] = {}
    seen: dict[str, str] = {}
    for name, label_id in items:
        if not name:
            raise DataError(f"{where}: an entry has no label name; {usage}")
        # bool is an int to Python, but true/false is not a class id.
        if isinstance(label_id, int) and not isinstance(label_id, bool):
            value = label_id
        elif isinstance(label_id, str) and label_id.isascii() and label_id.isdigit():
            value = int(label_id)
        else:
            raise DataError(f"{where}: the id of {name!r} is {label_id!r}, not a non-negative integer; {usage}")
        if value < 0:
            raise DataError(f"{where}: the id of {name!r} is {value}, not a non-negative integer; {usage}")
        key = name.casefold()
        if key in seen:
            raise DataError(f"{where}: {seen[key]!r} and {name!r} name the same label (case is ignored)")
        seen[key] = name
        mapping[name] = value
    if not mapping:
        raise DataError(f"{where}: no labels; {usage}")
    return mapping


def resolve_labels(
    rows: LabelledRows, id2label: dict[int, str], label_map: dict[str, int] | None = None
) -> tuple[int, ...]:
    """The class id of each row, checked against the model's labels.

    Args:
        rows: a file as read by :func:`read_labelled_file`.
        id2label: the model's ``config.id2label``; its length is the number of classes.
        label_map: string label -> class id (``--label-map``, see :func:`parse_label_map`), for
            names the model does not have (e.g. a model with only ``LABEL_0``, ``LABEL_1``).

    Integer labels must already be class ids in ``[0, num_labels)``. String labels match the
    model's names case-insensitively, else the ``label_map`` keys (also case-insensitively). A
    label that resolves nowhere is an error that prints the file's labels and the model's.
    """
    where = f"{rows.option} {rows.path}"
    model = {int(label_id): str(name) for label_id, name in id2label.items()}
    num_labels = len(model)
    found = sorted(set(rows.raw_labels))
    described = f"the file has labels {found}, the model has {dict(sorted(model.items()))}"
    if rows.raw_labels and isinstance(rows.raw_labels[0], int):
        if label_map:
            raise DataError(f"{where}: --label-map maps string labels, but this file's labels are integers "
                            f"(class ids); drop --label-map or write the labels as names")
        outside = [label for label in found if not 0 <= label < num_labels]
        if outside:
            raise DataError(f"{where}: labels {outside} are not class ids of the model "
                            f"(0 to {num_labels - 1}); {described}")
        return tuple(rows.raw_labels)

    by_name = {name.casefold(): label_id for label_id, name in model.items()}
    unnamed = all(_DEFAULT_LABEL.fullmatch(name) and int(name[6:]) == i for i, name in model.items())
    mapped: dict[str, int] = {}
    for name, label_id in (label_map or {}).items():
        if not 0 <= label_id < num_labels:
            raise DataError(f"{where}: --label-map maps {name!r} to {label_id}, not a class id of the model "
                            f"(0 to {num_labels - 1}); {described}")
        key = name.casefold()
        if not unnamed and key in by_name and by_name[key] != label_id:
            raise DataError(f"{where}: --label-map maps {name!r} to {label_id}, but the model calls class "
                            f"{by_name[key]} {model[by_name[key]]!r}; {described}")
        mapped[key] = label_id
    ids: dict[str, int] = {}
    missing = []
    for label in found:
        key = label.strip().casefold()
        if key in mapped:
            ids[label] = mapped[key]
        elif key in by_name:
            ids[label] = by_name[key]
        else:
            missing.append(label)
    if missing:
        example = _label_map_example(found)
        if unnamed and not label_map:
            raise DataError(f"{where}: the model's labels are unnamed (LABEL_0 to LABEL_{num_labels - 1}), so "
                            f"string labels need --label-map to say which is which, e.g. {example}; {described}")
        if label_map:
            raise DataError(f"{where}: labels {missing} are neither the model's labels nor in --label-map; "
                            f"{described}")
        raise DataError(f"{where}: labels {missing} are not the model's labels; {described}; "
                        f"map them with --label-map, e.g. {example}")
    return tuple(ids[label] for label in rows.raw_labels)


def load_labelled_split(
    path, columns: Columns, id2label: dict[int, str], name: str, option: str,
    label_map: dict[str, int] | None = None,
) -> TextClassificationSplit:
    """Read a user's labelled file and resolve its labels against the model's: a split the suite can use.

    Args:
        path, columns, option: as in :func:`read_labelled_file`.
        id2label, label_map: as in :func:`resolve_labels`.
        name: the split's name in results (e.g. ``"user-eval"``).

    Texts are kept exactly as read, leading and trailing whitespace included.
    """
    return labelled_split(read_labelled_file(path, columns, option), id2label, name, label_map)


def labelled_split(rows: LabelledRows, id2label: dict[int, str], name: str,
                   label_map: dict[str, int] | None = None) -> TextClassificationSplit:
    """The rows of a file already read (:func:`read_labelled_file`) as a split, labels resolved as in
    :func:`load_labelled_split`."""
    labels = resolve_labels(rows, id2label, label_map)
    return TextClassificationSplit(name, rows.texts, labels, source=str(rows.path),
                                   checksum=content_checksum(rows.texts, labels, rows.pairs), pairs=rows.pairs)


def load_text_file(path, option: str = "--text-file") -> TextCorpus:
    """A plain UTF-8 text file (any extension) as a :class:`TextCorpus` named after the file's stem.

    Read as :func:`compressors.quality.data.load_wikitext` reads WikiText-2 raw test (one row per line,
    rows joined with ``"\\n\\n"``), so perplexity on it is computed exactly as on WikiText.
    """
    path = _existing_file(path, option)
    where = f"{option} {path}"
    if path.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty (0 bytes)")
    try:
        rows = wikitext_rows(path)
    except UnicodeDecodeError as exc:
        _sha256_checking_utf8(path, where, utf8=True)  # raises, naming the line and offset of the bad byte
        raise DataError(f"{where}: not UTF-8 text ({exc}); save the file as UTF-8") from None
    if not any(rows):
        raise DataError(f"{where}: the file holds only whitespace")
    return _corpus(path.stem, rows, str(path))


# --------------------------------------------------------------------------- helpers


def _existing_file(path, option: str) -> Path:
    # absolute, not resolved: errors and results show the path the user gave, made unambiguous.
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{option} {path}: no such file")
    if not path.is_file():
        raise DataError(f"{option} {path}: is a folder, not a file" if path.is_dir()
                        else f"{option} {path}: not a regular file")
    return path


def _sha256_checking_utf8(path: Path, where: str, utf8: bool, chunk: int = 1 << 20) -> str:
    """The file's sha256, in the same pass checking that it decodes as UTF-8.

    Checked here, not left to the reader: pyarrow's JSON reader accepts invalid UTF-8 and only
    fails later, far from the file, and neither reader says where the bad byte is.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if utf8:
                pending = decoder.getstate()[0]  # an incomplete character carried over from the last block
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    data = pending + block
                    line = newlines + data[:exc.start].count(b"\n") + 1
                    raise DataError(f"{where}: not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
                                    f"(byte offset {offset - len(pending) + exc.start}) is invalid; "
                                    f"save the file as UTF-8") from None
                newlines += block.count(b"\n")
            if not block:
                return digest.hexdigest()
            digest.update(block)
            offset += len(block)


def _read_table(path: Path, suffix: str, columns: Columns, where: str) -> dict[str, list]:
    """The file's columns as Python lists, through ``datasets.load_dataset``."""
    import datasets

    if suffix in (".csv", ".tsv"):
        builder = "csv"
        # Only an empty field is missing: pandas' default would also read the texts "NA", "null" and
        # "None" as missing. Texts stay strings even when a column holds only numbers ("42").
        options = {"keep_default_na": False, "na_values": [""],
                   "converters": {column: str for column in (columns.text, columns.pair) if column}}
        if suffix == ".tsv":
            options.update(delimiter="\t", quoting=3)  # csv.QUOTE_NONE: GLUE TSVs hold unescaped quotes
    else:
        builder, options = ("parquet", {}) if suffix == ".parquet" else ("json", {})
    try:
        with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="compressbench-userdata-") as cache_dir:
            # data_files is a glob pattern: escape it so "a[1].csv" names that file, not "a1.csv".
            dataset = datasets.load_dataset(builder, data_files=glob.escape(str(path)), split="train",
                                            keep_in_memory=True, cache_dir=cache_dir, **options)
            return dataset[:]  # decodes Json columns (a JSON column of mixed types) to Python values
    except Exception as exc:  # datasets, pandas and pyarrow each raise their own types for a bad file
        cause = exc.__cause__ or exc  # DatasetGenerationError wraps what the reader raised
        if isinstance(exc, ValueError) and "corresponds to no data" in str(exc):
            raise DataError(f"{where}: the file has no data rows") from None
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(f"{where}: not UTF-8 text ({cause}); save the file as UTF-8") from None
        # The readers' own positions are a row counted from 0 (pyarrow's JSON, pandas' open quote) or a
        # character offset (a JSON array): found again here, by line, with a reader that says where.
        located = _locate_parse_error(path, suffix)
        if located is not None:
            raise DataError(f"{where}, {located}") from exc
        detail = " ".join(f"{type(cause).__name__}: {cause}".split())
        raise DataError(f"{where}: could not read it as {suffix.lstrip('.').upper()} ({detail[:300]})") from exc


def _locate_parse_error(path: Path, suffix: str) -> str | None:
    """Where a file that ``datasets`` could not parse stops being CSV, TSV or JSON: ``"line N: what"`` (lines
    counted from 1, the header included), or None when a plain reading finds nothing wrong."""
    if suffix in (".json", ".jsonl"):
        return _json_parse_error(path.read_text(encoding="utf-8"))
    if suffix in (".csv", ".tsv"):
        return _csv_parse_error(path, "\t" if suffix == ".tsv" else ",")
    return None


def _json_parse_error(text: str) -> str | None:
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    try:
        json.loads(first)
        one_document = False
    except json.JSONDecodeError:
        one_document = True  # an array of objects, or one object spread over lines
    if one_document:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"line {exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
        return None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {number}: not valid JSON: {exc.msg} (column {exc.colno})"
        if not isinstance(value, dict):
            return f"line {number}: a JSON {type(value).__name__}, not an object (JSON lines hold one object a row)"
    return None


def _csv_parse_error(path: Path, delimiter: str) -> str | None:
    """The first record with more fields than the header (pandas' "Expected N fields"), or a quote opened
    and never closed (CSV only: TSV takes quotes literally), whichever starts first."""
    import csv

    tsv = delimiter == "\t"
    quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
    problems: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = None
        while True:
            start = reader.line_num + 1  # a quoted field can span lines: a record starts after the last one
            try:
                row = next(reader)
            except (StopIteration, csv.Error):
                break
            if not row:
                continue  # a blank line, skipped as pandas skips it
            if header is None:
                header = row
            elif len(row) > len(header):
                sep = "a tab inside a text?" if tsv else "a ',' inside a text not in quotes?"
                problems.append((start, f"{len(row)} fields where the header has {len(header)} ({sep})"))
                break
    if not tsv:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            while True:
                start = reader.line_num + 1
                try:
                    next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    if "unexpected end of data" in str(exc):  # EOF inside quotes
                        problems.append((start, 'a quoted field opens here and its closing " never comes'))
                    break  # other strictness (text after a closing quote) pandas accepts
    if not problems:
        return None
    line, what = min(problems)
    return f"line {line}: {what}"


@contextlib.contextmanager
def _quiet_datasets():
    """``datasets``' progress bars and log lines off for a block, then back as they were."""
    from datasets.utils import logging as ds_logging

    bars_were_on = ds_logging.is_progress_bar_enabled()
    verbosity = ds_logging.get_verbosity()
    ds_logging.disable_progress_bar()
    # Its "Failed to read file ..." error log repeats what the DataError says.
    ds_logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars_were_on:
            ds_logging.enable_progress_bar()


def _texts(values: list, column: str, where: str) -> tuple[str, ...]:
    for row, text in enumerate(values, start=1):
        if text is None:
            raise DataError(f"{where}: row {row}: no text in column {column!r} (null or missing)")
        if not isinstance(text, str):
            raise DataError(f"{where}: row {row}: column {column!r} holds {text!r} "
                            f"({type(text).__name__}), not a text")
        # Kept as read, but a text of only whitespace tokenizes to nothing to classify.
        if not text.strip():
            raise DataError(f"{where}: row {row}: empty text in column {column!r}")
    return tuple(values)


def _labels(values: list, column: str, where: str) -> tuple:
    labels: list = []
    first_of_kind: dict[str, tuple[int, object]] = {}
    for row, label in enumerate(values, start=1):
        if isinstance(label, float) and not math.isnan(label) and label.is_integer():
            label = int(label)  # a CSV int column with a gap, or a JSON writer, gives 1.0 for 1
        if label is None or label == "" or (isinstance(label, float) and math.isnan(label)):
            raise DataError(f"{where}: row {row}: no label in column {column!r} (null or missing)")
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise DataError(f"{where}: row {row}: label {label!r} in column {column!r} is neither an integer "
                            f"class id nor a class name")
        # A CSV column of ids and names reads as all strings ("1", "positive"): still a mix.
        is_id = isinstance(label, int) or (label.strip().isascii() and label.strip().isdigit())
        first_of_kind.setdefault("id" if is_id else "name", (row, label))
        labels.append(label)
    if len(first_of_kind) > 1:
        examples = ", ".join(f"row {row}: {label!r}" for row, label in sorted(first_of_kind.values()))
        raise DataError(f"{where}: labels in column {column!r} mix integers and strings ({examples}); "
                        f"use class ids or names, not both")
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        raise DataError(f"{where}: every row has label {distinct[0]!r}; a classification set needs at least "
                        f"2 distinct labels in column {column!r}")
    return tuple(labels)


def _label_map_example(labels: list[str]) -> str:
    spec = ",".join(f"{label}={i}" for i, label in enumerate(labels))
    if any("," in label or label != label.strip() for label in labels):
        spec = json.dumps({label: i for i, label in enumerate(labels)})
    return f"--label-map {shlex.quote(spec)}"
