"""What the tests of a session share, built or measured once: base models, built artifacts, tokenizers,
evaluation inputs, isolated measurements and loaded predictors.

One :class:`Resources` per pytest session (per xdist worker) memoises them, so every scenario of a
configuration builds and measures once, and books the time each takes on the session's
:class:`~compressors.machine.timing.TimeAccount` (the run's closing "time:" line). A failure is
memoised too: every test that needs the same thing gets the same skip or error. What a model is
evaluated and timed on comes from its task object (:mod:`compressors.evaluation.tasks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bench.cases import Case
from bench.plugin.options import option_value, setting
from bench.plugin.state import run_state
from compressors import CompressbenchError
from compressors.builders.context import BuildContext
from compressors.builders.models import ModelSpec, ModelUnavailable
from compressors.builders.techniques import build_chain
from compressors.core.cache import Artifact
from compressors.core.quiet import quiet_libraries
from compressors.evaluation.isolated import measure_isolated, measurement_version
from compressors.execution.runtime import Predictor, load_predictor
from compressors.machine.hardware import detect
from compressors.machine.timing import TimeAccount, time_limit
from compressors.quality.data import DataError
from compressors.quality.metrics import stored_measurement
from compressors.quality.taskdata import MissingTrainData, TaskData, default_data


class _Failed:
    """A memoised failure, re-raised for every test that needs the same thing."""

    def __init__(self, exc: BaseException):
        self.exc = exc


# What each memoised computation's time counts as (Resources.account), by the first part of its key.
_PHASE_OF = {"base": "build", "artifact": "build", "measure": "measure", "predictor": "load",
             "tokenizer": "inputs", "eval": "inputs", "timing": "inputs"}

# --max-measure-seconds is sized for the default evaluation scope; a whole-test-set perplexity
# (``-fullppl``, --extended) gets this many times it (~15 minutes of SmolLM2 on 2 cores, 1 thread).
FULL_TEST_GUARD_FACTOR = 4


class Resources:
    """The session's memoised loaders. ``ctx``: the run's build context (cache, data folder);
    ``pytest_config``: the run's pytest config (a stand-in in unit tests)."""

    def __init__(self, ctx: BuildContext, pytest_config):
        self.ctx = ctx
        self.pytest_config = pytest_config
        self._memo: dict[tuple, Any] = {}
        self.max_build_s = setting(pytest_config, "max_build_seconds")
        self.max_measure_s = setting(pytest_config, "max_measure_seconds")
        self.account = TimeAccount()  # where the session's time goes (the run's closing "time:" line)

    def once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, the first time ``key`` is asked for (its time booked by the key's first part);
        the same value, or the same failure, every time after."""
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
        config = self.pytest_config
        verbose = option_value(config, "verbose", 0) > 0 or option_value(config, "capture") == "no"
        return contextlib.nullcontext() if verbose else quiet_libraries()

    # ------------------------------------------------------------------ data
    def data_for(self, model: ModelSpec) -> TaskData:
        """The model's data: the user's files for a model given on the command line with them, else its
        task's registered data (SST-2, WikiText-2) from the run's mirror."""
        state = run_state(self.pytest_config)
        user = state.user_data if state is not None else {}
        if model.name in user:
            return user[model.name]
        return self.once(("data", model.task), lambda: default_data(model.task, self.ctx.data_dir))

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
        def read():
            try:
                return json.loads(self.base(model).file("config.json").read_text())
            except (OSError, ValueError):
                return None

        return self.once(("config", model.name), read)

    def artifact_config(self, case: Case) -> dict | None:
        """The built artifact's config.json (its layers after pruning or dropping), or None."""
        try:
            return json.loads(self.artifact(case).file("config.json").read_text())
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ building
    def base(self, model: ModelSpec) -> Artifact:
        def compute():
            try:
                model.check_available(model, self.ctx)
            except ModelUnavailable as exc:
                pytest.skip(str(exc))
            with self.visible_output(), time_limit(self.max_build_s, f"building {model.name}", "--max-build-seconds"):
                return model.build_base(model, self.ctx_for(model))

        return self.once(("base", model.name), compute)

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

        return self.once(("artifact", case.model.name, case.chain.name), compute)

    # ------------------------------------------------------------------ task inputs
    def tokenizer(self, model: ModelSpec):
        def compute():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.base(model).path,
                                                 trust_remote_code=getattr(model, "trust_remote_code", False))

        return self.once(("tokenizer", model.name), compute)

    def eval_data(self, case: Case):
        """The task's evaluation inputs (the model's evaluation rows as batches or perplexity windows),
        tokenized once per model."""
        key = case.task.eval_key(case.scenario)
        return self.once(("eval", case.model.name, key), lambda: case.task.eval_data(
            self.tokenizer(case.model), self.data_for(case.model), case.scenario, self.model_config(case.model)))

    def timing_input(self, case: Case) -> dict[str, np.ndarray]:
        return self.once(("timing", case.model.name, case.scenario), lambda: case.task.timing_input(
            self.tokenizer(case.model), self.data_for(case.model), case.scenario, lambda: self.eval_data(case)))

    # ------------------------------------------------------------------ measuring and loading
    def device(self, case: Case) -> str:
        """Where ``case`` runs here: ``cpu`` or ``cuda:N`` (the first GPU of its tier, or the one
        ``--device`` names); skips when the tier is absent or ``--device`` excludes it."""
        state = run_state(self.pytest_config)
        device, reason = detect().device_for(case.tier, state.device if state is not None else None)
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
                version=measurement_version(), refresh=bool(setting(self.pytest_config, "remeasure")))

        return self.once(key, compute)

    def predictor(self, case: Case) -> Predictor:
        device = self.device(case)
        key = ("predictor", case.config_id, device)
        if device.startswith("cuda") and key not in self._memo:
            self.release_gpu()

        def load():
            artifact = self.artifact(case)
            with self.held_chatter():  # torch's deprecations on loading a quantized model, ...
                return load_predictor(artifact, device)

        return self.once(key, load)

    def fresh_predictor(self, case: Case) -> Predictor:
        """A predictor of ``case`` loaded now and not kept (a GPU baseline, so that one model on the GPU at
        a time stays true for the next test)."""
        return load_predictor(self.artifact(case), self.device(case))
