"""Torch modules of the extra ops in :mod:`einnas.grammar.ops_extra`.

At module level (picklable, importable by name); this module imports torch, so the
registry imports it only when an op is built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from einnas.grammar._torch_modules import Add


class _LRNExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LocalResponseNorm(nn.Module):
    """AlexNet's LRN across channels; exported as one ONNX ``LRN`` node."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return _LRNExport.apply(x, self.size, self.alpha, self.beta, self.k)
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


class _DropoutExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rate):
        return x.clone()

    @staticmethod
    def symbolic(g, x, rate):
        if rate == 0.5:  # the ONNX default: no ratio input, as the model zoo's Dropout(0.5) nodes
            return g.op("Dropout", x)
        ratio = g.op("Constant", value_t=torch.tensor(rate, dtype=torch.float32))
        return g.op("Dropout", x, ratio)


class Dropout(nn.Module):
    """Dropout with rate ``percent``/100 in training; an inference ``Dropout`` node in ONNX."""

    def __init__(self, percent: int):
        super().__init__()
        self.rate = percent / 100.0

    def forward(self, x):
        if self.training:
            return F.dropout(x, self.rate, True)
        if torch.onnx.is_in_onnx_export():
            return _DropoutExport.apply(x, self.rate)
        return x


class _SumExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *xs):
        return Add.forward(None, xs)

    @staticmethod
    def symbolic(g, *xs):
        return g.op("Sum", *xs)


class Sum(Add):
    """Elementwise sum of the branches (``add``'s module); one n-ary ``Sum`` node in ONNX."""

    def forward(self, xs):
        if torch.onnx.is_in_onnx_export():
            return _SumExport.apply(*xs)
        return super().forward(xs)


class Flatten(nn.Module):
    """``(B, C, H, W)`` or ``(B, S, D)`` -> one token ``(B, 1, n)`` (row-major, as ONNX Flatten)."""

    def forward(self, x):
        return x.reshape(x.shape[0], 1, -1)


CLASSES = {"lrn": LocalResponseNorm, "dropout": Dropout, "sum": Sum, "flatten": Flatten}
