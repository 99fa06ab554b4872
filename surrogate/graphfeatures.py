"""Numeric features of an ONNX graph, computed from the graph structure itself.

:func:`graph_features` reads an analysed :class:`~einnas.surrogate.summary.OnnxGraph`
(the data nodes left after folding constants and shape plumbing): op types and
their attributes, tensor shapes, parameters, MACs, and paths through the DAG. It
never parses the rendered description text, so the figures are exact and any ONNX
file gets the same features as an exported einnas architecture.

Op types generalise through **op families** (:data:`OP_FAMILIES`): a convolution is
``conv`` whatever its ONNX name, ``LRN`` is ``norm`` beside ``BatchNormalization``,
``Sum`` is a ``join`` beside ``Add``. The predictor sees family counts next to the
raw op counts, so an op it never saw lands near the known ops of its family; the
out-of-distribution note (``score.py``) complains only about unseen *families*.
The table maps ONNX operator names (the ONNX spec's vocabulary), not grammar names.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

#: ONNX op type -> family. Ops not listed belong to ``other``.
OP_FAMILIES: dict[str, str] = {
    **dict.fromkeys(("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv"), "conv"),
    **dict.fromkeys(("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum"), "dense"),
    **dict.fromkeys(("BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
                     "LRN", "LpNormalization", "MeanVarianceNormalization", "RMSNormalization",
                     "SimplifiedLayerNormalization"), "norm"),
    **dict.fromkeys(("Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Elu", "Selu", "Celu",
                     "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Clip", "ThresholdedRelu",
                     "Swish", "FastGelu", "BiasGelu"), "activation"),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax"), "softmax"),
    **dict.fromkeys(("MaxPool", "AveragePool", "LpPool", "MaxRoiPool", "RoiAlign", "MaxUnpool"), "pool"),
    # A global pool is a reduction over the spatial axes (einspace writes it as ReduceMean).
    **dict.fromkeys(("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                     "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"), "reduce"),
    **dict.fromkeys(("Add", "Sum", "Sub", "Mean", "Max", "Min"), "add_like"),
    **dict.fromkeys(("Mul", "Div"), "mul_like"),
    **dict.fromkeys(("Concat", "ConcatFromSequence"), "concat"),
    **dict.fromkeys(("Sqrt", "Pow", "Exp", "Neg", "Log", "Reciprocal", "Abs", "Sin", "Cos", "Floor", "Ceil",
                     "Round", "Sign"), "math"),
    **dict.fromkeys(("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "Gather",
                     "GatherElements", "GatherND", "Pad", "Expand", "Tile", "Identity", "Dropout", "Cast",
                     "DepthToSpace", "SpaceToDepth", "Shape", "Size", "Where", "ConstantOfShape", "Range",
                     "ScatterND", "ScatterElements", "CastLike", "Trilu"), "plumbing"),
    **dict.fromkeys(("Resize", "Upsample"), "resize"),
}
FAMILIES = ("conv", "dense", "norm", "activation", "softmax", "pool", "reduce", "add_like",
            "mul_like", "concat", "math", "plumbing", "resize", "other")
#: Raw op types with their own count (the families carry the rest).
OP_VOCAB = ("Conv", "Gemm", "MatMul", "Einsum", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Softmax",
            "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "MaxPool",
            "AveragePool", "GlobalAveragePool", "ReduceMean", "Add", "Mul", "Concat", "Transpose", "Reshape")
_WEIGHTED = ("conv", "dense")
_NONLINEAR = ("activation", "softmax")

_BASE = (
    "log_params", "log_macs", "log_flops", "log_depth", "log_nodes", "log_folded",
    "log_input_numel", "input_channels", "log_classes", "log_head_numel",
    "log_min_numel", "log_max_numel", "log_median_numel", "log_max_width", "log_median_width",
    "log_downsample", "log_params_per_node", "log_macs_per_param", "log_largest_layer_share",
    "conv_mean_kernel", "conv_max_kernel", "frac_strided_conv", "log_n_depthwise", "log_n_grouped",
    "log_n_data_matmul", "log_n_joins", "log_max_fanout",
    "log_weighted_longest", "log_weighted_shortest", "shortest_over_longest", "log_nonlinear_longest",
    "log_norm_on_longest", "log_macs_weighted_depth",
)
#: Names of the graph features, in order.
GRAPH_NAMES = _BASE + tuple(f"log_fam_{f}" for f in FAMILIES) + tuple(f"frac_fam_{f}" for f in FAMILIES) \
    + tuple(f"log_op_{op}" for op in OP_VOCAB)


def family(op: str) -> str:
    """The family of an ONNX op type (``other`` when unknown)."""
    return OP_FAMILIES.get(op.rsplit(".", 1)[-1], "other")


def _numel(shape) -> int | None:
    """Elements per sample (symbolic dims count as 1); None when a dim is unknown."""
    if shape is None:
        return None
    total = 1
    for d in shape:
        if isinstance(d, int):
            total *= d
        elif d is None:
            return None
    return total


def _attr(node, name, default=None):
    for a in node.proto.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def graph_features(graph, summary) -> dict[str, float]:
    """The :data:`GRAPH_NAMES` figures of an analysed graph and its :class:`Summary`."""
    log = lambda v: math.log1p(max(float(v), 0.0))  # noqa: E731
    tensors = graph.tensors
    data = [graph.nodes[i] for i in graph.data_nodes]
    fams = Counter(family(n.op) for n in data)
    ops = Counter(n.op for n in data)
    nodes = max(len(data), 1)
    params, macs = summary.params, summary.macs

    in_shape = tensors[graph.inputs[0]].shape if graph.inputs else None
    out_shape = tensors[graph.outputs[0]].shape if graph.outputs else None
    input_numel = _numel(in_shape[1:]) if in_shape else None
    classes = _numel(out_shape[1:]) if out_shape else None
    sizes, widths, spatial = [], [], []
    for n in data:
        shape = tensors[n.outputs[0]].shape if n.outputs and n.outputs[0] else None
        size = _numel(shape[1:]) if shape else None
        if size:
            sizes.append(size)
        width = (shape[1] if len(shape) == 4 else shape[-1]) if shape and len(shape) >= 3 else None
        if isinstance(width, int):
            widths.append(width)
            if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
                spatial.append(shape[2] * shape[3])
    body = sizes[:-1] or sizes or [1]
    in_spatial = _numel(in_shape[2:]) if in_shape and len(in_shape) == 4 else None

    convs = [n for n in data if family(n.op) == "conv"]
    kernels, strided, depthwise, grouped = [], 0, 0, 0
    for n in convs:
        k = _attr(n, "kernel_shape")
        if not k:
            w = tensors.get(n.inputs[1]) if len(n.inputs) > 1 else None
            k = list(w.shape[2:]) if w is not None and w.shape else []
        kernels.append(float(np.prod(k)) if k else 1.0)
        strided += any(s > 1 for s in (_attr(n, "strides") or [1]))
        group = int(_attr(n, "group", 1) or 1)
        x = tensors[n.inputs[0]].shape
        if group > 1:
            grouped += 1
            depthwise += bool(x and len(x) > 1 and x[1] == group)
    head = 1
    for n in reversed(data):
        if family(n.op) in _WEIGHTED and n.params:
            head = _numel(tensors[n.inputs[0]].shape[1:]) or 1 if tensors[n.inputs[0]].shape else 1
            break
    data_matmul = sum(1 for n in data if n.op in ("MatMul", "Einsum") and len(n.data_slots) >= 2)
    joins = sum(1 for n in data if len(n.data_slots) >= 2 and family(n.op) in ("add_like", "mul_like", "concat"))
    fanout = max((len(graph.dag.succ[i]) for i in graph.data_nodes), default=0)
    paths = _paths(graph)
    largest = max((n.params for n in data), default=0)
    return dict(zip(GRAPH_NAMES, [
        log(params), log(macs), log(summary.flops), log(summary.depth), log(len(data)), log(summary.folded),
        log(input_numel or 1), float(in_shape[1]) if in_shape and len(in_shape) == 4 and isinstance(in_shape[1], int)
        else 1.0, log(classes or 1), log(head),
        log(min(body)), log(max(body)), log(float(np.median(body))), log(max(widths, default=1)),
        log(float(np.median(widths)) if widths else 1), log((in_spatial or 1) / max(min(spatial, default=1), 1)),
        log(params / nodes), log(macs / max(params, 1)), largest / max(params, 1),
        float(np.mean(kernels)) if kernels else 0.0, max(kernels, default=0.0), strided / max(len(convs), 1),
        log(depthwise), log(grouped), log(data_matmul), log(joins), log(fanout),
        log(paths[0]), log(paths[1]), paths[1] / max(paths[0], 1), log(paths[2]), log(paths[3]), log(paths[4]),
    ])) | {f"log_fam_{f}": log(fams.get(f, 0)) for f in FAMILIES} \
        | {f"frac_fam_{f}": fams.get(f, 0) / nodes for f in FAMILIES} \
        | {f"log_op_{op}": log(ops.get(op, 0)) for op in OP_VOCAB}


def _paths(graph) -> tuple:
    """Input-to-output paths through the data-node DAG.

    Returns the longest and the shortest path in weighted ops (conv/dense nodes that
    hold parameters; a residual connection makes the shortest short), the longest
    in nonlinearities, the norm layers on the weighted-longest path, and the
    longest path in log-MACs (a depth measure that ignores cheap layers).
    """
    dag, nodes = graph.dag, graph.nodes
    longest: dict = {}
    for i in graph.data_nodes:  # already in topological order
        n = nodes[i]
        fam = family(n.op)
        w = 1 if fam in _WEIGHTED and n.params else 0
        nl = 1 if fam in _NONLINEAR else 0
        nm = 1 if fam == "norm" else 0
        mw = math.log1p(n.macs)
        preds = [longest[p] for p in dag.pred[i] if p in longest]
        if preds:
            best = max(preds, key=lambda t: (t[0], t[3]))
            longest[i] = (best[0] + w, min(p[1] for p in preds) + w, max(p[2] for p in preds) + nl,
                          best[3] + nm, max(p[4] for p in preds) + mw)
        else:
            longest[i] = (w, w, nl, nm, mw)
    ends = [graph.tensors[o].producer for o in graph.outputs]
    ends = [e for e in ends if e in longest] or list(longest)[-1:]
    if not ends:
        return (0, 0, 0, 0, 0.0)
    vals = [longest[e] for e in ends]
    return (max(v[0] for v in vals), min(v[1] for v in vals), max(v[2] for v in vals),
            max(v[3] for v in vals), max(v[4] for v in vals))
