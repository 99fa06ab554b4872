"""The ONNX graph as einnas reads it, and the summary figures computed from it.

:func:`analyse_graph` turns a ``ModelProto`` into an :class:`OnnxGraph`: every
tensor is classified as a graph ``input``, ``data`` (computed from an input),
``const`` (computed from initializers and ``Constant`` nodes only) or ``meta``
(shape plumbing: computed from the *shapes* of data tensors, such as the
``Shape → Gather → Unsqueeze → Concat`` chain an exporter writes for a dynamic
batch in ``Reshape``). Nodes producing ``const`` or ``meta`` tensors are folded
away; the *data nodes* that remain are what the text description shows and what
the figures count. Everything here follows the ONNX specification only.

:class:`Summary` holds the figures (parameters, MACs, FLOPs, depth, node and
op-type counts), reusable as predictor features via :meth:`Summary.as_dict`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from einnas.errors import ModelError
from einnas.surrogate.plumbing import SHAPE_READERS, numel, prepare

if TYPE_CHECKING:
    import onnx

INPUT, DATA, CONST, META = "input", "data", "const", "meta"
_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Element types counted as parameters (weights, including quantised ones); wider
# integer and bool tensors hold indices and shapes.
_PARAM_TYPES = frozenset({1, 2, 3, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23, 14, 15})


@dataclass
class Tensor:
    """One named value of the graph."""

    name: str
    kind: str
    producer: int | None = None  # index in OnnxGraph.nodes
    elem_type: int = 0
    shape: tuple | None = None  # dims: int, "N"/"16N" (symbolic), or None (unknown); None when unknown
    proto: object = None  # the stored TensorProto of an initializer or Constant
    consumers: list = field(default_factory=list)  # (data node index, input slot)
    graph_outputs: list = field(default_factory=list)  # positions in graph.output


@dataclass
class Node:
    """One ONNX node, with its inputs resolved."""

    index: int
    proto: object
    op: str  # op_type, prefixed by its domain when not the default one
    inputs: list  # tensor names by slot ("" = absent optional), then implicit subgraph inputs
    outputs: list
    kind: str = DATA
    data_slots: list = field(default_factory=list)  # slots holding input/data tensors
    params: int = 0
    macs: int = 0
    flops: int = 0


@dataclass(frozen=True)
class Summary:
    """Figures computed from the ONNX graph alone (per sample: symbolic dims count as 1)."""

    params: int  # elements of the constant float (or 8-bit) tensors of rank >= 1 the data nodes read, once each
    macs: int  # multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul
    flops: int  # 2 * macs + one operation per output element of every other data node
    depth: int  # data nodes on the longest input-to-output path
    nodes: int  # data nodes, after folding constants and shape plumbing
    folded: int  # nodes folded away (constants, shape plumbing)
    op_counts: dict  # data-node op type -> count, sorted by op type

    def as_dict(self) -> dict:
        """The figures as a plain dict (JSON-ready, usable as predictor features)."""
        return asdict(self)


@dataclass
class OnnxGraph:
    """A classified, cycle-checked view of one ONNX graph."""

    model: object
    opsets: dict
    tensors: dict
    nodes: list
    data_nodes: list  # indices of data nodes
    inputs: list  # graph input names (initializers excluded), in order
    outputs: list  # graph output names, in order
    symbols: dict  # symbolic dim name -> canonical name (N, N2, ...); shapes already use the latter
    dag: object = None  # networkx.DiGraph over data-node indices
    total_nodes: int = 0  # nodes of the model as given, before any folding


def analyse_graph(model: "onnx.ModelProto") -> OnnxGraph:
    """Classify, check and measure ``model``'s main graph (shapes inferred best-effort)."""
    import networkx as nx

    symbols = _symbols(model.graph)
    total_nodes = len(model.graph.node)
    model, shapes = prepare(model, symbols)
    graph = model.graph
    opsets = {("" if imp.domain == "ai.onnx" else imp.domain): imp.version for imp in model.opset_import}
    tensors: dict[str, Tensor] = {}
    for init in graph.initializer:
        tensors[init.name] = Tensor(init.name, CONST, elem_type=init.data_type, shape=tuple(init.dims), proto=init)
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        tensors[name] = Tensor(name, CONST, elem_type=sparse.values.data_type, shape=tuple(sparse.dims))
    inputs = [v.name for v in graph.input if v.name not in tensors]
    for name in inputs:
        tensors[name] = Tensor(name, INPUT)
    nodes = []
    for index, proto in enumerate(graph.node):
        op = proto.op_type if proto.domain in ("", "ai.onnx") else f"{proto.domain}.{proto.op_type}"
        extra = [n for n in _outer_refs(proto) if n not in proto.input]
        node = Node(index, proto, op, list(proto.input) + extra, list(proto.output))
        nodes.append(node)
        for out in node.outputs:
            if not out:
                continue
            if out in tensors:
                raise ModelError(f"node {_where(node)} writes tensor {out!r}, which is already defined")
            tensors[out] = Tensor(out, DATA, producer=index)
    order = _topological(nodes, tensors, nx)
    for name, (elem_type, shape) in shapes.items():
        tensor = tensors.get(name)
        if tensor is not None and tensor.proto is None:
            tensor.elem_type, tensor.shape = elem_type, shape
    for index in order:
        _classify(nodes[index], tensors, opsets)
    outputs = [v.name for v in graph.output]
    for position, name in enumerate(outputs):
        if name not in tensors:
            raise ModelError(f"graph output {name!r} is not produced by any node")
        tensors[name].graph_outputs.append(position)
    data_nodes = [i for i in order if nodes[i].kind == DATA]
    edges = []
    for i in data_nodes:
        for slot in nodes[i].data_slots:
            tensor = tensors[nodes[i].inputs[slot]]
            tensor.consumers.append((i, slot))
            if tensor.producer is not None:
                edges.append((tensor.producer, i))
    dag = nx.DiGraph()
    dag.add_nodes_from(data_nodes)
    dag.add_edges_from(edges)
    result = OnnxGraph(model, opsets, tensors, nodes, data_nodes, inputs, outputs, symbols, dag, total_nodes)
    _measure(result)
    return result


def summarize(graph: OnnxGraph) -> Summary:
    """The :class:`Summary` figures of an analysed graph."""
    import networkx as nx

    data = [graph.nodes[i] for i in graph.data_nodes]
    params = sum(param_count(graph.tensors[name]) for name in {w for n in data for w in _weights(graph, n)})
    depth = nx.dag_longest_path_length(graph.dag) + 1 if data else 0
    return Summary(
        params=params,
        macs=sum(n.macs for n in data),
        flops=sum(n.flops for n in data),
        depth=depth,
        nodes=len(data),
        folded=max(graph.total_nodes, len(graph.nodes)) - len(data),
        op_counts=dict(sorted(Counter(n.op for n in data).items())),
    )


# --- building blocks ------------------------------------------------------------


def _where(node: Node) -> str:
    return f"#{node.index} ({node.op}{' ' + repr(node.proto.name) if node.proto.name else ''})"


def _outer_refs(node) -> list:
    """Names a node's subgraphs read from the enclosing scope (implicit inputs)."""
    refs: list = []
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            defined = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                for name in [*inner.input, *_outer_refs(inner)]:
                    if name and name not in defined and name not in refs:
                        refs.append(name)
                defined.update(inner.output)
    return refs


def _topological(nodes, tensors, nx) -> list:
    """Node indices in a topological order; ModelError on a dangling input or a cycle."""
    edges = []
    for node in nodes:
        for name in node.inputs:
            if not name:
                continue
            tensor = tensors.get(name)
            if tensor is None:
                raise ModelError(f"node {_where(node)} reads tensor {name!r}, which nothing produces")
            if tensor.producer is not None:
                edges.append((tensor.producer, node.index))
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(nodes)))
    dag.add_edges_from(edges)
    try:
        return list(nx.topological_sort(dag))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dag)
        path = " -> ".join(_where(nodes[a]) for a, _ in cycle)
        raise ModelError(f"the graph has a cycle: {path} -> {_where(nodes[cycle[0][0]])}") from None


def _symbols(graph) -> dict:
    """Symbolic dims of the graph's signature -> canonical names N, N2, ... (first use first)."""
    initializers = {t.name for t in graph.initializer}
    names: dict = {}
    for value in [v for v in graph.input if v.name not in initializers] + list(graph.output):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param and d.dim_param not in names:
                names[d.dim_param] = "N" if not names else f"N{len(names) + 1}"
    return names


def _classify(node: Node, tensors, opsets) -> None:
    kinds = [tensors[name].kind for name in node.inputs if name]
    node.data_slots = [s for s, name in enumerate(node.inputs) if name and tensors[name].kind in (INPUT, DATA)]
    if node.op == "Constant":
        node.kind = CONST
        for out in node.outputs:
            if out:
                _constant_value(node, tensors[out])
    elif node.op in SHAPE_READERS:
        node.kind = META
    elif kinds and all(k == CONST for k in kinds):
        node.kind = CONST
    elif kinds and all(k in (CONST, META) for k in kinds):
        node.kind = META
    else:
        node.kind = DATA
    if node.kind != DATA:
        node.data_slots = []
        for out in node.outputs:
            if out:
                tensors[out].kind = node.kind


def _constant_value(node: Node, tensor: Tensor) -> None:
    from onnx import TensorProto, helper

    for attr in node.proto.attribute:
        if attr.name == "value":
            tensor.proto, tensor.elem_type, tensor.shape = attr.t, attr.t.data_type, tuple(attr.t.dims)
        elif attr.name == "sparse_value":
            tensor.elem_type, tensor.shape = attr.sparse_tensor.values.data_type, tuple(attr.sparse_tensor.dims)
        elif attr.name in ("value_float", "value_int"):
            kind = TensorProto.FLOAT if attr.name == "value_float" else TensorProto.INT64
            tensor.proto = helper.make_tensor(tensor.name, kind, [], [helper.get_attribute_value(attr)])
            tensor.elem_type, tensor.shape = kind, ()
        elif attr.name in ("value_floats", "value_ints"):
            kind = TensorProto.FLOAT if attr.name == "value_floats" else TensorProto.INT64
            values = helper.get_attribute_value(attr)
            tensor.elem_type, tensor.shape = kind, (len(values),)
            if len(values) <= 64:
                tensor.proto = helper.make_tensor(tensor.name, kind, [len(values)], values)


def _weights(graph: OnnxGraph, node: Node) -> set:
    """The constant (weight-like) tensors a data node reads, stored or computed from stored ones."""
    return {name for slot, name in enumerate(node.inputs)
            if name and slot not in node.data_slots and graph.tensors[name].kind == CONST}


def param_count(tensor: Tensor) -> int:
    """Parameters a stored tensor holds: its elements if it is a weight, else 0."""
    shape = tensor.shape or ()
    if len(shape) == 0 or tensor.elem_type not in _PARAM_TYPES:
        return 0
    return numel(shape)


def _measure(graph: OnnxGraph) -> None:
    """Per data node: parameters used, MACs and FLOPs."""
    tensors = graph.tensors
    for index in graph.data_nodes:
        node = graph.nodes[index]
        node.params = sum(param_count(tensors[name]) for name in _weights(graph, node))
        shapes = [tensors[name].shape if name else None for name in node.inputs]
        out = tensors[node.outputs[0]].shape if node.outputs and node.outputs[0] else None
        node.macs = _macs(node, shapes, out)
        node.flops = 2 * node.macs if node.op in _MAC_OPS else numel(out)


def _macs(node: Node, shapes: list, out) -> int:
    """Multiply-accumulates per sample for the ops whose cost dominates."""
    op = node.op
    if op in ("Conv", "ConvTranspose") and len(shapes) > 1 and shapes[1]:
        base = out if op == "Conv" else shapes[0]
        return numel(base) * numel(shapes[1][1:]) if base is not None else 0
    if op == "Gemm" and len(shapes) > 1 and shapes[0] and shapes[1] and len(shapes[0]) == 2:
        attrs = {a.name: a.i for a in node.proto.attribute}
        k = shapes[0][0] if attrs.get("transA") else shapes[0][1]
        n = shapes[1][0] if attrs.get("transB") else shapes[1][-1]
        m = shapes[0][1] if attrs.get("transA") else shapes[0][0]
        return numel((m, n, k))
    if op == "MatMul" and shapes and shapes[0] and out is not None:
        return numel(out) * numel(shapes[0][-1:])
    return 0
