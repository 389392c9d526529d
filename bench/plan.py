"""Say the cost before spending it: for each model given by path or hub id, what a run will build, train
and measure, and about how long, from the model's parameters, its data's rows and this machine's
kernel probe; printed at collection (``--collect-only`` too) and saved with the run.

The estimate is deliberately simple, one term per kind of work (each constant says why below):

* building a stage that trains: 6 x (non-embedding parameters) x (train tokens) FLOPs (forward and
  backward) at the probe's fp32 GEMM rate x :data:`TRAIN_EFFICIENCY`; train tokens = the recipe's
  rows (at most the train file's) x epochs x their mean length, cut at the recipe's max length;
* layer sensitivity (layer dropping): one evaluation of the held-apart rows per layer;
* any other stage (export, quantization): :data:`BUILD_FIXED_S` plus :data:`BUILD_S_PER_MPARAM` per
  million parameters, and :data:`CALIBRATION_S` (+ :data:`CALIBRATION_S_PER_MPARAM`) more where it
  calibrates on train rows;
* an isolated quality/memory measurement not stored yet: 2 x parameters x evaluation tokens at the
  GEMM rate, plus :data:`MEASURE_FIXED_S` (a fresh process imports its runtime and loads the model);
* each timed test: :data:`TIMING_FIXED_S` plus the larger of :data:`TIMING_MIN_S` (pytest-benchmark
  fills its one-second rounds with a fast call, then the paired fp32 blocks) and :data:`TIMED_CALLS`
  calls of its timed input (a slow call gets the minimum rounds, a warm-up and its fp32 blocks).

What is already in the artifact cache (or measured on this machine) costs nothing and is not counted.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

# Constants of the estimate (see the module docstring), fitted on the MiniLM-L6 (22.7M) and SmolLM2-135M
# runs of one 2-core Intel Xeon with AMX: a plan is right within a factor of about 2, not to the
# minute; the fixed costs (process start, imports, loading) move less with the machine than the GEMM terms.
TRAIN_EFFICIENCY = 0.5  # backward GEMMs are less regular than the probe's; the optimiser, padding, dropout
EVAL_EFFICIENCY = 0.5  # evaluation batches are small GEMMs, in a fresh process
MEASURE_FIXED_S = 4.0  # a fresh process: imports its runtime, loads the artifact
BUILD_FIXED_S = 5.0  # load, convert, save
CALIBRATION_S = 20.0  # static quantization / NNCF: calibration passes and histogram statistics
CALIBRATION_S_PER_MPARAM = 0.5  # data-aware weight compression (AWQ, scale estimation) searches per layer
BUILD_S_PER_MPARAM = 0.02
TIMING_FIXED_S = 3.0
TIMING_MIN_S = 1.5
TIMED_CALLS = 12
TOKEN_SAMPLE = 512  # rows tokenized to estimate the mean length


@dataclasses.dataclass
class Plan:
    """What a run will do for one model, and the estimated seconds of each part."""

    model: str
    origin: str
    parameters: int
    eval_rows: int
    train_rows: int | None
    builds: list[str]
    trainings: list[str]
    measurements: list[str]
    tests: int
    seconds: dict[str, float]
    gemm_gflops: float

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def line(self) -> str:
        train = "no train rows" if self.train_rows is None else f"{self.train_rows:,} train rows"
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items() if seconds >= 0.5)
        return (f"plan: {self.model} ({self.origin}; {self.parameters / 1e6:.1f}M parameters, {self.eval_rows:,} "
                f"evaluation rows, {train}): {len(self.builds)} artifact(s) to build ({len(self.trainings)} "
                f"training), {len(self.measurements)} quality/memory measurement(s), {self.tests} timed test(s); "
                f"about {_minutes(self.total_s)} ({parts or 'nothing to do'}; fp32 GEMM {self.gemm_gflops:g} "
                "GFLOP/s from the kernel probe)")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total_s": round(self.total_s, 1)}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def parameter_counts(folder: Path) -> tuple[int, int]:
    """``(all, embedding)`` parameters of the weights ``from_pretrained`` would load from ``folder``, whatever
    their format: safetensors headers, or a pickle checkpoint's tensor table through PyTorch's weights-only
    loader (compressors.builders.models.user.weight_shapes; tied weights counted once)."""
    from compressors.builders.models.user import weight_files, weight_shapes

    total = embedding = 0
    for name, shape in weight_shapes(weight_files(folder, str(folder)), str(folder)).items():
        count = 1
        for dim in shape:
            count *= dim
        total += count
        embedding += count if ("embed" in name or name.endswith(("wte.weight", "wpe.weight"))) else 0
    return total, embedding


def _mean_tokens(tokenizer, texts, pairs=None, cap: int | None = None) -> float:
    sample = list(texts[:TOKEN_SAMPLE])
    second = None if pairs is None else list(pairs[:TOKEN_SAMPLE])
    if not sample:
        return 0.0
    lengths = [len(ids) for ids in tokenizer(sample, second, truncation=cap is not None, max_length=cap)["input_ids"]]
    return sum(lengths) / len(lengths)


def _cached_manifest(folder: Path) -> dict | None:
    """The manifest of a cache entry, or None. Read, not verified: the cache checks every file's sha256
    when the run loads the entry; hashing whole artifacts at collection would do that work twice."""
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def plan_model(model, cases: list, data, cache, cpu, probe: dict) -> Plan | None:
    """The plan of ``model`` (a model given by path) over ``cases`` (its collected, runnable cases), or None
    when its folder is not at hand (a hub model not in the local cache)."""
    from transformers import AutoTokenizer

    from compressors.builders.models.user import folder_recipe, local_folder
    from compressors.core.cache import content_key
    from compressors.core.task_kinds import TASK_CAUSAL_LM
    from compressors.evaluation.isolated import measurement_version
    from compressors.quality.metrics import CPU_EVAL_TOKENS, artifact_identity, eval_max_length, measurement_path

    folder = local_folder(model)
    if folder is None:
        return None
    config = json.loads((folder / "config.json").read_text())
    total, embedding = parameter_counts(folder)
    dense = total if model.task == TASK_CAUSAL_LM else max(total - embedding, 1)  # an LM's head is a GEMM too
    gemm = float(probe.get("kernels", {}).get("fp32-gemm", {}).get("gops") or 50.0) * 1e9
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=model.trust_remote_code)
    rows = data.eval() if data is not None else None
    if model.task == TASK_CAUSAL_LM:
        eval_rows = getattr(rows, "rows", 0) if rows is not None else 0
        eval_tokens = CPU_EVAL_TOKENS
    else:
        eval_rows = len(rows)
        cap = eval_max_length(tokenizer, config)
        eval_tokens = _mean_tokens(tokenizer, rows.sentences, rows.pairs, cap) * len(rows)
    # what the measurements are keyed on (the same evaluation inputs the harness makes): a stored one costs nothing
    eval_checksum = cases[0].task.eval_data(tokenizer, data, cases[0].scenario, config).checksum if (
        cases and data is not None) else None
    train = data.train() if data is not None and data.has_train else None
    train_rows = None if train is None else getattr(train, "rows", None) if model.task == TASK_CAUSAL_LM else len(train)

    seconds = {"building": 0.0, "training": 0.0, "measuring": 0.0, "timing": 0.0}
    builds, trainings, measurements = [], [], []
    base_key = content_key({"kind": "hf-torch", "recipe": folder_recipe(folder, model)})
    base_manifest = _cached_manifest(cache.entry_dir("hf-torch", model.name, base_key))
    if base_manifest is None:
        builds.append(f"{model.name} (copy of the folder)")
        seconds["building"] += BUILD_FIXED_S + BUILD_S_PER_MPARAM * total / 1e6
    seen: set[str] = set()
    baseline = [c for c in cases if c.chain.name == "fp32"] or [cases[0].with_chain("fp32")] if cases else []
    for case in baseline[:1] + [c for c in cases if c.chain.name != "fp32"]:
        key, manifest = base_key, base_manifest  # the manifest of what is built so far, when cached
        for stage in case.chain.build_stages:
            if stage.build is None:
                continue
            if stage.uses_data and train is None:
                key = None  # skipped at run time: no train rows
                break
            # the key the build will have: cache_recipe reads only its parent's key
            recipe = stage.cache_recipe(types.SimpleNamespace(key=key), stage.config.for_machine(cpu), data)
            key = content_key({"kind": stage.artifact_kind, "recipe": recipe})
            name = f"{model.name}-{stage.name}"
            manifest = _cached_manifest(cache.entry_dir(stage.artifact_kind, name, key))
            if key in seen or manifest is not None:
                seen.add(key)
                continue
            seen.add(key)
            builds.append(name)
            if stage.trains:
                trainings.append(name)
                recipe_rows = getattr(stage.config, "recipe", None)
                n = min(getattr(recipe_rows, "n_sentences", len(train)), len(train))
                length = _mean_tokens(tokenizer, train.sentences, train.pairs, getattr(recipe_rows, "max_length", None))
                epochs = getattr(recipe_rows, "epochs", 1)
                seconds["training"] += 6 * dense * n * epochs * length / (gemm * TRAIN_EFFICIENCY)
            else:
                seconds["building"] += BUILD_FIXED_S + BUILD_S_PER_MPARAM * total / 1e6
                if stage.uses_data and not hasattr(stage.config, "drop"):  # calibrates (layer dropping: below)
                    seconds["building"] += CALIBRATION_S + CALIBRATION_S_PER_MPARAM * total / 1e6
            if hasattr(stage.config, "drop") and train is not None:  # layer dropping's sensitivity: a pass per layer
                layers = model.encoder_layers() or 0
                held = len(data.held_apart()[1])
                seconds["building"] += layers * 2 * dense * held * _mean_tokens(tokenizer, train.sentences) / (
                    gemm * EVAL_EFFICIENCY)
        if key is None:
            continue
        stored = eval_checksum is not None and manifest is not None and measurement_path(
            cache.root, artifact_identity(manifest), eval_checksum, "cpu", cpu, measurement_version()).is_file()
        if case.config_id not in measurements and not stored:
            measurements.append(case.config_id)
            seconds["measuring"] += MEASURE_FIXED_S + 2 * dense * eval_tokens / (gemm * EVAL_EFFICIENCY)
        if case not in cases:
            continue  # the fp32 baseline a run measures even when it times no fp32 row
        timed_tokens = case.batch_size * (case.scenario.prefill_tokens if model.task == TASK_CAUSAL_LM
                                          else eval_tokens / max(eval_rows, 1))
        if getattr(case.scenario, "timed", "") == "generate":
            timed_tokens = case.scenario.new_tokens + 12
        call_s = 2 * dense * timed_tokens / (gemm * EVAL_EFFICIENCY)
        seconds["timing"] += TIMING_FIXED_S + max(TIMING_MIN_S, TIMED_CALLS * call_s)
    return Plan(model.name, str(model.origin), total, eval_rows, train_rows, builds,
                trainings, measurements, len(cases), {k: round(v, 1) for k, v in seconds.items()}, gemm / 1e9)
