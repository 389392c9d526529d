"""Turn a technique name into a search trial: build it (or load it from the artifact cache) like any
configuration, score it on the held-apart inputs (or read the scores a previous search stored), and
measure what the objective needs: a quick paired speed estimate against fp32 on one held-apart batch, the
artifact's size, and the resident memory its loading added.

The speed figure is a screening estimate (three alternating blocks of about a quarter second each, in the
search's own process); the winners are then timed by the suite with its paired fp32 blocks.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import types

import numpy as np

from compressors import CompressbenchError
from compressors.builders.techniques import build_chain, parse_chain
from compressors.core.cache import content_key, verify_entry
from compressors.core.task_kinds import TASK_CAUSAL_LM
from compressors.search.engine import Candidate
from compressors.search.quality import HeldApart, ScoreStore, lazy_scores

# the quick speed estimate: blocks of calls alternated between fp32 and the trial
SPEED_BLOCKS = 3
SPEED_BLOCK_S = 0.25
# what a trial adds to its build in the plan line's estimate: load the predictor, the quick speed estimate
TRIAL_FIXED_S = 4.0


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def quick_speed(reference, trial, example) -> float:
    """fp32's time over the trial's on ``example``: the median of :data:`SPEED_BLOCKS` paired block ratios."""
    ref_in, trial_in = reference.prepare(example), trial.prepare(example)
    reference.logits(ref_in)
    trial.logits(trial_in)  # warm both
    start = time.perf_counter()
    reference.logits(ref_in)
    reps = max(1, int(SPEED_BLOCK_S / max(time.perf_counter() - start, 1e-4)))
    ratios = []
    for _ in range(SPEED_BLOCKS):
        times = []
        for predictor, prepared in ((reference, ref_in), (trial, trial_in)):
            start = time.perf_counter()
            for _ in range(reps):
                predictor.logits(prepared)
            times.append(time.perf_counter() - start)
        ratios.append(times[0] / times[1])
    return round(statistics.median(ratios), 3)


@dataclasses.dataclass
class TrialRunner:
    """Trials of one model.

    Args:
        ctx: the model's build context (cache, model, data: builders see train rows as they always do).
        base: the model's fp32 artifact.
        label: cache folder prefix (the model's name).
        inputs: the held-apart inputs (:func:`compressors.search.quality.held_apart_inputs`).
        gemm_gflops: the kernel probe's fp32 GEMM rate (the plan's estimates).
        parameters: the model's parameters (non-embedding for a classifier).
    """

    ctx: object
    base: object
    label: str
    inputs: HeldApart
    gemm_gflops: float = 50.0
    parameters: int = 0
    train_tokens_per_row: float = 16.0

    def __post_init__(self):
        from compressors.execution.runtime import load_predictor

        self.store = ScoreStore(self.ctx.cache.root)
        self.looks = self.inputs.looks
        self._load = load_predictor
        self._reference_predictor = None
        known = self.store.get(self.base.key, self.inputs.checksum)
        if known is None or len(known) < self.inputs.units:
            known = self.inputs.scores(self.reference_predictor(), self.inputs.units)
            self.store.put(self.base.key, self.inputs.checksum, known)
        self.reference = known

    def reference_predictor(self):
        if self._reference_predictor is None:
            self._reference_predictor = self._load(self.base, "cpu")
        return self._reference_predictor

    # ------------------------------------------------------------------ the artifact cache
    def cached(self, technique: str) -> bool:
        """Every stage of ``technique`` is in the local artifact cache (the keys computed as the build would)."""
        chain = parse_chain(technique)
        key = self.base.key
        for stage in chain.build_stages:
            if stage.build is None:
                continue
            try:
                recipe = stage.cache_recipe(types.SimpleNamespace(key=key), stage.config.for_machine(self.ctx.cpu),
                                            self.ctx.data)
            except CompressbenchError:
                return False
            key = content_key({"kind": stage.artifact_kind, "recipe": recipe})
            folder = self.ctx.cache.entry_dir(stage.artifact_kind, f"{self.label}-{stage.name}", key)
            if not folder.is_dir() or verify_entry(folder)[0] is None:
                return False
        return True

    def layers_after(self, technique: str, layers: int) -> int:
        for stage in parse_chain(technique).build_stages:
            if stage.layers_after is not None:
                layers = stage.layers_after(layers)
        return layers

    # ------------------------------------------------------------------ a trial
    def candidate(self, technique: str) -> Candidate:
        was_cached = False
        start = time.monotonic()
        try:
            chain = parse_chain(technique)
            was_cached = self.cached(technique)
            artifact = build_chain(self.base, chain, self.ctx, self.label)
        except Exception as exc:  # noqa: BLE001  (any library's build failure is the trial's outcome, recorded)
            message = " ".join(str(exc).split())[:400]
            return Candidate(technique, build_s=time.monotonic() - start, error=f"{type(exc).__name__}: {message}")
        build_s = time.monotonic() - start
        known = self.store.get(artifact.key, self.inputs.checksum)
        loaded = {}

        def predictor():
            if "predictor" not in loaded:
                before = _rss()
                loaded["predictor"] = self._load(artifact, "cpu")
                loaded["memory_bytes"] = max(0, _rss() - before)
            return loaded["predictor"]

        scores_at = lazy_scores(predictor, self.inputs, known)

        def figures() -> dict:
            from compressors.quality.metrics import artifact_size_bytes

            speed = quick_speed(self.reference_predictor(), predictor(), self.inputs.timing_input)
            return {"speed_ratio": speed, "size_bytes": artifact_size_bytes(artifact),
                    "memory_bytes": loaded.get("memory_bytes")}

        def finish() -> dict:
            state = scores_at.state
            if state["evaluated"] and state["scores"] is not None:
                self.store.put(artifact.key, self.inputs.checksum, state["scores"])
            loaded.clear()
            return {"cached_scores": not state["evaluated"]}

        return Candidate(technique, scores_at=scores_at, figures=figures, build_s=build_s, cached=was_cached,
                         finish=finish)

    # ------------------------------------------------------------------ the plan's estimate
    def quality_s(self) -> float:
        """Seconds a trial's scoring and figures should take (its build: bench/plan.py's cost model)."""
        tokens = self.unit_tokens() * self.inputs.units
        return TRIAL_FIXED_S + 2 * self.parameters * tokens / (self.gemm_gflops * 1e9 * 0.5)

    def unit_tokens(self) -> float:
        """Mean tokens of one held-apart unit: a classifier row (its attention mask), or an LM window."""
        if self.inputs.task == TASK_CAUSAL_LM:
            return float(self.inputs.batches[0].shape[1])
        masks = [b["attention_mask"].sum() for b in self.inputs.batches if "attention_mask" in b]
        return float(np.sum(masks) / max(self.inputs.units, 1)) if masks else 32.0
