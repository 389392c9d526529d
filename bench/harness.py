"""Wiring between the compressors library and pytest: build, measure, memoise, skip.

One :class:`BenchSession` per pytest session (per xdist worker) memoises what is
shared between tests: base models, built artifacts, tokenized data, isolated
measurements and loaded predictors, so bs1 and bs32 of a configuration build
and measure once. Nothing here is timed; the test times only ``predictor.run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bench import budgets as budgets_mod
from bench.cases import Case
from compressors import CompressbenchError
from compressors.cache import Artifact, library_versions
from compressors.context import BuildContext
from compressors.data import DataError, load_sst2, load_wikitext
from compressors.hardware import detect
from compressors.metrics import (
    CPU_EVAL_TOKENS,
    EvalSet,
    TokenWindows,
    artifact_size_bytes,
    encode_sentences,
    make_eval_set,
    make_token_windows,
    measure_isolated,
)
from compressors.models import ModelSpec, ModelUnavailable
from compressors.placement import FALLBACK_PREFIX, FallbackWarning, fallback_parts
from compressors.runtime import Predictor, load_predictor
from compressors.techniques import build_chain, parse_chain

TIMING_SAMPLE_SEED = 0
BASELINE = "fp32"
# The fixed prompt language models generate from (greedy, batch 1).
GENERATION_PROMPT = "The tower is 324 metres tall, about the same height as"


class _Failed:
    """A memoised failure, re-raised for every test that needs the same thing."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class BenchSession:
    def __init__(self, ctx: BuildContext, pytest_config):
        self.ctx = ctx
        self.pytest_config = pytest_config
        self.budgets = budgets_mod.load_budgets()
        self._memo: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ memo helpers
    def _once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = compute()
            except (pytest.skip.Exception, CompressbenchError, RuntimeError, ValueError) as exc:
                self._memo[key] = _Failed(exc)
        value = self._memo[key]
        if isinstance(value, _Failed):
            raise value.exc
        return value

    @contextlib.contextmanager
    def visible_output(self):
        """Let progress bars through pytest's capture while building."""
        capman = self.pytest_config.pluginmanager.getplugin("capturemanager")
        if capman is None:
            yield
        else:
            with capman.global_and_fixture_disabled():
                yield

    # ------------------------------------------------------------------ data
    def check_data(self) -> None:
        """Stop the run with one message when SST-2 is missing or wrong."""
        try:
            load_sst2("train", self.ctx.data_dir)
            load_sst2("dev", self.ctx.data_dir)
        except DataError as exc:
            pytest.exit(f"compressbench: {exc}", returncode=4)

    # ------------------------------------------------------------------ building
    def base(self, model: ModelSpec) -> Artifact:
        def compute():
            try:
                model.check_available(model, self.ctx)
            except ModelUnavailable as exc:
                pytest.skip(str(exc))
            with self.visible_output():
                return model.build_base(model, self.ctx)

        return self._once(("base", model.name), compute)

    def artifact(self, case: Case) -> Artifact:
        missing = case.chain.missing_requirements()
        if missing:
            pytest.skip(f"{case.chain.name} needs {missing}: pip install -e '.[bench]'")

        def compute():
            base = self.base(case.model)
            with self.visible_output():
                return build_chain(base, case.chain, dataclasses.replace(self.ctx, model=case.model), case.model.name)

        return self._once(("artifact", case.model.name, case.chain.name), compute)

    # ------------------------------------------------------------------ measuring
    def eval_set(self, model: ModelSpec) -> EvalSet:
        def compute():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.base(model).path)
            return make_eval_set(tokenizer, load_sst2("dev", self.ctx.data_dir))

        return self._once(("eval", model.name), compute)

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

            from compressors.gpu_memory import release_cuda_memory

            for device in sorted({k[2] for k in keys}):
                release_cuda_memory(device, torch.cuda)

    def measurement(self, case: Case) -> dict:
        """Accuracy and memory of the case's configuration, in an isolated process."""
        device = self.device(case)
        key = ("measure", case.config_id)
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()  # the measurement process gets the GPU to itself
        return self._once(key, lambda: measure_isolated(self.artifact(case), self.eval_set(case.model), device))

    def baseline(self, case: Case) -> Case:
        return Case(case.model, parse_chain(BASELINE), "cpu", case.batch_size)

    def predictor(self, case: Case) -> Predictor:
        device = self.device(case)
        key = ("predictor", case.config_id, device)
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()
        return self._once(key, lambda: load_predictor(self.artifact(case), device))

    def check_placement(self, case: Case, results: dict, predictor: Predictor) -> list[str]:
        """Catch a configuration meant for a GPU that runs (partly) on the CPU, in the measurement
        process or the timed one. Records ``results["fallback"]`` (empty when none) and then,
        per ``--on-fallback``: fails (default), xfails, or warns and carries on."""
        parts = [f"measurement process: {p}" for p in fallback_parts(results["placement"])]
        parts += [f"timed process: {p}" for p in fallback_parts(predictor.placement())]
        results["fallback"] = parts
        if parts:
            message = f"{case.id} {FALLBACK_PREFIX}" + "; ".join(parts)
            mode = self.pytest_config.getoption("--on-fallback")
            if mode == "fail":
                pytest.fail(message, pytrace=False)
            elif mode == "xfail":
                pytest.xfail(message)
            else:
                warnings.warn(FallbackWarning(message), stacklevel=2)
        return parts

    def timing_batch(self, case: Case) -> dict[str, np.ndarray]:
        """A fixed batch: ``batch_size`` dev sentences drawn with a fixed seed, padded to their longest."""

        def compute():
            from transformers import AutoTokenizer

            dev = load_sst2("dev", self.ctx.data_dir)
            picks = random.Random(TIMING_SAMPLE_SEED).sample(range(len(dev)), case.batch_size)
            tokenizer = AutoTokenizer.from_pretrained(self.base(case.model).path)
            return encode_sentences(tokenizer, [dev.sentences[i] for i in picks], batch_size=case.batch_size)[0]

        return self._once(("timing", case.model.name, case.batch_size), compute)

    # ------------------------------------------------------------------ results
    def results(self, case: Case) -> dict:
        """Every non-timing metric of ``case`` (what goes into ``benchmark.extra_info``)."""
        measured = self.measurement(case)
        baseline_case = self.baseline(case)
        baseline = measured if baseline_case.config_id == case.config_id else self.measurement(baseline_case)
        artifact = self.artifact(case)
        base = self.base(case.model)
        baseline_size = artifact_size_bytes(self.artifact(baseline_case))
        size = artifact_size_bytes(artifact)
        eval_set = self.eval_set(case.model)
        return {
            "model": case.model.name,
            "technique": case.chain.name,
            "tier": case.tier,
            "device": case.device,
            "run_device": self.device(case),  # cpu or cuda:N
            "batch_size": case.batch_size,
            "task": case.model.task,
            "recipe": case.chain.to_dict(),
            "model_spec": case.model.to_dict(),
            "accuracy_pct": round(measured["accuracy"], 3),
            "baseline_accuracy_pct": round(baseline["accuracy"], 3),
            "accuracy_drop_pp": round(baseline["accuracy"] - measured["accuracy"], 3),
            "eval": {"split": "sst2-dev", "examples": len(eval_set), "checksum": eval_set.checksum[:16]},
            **self._size_memory_provenance(measured, artifact, base, size, baseline_size),
            "timing_input": {"source": "sst2-dev", "sample_seed": TIMING_SAMPLE_SEED,
                             "shape": list(self.timing_batch(case)["input_ids"].shape)},
            "versions": library_versions("torch", "transformers", "onnxruntime", "onnx"),
        }

    @staticmethod
    def _size_memory_provenance(measured: dict, artifact: Artifact, base: Artifact, size: int,
                                baseline_size: int) -> dict:
        """The ``extra_info`` keys classification and language-model rows share: size, memory
        (RAM, and VRAM on GPU tiers), placement and the artifacts measured."""
        return {
            "size_bytes": size,
            "size_ratio_vs_fp32": round(size / baseline_size, 4),
            "peak_memory_bytes": measured["peak_memory_bytes"],
            "peak_rss_bytes": measured["peak_rss_bytes"],
            "runtime_rss_bytes": measured["runtime_rss_bytes"],
            **{k: v for k, v in measured.items() if k.startswith("vram_")},  # GPU tiers (compressors.gpu_memory)
            "memory_flags": measured.get("memory_flags", []),  # negative deltas clamped to 0, named here
            "placement": measured["placement"],
            "artifact_key": artifact.key,
            "artifact_meta": artifact.meta,
            "base_artifact": {"key": base.key, "meta": base.meta},
        }

    def verdicts(self, case: Case, results: dict) -> list[budgets_mod.Verdict]:
        budget = budgets_mod.budget_for(self.budgets, case.chain.name, case.model.name)
        results["budget"] = budget.to_dict()
        return budgets_mod.check(budget, results.get("accuracy_drop_pp"), results["peak_memory_bytes"] / 2**20,
                                 perplexity_increase_pct=results.get("perplexity_increase_pct"))

    # ------------------------------------------------------------------ language models
    def tokenizer(self, model: ModelSpec):
        def compute():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.base(model).path)

        return self._once(("tokenizer", model.name), compute)

    def token_windows(self, model: ModelSpec, full_test: bool) -> TokenWindows:
        """WikiText-2 raw test, tokenized by ``model``'s tokenizer: the CPU budget or all of it."""
        return self._once(("windows", model.name, full_test), lambda: make_token_windows(
            self.tokenizer(model), load_wikitext("test", self.ctx.data_dir),
            max_tokens=None if full_test else CPU_EVAL_TOKENS))

    def lm_measurement(self, case: Case) -> dict:
        """Perplexity and memory of the case's configuration, in an isolated process."""
        full = case.scenario.full_test
        device = self.device(case)
        key = ("lm-measure", case.config_id, full)
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()  # the measurement process gets the GPU to itself
        return self._once(key, lambda: measure_isolated(
            self.artifact(case), self.token_windows(case.model, full), device))

    def lm_timing_input(self, case: Case) -> dict[str, np.ndarray]:
        """Prefill: the first ``prefill_tokens`` tokens of the WikiText-2 test text. Generation:
        :data:`GENERATION_PROMPT`. Batch 1, no padding."""

        def compute():
            scenario = case.scenario
            if scenario.timed == "prefill":
                ids = self.token_windows(case.model, False).windows[0][:, :scenario.prefill_tokens]
                if ids.shape[1] < scenario.prefill_tokens:
                    raise DataError(f"the WikiText-2 test text has fewer than {scenario.prefill_tokens} tokens")
                return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            encoded = self.tokenizer(case.model)(GENERATION_PROMPT, add_special_tokens=False, return_tensors="np")
            return {k: v.astype(np.int64) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}

        return self._once(("lm-timing", case.model.name, case.scenario.name), compute)

    def lm_timed_call(self, case: Case, predictor: Predictor) -> tuple[Callable, tuple]:
        """``(function, args)`` that the benchmark times: one prefill forward or one greedy generation."""
        prepared = predictor.prepare(self.lm_timing_input(case))  # untimed
        if case.scenario.timed == "prefill":
            return predictor.run, (prepared,)
        if not hasattr(predictor, "generate"):
            raise ValueError(f"{case.chain.name}: its {predictor.runtime} predictor cannot generate text")
        return predictor.generate, (prepared, case.scenario.new_tokens)

    def lm_results(self, case: Case) -> dict:
        """Every non-timing metric of a language-model case (what goes into ``benchmark.extra_info``)."""
        measured = self.lm_measurement(case)
        baseline_case = Case(case.model, parse_chain(BASELINE), "cpu", case.batch_size, case.scenario)
        baseline = measured if baseline_case.config_id == case.config_id else self.lm_measurement(baseline_case)
        artifact = self.artifact(case)
        base = self.base(case.model)
        baseline_size = artifact_size_bytes(self.artifact(baseline_case))
        size = artifact_size_bytes(artifact)
        windows = self.token_windows(case.model, case.scenario.full_test)
        timing = self.lm_timing_input(case)
        scenario = case.scenario
        return {
            "model": case.model.name,
            "technique": case.chain.name,
            "tier": case.tier,
            "device": case.device,
            "batch_size": case.batch_size,
            "run_device": self.device(case),  # cpu or cuda:N
            "scenario": scenario.name,
            "task": case.model.task,
            "recipe": case.chain.to_dict(),
            "model_spec": case.model.to_dict(),
            "perplexity": round(measured["perplexity"], 4),
            "baseline_perplexity": round(baseline["perplexity"], 4),
            "perplexity_increase_pct": round((measured["perplexity"] / baseline["perplexity"] - 1) * 100, 3),
            "mean_nll": measured["mean_nll"],
            "eval": {"split": "wikitext-2-raw-test", "scope": scenario.eval_scope, "text": "rows joined with \n\n",
                     **windows.describe()},
            **self._size_memory_provenance(measured, artifact, base, size, baseline_size),
            "timing_input": {
                "timed": scenario.timed,
                "source": "wikitext-2-raw-test first window" if scenario.timed == "prefill" else GENERATION_PROMPT,
                "shape": list(timing["input_ids"].shape),
                **({"new_tokens": scenario.new_tokens, "decoding": "greedy, KV cache"}
                   if scenario.timed == "generate" else {}),
            },
            "versions": library_versions("torch", "transformers", "bitsandbytes", "gguf"),
        }
