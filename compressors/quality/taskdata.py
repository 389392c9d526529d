"""The data a configuration is evaluated and built on, as one object per model.

A :class:`TaskData` holds a model's **evaluation rows** (what accuracy or perplexity is measured
on) and, where there are any, its **train rows** (what fine-tunes, calibrations, distillations and
sensitivity curves may see). It travels on the build context (``BuildContext.data``) to the model's
task, the techniques and the measurement process; nothing else reaches for SST-2 or WikiText-2.

* registered classifiers: SST-2 dev (evaluation) and train (:class:`Sst2Data`);
* registered language models: WikiText-2 raw test and tokenized validation (:class:`WikiTextData`);
* models given by path or hub id: the user's files (:class:`FileClassificationData`,
  :class:`TextFileData`); ``--dataset`` alone gives evaluation rows only, and every technique
  that trains or calibrates is then skipped with a reason naming ``--dataset-train``.

A user's train file that is the evaluation file, or shares rows with it, is said at collection in one
:class:`TrainEvalOverlapWarning` line with the count (:meth:`TaskData.warn_train_eval_overlap`); the saved run
records both files' identities and the overlap (:meth:`TaskData.describe`).

Techniques see the data through :meth:`TaskData.for_stage`: train rows only, and only when the
technique declares that it uses them (``Technique.uses_data``), in which case the train rows'
checksum is part of its artifact's cache key. Reading rows undeclared is an error, so no artifact
built from data can be cached without that data's checksum.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from compressors import CompressbenchError, warn_user
from compressors.core.hashing import sha256_file
from compressors.quality.data import (
    HELD_APART_SENTENCES,
    DataError,
    TextClassificationSplit,
    TextCorpus,
    load_sst2,
    load_wikitext,
    split_held_apart,
)

# A user's train file may be small: the held-apart slice (sensitivity curves, calibration) is then a
# tenth of it, never the whole file and never less than one row.
HELD_APART_SHARE = 10


class MissingTrainData(DataError):
    """A technique needs train rows and the run gave evaluation rows only; the message names the option."""


class UndeclaredDataUse(CompressbenchError):
    """A technique read rows without declaring ``uses_data`` (its artifacts would be cached without the
    data's checksum), or read the evaluation rows (never allowed while building)."""


class TrainEvalOverlapWarning(UserWarning):
    """The train file is the evaluation file, or shares rows with it: what is measured on those rows is
    measured on rows that techniques trained or calibrated on."""


@dataclasses.dataclass(frozen=True)
class FileIdentity:
    """What a run records of a user's data file: its path (absolute, as given), sha256 and rows."""

    path: str
    sha256: str
    rows: int


@dataclasses.dataclass(frozen=True)
class TrainEvalOverlap:
    """How much of the evaluation file the train file holds.

    ``same_file``: one file (the same real path) or two with the same bytes (the same sha256).
    ``shared_rows``: evaluation rows whose text (and pair text) is also a train row's, compared ignoring case
    and runs of whitespace; None where rows are not compared (plain-text files: only the same file is).
    """

    same_file: bool
    shared_rows: int | None
    eval_rows: int
    by: str  # what rows are compared by: "text", "text and pair", or "file" (not by rows)

    @property
    def leaks(self) -> bool:
        return self.same_file or bool(self.shared_rows)

    def message(self, train: str, evaluation: str) -> str:
        """The collection-time warning; ``train`` and ``evaluation`` are ``"--option path"``."""
        if self.same_file:
            return (f"{train} is the evaluation file {evaluation} (the same bytes): all {self.eval_rows:,} "
                    "evaluation rows are rows that techniques train or calibrate on")
        return (f"{train} shares {self.shared_rows:,} of {self.eval_rows:,} evaluation rows with {evaluation} "
                f"(by {self.by})")


def _same_file(a: Path, b: Path, a_sha256: str, b_sha256: str) -> bool:
    return a.resolve() == b.resolve() or a_sha256 == b_sha256


def _row_key(text: str, pair: str | None) -> tuple[str, str | None]:
    return " ".join(text.split()).casefold(), None if pair is None else " ".join(pair.split()).casefold()


def shared_rows(eval_texts, eval_pairs, train_texts, train_pairs) -> int:
    """How many evaluation rows have a text (and pair text) that a train row has too, ignoring case and runs
    of whitespace (a re-export that lower-cased or re-spaced the rows still shares them)."""
    train = {_row_key(t, None if train_pairs is None else p)
             for t, p in zip(train_texts, train_pairs or [None] * len(train_texts), strict=True)}
    return sum(_row_key(t, None if eval_pairs is None else p) in train
               for t, p in zip(eval_texts, eval_pairs or [None] * len(eval_texts), strict=True))


class TaskData:
    """Base class; see the module docstring. Subclasses set ``name``, ``train_option`` and the loaders."""

    name: str = "data"
    train_option: str = "--dataset-train"  # what a user passes to give train rows

    def eval(self):
        raise NotImplementedError

    def train(self):
        raise NotImplementedError

    @property
    def id2label(self) -> dict[int, str] | None:
        return None

    @property
    def has_train(self) -> bool:
        return True

    def train_checksum(self) -> str:
        """What goes into the cache key of every artifact built from this data's train rows."""
        return self.train().checksum

    def held_apart(self, n: int = HELD_APART_SENTENCES) -> tuple[TextClassificationSplit, TextClassificationSplit]:
        """``(rest, held_apart)`` of the train rows: a seeded slice of ``n`` rows (at most a tenth of a
        small train file) that fine-tunes never see, for decisions made from data (calibration,
        layer sensitivity)."""
        train = self.train()
        return split_held_apart(train, max(1, min(n, len(train) // HELD_APART_SHARE)))

    def describe(self, train_used: bool = False) -> dict:
        """What the saved run records: the rows evaluated (and trained or calibrated on, when used)."""
        described = {"name": self.name, "eval": _describe_rows(self.eval())}
        if train_used and self.has_train:
            described["train"] = _describe_rows(self.train())
        if self.id2label is not None:
            described["label_map"] = {str(k): v for k, v in sorted(self.id2label.items())}
        columns = getattr(self, "columns", None)
        if dataclasses.is_dataclass(columns):
            described["columns"] = dataclasses.asdict(columns)
        if getattr(self, "label_map", None):
            described["label_map_option"] = dict(self.label_map)
        files = self.file_identities()
        if files:
            described["files"] = {role: dataclasses.asdict(identity) for role, identity in files.items()}
        overlap = self.train_eval_overlap()
        if overlap is not None:
            described["train_eval_overlap"] = dataclasses.asdict(overlap)
        return described

    def file_identities(self) -> dict[str, FileIdentity]:
        """``{"eval": ..., "train": ...}``: the user's files this data was read from (none for the suite's own)."""
        return {}

    def train_eval_overlap(self) -> TrainEvalOverlap | None:
        """How much of the evaluation rows the train rows hold; None without a user's train file."""
        return None

    def warn_train_eval_overlap(self) -> TrainEvalOverlap | None:
        """Warn (one :class:`TrainEvalOverlapWarning` line, at collection) when the train file is the evaluation
        file or shares rows with it; returns the overlap."""
        overlap = self.train_eval_overlap()
        if overlap is not None and overlap.leaks:
            warn_user(TrainEvalOverlapWarning(overlap.message(
                f"{self.train_option} {self.train_path}", f"{self.eval_option} {self.eval_path}")))
        return overlap

    def for_stage(self, technique: str, uses_data: bool) -> StageData:
        """What a technique's builder may read (see the module docstring)."""
        return StageData(self, technique, uses_data)


def _describe_rows(rows) -> dict:
    if isinstance(rows, TextCorpus):
        return {"source": rows.source, "rows": rows.rows, "characters": len(rows.text), "checksum": rows.checksum}
    described = {"source": rows.source, "rows": len(rows), "checksum": rows.checksum,
                 "labels": {str(k): rows.labels.count(k) for k in sorted(set(rows.labels))}}
    if rows.pairs is not None:
        described["pairs"] = True
    return described


@dataclasses.dataclass(frozen=True)
class StageData:
    """A technique's view of the data while it builds: train rows only, and only when declared."""

    data: TaskData
    technique: str
    uses_data: bool

    def _check(self) -> None:
        if not self.uses_data:
            raise UndeclaredDataUse(f"technique {self.technique!r} read the train rows without declaring "
                                    "uses_data=True: its artifacts would be cached without the data's checksum")

    def train(self):
        self._check()
        return self.data.train()

    def held_apart(self, n: int = HELD_APART_SENTENCES):
        self._check()
        return self.data.held_apart(n)

    def eval(self):
        raise UndeclaredDataUse(f"technique {self.technique!r} asked for the evaluation rows while building: "
                                "techniques train and calibrate on train rows only")

    @property
    def id2label(self) -> dict[int, str] | None:
        return self.data.id2label

    @property
    def name(self) -> str:
        return self.data.name


@dataclasses.dataclass(frozen=True)
class Sst2Data(TaskData):
    """GLUE SST-2 (the shipped copy, a mirror folder or the hub: ``data_dir`` as
    :func:`~compressors.quality.data.load_sst2` takes it): dev to evaluate, train to build."""

    data_dir: Path | str | None = None
    name: str = "sst2"

    def eval(self) -> TextClassificationSplit:
        return load_sst2("dev", self.data_dir)

    def train(self) -> TextClassificationSplit:
        return load_sst2("train", self.data_dir)

    @property
    def id2label(self) -> dict[int, str]:
        return {0: "negative", 1: "positive"}


@dataclasses.dataclass(frozen=True)
class WikiTextData(TaskData):
    """WikiText-2: raw test to evaluate perplexity on, the tokenized validation text to calibrate on."""

    data_dir: Path | str | None = None
    name: str = "wikitext-2"
    train_option: str = "--text-file-train"

    def eval(self) -> TextCorpus:
        return load_wikitext("test", self.data_dir)

    def train(self) -> TextCorpus:
        return load_wikitext("valid", self.data_dir)


@dataclasses.dataclass(frozen=True)
class FileClassificationData(TaskData):
    """A user's labelled files (:mod:`compressors.quality.userdata`), labels resolved through the model's
    ``id2label`` (and ``label_map``): ``eval_path`` to evaluate, ``train_path`` (optional) to build."""

    eval_path: Path
    train_path: Path | None
    columns: object  # compressors.quality.userdata.Columns
    model_id2label: tuple[tuple[int, str], ...]
    label_map: tuple[tuple[str, int], ...] | None = None
    eval_option: str = "--dataset"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"file:{self.eval_path.name}"

    @property
    def id2label(self) -> dict[int, str]:
        return dict(self.model_id2label)

    @property
    def has_train(self) -> bool:
        return self.train_path is not None

    def _split(self, rows, name: str) -> TextClassificationSplit:
        from compressors.quality.userdata import labelled_split

        return labelled_split(rows, self.id2label, name,
                              label_map=None if self.label_map is None else dict(self.label_map))

    @functools.cached_property
    def _eval_file(self):  # compressors.quality.userdata.LabelledRows
        from compressors.quality.userdata import read_labelled_file

        return read_labelled_file(self.eval_path, self.columns, self.eval_option)

    @functools.cached_property
    def _train_file(self):
        if self.train_path is None:
            raise MissingTrainData(f"needs train rows and {self.eval_option} {self.eval_path} gives evaluation rows "
                                   f"only (never trained or calibrated on): give {self.train_option} FILE")
        from compressors.quality.userdata import read_labelled_file

        return read_labelled_file(self.train_path, self.columns, self.train_option)

    @functools.cached_property
    def _eval(self) -> TextClassificationSplit:
        return self._split(self._eval_file, "eval")

    @functools.cached_property
    def _train(self) -> TextClassificationSplit:
        return self._split(self._train_file, "train")

    def eval(self) -> TextClassificationSplit:
        return self._eval

    def train(self) -> TextClassificationSplit:
        return self._train

    def file_identities(self) -> dict[str, FileIdentity]:
        files = {"eval": self._eval_file} | ({"train": self._train_file} if self.has_train else {})
        return {role: FileIdentity(str(rows.path), rows.file_sha256, len(rows)) for role, rows in files.items()}

    def train_eval_overlap(self) -> TrainEvalOverlap | None:
        if not self.has_train:
            return None
        evaluation, train = self._eval_file, self._train_file
        same = _same_file(evaluation.path, train.path, evaluation.file_sha256, train.file_sha256)
        shared = shared_rows(evaluation.texts, evaluation.pairs, train.texts, train.pairs)
        return TrainEvalOverlap(same, shared, len(evaluation), "text" if evaluation.pairs is None else "text and pair")


@dataclasses.dataclass(frozen=True)
class TextFileData(TaskData):
    """A user's plain-text files for a causal LM, read as WikiText-2 raw test is (the suite's fixed
    perplexity method): ``eval_path`` to score, ``train_path`` (optional) to calibrate on."""

    eval_path: Path
    train_path: Path | None = None
    eval_option: str = "--text-file"
    train_option: str = "--text-file-train"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"file:{self.eval_path.name}"

    @property
    def has_train(self) -> bool:
        return self.train_path is not None

    @functools.cached_property
    def _eval(self) -> TextCorpus:
        from compressors.quality.userdata import load_text_file

        return load_text_file(self.eval_path, self.eval_option)

    @functools.cached_property
    def _train(self) -> TextCorpus:
        if self.train_path is None:
            raise MissingTrainData(f"needs text to calibrate on and {self.eval_option} {self.eval_path} is "
                                   f"evaluation text only: give {self.train_option} FILE")
        from compressors.quality.userdata import load_text_file

        return load_text_file(self.train_path, self.train_option)

    def eval(self) -> TextCorpus:
        return self._eval

    def train(self) -> TextCorpus:
        return self._train

    @functools.cached_property
    def _sha256(self) -> dict[str, str]:
        return {"eval": sha256_file(self.eval_path)} | (
            {"train": sha256_file(self.train_path)} if self.train_path is not None else {})

    def file_identities(self) -> dict[str, FileIdentity]:
        files = {"eval": (self.eval_path, self._eval)} | (
            {"train": (self.train_path, self._train)} if self.has_train else {})
        return {role: FileIdentity(str(path), self._sha256[role], corpus.rows)
                for role, (path, corpus) in files.items()}

    def train_eval_overlap(self) -> TrainEvalOverlap | None:
        if not self.has_train:
            return None
        # Lines are not compared: running text repeats short lines (headings, blank-ish rows) innocently.
        same = _same_file(self.eval_path, self.train_path, self._sha256["eval"], self._sha256["train"])
        return TrainEvalOverlap(same, None, self._eval.rows, "file")


@dataclasses.dataclass(frozen=True)
class InMemoryData(TaskData):
    """Rows given directly (unit tests, programmatic use)."""

    eval_rows: object = None
    train_rows: object = None
    name: str = "in-memory"
    labels: tuple[tuple[int, str], ...] | None = None

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.labels is None else dict(self.labels)

    @property
    def has_train(self) -> bool:
        return self.train_rows is not None

    def eval(self):
        if self.eval_rows is None:
            raise DataError(f"{self.name}: no evaluation rows")
        return self.eval_rows

    def train(self):
        if self.train_rows is None:
            raise MissingTrainData(f"{self.name}: no train rows")
        return self.train_rows


def default_data(task: str, data_dir: Path | str | None = None) -> TaskData:
    """The registered models' data for ``task``: SST-2 for classifiers, WikiText-2 for language models."""
    from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION

    if task == TASK_CLASSIFICATION:
        return Sst2Data(data_dir)
    if task == TASK_CAUSAL_LM:
        return WikiTextData(data_dir)
    raise DataError(f"no registered data for task {task!r}; tasks: {TASK_CLASSIFICATION}, {TASK_CAUSAL_LM}")


def model_id2label(config: dict | None) -> dict[int, str]:
    """A classifier's ``{id: name}`` from its config.json (``LABEL_i`` names where it has none)."""
    config = config or {}
    named = config.get("id2label") or {}
    if named:
        return {int(k): str(v) for k, v in named.items()}
    return {i: f"LABEL_{i}" for i in range(int(config.get("num_labels") or 2))}


def user_data(task: str, model_config: dict | None, values, where: str) -> TaskData | None:
    """The data of a model given by path or hub id, from the data settings in ``values`` (a mapping with
    the keys of :data:`compressors.core.settings.OPTIONS`), read and checked now: a missing or malformed file
    is one :class:`~compressors.quality.data.DataError` naming the file and the option. None: a causal LM without
    ``text_file`` (it is scored on WikiText-2, as the registered ones are). ``where``: the model, for messages."""
    from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION

    if task == TASK_CLASSIFICATION:
        from compressors.quality.userdata import Columns, parse_label_map

        given = {k: values.get(k) for k in ("dataset", "dataset_eval")}
        if given["dataset"] and given["dataset_eval"] and Path(given["dataset"]) != Path(given["dataset_eval"]):
            raise DataError(f"{where}: --dataset {given['dataset']} and --dataset-eval {given['dataset_eval']} name "
                            "two evaluation files; give one")
        option = "--dataset-eval" if given["dataset_eval"] else "--dataset"
        eval_path = given["dataset_eval"] or given["dataset"]
        if not eval_path:
            raise DataError(f"{where} is a classifier given by path or hub id: give its labelled evaluation data with "
                            "--dataset FILE (csv, tsv, json, jsonl, parquet; --text-column, --label-column name the "
                            "columns) and, for techniques that train or calibrate, --dataset-train FILE")
        label_map = values.get("label_map")
        label_map = None if label_map is None else tuple(sorted(parse_label_map(label_map).items()))
        data = FileClassificationData(
            Path(eval_path).expanduser().absolute(),
            None if not values.get("dataset_train") else Path(values["dataset_train"]).expanduser().absolute(),
            Columns(values.get("text_column") or "sentence", values.get("text_pair_column"),
                    values.get("label_column") or "label"),
            tuple(sorted(model_id2label(model_config).items())), label_map, eval_option=option)
        data.eval()
        if data.has_train:
            data.train()
            data.warn_train_eval_overlap()
        return data
    if task == TASK_CAUSAL_LM:
        if not values.get("text_file"):
            if values.get("text_file_train"):
                raise DataError(f"{where}: --text-file-train without --text-file; give the evaluation text too")
            return None
        train = values.get("text_file_train")
        data = TextFileData(Path(values["text_file"]).expanduser().absolute(),
                            None if not train else Path(train).expanduser().absolute())
        data.eval()
        if data.has_train:
            data.train()
            data.warn_train_eval_overlap()
        return data
    raise DataError(f"{where}: no data settings for task {task!r}")
