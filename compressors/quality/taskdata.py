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

Techniques see the data through :meth:`TaskData.for_stage`: train rows only, and only when the
technique declares that it uses them (``Technique.uses_data``), in which case the train rows'
checksum is part of its artifact's cache key. Reading rows undeclared is an error, so no artifact
built from data can be cached without that data's checksum.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from compressors import CompressbenchError
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
        return described

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

    def _load(self, path: Path, name: str, option: str) -> TextClassificationSplit:
        from compressors.quality.userdata import load_labelled_split

        return load_labelled_split(path, self.columns, self.id2label, name=name, option=option,
                                   label_map=None if self.label_map is None else dict(self.label_map))

    @functools.cached_property
    def _eval(self) -> TextClassificationSplit:
        return self._load(self.eval_path, "eval", self.eval_option)

    @functools.cached_property
    def _train(self) -> TextClassificationSplit:
        if self.train_path is None:
            raise MissingTrainData(f"needs train rows and {self.eval_option} {self.eval_path} gives evaluation rows "
                                   f"only (never trained or calibrated on): give {self.train_option} FILE")
        return self._load(self.train_path, "train", self.train_option)

    def eval(self) -> TextClassificationSplit:
        return self._eval

    def train(self) -> TextClassificationSplit:
        return self._train


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
        return data
    raise DataError(f"{where}: no data settings for task {task!r}")
