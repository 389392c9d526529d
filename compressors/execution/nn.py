"""The one walk over a model: which linears play which role, and swapping modules by name.

Techniques say *which* modules and *what* to put there; choosing linears and replacing modules
is written here once (torchao's ``filter_fn(module, fqn)`` and peft's tuner traversal are the
models). Roles are named across the architectures the suite runs: BERT-style encoders (BERT,
RoBERTa, MiniLM, ELECTRA, ALBERT), DistilBERT and Llama/GPT-style decoders.

* the **head**: every ``nn.Linear`` outside ``model.base_model_prefix`` (a classifier, DistilBERT's
  ``pre_classifier``, a causal LM's ``lm_head``); quantizers and pruners leave it float;
* **attention** projections (``attention.self.query``, ``attention.output.dense``, ``q_lin``,
  ``self_attn.q_proj``, GPT-2's ``attn.c_attn``) and **ffn** linears (``intermediate.dense`` /
  ``layer.N.output.dense``, DistilBERT's ``ffn.lin1``, ``mlp.up_proj``);
* the **encoder layer stack** (``encoder.layer`` or DistilBERT's ``transformer.layer``), which
  layer dropping and distillation cut.

torch and transformers are imported inside functions (collection stays fast).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

ATTENTION_RE = re.compile(r"(^|\.)(attention|attn|self_attn)\.")
FFN_RE = re.compile(r"(^|\.)(intermediate|mlp|ffn|feed_forward)\.|\.layer\.\d+\.output\.dense$")
ROLES = ("all", "attention", "ffn")


def linear_names(model) -> list[str]:
    """Every ``nn.Linear`` of ``model``, by qualified name, in module order."""
    import torch

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def head_module_names(model) -> set[str]:
    """Names of the ``nn.Linear`` modules outside the base model (the task head).

    The base model is ``model.base_model_prefix`` (``bert``, ``distilbert``, ``roberta``,
    ``model`` for Llama, ``transformer`` for GPT-2); everything else is head.
    """
    prefix = getattr(model, "base_model_prefix", "") + "."
    return {name for name in linear_names(model) if not name.startswith(prefix)}


def keep_float_names(model, patterns: Iterable[str]) -> set[str]:
    """Names of ``model``'s ``nn.Linear`` modules matching any ``fnmatch`` pattern in ``patterns``
    (matched against the full module name: ``*.mlp.down_proj`` is every decoder layer's)."""
    patterns = tuple(patterns)
    return {name for name in linear_names(model) if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def has_role(name: str, role: str) -> bool:
    """Whether the linear called ``name`` plays ``role`` (one of :data:`ROLES`)."""
    if role not in ROLES:
        raise ValueError(f"unknown linear role {role!r}; valid: {', '.join(ROLES)}")
    if role == "attention":
        return bool(ATTENTION_RE.search(name))
    if role == "ffn":
        return not ATTENTION_RE.search(name) and bool(FFN_RE.search(name))
    return True


def select_linears(model, role: str = "all", keep_head_float: bool = True, keep_float: Iterable[str] = (),
                   exclude: Iterable[str] = ()) -> list[str]:
    """The linears a technique changes: those of ``role``, minus the head (unless
    ``keep_head_float`` is False), minus those matching the ``keep_float`` patterns and the names
    in ``exclude``."""
    skip = (head_module_names(model) if keep_head_float else set()) | keep_float_names(model, keep_float) | set(exclude)
    return [name for name in linear_names(model) if name not in skip and has_role(name, role)]


def replace_module(model, name: str, new_module) -> None:
    """Put ``new_module`` where the submodule called ``name`` is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new_module)


def conv1d_to_linear(model) -> list[str]:
    """Replace ``transformers``' ``Conv1D`` modules (GPT-2's projections: ``x @ W + b`` with
    ``W`` of shape (in, out)) by the equivalent ``nn.Linear`` (weight ``W`` transposed), in
    place, so quantizers that handle ``nn.Linear`` see them. Returns their names."""
    import torch
    from transformers.pytorch_utils import Conv1D

    names = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        in_features, out_features = conv.weight.shape
        linear = torch.nn.Linear(in_features, out_features, bias=conv.bias is not None,
                                 dtype=conv.weight.dtype, device=conv.weight.device)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        replace_module(model, name, linear)
    return names


# ------------------------------------------------------------------------------ the encoder layer stack

# config.json model types whose encoder stack encoder_layers() finds (layer dropping, distillation)
LAYER_STACK_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"})


def encoder_layers(model):
    """``(module_list_owner, attribute, config_field)`` of the model's stack of encoder layers.

    Knows BERT-style (``encoder.layer``: BERT, RoBERTa, MiniLM, ELECTRA) and DistilBERT
    (``transformer.layer``). ALBERT shares one layer's weights across depth: nothing to drop.
    """
    import torch

    base = getattr(model, model.base_model_prefix, model)
    for owner_name, field in (("encoder", "num_hidden_layers"), ("transformer", "n_layers")):
        owner = getattr(base, owner_name, None)
        if owner is not None and isinstance(getattr(owner, "layer", None), torch.nn.ModuleList):
            return owner, "layer", field
    raise ValueError(
        f"{type(model).__name__}: no per-layer encoder stack (encoder.layer or transformer.layer) to drop layers from"
    )


def layer_count(model) -> int:
    owner, attribute, _ = encoder_layers(model)
    return len(getattr(owner, attribute))


def drop_layers(model, indices) -> None:
    """Remove the encoder layers at ``indices`` in place and shrink the config to match."""
    import torch

    owner, attribute, field = encoder_layers(model)
    layers = getattr(owner, attribute)
    indices = set(indices)
    bad = sorted(i for i in indices if not 0 <= i < len(layers))
    if bad or len(indices) >= len(layers):
        raise ValueError(
            f"cannot drop layers {sorted(indices)} of a {len(layers)}-layer encoder (at least one must stay)"
        )
    kept = torch.nn.ModuleList(layer for i, layer in enumerate(layers) if i not in indices)
    for new_index, layer in enumerate(kept):  # attention modules carry their index (KV-cache bookkeeping)
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    setattr(owner, attribute, kept)
    setattr(model.config, field, len(kept))
    if field != "num_hidden_layers" and hasattr(model.config, "num_hidden_layers"):
        model.config.num_hidden_layers = len(kept)


# ------------------------------------------------------------------------------ transformer layers by name

def layer_prefixes(model) -> list[str]:
    """Qualified module names of ``model``'s transformer layers, in order: the encoder stack of
    :func:`encoder_layers` (``bert.encoder.layer.3``, ``distilbert.transformer.layer.3``), a Llama-style
    decoder's ``model.layers.3`` or GPT-2's ``transformer.h.3``. What a technique that treats one layer
    apart (float fallback) names layer ``i`` by, in PyTorch and in the graphs exported from it."""
    import torch

    try:
        owner, attribute, _ = encoder_layers(model)
    except ValueError:
        base = getattr(model, model.base_model_prefix, model)
        attribute = next((a for a in ("layers", "h") if isinstance(getattr(base, a, None), torch.nn.ModuleList)),
                         None)
        if attribute is None:
            raise ValueError(f"{type(model).__name__}: no stack of transformer layers (encoder.layer, "
                             "transformer.layer, layers or h)") from None
        owner = base
    owner_name = next(name for name, module in model.named_modules() if module is owner)
    stack = f"{owner_name}.{attribute}" if owner_name else attribute
    return [f"{stack}.{i}" for i in range(len(getattr(owner, attribute)))]


def layer_keep_float(model, layers: Iterable[int]) -> tuple[str, ...]:
    """``keep_float`` patterns (:func:`keep_float_names`) of every linear inside the transformer layers at
    ``layers`` (``bert.encoder.layer.3.*``: the trailing dot keeps layer 3 from matching layer 30); none for no
    layers, whatever the model (a bare module without a layer stack too)."""
    layers = tuple(layers)
    if not layers:
        return ()
    prefixes = layer_prefixes(model)
    bad = sorted(i for i in layers if not 0 <= i < len(prefixes))
    if bad:
        raise ValueError(f"layers {bad} are not among the model's {len(prefixes)} transformer layers")
    return tuple(f"{prefixes[i]}.*" for i in sorted(set(layers)))


def checked_layer_prefixes(folder, layers, what: str) -> list[str]:
    """:func:`folder_layer_prefixes` of ``folder``, after checking that every index in ``layers`` is one of its
    transformer layers (``what``: the artifact's kind in the error, "the graph's", "the IR's")."""
    prefixes = folder_layer_prefixes(folder)
    bad = sorted(i for i in layers if not 0 <= i < len(prefixes))
    if bad:
        raise ValueError(f"float layers {bad}: {what} model has {len(prefixes)} transformer layers")
    return prefixes


def folder_layer_prefixes(folder) -> list[str]:
    """:func:`layer_prefixes` of the model a saved folder's ``config.json`` describes (an exported graph's folder
    keeps it), from a weightless skeleton on torch's meta device: no weights are read or allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from compressors.execution.hf import is_causal_lm_folder

    config = AutoConfig.from_pretrained(folder)
    auto = AutoModelForCausalLM if is_causal_lm_folder(folder) else AutoModelForSequenceClassification
    with torch.device("meta"):
        return layer_prefixes(auto.from_config(config))
