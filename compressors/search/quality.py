"""Quality on held-apart rows, paired with fp32 row by row, for the search's decisions.

What a trial is judged on (:class:`SearchRows`, the only way the search reaches data):

* a classifier: the held-apart slice of its train rows (:meth:`TaskData.held_apart`: for the registered
  classifiers 1,000 SST-2 train sentences the fine-tune never saw; for a model given by path, a slice of
  ``--dataset-train``), in a seeded order so that every prefix is a random subsample;
* a causal LM: windows of its calibration text (WikiText-2 ``wiki.valid.tokens``, or ``--text-file-train``)
  that overlap none of the windows calibration draws (:func:`lm_held_apart_windows`).

Evaluation rows are never read: :meth:`SearchRows.eval` raises :class:`EvaluationRowsGuard`, like
:class:`~compressors.quality.taskdata.StageData` does for a builder.

A trial's per-row outcome is stored under the cache root (``search-quality/``), keyed on the artifact and
the rows, so a search run again reads it instead of evaluating again (its trial is then "cached").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compressors import CompressbenchError
from compressors.core.task_kinds import TASK_CAUSAL_LM
from compressors.quality.data import subset

# the growing subsamples a trial is judged on (rows, or perplexity windows), each a prefix of the next
CLASSIFIER_LOOKS = (256, 512, 1000)
LM_LOOKS = (8, 16, 32)
LM_WINDOW = 512
SEARCH_ORDER_SEED = 0
STORE_FOLDER = "search-quality"
STORE_VERSION = 1


class EvaluationRowsGuard(CompressbenchError):
    """The search asked for evaluation rows: it tunes on held-apart rows only."""


@dataclasses.dataclass(frozen=True)
class SearchRows:
    """The search's view of a model's data: held-apart rows only.

    Args:
        data: the model's :class:`~compressors.quality.taskdata.TaskData`.
        task: the model's task.
    """

    data: object
    task: str

    def eval(self):
        raise EvaluationRowsGuard(f"the search asked for the evaluation rows of {getattr(self.data, 'name', '?')}: "
                                  "it decides on held-apart rows only, so that the evaluation of its winners is not "
                                  "tuned on")

    def classifier_rows(self):
        """The held-apart slice (a :class:`TextClassificationSplit`) in the search's seeded order."""
        _rest, held = self.data.held_apart()
        order = np.random.default_rng(SEARCH_ORDER_SEED).permutation(len(held))
        return subset(held, [int(i) for i in order], held.name)

    def calibration_text(self):
        return self.data.train()


def lm_held_apart_windows(tokenizer, rows: SearchRows, count: int = LM_LOOKS[-1], window: int = LM_WINDOW):
    """``count`` windows of ``window`` tokens of the calibration text that overlap no calibration window
    (:func:`compressors.builders.techniques.openvino.lm_calibration_spans`), spread evenly over the text,
    in a seeded order; and a checksum of their token ids."""
    from compressors.builders.techniques.openvino import lm_calibration_spans

    text = rows.calibration_text()
    ids = np.asarray(tokenizer(text.text, add_special_tokens=False)["input_ids"], np.int64)
    taken = lm_calibration_spans(len(ids))
    free = [start for start in range(0, len(ids) - window + 1, window)
            if not any(start < end and begin < start + window for begin, end in taken)]
    if not free:
        raise EvaluationRowsGuard(f"{text.name}: no {window}-token window outside the calibration windows")
    chosen = [free[i] for i in np.linspace(0, len(free) - 1, min(count, len(free))).round().astype(int)]
    chosen = [chosen[i] for i in np.random.default_rng(SEARCH_ORDER_SEED).permutation(len(chosen))]
    windows = [ids[s:s + window][None] for s in dict.fromkeys(chosen)]
    digest = hashlib.sha256(text.checksum.encode())
    for w in windows:
        digest.update(w.tobytes())
    return windows, digest.hexdigest()[:16]


@dataclasses.dataclass
class HeldApart:
    """The held-apart inputs of one model: batches (a classifier) or windows (a causal LM), and how to score a
    predictor on a prefix of them.

    Args:
        task: the model's task.
        units: the rows (classifier) or windows (LM) in search order.
        batches: the tokenized classifier batches (``batch_size`` rows each), or the LM windows.
        labels: classifier labels per row (None for an LM).
        checksum: of the inputs.
        source: where the rows came from, for the record.
    """

    task: str
    units: int
    batches: list
    labels: np.ndarray | None
    checksum: str
    source: str
    batch_size: int = 32

    @property
    def looks(self) -> tuple[int, ...]:
        looks = LM_LOOKS if self.task == TASK_CAUSAL_LM else CLASSIFIER_LOOKS
        return tuple(sorted({min(n, self.units) for n in looks}))

    @property
    def timing_input(self):
        """One input for the search's quick speed estimate: the first batch of 32 rows, or one window."""
        return self.batches[0] if self.task != TASK_CAUSAL_LM else {"input_ids": self.batches[0]}

    def scores(self, predictor, upto: int, done: np.ndarray | None = None) -> np.ndarray:
        """Per-unit scores of ``predictor`` on the first ``upto`` units (``done``: the scores already known
        for a prefix): a classifier's per-row correctness (0/1), an LM's per-window mean NLL (nats/token)."""
        have = 0 if done is None else len(done)
        known = np.zeros(0) if done is None else np.asarray(done, float)
        if self.task == TASK_CAUSAL_LM:
            from compressors.quality.metrics import sequence_nll

            new = []
            for window in self.batches[have:upto]:
                logits = predictor.logits(predictor.prepare({"input_ids": window}))
                nll, n = sequence_nll(logits[0], window[0])
                new.append(nll / n)
            return np.concatenate([known, np.asarray(new, float)])[:upto]
        first, last = have // self.batch_size, math.ceil(upto / self.batch_size)
        start = first * self.batch_size
        predicted = [predictor.logits(predictor.prepare(batch)).argmax(-1) for batch in self.batches[first:last]]
        predicted = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
        correct = (predicted == self.labels[start:start + len(predicted)]).astype(float)
        return np.concatenate([known[:start], correct])[:upto]


def held_apart_inputs(tokenizer, rows: SearchRows, model_config: dict | None) -> HeldApart:
    """Tokenize the model's held-apart rows (or windows) once per search."""
    if rows.task == TASK_CAUSAL_LM:
        windows, checksum = lm_held_apart_windows(tokenizer, rows)
        text = rows.calibration_text()
        return HeldApart(rows.task, len(windows), windows, None, checksum,
                         f"{text.source}: {len(windows)} windows of {LM_WINDOW} tokens outside the calibration "
                         "windows")
    from compressors.quality.metrics import eval_max_length, make_eval_set

    split = rows.classifier_rows()
    eval_set = make_eval_set(tokenizer, split, eval_max_length(tokenizer, model_config))
    return HeldApart(rows.task, len(split), list(eval_set.batches), eval_set.labels, eval_set.checksum[:16],
                     f"{split.source.rsplit(' [', 1)[0]}: the held-apart slice ({len(split)} rows), seeded order")


class ScoreStore:
    """Per-unit scores of artifacts on held-apart inputs, kept under the cache root so a search run again
    does not evaluate again. A file that does not read back is ignored (and rewritten)."""

    def __init__(self, root: Path):
        self.folder = Path(root) / STORE_FOLDER

    def _path(self, artifact_key: str, inputs_checksum: str) -> Path:
        digest = hashlib.sha256(f"{STORE_VERSION}:{artifact_key}:{inputs_checksum}".encode()).hexdigest()[:24]
        return self.folder / f"{digest}.json"

    def get(self, artifact_key: str, inputs_checksum: str) -> np.ndarray | None:
        try:
            return np.asarray(json.loads(self._path(artifact_key, inputs_checksum).read_text())["scores"], float)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, artifact_key: str, inputs_checksum: str, scores: np.ndarray) -> None:
        path = self._path(artifact_key, inputs_checksum)
        path.parent.mkdir(parents=True, exist_ok=True)
        old = self.get(artifact_key, inputs_checksum)
        if old is not None and len(old) >= len(scores):
            return  # a longer record is kept
        tmp = path.with_suffix(f".tmp{id(scores)}")
        tmp.write_text(json.dumps({"artifact": artifact_key, "inputs": inputs_checksum,
                                   "scores": [float(s) for s in scores]}))
        tmp.replace(path)


def lazy_scores(predictor_factory: Callable[[], object], inputs: HeldApart, known: np.ndarray | None):
    """``scores_at(n)``: per-unit scores on the first ``n`` held-apart units, evaluating only what ``known``
    (read from the store) does not cover; the predictor is loaded on the first unit it must score."""
    state = {"scores": known, "predictor": None, "evaluated": False}

    def scores_at(n: int) -> np.ndarray:
        have = state["scores"]
        if have is None or len(have) < n:
            if state["predictor"] is None:
                state["predictor"] = predictor_factory()
            state["scores"] = inputs.scores(state["predictor"], n, have)
            state["evaluated"] = True
        return state["scores"][:n]

    scores_at.state = state
    return scores_at
