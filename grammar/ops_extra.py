"""Extra operations of conventional networks: LRN, global pooling, dropout, n-ary sum, flatten.

They are registered like the other extras (``sampled=False``: the default einspace
grammar does not name them; the family grammars in ``grammar/spaces/`` do) and exist
so that the ONNX graphs einnas trains on contain every op type of the classic model
zoos (AlexNet, VGG, ResNet, Inception, SqueezeNet, ...):

==================  ======================================  ==========================
op                  torch                                   ONNX node
==================  ======================================  ==========================
``lrn(n)``, ``lrn``  ``local_response_norm(n)``, n odd, 5    ``LRN``
``global_avgpool``  ``AdaptiveAvgPool2d(1)``                ``GlobalAveragePool``
``dropout(p)``      ``dropout`` with rate p % when training ``Dropout`` (inference)
``sum``             sum of the branches                     one n-ary ``Sum``
``flatten``         image ``(C,H,W)`` -> one token ``CHW``  ``Reshape``
==================  ======================================  ==========================

Two of them need a custom ONNX ``symbolic`` because the TorchScript exporter would
otherwise lose them:

* torch decomposes ``local_response_norm`` into ~60 nodes (Pad, AveragePool, Pow, If,
  ...); the symbolic writes the one ``LRN`` node the ONNX spec defines for it (the
  same function: ``x / (k + alpha/n * sum of squares)^beta``, alpha 1e-4, beta 0.75,
  k 1; odd ``n`` only: torch and ONNX centre an even window differently and
  onnxruntime refuses one);
* dropout is the identity at inference, so an eval-mode export drops it. It is not a
  no-op for what the predictor estimates (accuracy *after training*, and the net
  was trained with dropout), so the export keeps an inference-mode ``Dropout`` node
  (``ratio`` input, no ``training_mode``: onnxruntime passes the tensor through), as
  the model zoo files do.

``sum`` is the n-ary join: ``add`` exports b branches as b-1 chained ``Add`` nodes,
``sum`` as one ``Sum`` node (ResNet-50's residual joins in the zoo are ``Sum``).
The custom symbolics run only inside ``torch.onnx.export``; training and plain
inference use the ordinary torch functions.
"""

from __future__ import annotations

from einnas.grammar.registry import IMAGE, TOKENS, State, register_fusion, register_op

_CLASSES: dict[str, type] = {}


def _modules():
    """The torch classes, created on first use so that loading a grammar stays light."""
    if _CLASSES:
        return _CLASSES
    import torch
    from torch import nn
    from torch.nn import functional as F

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
            return _add_all(xs)

        @staticmethod
        def symbolic(g, *xs):
            return g.op("Sum", *xs)

    def _add_all(xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    class Sum(nn.Module):
        """Elementwise sum of the branches; one n-ary ``Sum`` node in ONNX."""

        def forward(self, xs):
            if torch.onnx.is_in_onnx_export():
                return _SumExport.apply(*xs)
            return _add_all(xs)

    class Flatten(nn.Module):
        """Image ``(B, C, H, W)`` -> one token ``(B, 1, C*H*W)`` (channel-major, as Flatten)."""

        def forward(self, x):
            return x.reshape(x.shape[0], 1, -1)

    _CLASSES.update(lrn=LocalResponseNorm, dropout=Dropout, sum=Sum, flatten=Flatten)
    return _CLASSES


def _no_params(state, args):
    return 0


_LRN_SIZE = 5  # AlexNet's and GoogLeNet's window


def _lrn_shape(state, args):
    size = args[0] if args else _LRN_SIZE
    if state.mode != IMAGE:
        return "lrn needs an image (C, H, W)"
    if size < 1 or size % 2 == 0:
        # an even window is placed differently by torch and ONNX, and onnxruntime
        # refuses it: odd sizes only
        return f"lrn size {size} must be odd and positive"
    return state


@register_op("lrn", shape=_lrn_shape, params=_no_params, nargs=(0, 1), sampled=False,
             doc="lrn(n): local response normalisation across n (odd) channels, as AlexNet; lrn = lrn(5)")
def _lrn(state, args):
    return _modules()["lrn"](args[0] if args else _LRN_SIZE)


def _global_shape(state, args):
    if state.mode != IMAGE:
        return "global_avgpool needs an image (C, H, W)"
    return State((state.shape[0], 1, 1), IMAGE, state.fold)


@register_op("global_avgpool", shape=_global_shape, params=_no_params, sampled=False,
             doc="average of each channel over H and W: (C, H, W) -> (C, 1, 1)")
def _global_avgpool(state, args):
    from torch import nn

    return nn.AdaptiveAvgPool2d(1)


def _dropout_shape(state, args):
    (percent,) = args
    if not 0 < percent < 100:
        return f"dropout rate {percent}% is not between 1 and 99"
    return state


@register_op("dropout", shape=_dropout_shape, params=_no_params, nargs=1, sampled=False,
             doc="dropout(p): zero p% of the elements while training; identity at inference")
def _dropout(state, args):
    return _modules()["dropout"](args[0])


def _sum_shape(states, args):
    if len({(s.shape, s.mode) for s in states}) != 1:
        return "sum needs equal shapes, got " + ", ".join(str(s.shape) for s in states)
    folds = {s.fold for s in states}
    return State(states[0].shape, states[0].mode, states[0].fold if len(folds) == 1 else None)


@register_op("sum", kind="join", shape=_sum_shape, params=_no_params, sampled=False,
             doc="elementwise sum of the branches as one n-ary node (add chains binary adds)")
def _sum(states, args):
    return _modules()["sum"]()


def _flatten_shape(state, args):
    if state.mode != IMAGE:
        return "flatten needs an image (C, H, W)"
    # One token holding the whole image; col2im folds it back to (C*H*W, 1, 1).
    return State((1, state.numel), TOKENS, (1, 1))


@register_op("flatten", shape=_flatten_shape, params=_no_params, sampled=False,
             doc="image (C, H, W) -> one token of C*H*W features (an MLP's input); col2im gives (CHW, 1, 1)")
def _flatten(state, args):
    return _modules()["flatten"]()


# --- fusions: convolutions whose width is relative to the input -------------------
#
# routing[im2col(k,s,p), linear_div(9), col2im] is a 3x3 convolution that keeps the
# channel count (9C patch features -> C): the residual and inverted-residual blocks
# of the family grammars use these so that both branches of a residual always
# agree in width. Built as one Conv2d, like the absolute-width fusion in ops.py.


def _relative_conv(scale):
    def build(state, args):
        from torch import nn

        (k, s, p), (factor,), _ = args
        width = scale(state.shape[0] * k * k, factor)
        return nn.Conv2d(state.shape[0], int(width), k, s, p)

    return build


register_fusion(("im2col", "linear_x", "col2im"))(_relative_conv(lambda d, f: d * f))
register_fusion(("im2col", "linear_div", "col2im"))(_relative_conv(lambda d, f: d // f))
