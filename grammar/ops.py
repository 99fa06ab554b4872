"""The built-in operations of einspace, each with its shape rule and torch builder.

Dims are counted per sample from 1: an image is (C, H, W), a token sequence (S, D).
Shape rules follow ``shared/reference/einspace.md`` §2.3; where the original code and
the paper differ, the choice is stated on the op.
"""

from __future__ import annotations

import math

from einnas.grammar.registry import IMAGE, TOKENS, State, register_fusion, register_op

# Torch is imported inside builders so that loading the grammar (and `einnas --help`)
# stays light; the module classes live at module level in a private module (so built
# networks pickle) that is imported on first use.


def _modules() -> dict[str, type]:
    from einnas.grammar._torch_modules import OP_CLASSES

    return OP_CLASSES


def _nn():
    from torch import nn

    return nn


# --- computations (map) -------------------------------------------------------


@register_op("identity", doc="returns its input")
def _identity(state, args):
    return _nn().Identity()


def _linear_width(state, args, scale):
    last = state.shape[-1]
    return scale(last, args[0]) if args else None


def _linear_shape(scale):
    def rule(state, args):
        width = _linear_width(state, args, scale)
        if not width or width != int(width) or width < 1:
            return f"width {width} is not a positive integer for input size {state.shape[-1]}"
        return State(state.shape[:-1] + (int(width),), state.mode, state.fold)

    return rule


def _linear_params(scale):
    def count(state, args):
        width = int(_linear_width(state, args, scale))
        return state.shape[-1] * width + width

    return count


def _linear_builder(scale):
    def build(state, args):
        return _nn().Linear(state.shape[-1], int(_linear_width(state, args, scale)))

    return build


_ABSOLUTE = lambda last, n: n  # noqa: E731
_TIMES = lambda last, k: last * k  # noqa: E731
_DIVIDED = lambda last, k: last / k if k else 0  # noqa: E731  (linear_div(0): "width 0 is not a positive integer")

register_op("linear", shape=_linear_shape(_ABSOLUTE), params=_linear_params(_ABSOLUTE), nargs=1, width_args=(0,),
            doc="linear(N): fully connected layer on the last axis, to N features")(_linear_builder(_ABSOLUTE))
register_op("linear_x", shape=_linear_shape(_TIMES), params=_linear_params(_TIMES), nargs=1, sampled=False,
            doc="linear_x(k): linear layer on the last axis to k times its size")(_linear_builder(_TIMES))
register_op("linear_div", shape=_linear_shape(_DIVIDED), params=_linear_params(_DIVIDED), nargs=1, sampled=False,
            doc="linear_div(k): linear layer on the last axis to 1/k of its size")(_linear_builder(_DIVIDED))


def _norm_params(state, args):
    return 2 * (state.shape[0] if state.mode == IMAGE else state.shape[-1])


@register_op("norm", params=_norm_params, doc="BatchNorm over channels (image) or LayerNorm over features (tokens)")
def _norm(state, args):
    nn = _nn()
    return nn.BatchNorm2d(state.shape[0]) if state.mode == IMAGE else nn.LayerNorm(state.shape[-1])


@register_op("leakyrelu", params=lambda s, a: 0, doc="LeakyReLU with slope 0.01 (the paper's relu)")
def _leakyrelu(state, args):
    return _nn().LeakyReLU(0.01)


@register_op("softmax", params=lambda s, a: 0, doc="softmax over the last axis")
def _softmax(state, args):
    return _modules()["softmax"]()


@register_op("pos_enc", params=lambda s, a: s.numel, doc="learnable positional encoding of the input's shape")
def _pos_enc(state, args):
    return _modules()["pos_enc"](state.shape)


# Extra activations: registered, not in the default grammar; name them in a copy of
# the grammar file to search with them.
for _name, _cls, _doc in [
    ("relu", "ReLU", "ReLU"), ("gelu", "GELU", "GELU (erf form)"), ("silu", "SiLU", "SiLU / swish with beta 1"),
    ("tanh", "Tanh", "tanh"), ("sigmoid", "Sigmoid", "logistic sigmoid"),
]:
    register_op(_name, params=lambda s, a: 0, sampled=False, doc=_doc)(
        (lambda cls: lambda state, args: getattr(_nn(), cls)())(_cls)
    )


def _pool_shape(state, args):
    if state.mode != IMAGE:
        return "pooling needs an image (C, H, W)"
    k, s, p = args
    if s < 1 or k < 1 or p < 0 or 2 * p > k:
        return f"invalid pooling setting ({k},{s},{p})"
    c, h, w = state.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if oh < 1 or ow < 1:
        return f"kernel {k} does not fit {h}x{w}"
    return State((c, oh, ow), IMAGE, state.fold)


@register_op("maxpool", shape=_pool_shape, params=lambda s, a: 0, nargs=3, sampled=False,
             doc="maxpool(k,s,p): spatial max pooling of an image")
def _maxpool(state, args):
    return _nn().MaxPool2d(*args)


@register_op("avgpool", shape=_pool_shape, params=lambda s, a: 0, nargs=3, sampled=False,
             doc="avgpool(k,s,p): spatial average pooling of an image (padding not counted)")
def _avgpool(state, args):
    return _nn().AvgPool2d(*args, count_include_pad=False)


@register_op("dwconv", shape=_pool_shape, params=lambda s, a: s.shape[0] * a[0] * a[0] + s.shape[0], nargs=3,
             sampled=False, doc="dwconv(k,s,p): depthwise convolution of an image")
def _dwconv(state, args):
    k, s, p = args
    return _nn().Conv2d(state.shape[0], state.shape[0], k, s, p, groups=state.shape[0])


# --- routing (map) ----------------------------------------------------------------


def _permute_shape(state, args):
    rank = len(state.shape)
    if sorted(args) != list(range(1, rank + 1)):
        return f"permute{tuple(args)} does not reorder the {rank} axes of {state.shape}"
    return State(tuple(state.shape[a - 1] for a in args), state.mode, state.fold)


@register_op("permute", shape=_permute_shape, params=lambda s, a: 0, nargs=(2, 3),
             doc="permute(...): reorder the per-sample axes (1-based)")
def _permute(state, args):
    return _modules()["permute"](tuple(args))


def _im2col_shape(state, args):
    if state.mode != IMAGE:
        return "im2col needs an image (C, H, W)"
    k, s, p = args
    c, h, w = state.shape
    if k < 1 or s < 1 or p < 0:
        return f"invalid im2col setting ({k},{s},{p})"
    if h + 2 * p < k or w + 2 * p < k:
        return f"kernel {k} is larger than the padded image {h}x{w}"
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return State((oh * ow, c * k * k), TOKENS, (oh, ow))


@register_op("im2col", shape=_im2col_shape, params=lambda s, a: 0, nargs=3,
             doc="im2col(k,s,p): image patches as tokens (S = H'W', D = C k k)")
def _im2col(state, args):
    return _modules()["im2col"](*args)


def _col2im_shape(state, args):
    if state.mode != TOKENS or state.fold is None:
        return "col2im needs tokens made by an earlier im2col"
    s, d = state.shape
    oh, ow = state.fold
    # Strict, as in the paper: the tokens must be exactly the H'W' patches. The
    # original code accepted any S*D divisible by H'W', silently re-interleaving features.
    if s != oh * ow:
        return f"{s} tokens cannot fold back to {oh}x{ow}"
    return State((d, oh, ow), IMAGE, None)


@register_op("col2im", shape=_col2im_shape, params=lambda s, a: 0,
             doc="fold tokens back into an image with the size recorded by im2col")
def _col2im(state, args):
    return _modules()["col2im"](state.fold)


# --- splits -------------------------------------------------------------------------


def _clone_shape(state, args):
    (b,) = args
    return (state,) * b if b >= 2 else "clone needs at least 2 branches"


@register_op("clone", kind="split", shape=_clone_shape, params=lambda s, a: 0, nargs=1,
             doc="clone(b): b copies of the input")
def _clone(state, args):
    return _modules()["clone"](args[0])


def _group_shape(state, args):
    b, dim = args
    rank = len(state.shape)
    if not 1 <= dim <= rank:
        return f"axis {dim} does not exist in {state.shape}"
    size = state.shape[dim - 1]
    if b < 2 or size < b or size % b:
        return f"axis {dim} of size {size} does not split into {b}"
    part = State(state.shape[: dim - 1] + (size // b,) + state.shape[dim:], state.mode, state.fold)
    return (part,) * b


@register_op("group", kind="split", shape=_group_shape, params=lambda s, a: 0, nargs=2,
             doc="group(b,d): b equal chunks along axis d")
def _group(state, args):
    return _modules()["group"](args[0], args[1])


# --- joins --------------------------------------------------------------------------


def _joined(states, shape):
    folds = {s.fold for s in states}
    return State(tuple(shape), states[0].mode, states[0].fold if len(folds) == 1 else None)


def _add_shape(states, args):
    if len({(s.shape, s.mode) for s in states}) != 1:
        return "add needs equal shapes, got " + ", ".join(str(s.shape) for s in states)
    return _joined(states, states[0].shape)


@register_op("add", kind="join", shape=_add_shape, params=lambda s, a: 0, doc="elementwise sum of the branches")
def _add(states, args):
    return _modules()["add"]()


def _cat_shape(states, args):
    (dim,) = args
    first = states[0]
    rank = len(first.shape)
    if len({s.mode for s in states}) != 1 or not 1 <= dim <= rank:
        return f"cannot concatenate along axis {dim}"
    rest = {s.shape[: dim - 1] + s.shape[dim:] for s in states}
    if len(rest) != 1:
        return f"cat({dim}) needs equal sizes off axis {dim}, got " + ", ".join(str(s.shape) for s in states)
    return _joined(states, first.shape[: dim - 1] + (sum(s.shape[dim - 1] for s in states),) + first.shape[dim:])


@register_op("cat", kind="join", shape=_cat_shape, params=lambda s, a: 0, nargs=1,
             doc="cat(d): concatenate the branches along axis d")
def _cat(states, args):
    return _modules()["cat"](args[0])


def _matmul_shape(states, args):
    if len(states) != 2:
        return f"matmul joins 2 branches, not {len(states)}"
    a, b = states
    if a.mode != b.mode or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        return f"cannot multiply {a.shape} by {b.shape}"
    return _joined(states, a.shape[:-1] + b.shape[-1:])


@register_op("matmul", kind="join", shape=_matmul_shape, params=lambda s, a: 0,
             doc="matrix product of the last two axes of two branches")
def _matmul(states, args):
    return _modules()["matmul"](1.0)


@register_op("scaled_matmul", kind="join", shape=_matmul_shape, params=lambda s, a: 0,
             doc="matmul divided by the square root of the inner size (attention scores)")
def _scaled_matmul(states, args):
    return _modules()["matmul"](1.0 / math.sqrt(states[0].shape[-1]))


# --- fusions ------------------------------------------------------------------------


@register_fusion(("im2col", "linear", "col2im"))
def _conv(state, args):
    """routing[im2col(k,s,p), linear(N), col2im] is exactly Conv2d(C, N, k, s, p).

    The unfold column order (C, kh, kw) matches the Conv2d weight layout, and both
    default initialisations draw from the same Kaiming-uniform bounds.
    """
    (k, s, p), (n,), _ = args
    return _nn().Conv2d(state.shape[0], n, k, s, p)
