"""Wiring between the compressors library and pytest: build, measure, memoise, skip, record.

One :class:`BenchSession` per pytest session (per xdist worker) memoises what is shared between
tests: base models, built artifacts, tokenizers, evaluation inputs, isolated measurements and
loaded predictors, so every scenario of a configuration builds and measures once. What a model
is evaluated and timed on comes from its task object (:mod:`compressors.evaluation.tasks`); what a test
records is a :class:`~compressors.records.results.ResultRow`. Nothing here is timed; a test times only
the task's timed call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bench import budgets as budgets_mod
from bench.cases import Case
from compressors import CompressbenchError
from compressors.builders.context import BuildContext
from compressors.builders.models import ModelSpec, ModelUnavailable
from compressors.builders.techniques import build_chain
from compressors.core.cache import Artifact, library_versions
from compressors.core.quiet import quiet_libraries
from compressors.evaluation.isolated import measure_isolated
from compressors.evaluation.tasks import BASELINE
from compressors.execution.runtime import Predictor, load_predictor
from compressors.machine.hardware import detect
from compressors.machine.placement import FALLBACK_PREFIX, FallbackWarning, fallback_parts
from compressors.machine.timing import (
    MIN_BLOCKS,
    ContentionMonitor,
    InterleavedBaseline,
    TimeAccount,
    paired_speed,
    time_limit,
)
from compressors.quality.data import DataError
from compressors.quality.metrics import artifact_size_bytes, stored_measurement
from compressors.quality.taskdata import MissingTrainData, TaskData, default_data
from compressors.records.results import Identity, Placement, Provenance, ResultRow, SizeMemory, latency_summary

NEAR_CHANCE_PP = 5.0


class NearChanceWarning(UserWarning):
    """A user model's fp32 accuracy is near chance on its data: labels swapped or mapped wrongly?"""


class _Failed:
    """A memoised failure, re-raised for every test that needs the same thing."""

    def __init__(self, exc: BaseException):
        self.exc = exc


@dataclasses.dataclass
class PreparedCase:
    """Everything a test needs around its timed call: built, measured and loaded, inputs prepared."""

    case: Case
    row: ResultRow
    predictor: Predictor
    timed: Callable
    args: tuple
    timing_input: dict[str, np.ndarray]
    budget: budgets_mod.Budget
    verdicts: list
    threads: int | None = None  # threads the timed runtime uses (for the contention rule)


# What each memoised computation's time counts as (BenchSession.account), by the first part of its key.
_PHASE_OF = {"base": "build", "artifact": "build", "measure": "measure", "predictor": "load",
             "tokenizer": "inputs", "eval": "inputs", "timing": "inputs"}

# --max-measure-seconds is sized for the default evaluation scope; a whole-test-set perplexity
# (``-fullppl``, --extended) gets this many times it (~15 minutes of SmolLM2 on 2 cores, 1 thread).
FULL_TEST_GUARD_FACTOR = 4


class BenchSession:
    def __init__(self, ctx: BuildContext, pytest_config):
        self.ctx = ctx
        self.pytest_config = pytest_config
        self.budgets = session_budgets(pytest_config)
        self._memo: dict[tuple, Any] = {}
        self.cases: dict[str, Case] = {}  # the configurations timed so far, by test id
        self.max_build_s = self._option("--max-build-seconds")
        self.max_measure_s = self._option("--max-measure-seconds")
        self.account = TimeAccount()  # where the session's time goes (the run's closing "time:" line)

    def _option(self, name: str, default=None):
        """A setting of the run (compressors.core.settings: its resolved value, or its one default), or another
        pytest option (``default`` when a stand-in config in unit tests has none)."""
        from compressors.core.settings import BY_NAME

        key = name.lstrip("-").replace("-", "_")
        settings = getattr(self.pytest_config, "compressbench_settings", None)
        if key in BY_NAME and settings is not None:
            return settings.values[key]
        try:
            value = self.pytest_config.getoption(name)
        except (ValueError, AttributeError):  # a stand-in config (unit tests)
            value = None
        if value is None and key in BY_NAME:
            return BY_NAME[key].default
        return default if value is None else value

    # ------------------------------------------------------------------ memo helpers
    def _once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            phase = _PHASE_OF.get(key[0])
            try:
                with self.account.phase(phase) if phase else contextlib.nullcontext():
                    self._memo[key] = compute()
            except (pytest.skip.Exception, CompressbenchError, RuntimeError, ValueError) as exc:
                self._memo[key] = _Failed(exc)
        value = self._memo[key]
        if isinstance(value, _Failed):
            raise value.exc
        return value

    @contextlib.contextmanager
    def visible_output(self):
        """Let the suite's progress bars through pytest's capture while building, and hold back the
        libraries' chatter (compressors.core.quiet) unless the run is verbose (-v) or uncaptured (-s)."""
        manager = getattr(self.pytest_config, "pluginmanager", None)
        capman = manager.getplugin("capturemanager") if manager else None
        with (capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()), self.held_chatter():
            yield

    def held_chatter(self):
        """compressors.core.quiet's hold on the libraries' chatter (log lines, prints, their Python
        warnings), or nothing when the run is verbose (-v) or uncaptured (-s)."""
        verbose = self._option("verbose", 0) > 0 or self._option("capture", "fd") == "no"
        return contextlib.nullcontext() if verbose else quiet_libraries()

    # ------------------------------------------------------------------ data
    def data_for(self, model: ModelSpec) -> TaskData:
        """The model's data: the user's files for a model given on the command line with them, else its
        task's registered data (SST-2, WikiText-2) from the run's mirror."""
        user = getattr(self.pytest_config, "compressbench_user_data", None) or {}
        if model.name in user:
            return user[model.name]
        return self._once(("data", model.task), lambda: default_data(model.task, self.ctx.data_dir))

    def ctx_for(self, model: ModelSpec) -> BuildContext:
        """The build context of ``model``'s configurations: the run's, with the model and its data."""
        return dataclasses.replace(self.ctx, model=model, data=self.data_for(model))

    def check_data(self, models) -> None:
        """Stop the run with one message when data the run uses is missing or wrong: the evaluation rows
        of every model in it, and train rows where the model's own data has them (SST-2 train, which the
        embedded classifier is fine-tuned on); only the data this run uses is read."""
        try:
            for model in models:
                data = self.data_for(model)
                data.eval()
                if data.has_train and not getattr(model, "user", False):
                    data.train()
        except DataError as exc:
            pytest.exit(f"compressbench: {exc}", returncode=4)

    def model_config(self, model: ModelSpec) -> dict | None:
        """The base artifact's config.json (where evaluation rows are cut), or None."""
        import json

        def read():
            try:
                return json.loads(self.base(model).file("config.json").read_text())
            except (OSError, ValueError):
                return None

        return self._once(("config", model.name), read)

    # ------------------------------------------------------------------ building
    def base(self, model: ModelSpec) -> Artifact:
        def compute():
            try:
                model.check_available(model, self.ctx)
            except ModelUnavailable as exc:
                pytest.skip(str(exc))
            with self.visible_output(), time_limit(self.max_build_s, f"building {model.name}", "--max-build-seconds"):
                return model.build_base(model, self.ctx_for(model))

        return self._once(("base", model.name), compute)

    def artifact(self, case: Case) -> Artifact:
        missing = case.chain.missing_requirements()
        if missing:
            pytest.skip(f"{case.chain.name} needs {missing}: pip install -e '.[bench]'")
        data = self.data_for(case.model)
        if case.chain.uses_data and not data.has_train:
            pytest.skip(f"{case.chain.name} trains or calibrates, and {data.name} gives evaluation rows only "
                        f"(never trained or calibrated on): give {data.train_option} FILE")

        def compute():
            base = self.base(case.model)
            with self.visible_output(), time_limit(self.max_build_s, f"building {case.model.name}-{case.chain.name}",
                                                   "--max-build-seconds"):
                try:
                    return build_chain(base, case.chain, self.ctx_for(case.model), case.model.name)
                except MissingTrainData as exc:
                    pytest.skip(f"{case.chain.name}: {exc}")

        return self._once(("artifact", case.model.name, case.chain.name), compute)

    # ------------------------------------------------------------------ task inputs
    def tokenizer(self, model: ModelSpec):
        def compute():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.base(model).path,
                                                 trust_remote_code=getattr(model, "trust_remote_code", False))

        return self._once(("tokenizer", model.name), compute)

    def eval_data(self, case: Case):
        """The task's evaluation inputs (the model's evaluation rows as batches or perplexity windows),
        tokenized once per model."""
        key = case.task.eval_key(case.scenario)
        return self._once(("eval", case.model.name, key), lambda: case.task.eval_data(
            self.tokenizer(case.model), self.data_for(case.model), case.scenario, self.model_config(case.model)))

    def timing_input(self, case: Case) -> dict[str, np.ndarray]:
        return self._once(("timing", case.model.name, case.scenario), lambda: case.task.timing_input(
            self.tokenizer(case.model), self.data_for(case.model), case.scenario, lambda: self.eval_data(case)))

    # ------------------------------------------------------------------ measuring
    def device(self, case: Case) -> str:
        """Where ``case`` runs here: ``cpu`` or ``cuda:N`` (the first GPU of its tier, or the one
        ``--device`` names); skips when the tier is absent or ``--device`` excludes it."""
        device, reason = detect().device_for(case.tier, getattr(self.pytest_config, "compressbench_device", None))
        if device is None:
            pytest.skip(reason)
        return device

    def release_gpu(self) -> None:
        """One model on the GPU at a time: drop every loaded GPU predictor and free the allocator,
        so the next configuration's load and VRAM start from an empty device."""
        keys = [k for k in self._memo if k[0] == "predictor" and k[2].startswith("cuda")]
        for key in keys:
            del self._memo[key]
        if keys:
            import torch

            from compressors.machine.gpu_memory import release_cuda_memory

            for device in sorted({k[2] for k in keys}):
                release_cuda_memory(device, torch.cuda)

    def measurement(self, case: Case) -> dict:
        """Quality and memory of the case's configuration, in an isolated process (once per
        configuration and evaluation: every batch size or timed scenario of it shares it)."""
        device = self.device(case)
        key = ("measure", case.config_id, case.task.eval_key(case.scenario))
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()  # the measurement process gets the GPU to itself
        timeout = self.max_measure_s
        if timeout and getattr(case.scenario, "full_test", False):
            timeout *= FULL_TEST_GUARD_FACTOR  # the whole test set: ~19x the tokens of the default scope

        def compute():
            artifact, eval_data = self.artifact(case), self.eval_data(case)
            return stored_measurement(
                self.ctx.cache.root, artifact, eval_data, device, self.ctx.cpu,
                lambda: measure_isolated(artifact, eval_data, device, timeout=timeout),
                refresh=bool(self._option("--remeasure")))

        return self._once(key, compute)

    def predictor(self, case: Case) -> Predictor:
        device = self.device(case)
        key = ("predictor", case.config_id, device)
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()

        def load():
            artifact = self.artifact(case)
            with self.held_chatter():  # torch's deprecations on loading a quantized model, ...
                return load_predictor(artifact, device)

        return self._once(key, load)

    def check_placement(self, case: Case, row: ResultRow, predictor: Predictor) -> ResultRow:
        """Catch a configuration meant for a GPU that runs (partly) on the CPU, in the measurement
        process or the timed one. Records the fallback (empty when none) and then, per
        ``--on-fallback``: fails (default), xfails, or warns and carries on."""
        timed = predictor.placement()
        parts = [f"measurement process: {p}" for p in fallback_parts(row.placement.placement)]
        parts += [f"timed process: {p}" for p in fallback_parts(timed)]
        row = row.replace(placement={"fallback": parts, "timed_placement": timed})
        if parts:
            message = f"{case.id} {FALLBACK_PREFIX}" + "; ".join(parts)
            mode = self._option("--on-fallback")
            if mode == "fail":
                pytest.fail(message, pytrace=False)
            elif mode == "xfail":
                pytest.xfail(message)
            else:
                warnings.warn(FallbackWarning(message), stacklevel=2)
        return row

    # ------------------------------------------------------------------ results
    def result_row(self, case: Case) -> ResultRow:
        """Every non-timing figure of ``case``: quality vs the fp32 baseline, size, memory, provenance."""
        measured = self.measurement(case)
        baseline_case = dataclasses.replace(case.with_chain(BASELINE), tier="cpu")  # the same model, fp32 on CPU
        baseline = measured if baseline_case.config_id == case.config_id else self.measurement(baseline_case)
        artifact, base = self.artifact(case), self.base(case.model)
        size, baseline_size = artifact_size_bytes(artifact), artifact_size_bytes(self.artifact(baseline_case))
        eval_data, data = self.eval_data(case), self.data_for(case.model)
        # train rows were used where this chain, or the base it starts from, was built from data
        train_used = case.chain.uses_data or bool((base.meta or {}).get("training"))
        if getattr(case.model, "user", False) and "accuracy" in baseline:
            self._warn_near_chance(case.model, baseline["accuracy"], data)
        return ResultRow(
            identity=Identity(model=case.model.name, technique=case.chain.name, tier=case.tier,
                              batch_size=case.batch_size, device=case.device, run_device=self.device(case),
                              task=case.model.task, scenario=case.scenario.name),
            quality=case.task.quality(measured, baseline, eval_data, case.scenario, data),
            size=SizeMemory(
                size_bytes=size, size_ratio_vs_fp32=round(size / baseline_size, 4),
                peak_memory_bytes=measured["peak_memory_bytes"], peak_rss_bytes=measured["peak_rss_bytes"],
                runtime_rss_bytes=measured["runtime_rss_bytes"],
                memory_flags=measured.get("memory_flags", []),  # negative deltas clamped to 0, named here
                vram={k: v for k, v in measured.items() if k.startswith("vram_")} or None),  # GPU tiers
            placement=Placement(placement=measured["placement"]),
            provenance=Provenance(
                recipe=case.chain.to_dict(), model_spec=case.model.to_dict(), artifact_key=artifact.key,
                artifact_meta=artifact.meta, base_artifact={"key": base.key, "meta": base.meta},
                versions=library_versions(*case.task.versions), measurement=measured.get("measurement"),
                timing_input=case.task.describe_timing_input(self.timing_input(case), case.scenario, data),
                data=data.describe(train_used)),
        )

    def _warn_near_chance(self, model: ModelSpec, accuracy: float, data: TaskData) -> None:
        """Once per model: its fp32 accuracy within 5 pp of chance (the larger of 1/labels and the most
        frequent label's share) is the usual sign of labels that mean something else to the model."""
        if ("chance-warned", model.name) in self._memo:
            return
        self._memo[("chance-warned", model.name)] = True
        rows = data.eval()
        labels = len(data.id2label or {}) or len(set(rows.labels))
        chance = 100.0 * max(1 / max(labels, 1), max(rows.labels.count(k) for k in set(rows.labels)) / len(rows))
        if accuracy <= chance + NEAR_CHANCE_PP:
            warnings.warn(NearChanceWarning(
                f"{model.name}: fp32 accuracy {accuracy:.2f}% on {rows.source} is within {NEAR_CHANCE_PP:g} pp of "
                f"chance ({chance:.2f}%): check that the labels mean what the model's do (its labels: "
                f"{data.id2label}; --label-map maps names to ids)"), stacklevel=2)

    def verdicts(self, case: Case, row: ResultRow) -> tuple[ResultRow, budgets_mod.Budget, list[budgets_mod.Verdict]]:
        user = getattr(case.model, "user", False)
        budget = budgets_mod.budget_for(self.budgets, case.chain.name, case.model.name,
                                        task=case.model.task if user else None)
        row = row.replace(provenance={"budget": budget.to_dict()})
        fp32_peak = None
        if budget.max_peak_memory_vs_fp32 is not None:  # the same model's fp32 peak, measured on this machine
            baseline_case = dataclasses.replace(case.with_chain(BASELINE), tier="cpu")
            fp32_peak = self.measurement(baseline_case).get("peak_memory_bytes")
        return row, budget, budgets_mod.check_row(budget, row, fp32_peak)

    # ------------------------------------------------------------------ one test
    def prepare(self, case: Case) -> PreparedCase:
        """Build (cached), measure quality and memory in a fresh process, load the predictor, check
        its placement and prepare the timed call's inputs: everything before timing, untimed."""
        row = self.result_row(case)
        predictor = self.predictor(case)
        row = self.check_placement(case, row, predictor)  # a GPU case partly on the CPU: --on-fallback
        timing_input = self.timing_input(case)
        with self.account.phase("load"):
            prepared = predictor.prepare(timing_input)  # untimed; compiles a torch.compile-d model
        try:
            timed, args = case.task.timed_call(predictor, prepared, case.scenario)
        except ValueError as exc:
            raise ValueError(f"{case.chain.name}: {exc}") from None
        row, budget, verdicts = self.verdicts(case, row)
        placement = row.placement.timed_placement or {}
        threads = placement.get("torch_threads") or placement.get("intra_op_threads") or None
        return PreparedCase(case, row, predictor, timed, args, timing_input, budget, verdicts, threads)

    def prepare_timed(self, case: Case) -> PreparedCase:
        """:meth:`prepare`, with the test-only injected slowdown (:func:`injected_slowdown`) on its timed call."""
        run = self.prepare(case)
        factor = injected_slowdown(case)
        if factor != 1.0:
            run.timed = _slowed(run.timed, factor)
        return run

    @staticmethod
    def _torch_threads() -> int:
        import torch

        return torch.get_num_threads()

    def useful_ops(self, case: Case, timing_input: dict) -> float | None:
        import json

        try:
            config = json.loads(self.artifact(case).file("config.json").read_text())
        except (OSError, ValueError):
            return None
        return case.task.useful_ops(config, timing_input, case.scenario)

    def baseline_call(self, run: PreparedCase) -> tuple[Callable[[], object], str]:
        """What ``run`` is paired with, warm: the fp32 baseline's timed call (same tier, same input), or
        for fp32 itself a fixed reference workload (the probe's fp32 GEMM) whose ratio moves with fp32's
        own speed, not with the machine's (what comparisons of fp32 use)."""
        case = run.case
        if case.chain.name == BASELINE:
            from compressors.machine.kernels import KERNELS, PROBE_SHAPE

            call = KERNELS["fp32-gemm"].setup(PROBE_SHAPE, run.threads or self._torch_threads())
            call()
            return call, "fp32-gemm reference"
        baseline_case = case.with_chain(BASELINE)
        if case.device == "cuda":  # not memoised: one model on the GPU at a time stays true for the next test
            baseline = load_predictor(self.artifact(baseline_case), self.device(baseline_case))
        else:
            baseline = self.predictor(baseline_case)
        timed, args = case.task.timed_call(baseline, baseline.prepare(run.timing_input), case.scenario)
        key = ("warm", baseline_case.id, case.device)
        if key not in self._memo:  # its first call in this process: untimed
            with self.account.phase("warmup"):
                timed(*args)
            self._memo[key] = True
        return (lambda: timed(*args)), "fp32"

    def slow_call_s(self) -> float:
        """A call at least this long gets only pytest-benchmark's minimum rounds anyway
        (``--benchmark-max-time`` / ``--benchmark-min-rounds``): time it interleaved with its baseline."""
        return float(self._option("benchmark_max_time", 1.0)) / max(1, int(self._option("benchmark_min_rounds", 5)))

    def baseline_estimate(self, run: PreparedCase) -> float | None:
        """The fp32 baseline's median for this case's model, tier and scenario, when its row was timed
        earlier in this run (sizes the pairing's blocks without an extra call)."""
        if run.case.chain.name == BASELINE:
            return None
        return self._memo.get(_fp32_median_key(run.case))

    def time_case(self, run: PreparedCase, benchmark) -> tuple[object, InterleavedBaseline | None]:
        """Time ``run`` with pytest-benchmark. One untimed call first (warm-up; sizes it). A fast call
        gets pytest-benchmark's own calibrated rounds (paired with fp32 afterwards, in
        :meth:`paired_speed`); a slow one (:meth:`slow_call_s`) gets pytest-benchmark's minimum rounds
        with the baseline run before each, untimed by pytest-benchmark (the pairing then costs only
        the baseline's calls)."""
        if benchmark.disabled:  # xdist or --benchmark-disable: pytest-benchmark runs it once, untimed
            with self.account.phase("warmup"):  # what it is then: one untimed call
                return benchmark(run.timed, *run.args), None
        start = time.perf_counter()
        with self.account.phase("warmup"):
            run.timed(*run.args)
        if time.perf_counter() - start < self.slow_call_s():
            with self.account.phase("timed"):
                return benchmark(run.timed, *run.args), None
        call, _ = self.baseline_call(run)
        interleaved = InterleavedBaseline(call, self.baseline_estimate(run))  # sizes itself when unknown

        def setup():  # the baseline's blocks between the rounds count as pairing, not as timed rounds
            with self.account.phase("paired"):
                interleaved()

        rounds = max(MIN_BLOCKS, int(self._option("benchmark_min_rounds", 5)))
        with self.account.phase("timed"):
            return benchmark.pedantic(run.timed, args=run.args, setup=setup, rounds=rounds), interleaved

    def paired_speed(self, run: PreparedCase, median_s: float, round_s: list[float],
                     interleaved: InterleavedBaseline | None = None) -> dict:
        """The configuration vs fp32 (same tier, same timed call and input) in this time window: from
        the interleaved rounds of a slow call, else alternated in blocks after pytest-benchmark's
        timing (compressors.machine.timing.paired_speed), about a quarter of the time pytest-benchmark spent."""
        fp32 = run.case.chain.name == BASELINE
        if interleaved is not None:
            paired, against = interleaved.result(round_s), ("fp32-gemm reference" if fp32 else "fp32")
        else:
            with self.account.phase("paired"):
                call, against = self.baseline_call(run)
                paired = paired_speed(lambda: run.timed(*run.args), call, budget_s=max(0.5, 0.25 * sum(round_s)),
                                      config_estimate_s=median_s, baseline_estimate_s=self.baseline_estimate(run))
        if fp32:
            self._memo[_fp32_median_key(run.case)] = median_s
            return {"ratio": 1.0, "ci95": [1.0, 1.0], "blocks": 0, "seconds": round(paired.seconds, 2),
                    "method": "the baseline itself", "reference": paired.to_dict(against=against)}
        return paired.to_dict(against=against)

    def finish(self, run: PreparedCase, benchmark, output, record_property, contention: dict | None,
               interleaved: InterleavedBaseline | None = None) -> None:
        """After timing: check the output, add latency (per-round times, the paired speed ratio vs
        fp32, the contention record) to the row, save it in ``extra_info``, hand it to the terminal
        summary, and judge it against its budget (pass, fail, or a declared expected failure)."""
        case = run.case
        case.task.check_output(output, run.timing_input, case.scenario)
        row = run.row
        if benchmark.stats:  # None when timing is off (xdist, --benchmark-disable)
            stats = benchmark.stats.stats
            data = list(stats.data)
            if interleaved is not None:  # paired inside the timed rounds, under the timing's own monitor
                speed = self.paired_speed(run, stats.median, data, interleaved)
            else:
                with ContentionMonitor(run.threads) as pairing:
                    speed = self.paired_speed(run, stats.median, data)
                if contention is not None and pairing.result["contended"] and not contention["contended"]:
                    contention = {**contention, "contended": True, "reason": "during the paired fp32 blocks: "
                                  + pairing.result["reason"]}
            row = row.replace(latency={"median_s": stats.median, "latency_s": latency_summary(data),
                                       "useful_ops": self.useful_ops(case, run.timing_input),
                                       "kernel": (case.chain.kernels or ("fp32-gemm",))[0],
                                       "round_s": [float(f"{t:.6g}") for t in data], "speed_vs_fp32": speed,
                                       "contention": contention,
                                       **case.task.latency_extras(stats.median, case.scenario)})
        benchmark.extra_info.update(row.to_extra_info())
        # plain data: user properties travel to the xdist controller (the terminal summary rebuilds the row)
        record_property("compressbench", {"extra_info": row.to_extra_info(), "median_s": row.latency.median_s})
        judgement = budgets_mod.judge(case.id, run.budget, run.verdicts)
        if judgement.outcome == "fail":
            pytest.fail(judgement.message, pytrace=False)
        if judgement.outcome == "xfail":
            pytest.xfail(judgement.message)

    def retime(self, config_id: str, median_s: float, round_s: list[float]) -> dict:
        """Pair the configuration timed as ``config_id`` with fp32 again, in a later time window (the
        end of the session, for a latency regression flagged against the compared run): blocks as in
        :meth:`paired_speed`, sized on the test's own ``median_s`` and ``round_s``, the test-only
        injected slowdown too, under a contention monitor. Returns ``{"speed_vs_fp32", "contention"}``,
        shaped as in the test's row."""
        with self.account.phase("retime"):
            run = self.prepare_timed(self.cases[config_id])
            run.timed(*run.args)  # warm again: other configurations ran in between
            with ContentionMonitor(run.threads) as monitor:
                speed = self.paired_speed(run, median_s, round_s)
        return {"speed_vs_fp32": speed, "contention": monitor.result}


def session_budgets(pytest_config) -> dict:
    """bench/budgets.toml, with ``--budgets FILE`` over it (its model tables may name this run's models
    given by path or hub id)."""
    user = frozenset(getattr(pytest_config, "compressbench_user_data", None) or ())
    budgets = budgets_mod.load_budgets(extra_models=user)
    settings = getattr(pytest_config, "compressbench_settings", None)
    extra = settings.budgets if settings is not None else None
    if extra:
        from pathlib import Path

        budgets = budgets_mod.merge_budgets(budgets, budgets_mod.load_budgets(Path(extra), extra_models=user))
    return budgets


def _fp32_median_key(case: Case) -> tuple:
    return ("fp32-median", case.model.name, case.tier, case.scenario.suffix)  # suffix: bs1, bs32, bs1-gen32, ...


def injected_slowdown(case: Case) -> float:
    """Test-only: ``COMPRESSBENCH_INJECT_SLOWDOWN="<test id>=<factor>"`` makes that configuration's
    timed call ``factor`` times slower (it sleeps in proportion), to check that comparisons flag a
    real slowdown (the A/A check in docs/verdicts.md). 1.0 (none) otherwise."""
    spec = os.environ.get("COMPRESSBENCH_INJECT_SLOWDOWN", "")
    target, _, factor = spec.partition("=")
    if spec and target == case.id:
        try:
            value = float(factor)
        except ValueError:
            raise ValueError(f"COMPRESSBENCH_INJECT_SLOWDOWN={spec!r}: need '<test id>=<factor>'") from None
        return value
    return 1.0


def _slowed(call: Callable, factor: float) -> Callable:
    def slowed(*args):
        start = time.perf_counter()
        out = call(*args)
        time.sleep((time.perf_counter() - start) * (factor - 1))
        return out

    return slowed


def run_benchmark(case: Case, session: BenchSession, benchmark, record_property) -> None:
    """One benchmark test: prepare untimed, time the task's call (watching for contention), pair it
    with fp32, record and judge."""
    before = session.account.snapshot()
    try:
        run = session.prepare_timed(case)
        benchmark.group = case.task.group(case.model.name, case.tier, case.scenario)
        session.cases[case.id] = case  # for the end-of-session re-timing (:meth:`BenchSession.retime`)
        with ContentionMonitor(run.threads) as monitor:
            output, interleaved = session.time_case(run, benchmark)
        session.finish(run, benchmark, output, record_property, monitor.result, interleaved)
    finally:  # skipped, failed or passed: its time counts (conftest.py sums it for the run's "time:" line)
        record_property("compressbench_time", session.account.since(before))
