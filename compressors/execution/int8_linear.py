"""``Int8Linear``: the module the absmax quantizer swaps in. Its ``torch-absmax-int8`` artifacts pickle a
reference to this class, so it lives beside their loader in the execution layer (kept in its own module so
importing the loaders never imports torch). Its import path is in those artifacts' cache key
(:mod:`compressors.execution.loaders.absmax`): moving it rebuilds them once."""

from __future__ import annotations

import torch


class Int8Linear(torch.nn.Module):
    """A linear layer whose weight is stored as int8 + float32 scales, dequantized in each forward."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_int8.to(x.dtype) * self.scale.to(x.dtype)
        return torch.nn.functional.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"
