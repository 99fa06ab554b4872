"""The torch module classes of built networks, at module level so networks pickle.

Private and imported lazily (by the op builders and :mod:`einnas.grammar.builder` on
first use), so that loading the grammar and ``einnas --help`` never import torch.
Being module-level classes, built networks work with ``pickle``, ``torch.save`` and
multiprocessing like any torch module.
"""

from __future__ import annotations

import torch
from torch import nn


class LastAxisSoftmax(nn.Module):
    """Softmax over the last axis."""

    def forward(self, x):
        return torch.softmax(x, dim=-1)


class PositionalEncoding(nn.Module):
    """Adds a learnable tensor of the input's per-sample shape."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(*shape))

    def forward(self, x):
        return x + self.weight


class Permute(nn.Module):
    """Reorders the per-sample axes (``axes`` counted from 1; the batch axis stays first)."""

    def __init__(self, axes):
        super().__init__()
        self.axes = (0, *axes)

    def forward(self, x):
        return x.permute(*self.axes)


class Im2Col(nn.Module):
    """Image patches as tokens: ``(B, C, H, W)`` -> ``(B, H'W', C k k)``."""

    def __init__(self, k, s, p):
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=k, stride=s, padding=p)

    def forward(self, x):
        return self.unfold(x).transpose(1, 2)


class Col2Im(nn.Module):
    """Tokens ``(B, H'W', D)`` folded back into an image ``(B, D, H', W')``."""

    def __init__(self, fold):
        super().__init__()
        self.fold = tuple(fold)

    def forward(self, x):
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.fold)


class Clone(nn.Module):
    """``b`` references to the input (a split)."""

    def __init__(self, b):
        super().__init__()
        self.b = b

    def forward(self, x):
        return [x] * self.b


class Group(nn.Module):
    """``b`` equal chunks along axis ``dim`` (a split)."""

    def __init__(self, b, dim):
        super().__init__()
        self.b, self.dim = b, dim

    def forward(self, x):
        return list(torch.chunk(x, self.b, dim=self.dim))


class Add(nn.Module):
    """Sum of the branches (a join)."""

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Cat(nn.Module):
    """Concatenation of the branches along axis ``dim`` (a join)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, xs):
        return torch.cat(xs, dim=self.dim)


class MatMul(nn.Module):
    """Matrix product of two branches, times ``scale`` (a join)."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, xs):
        out = torch.matmul(xs[0], xs[1])
        return out * self.scale if self.scale != 1.0 else out


class Stages(nn.Module):
    """Runs ``map`` stages on a tensor; ``split`` makes branches that ``branches``
    maps one module each over and ``join`` merges."""

    def __init__(self, kinds: list[str], modules: list[nn.Module]):
        super().__init__()
        self.kinds = list(kinds)
        self.stages = nn.ModuleList(modules)

    def forward(self, x):
        xs = None
        for kind, module in zip(self.kinds, self.stages):
            if kind == "map":
                x = module(x)
            elif kind == "split":
                xs = module(x)
            elif kind == "branches":
                xs = [f(t) for f, t in zip(module, xs)]
            else:
                x = module(xs)
        return x


class Network(nn.Module):
    """stem (identity) -> backbone -> global pooling -> linear classifier."""

    def __init__(self, backbone: nn.Module, pool_dims: tuple[int, ...], features: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.pool_dims = pool_dims
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x):
        y = self.backbone(x)
        return self.classifier(torch.mean(y, dim=self.pool_dims))


#: The op builders' classes by op name (``einnas.grammar.ops``).
OP_CLASSES = {
    "softmax": LastAxisSoftmax, "pos_enc": PositionalEncoding, "permute": Permute, "im2col": Im2Col,
    "col2im": Col2Im, "clone": Clone, "group": Group, "add": Add, "cat": Cat, "matmul": MatMul,
}
