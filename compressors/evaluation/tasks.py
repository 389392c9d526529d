"""Tasks: what a model is evaluated and timed on, and how its quality is scored.

A :class:`Task` owns, for one kind of model (sequence classification, causal language modelling):

* its **scenarios**: what a benchmark times (a batch size, and for language models a prefill
  or a generation); every scenario is one test per configuration;
* its **evaluation inputs** (:meth:`Task.eval_data`): the model's evaluation rows
  (:class:`compressors.quality.taskdata.TaskData`: SST-2 dev, WikiText-2 test, or the user's files) as
  pre-tokenized batches or perplexity windows, and which scenarios share one evaluation;
* its **timing input** and **timed call** (:meth:`Task.timing_input`, :meth:`Task.timed_call`);
* its **quality** against the fp32 baseline (:meth:`Task.quality`): accuracy drop in pp, or
  perplexity rise in %, and what the budget checks.

The bench harness memoises calls into these objects; nothing here knows about pytest.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from compressors.core.registry import Registry
from compressors.core.task_kinds import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from compressors.quality.data import DataError
from compressors.quality.metrics import (
    CPU_EVAL_TOKENS,
    EvalSet,
    TokenWindows,
    encode_sentences,
    eval_max_length,
    make_eval_set,
    make_token_windows,
)
from compressors.records.results import Quality
from compressors.records.stats import paired_accuracy_difference, unpack_bools

BASELINE = "fp32"
TIMING_SAMPLE_SEED = 0
# The fixed prompt language models generate from (greedy, batch 1).
GENERATION_PROMPT = "The tower is 324 metres tall, about the same height as"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What one benchmark of a configuration times.

    Args:
        batch_size: sequences per timed call (the ``-bsN`` of the test id).
        name: the id's last part after ``-bsN`` (language models: ``prefill512``, ``gen32``), or None.
        timed: ``forward`` (a classifier's batch), ``prefill`` (one forward over ``prefill_tokens``
            tokens) or ``generate`` (greedy decoding of ``new_tokens`` tokens after a fixed prompt).
        full_test: evaluate quality on the whole test set (``slow``) instead of the CPU budget.
    """

    batch_size: int
    name: str | None = None
    timed: str = "forward"
    full_test: bool = False
    prefill_tokens: int = 512
    new_tokens: int = 32

    @property
    def suffix(self) -> str:
        return f"bs{self.batch_size}" + (f"-{self.name}" if self.name else "")

    @property
    def eval_scope(self) -> str:
        return "full" if self.full_test else "budget"


class Task:
    """Base class; see the module docstring. Subclasses set ``name``, ``scenarios``, ``versions``."""

    name: str
    scenarios: tuple[Scenario, ...]
    versions: tuple[str, ...] = ("torch", "transformers")  # packages whose versions go into each row

    def eval_key(self, scenario: Scenario) -> Any:
        """Scenarios with the same key share one evaluation (and one isolated measurement)."""
        return None

    def eval_data(self, tokenizer, data, scenario: Scenario,
                  model_config: dict | None = None) -> EvalSet | TokenWindows:
        """The evaluation inputs from ``data`` (a :class:`~compressors.quality.taskdata.TaskData`) for a model with
        ``model_config`` (its config.json: where rows are cut)."""
        raise NotImplementedError

    def timing_input(self, tokenizer, data, scenario: Scenario,
                     eval_data: Callable[[], EvalSet | TokenWindows]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def timed_call(self, predictor, prepared, scenario: Scenario) -> tuple[Callable, tuple]:
        """``(function, args)`` the benchmark times."""
        return predictor.run, (prepared,)

    def check_output(self, output, timing_input: dict, scenario: Scenario) -> None:
        """Raise when the timed call did not do what it was meant to (e.g. generated too few tokens)."""

    def quality(self, measured: dict, baseline: dict, eval_data, scenario: Scenario, data=None) -> Quality:
        raise NotImplementedError

    def describe_timing_input(self, timing_input: dict, scenario: Scenario, data=None) -> dict:
        return {"shape": list(timing_input["input_ids"].shape)}

    def latency_extras(self, median_s: float, scenario: Scenario) -> dict:
        """Latency fields derived from the median (per generated token)."""
        return {}

    def useful_ops(self, config: dict, timing_input: dict, scenario: Scenario) -> float | None:
        """Multiply-adds x 2 the timed call needs on its real (unpadded) tokens: the numerator of the
        report's *share of peak*. None where the architecture's config is not understood."""
        return None

    def group(self, model: str, tier: str, scenario: Scenario) -> str:
        """pytest-benchmark's group: the rows compared side by side in its table."""
        return f"{model}-{tier}-{scenario.suffix}"


class ClassificationTask(Task):
    """Sequence classification: accuracy on every evaluation row (SST-2 dev for the registered models),
    timed on a fixed batch of evaluation rows."""

    name = TASK_CLASSIFICATION
    scenarios = (Scenario(1), Scenario(32))
    versions = ("torch", "transformers", "onnxruntime", "onnx")

    def eval_data(self, tokenizer, data, scenario, model_config=None) -> EvalSet:
        return make_eval_set(tokenizer, data.eval(), max_length=eval_max_length(tokenizer, model_config))

    def timing_input(self, tokenizer, data, scenario, eval_data):
        """``batch_size`` evaluation rows drawn with a fixed seed (all of them, repeated in order, when
        there are fewer), padded to their longest."""
        rows = data.eval()
        if len(rows) >= scenario.batch_size:
            picks = random.Random(TIMING_SAMPLE_SEED).sample(range(len(rows)), scenario.batch_size)
        else:
            picks = [i % len(rows) for i in range(scenario.batch_size)]
        pairs = None if rows.pairs is None else [rows.pairs[i] for i in picks]
        return encode_sentences(tokenizer, [rows.sentences[i] for i in picks], batch_size=scenario.batch_size,
                                max_length=eval_max_length(tokenizer), pairs=pairs)[0]

    def describe_timing_input(self, timing_input, scenario, data=None):
        return {"source": _eval_name(data), "sample_seed": TIMING_SAMPLE_SEED,
                "shape": list(timing_input["input_ids"].shape)}

    def quality(self, measured, baseline, eval_data, scenario, data=None) -> Quality:
        """Accuracy and its drop vs fp32, with the drop's paired 95% interval and exact McNemar
        p-value over the same dev sentences (compressors.records.stats.paired_accuracy_difference)."""
        n = len(eval_data)
        paired = {}
        if measured.get("correct") and baseline.get("correct"):
            paired = paired_accuracy_difference(unpack_bools(baseline["correct"], n),
                                                unpack_bools(measured["correct"], n))
        return Quality(
            accuracy_pct=round(measured["accuracy"], 3),
            baseline_accuracy_pct=round(baseline["accuracy"], 3),
            accuracy_drop_pp=round(baseline["accuracy"] - measured["accuracy"], 3),
            eval={"split": _eval_name(data), "examples": n, "checksum": eval_data.checksum[:16]},
            per_example_correct=({"encoding": "packbits-base64", "n": n, "data": measured["correct"]}
                                 if measured.get("correct") else None),
            accuracy_drop_ci_pp=paired.get("ci_pp"),
            accuracy_drop_mcnemar_p=None if not paired else round(paired["mcnemar_p"], 6),
        )

    def group(self, model, tier, scenario):
        return f"{model}-{tier}-bs{scenario.batch_size}"

    def useful_ops(self, config, timing_input, scenario):
        """Encoder layers on every real token: the 4 attention projections and the 2 feed-forward
        linears (2 x in x out each), and the attention scores and context over that sentence's real
        length (2 x 2 x length x hidden per token); pooler and head are left out (< 1%)."""
        dims = encoder_dims(config)
        if dims is None or "attention_mask" not in timing_input:
            return None
        hidden, inner, layers = dims
        lengths = np.asarray(timing_input["attention_mask"]).sum(axis=1).astype(float)
        per_token = 2 * (4 * hidden * hidden + 2 * hidden * inner)
        return float(layers * (lengths.sum() * per_token + (4 * hidden * lengths**2).sum()))


class CausalLMTask(Task):
    """Causal language modelling: perplexity on WikiText-2 raw test; prefill and generation timed.

    Scenarios: ``prefill512`` (one forward over the first 512 test tokens, batch 1), ``gen32``
    (greedy generation of 32 tokens after :data:`GENERATION_PROMPT`) and the ``slow``
    ``prefill512-fullppl`` (the prefill again, perplexity over the whole test set).
    """

    name = TASK_CAUSAL_LM
    scenarios = (
        Scenario(1, "prefill512", "prefill"),
        Scenario(1, "gen32", "generate"),
        Scenario(1, "prefill512-fullppl", "prefill", full_test=True),
    )
    versions = ("torch", "transformers", "bitsandbytes", "gguf")

    def eval_key(self, scenario):
        return scenario.full_test

    def eval_data(self, tokenizer, data, scenario, model_config=None) -> TokenWindows:
        return make_token_windows(tokenizer, data.eval(), max_tokens=None if scenario.full_test else CPU_EVAL_TOKENS)

    def timing_input(self, tokenizer, data, scenario, eval_data):
        """Prefill: the first ``prefill_tokens`` tokens of the evaluation text (WikiText-2 test for the
        registered models). Generation: :data:`GENERATION_PROMPT`. Batch 1, no padding."""
        if scenario.timed == "prefill":
            ids = eval_data().windows[0][:, :scenario.prefill_tokens]
            if ids.shape[1] < scenario.prefill_tokens:
                raise DataError(f"the evaluation text {data.eval().source} has fewer than {scenario.prefill_tokens} "
                                "tokens (the prefill benchmark's window)")
            return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        encoded = tokenizer(GENERATION_PROMPT, add_special_tokens=False, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}

    def timed_call(self, predictor, prepared, scenario):
        if scenario.timed == "prefill":
            return predictor.run, (prepared,)
        if not hasattr(predictor, "generate"):
            raise ValueError(f"its {predictor.runtime} predictor cannot generate text")
        return predictor.generate, (prepared, scenario.new_tokens)

    def check_output(self, output, timing_input, scenario):
        if scenario.timed == "generate":
            generated = int(output.shape[1]) - int(timing_input["input_ids"].shape[1])
            if generated != scenario.new_tokens:
                raise AssertionError(f"generated {generated} tokens, not {scenario.new_tokens}")

    def describe_timing_input(self, timing_input, scenario, data=None):
        described = {
            "timed": scenario.timed,
            "source": (f"{_eval_name(data, 'wikitext-2-raw-test')} first window" if scenario.timed == "prefill"
                       else GENERATION_PROMPT),
            "shape": list(timing_input["input_ids"].shape),
        }
        if scenario.timed == "generate":
            described.update({"new_tokens": scenario.new_tokens, "decoding": "greedy, KV cache"})
        return described

    def quality(self, measured, baseline, eval_data, scenario, data=None) -> Quality:
        return Quality(
            perplexity=round(measured["perplexity"], 4),
            baseline_perplexity=round(baseline["perplexity"], 4),
            perplexity_increase_pct=round((measured["perplexity"] / baseline["perplexity"] - 1) * 100, 3),
            mean_nll=measured["mean_nll"],
            eval={"split": _eval_name(data, "wikitext-2-raw-test"), "scope": scenario.eval_scope,
                  "text": "rows joined with \n\n",
                  **eval_data.describe()},
        )

    def latency_extras(self, median_s, scenario):
        return {"per_token_s": median_s / scenario.new_tokens} if scenario.timed == "generate" else {}

    def useful_ops(self, config, timing_input, scenario):
        """Decoder layers (q/o projections, k/v at the key-value width, the gated MLP's 3 linears)
        and the logits of every position, causal attention over the positions before each token;
        generation: the prompt's prefill, then one token per step with its growing context."""
        dims = decoder_dims(config)
        if dims is None:
            return None
        hidden, inner, layers, kv_width, vocab, mlp_linears = dims
        per_token = 2 * (2 * hidden * hidden + 2 * hidden * kv_width + mlp_linears * hidden * inner)
        prompt = int(timing_input["input_ids"].shape[1])
        positions = np.arange(prompt, dtype=float)
        if scenario.timed == "generate":
            positions = np.concatenate([positions, prompt + np.arange(scenario.new_tokens - 1, dtype=float)])
        tokens = positions.size
        attention = (4 * hidden * (positions + 1)).sum()
        return float(layers * (tokens * per_token + attention) + tokens * 2 * hidden * vocab)

    def group(self, model, tier, scenario):
        return f"{model}-{tier}-{scenario.name}"


def _eval_name(data, default: str = "sst2-dev") -> str:
    """How a row names its evaluation rows: ``sst2-dev`` and ``wikitext-2-raw-test`` for the registered
    models' data (as saved runs always named them), ``file:<name>`` for a user's file."""
    name = getattr(data, "name", None)
    return {None: default, "sst2": "sst2-dev", "wikitext-2": "wikitext-2-raw-test"}.get(name, name)


def encoder_dims(config: dict) -> tuple[int, int, int] | None:
    """(hidden, feed-forward width, layers) of a BERT-style or DistilBERT config, else None."""
    if all(k in config for k in ("hidden_size", "intermediate_size", "num_hidden_layers")):
        return config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    if all(k in config for k in ("dim", "hidden_dim", "n_layers")):
        return config["dim"], config["hidden_dim"], config["n_layers"]
    return None


def decoder_dims(config: dict) -> tuple | None:
    """(hidden, MLP width, layers, key/value width, vocabulary, MLP linears) of a Llama- or GPT-2-style config."""
    if all(k in config for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")):
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        kv_width = (config.get("num_key_value_heads") or heads) * head_dim
        return (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], kv_width,
                config["vocab_size"], 3)
    if all(k in config for k in ("n_embd", "n_layer", "vocab_size")):  # GPT-2: fused qkv, 4x MLP, 2 linears
        hidden = config["n_embd"]
        return hidden, config.get("n_inner") or 4 * hidden, config["n_layer"], hidden, config["vocab_size"], 2
    return None


TASKS: Registry[Task] = Registry("task")
TASKS.register(TASK_CLASSIFICATION, ClassificationTask())
TASKS.register(TASK_CAUSAL_LM, CausalLMTask())


def task_for(model) -> Task:
    """The task object of a :class:`~compressors.builders.models.ModelSpec`."""
    return TASKS.get(model.task)
