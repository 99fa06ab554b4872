"""ONNX model -> canonical text description (the text the surrogate predictor reads).

Written from the ONNX specification. The text is *canonical*: the same graph gives
byte-identical text whatever valid order its nodes are listed in and whatever names
the exporter gave its tensors. Example (a conv stem, a residual block, a head)::

    einnas-onnx v1 params=2.94k macs=701k depth=8 nodes=8
    x = input Nx3x16x16
    t1 = Conv(x, kernel_shape=3, pads=1) #448 Nx16x16x16 > Relu
    t2 = Conv(t1, kernel_shape=3, pads=1) #2.32k > Relu
    y = Add(t1, t2) > GlobalAveragePool Nx16x1x1 > Flatten Nx16 > Gemm(transB=1) #170 Nx10

Format (version 1):

* header: format version, then parameters, MACs, depth and data-node count;
* one ``name = input SHAPE`` line per graph input (``N`` is the first symbolic
  dimension, ``N2``… the next; ``?`` an unknown one);
* one line per *chain*: nodes fused along edges whose source has one consumer and
  whose target has one data input, joined by `` > ``. The first node of a line
  states its inputs; a tensor used by several nodes or by a later line is named
  (``t1``, ``t2``… in text order; ``y``/``y2``… for graph outputs; ``_`` unused);
* per node: op type (``domain.Op`` outside the default domain), the attributes
  that differ from the ONNX defaults (scalars included; equal int lists
  collapsed), small constant inputs by their schema name (``axes=[2,3]``),
  ``#P`` parameters read, and the output shape where it differs from the input's;
* constants, ``Shape``-derived plumbing and ``Constant`` nodes are folded away;
* identical consecutive lines or groups of lines (tensor references compared by
  position) are run-length encoded as ``3x[ … ]`` (inside a line: ``2x[A > B]``);
  the names shown inside are those of the first repetition, and a later
  reference to the block's output uses them;
* with ``max_chars``/``max_lines`` the text is cut at a line boundary, ends with
  ``... [truncated: K more lines]``, and :attr:`Description.truncated` is True.

Order: the lines (chains) are sorted topologically (networkx
``lexicographical_topological_sort``); among lines ready at the same time the
smallest key wins. The key of a line is that of its first node: its own text
(op, attributes, shapes), then labels of its ancestors and of its descendants at
radius 1, 2, ... (Weisfeiler-Lehman-style refinement, one direction at a time,
labels being ranks of sorted structural signatures, until stable). The nearest
difference decides, so the corresponding lines of repeated blocks sort alike
(even parallel heads, told apart by the input slot they end in) and line up for
the run-length encoding. Remaining ties fall to a hash of the whole ancestry,
then of the descendants. None of it depends on tensor names or node-list order.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

from einnas.errors import ModelError, UsageError
from einnas.surrogate.summary import INPUT, OnnxGraph, Summary, analyse_graph, param_count, summarize

FORMAT_VERSION = 1
_MAX_PERIOD = 64  # longest block (in lines) that the run-length encoding looks for
_WL_ROUNDS = 12  # most refinement rounds for the ordering key (radius of the neighbourhood)
_SMALL = 8  # constant inputs with at most this many elements are shown by value
# Attribute values the ONNX spec gives as defaults in words, not in the schema.
_IMPLICIT_DEFAULTS = {"dilations": 1, "strides": 1, "pads": 0}
_REFS = "\0refs\0"  # where a line's input names go


@dataclass(frozen=True)
class Description:
    """A model's text description, its summary figures and whether it was cut."""

    text: str
    truncated: bool
    summary: Summary
    lines: int  # lines of the full (uncut) text
    graph: OnnxGraph | None = field(default=None, repr=False, compare=False)  # the analysed graph (predictor features)

    def as_dict(self) -> dict:
        """JSON-ready form: format version, text, truncation flag and figures."""
        return {"format_version": FORMAT_VERSION, "text": self.text, "truncated": self.truncated,
                "lines": self.lines, "summary": self.summary.as_dict()}


def describe(model, *, max_chars: int | None = None, max_lines: int | None = None, limits=None) -> Description:
    """Describe an ONNX model (``ModelProto``, path or bytes) as canonical text.

    Untrusted input is read with :func:`einnas.surrogate.onnx_io.read_model`
    (size, external-data and dimension limits); any problem raises
    :class:`einnas.errors.ModelError` with one line saying why.

    >>> d = describe("model.onnx", max_chars=2000)     # doctest: +SKIP
    >>> d.text.splitlines()[0], d.truncated, d.summary.params
    """
    from einnas.surrogate.onnx_io import read_model

    if max_chars is not None and max_chars < 64:
        raise UsageError(f"max_chars={max_chars} is too small (at least 64)")
    if max_lines is not None and max_lines < 2:
        raise UsageError(f"max_lines={max_lines} is too small (at least 2)")
    proto = read_model(model, limits=limits)
    try:
        graph = analyse_graph(proto)
    except ModelError as error:  # a cycle or a dangling tensor: name the file, as read errors do
        if isinstance(model, (str, os.PathLike)) and not str(error).startswith(str(model)):
            raise ModelError(f"{model}: {error}") from None
        raise
    summary = summarize(graph)
    lines = _Renderer(graph).render(summary)
    text, truncated = _truncate(lines, max_chars, max_lines)
    return Description(text, truncated, summary, len(lines), graph)


# --- rendering one node -----------------------------------------------------------


def compact_number(value: int) -> str:
    """``448`` -> ``448``, ``2320`` -> ``2.32k``, ``11689512`` -> ``11.7M``."""
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(value)


def _fmt(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= 32 else value[:29] + "..."
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) > 1 and all(isinstance(v, int) for v in items) and len(set(items)) == 1:
            return str(items[0])
        shown = ",".join(_fmt(v) for v in items[:_SMALL])
        return f"[{shown}{',...' if len(items) > _SMALL else ''}]"
    return str(value)


@lru_cache(maxsize=4096)
def _schema(op_type: str, domain: str, version: int | None):
    from onnx import defs

    try:
        if version is None:
            return defs.get_schema(op_type, domain)
        return defs.get_schema(op_type, version, domain)
    except defs.SchemaError:
        return None


def _attr_value(attr):
    from onnx import AttributeProto, helper

    kind = attr.type
    if attr.ref_attr_name:
        return "@" + attr.ref_attr_name
    if kind == AttributeProto.GRAPH:
        return f"<graph:{len(attr.g.node)}>"
    if kind == AttributeProto.GRAPHS:
        return "<graphs:" + ",".join(str(len(g.node)) for g in attr.graphs) + ">"
    if kind in (AttributeProto.TENSOR, AttributeProto.SPARSE_TENSOR):
        return _tensor_text(attr.t) if kind == AttributeProto.TENSOR else "<sparse>"
    if kind in (AttributeProto.TENSORS, AttributeProto.SPARSE_TENSORS):
        return "<tensors>"
    if kind in (AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS):
        return "<type>"
    return helper.get_attribute_value(attr)


def _same(default, value) -> bool:
    """Equal, floats compared at float32 precision (files store 1e-5 in several roundings)."""
    if isinstance(default, float) and isinstance(value, float):
        return math.isclose(default, value, rel_tol=1e-6, abs_tol=1e-12)
    return default == value


def _tensor_text(tensor) -> str:
    value = _small_value(tensor)
    return _fmt(value) if value is not None else "<" + "x".join(map(str, tensor.dims)) + ">"


def _small_value(tensor):
    """The values of a small stored tensor as a Python scalar or list, else None."""
    from onnx import numpy_helper

    count = 1
    for d in tensor.dims:
        count *= d
    if count > _SMALL or tensor.data_location == 1:
        return None
    try:
        array = numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - a malformed stored tensor is shown by shape only
        return None
    if array.dtype.kind not in "biuf" or array.size != count:
        return None
    values = array.reshape(-1).tolist()
    return values[0] if not tensor.dims else values


# --- the renderer -----------------------------------------------------------------


class _Renderer:
    """Chains, canonical order, names and run-length encoding of one graph."""

    def __init__(self, graph: OnnxGraph):
        self.g = graph
        self.t = graph.tensors
        self.nodes = graph.nodes

    # node pieces
    def shape_text(self, shape) -> str:
        if shape is None:
            return "?"
        if not shape:
            return "scalar"
        return "x".join("?" if d is None else str(d) for d in shape)  # symbols are already canonical

    def args(self, node) -> list:
        """Attributes (non-default) and small constant inputs of a node, sorted by name."""
        proto = node.proto
        domain = "" if proto.domain == "ai.onnx" else proto.domain
        schema = _schema(proto.op_type, domain, self.g.opsets.get(domain))
        items = []
        for attr in proto.attribute:
            value = _attr_value(attr)
            spec = schema.attributes.get(attr.name) if schema is not None else None
            if spec is not None and spec.default_value.type and not attr.ref_attr_name:
                if _same(_attr_value(spec.default_value), value):
                    continue
            implicit = _IMPLICIT_DEFAULTS.get(attr.name)
            if implicit is not None and isinstance(value, list) and value and all(v == implicit for v in value):
                continue
            items.append((attr.name, _fmt(value)))
        formal = [p.name for p in schema.inputs] if schema is not None else []
        for slot, name in enumerate(proto.input):
            if not name or slot in node.data_slots:
                continue
            tensor = self.t[name]
            if tensor.proto is None or param_count(tensor):
                continue  # computed, or a weight (counted in #params)
            value = _small_value(tensor.proto)
            if value is not None:
                label = formal[min(slot, len(formal) - 1)] if formal else f"in{slot}"
                items.append((label, _fmt(value)))
        return [f"{k}={v}" for k, v in sorted(items)]

    def in_shape(self, node):
        for slot in node.data_slots:
            return self.t[node.inputs[slot]].shape
        return None

    def tail(self, node) -> str:
        """`` #params SHAPE`` (shape only where it differs from the input's)."""
        text = f" #{compact_number(node.params)}" if node.params else ""
        used = [o for o in node.outputs if o and (self.t[o].consumers or self.t[o].graph_outputs)] or node.outputs[:1]
        shapes = [self.t[o].shape for o in used if o]
        if len(shapes) == 1 and node.data_slots and shapes[0] == self.in_shape(node):
            return text
        if shapes and not (len(shapes) == 1 and shapes[0] is None and not node.data_slots):
            text += " " + ", ".join(self.shape_text(s) for s in shapes)
        return text

    def element(self, node, refs: list | None = None) -> str:
        parts = list(refs or []) + self.args(node)
        return node.op + (f"({', '.join(parts)})" if parts else "") + self.tail(node)

    # structure
    def chains(self) -> dict:
        """head node -> list of node indices fused into one line."""
        nxt = {}
        for i in self.g.data_nodes:
            node = self.nodes[i]
            used = [k for k, o in enumerate(node.outputs) if o and (self.t[o].consumers or self.t[o].graph_outputs)]
            if used != [0]:
                continue
            out = self.t[node.outputs[0]]
            if not out.graph_outputs and len(out.consumers) == 1:
                consumer = out.consumers[0][0]
                if len(self.nodes[consumer].data_slots) == 1:
                    nxt[i] = consumer
        fused = set(nxt.values())
        chains = {}
        for i in self.g.data_nodes:
            if i not in fused:
                chain = [i]
                while chain[-1] in nxt:
                    chain.append(nxt[chain[-1]])
                chains[i] = chain
        return chains

    def up(self, i, labels) -> tuple:
        """Per data input slot: (slot, 0, graph input index) or (slot, 1, producer label, output index)."""
        node = self.nodes[i]
        result = []
        for slot in node.data_slots:
            tensor = self.t[node.inputs[slot]]
            if tensor.kind == INPUT:
                result.append((slot, 0, self.g.inputs.index(tensor.name), 0))
            else:
                producer = self.nodes[tensor.producer]
                result.append((slot, 1, labels[tensor.producer], producer.outputs.index(tensor.name)))
        return tuple(result)

    def down(self, i, labels) -> tuple:
        """Per use of an output: (output index, 1, consumer slot, consumer label) or graph output."""
        result = []
        for k, out in enumerate(self.nodes[i].outputs):
            if out:
                result += [(k, 1, slot, labels[c]) for c, slot in self.t[out].consumers]
                result += [(k, 0, pos, 0) for pos in self.t[out].graph_outputs]
        return tuple(sorted(result))

    def keys(self) -> dict:
        """Per data node: the ordering key (see the module docstring).

        Labels are ranks of sorted signatures, so comparing two labels compares the
        structures themselves: the result depends on no name and no list order.
        """
        order = self.g.data_nodes
        base = _ranks({i: self.element(self.nodes[i]) for i in order})
        ups, downs, columns = base, base, [base]
        for _ in range(_WL_ROUNDS):
            new_up = _ranks({i: (ups[i], self.up(i, ups)) for i in order})
            new_down = _ranks({i: (downs[i], self.down(i, downs)) for i in order})
            if len(set(new_up.values())) == len(set(ups.values())) and \
                    len(set(new_down.values())) == len(set(downs.values())):
                break  # both partitions are stable: more rounds separate nothing
            ups, downs = new_up, new_down
            columns += [ups, downs]
        anc: dict = {}
        for i in order:
            anc[i] = _hash(base[i], self.up(i, anc))
        desc: dict = {}
        for i in reversed(order):
            below = []
            for k, out in enumerate(self.nodes[i].outputs):
                if out:
                    below += [(k, slot, anc[c], desc[c]) for c, slot in self.t[out].consumers]
                    below += [(k, -1, pos) for pos in self.t[out].graph_outputs]
            desc[i] = _hash(base[i], tuple(sorted(below)))
        return {i: (*(column[i] for column in columns), anc[i], desc[i]) for i in order}

    def ordered_chains(self) -> list:
        import networkx as nx

        chains = self.chains()
        keys = self.keys()
        owner = {i: head for head, chain in chains.items() for i in chain}
        ckey = {h: (*keys[c[0]][:-2], keys[c[-1]][-2], keys[c[0]][-1]) for h, c in chains.items()}
        cg = nx.DiGraph()
        cg.add_nodes_from(sorted(chains, key=lambda h: ckey[h]))
        for head in chains:
            for slot in self.nodes[head].data_slots:
                producer = self.t[self.nodes[head].inputs[slot]].producer
                if producer is not None:
                    cg.add_edge(owner[producer], head)
        return [chains[h] for h in nx.lexicographical_topological_sort(cg, key=lambda h: ckey[h])]

    def render(self, summary: Summary) -> list:
        header = (f"einnas-onnx v{FORMAT_VERSION} params={compact_number(summary.params)} "
                  f"macs={compact_number(summary.macs)} depth={summary.depth} nodes={summary.nodes}")
        names = {}
        lines = [header]
        for k, name in enumerate(self.g.inputs):
            names[name] = "x" if k == 0 else f"x{k + 1}"
            tensor = self.t[name]
            dtype = "" if tensor.elem_type in (0, 1) else _dtype(tensor.elem_type) + " "
            lines.append(f"{names[name]} = input {dtype}{self.shape_text(tensor.shape)}")
        for k, name in enumerate(self.g.outputs):
            if name not in names:
                names[name] = "y" if k == 0 else f"y{k + 1}"
        records = [self.record(chain) for chain in self.ordered_chains()]
        lines += _Encoder(records, names).lines()
        for name in self.g.outputs:  # outputs no data node computes
            tensor = self.t[name]
            if tensor.kind == INPUT:
                lines.append(f"{names[name]} = {_input_name(self.g, name)}")
            elif tensor.producer is None or self.nodes[tensor.producer].kind != "data":
                lines.append(f"{names[name]} = {tensor.kind} {_dtype(tensor.elem_type)} {self.shape_text(tensor.shape)}")
        return lines

    def record(self, chain: list) -> "_Line":
        head, last = self.nodes[chain[0]], self.nodes[chain[-1]]
        refs = [head.inputs[s] for s in head.data_slots]
        rest = _rle([self.element(self.nodes[i]) for i in chain[1:]])
        defs = [o if o and (self.t[o].consumers or self.t[o].graph_outputs) else None for o in last.outputs]
        while len(defs) > 1 and defs[-1] is None:
            defs.pop()
        body = " > ".join([self.element(head, [_REFS] if refs else [])] + rest)
        outputs = tuple(tuple(self.t[d].graph_outputs) if d else None for d in defs)
        return _Line(defs, refs, body, outputs)


def _input_name(graph: OnnxGraph, name: str) -> str:
    k = graph.inputs.index(name)
    return "x" if k == 0 else f"x{k + 1}"


def _dtype(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def _ranks(signatures: dict) -> dict:
    """Replace each signature by its rank among the distinct signatures (order-preserving)."""
    rank = {sig: k for k, sig in enumerate(sorted(set(signatures.values())))}
    return {key: rank[sig] for key, sig in signatures.items()}


def _hash(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _rle(items: list, max_period: int = 8) -> list:
    """Run-length encode identical consecutive runs of strings: ``2x[A > B]``."""
    out, i = [], 0
    while i < len(items):
        best = (0, 1, 1)  # saving, period, repeats
        for p in range(1, min(max_period, (len(items) - i) // 2) + 1):
            r = 1
            while items[i + r * p: i + (r + 1) * p] == items[i: i + p]:
                r += 1
            if r > 1 and p * (r - 1) > best[0]:
                best = (p * (r - 1), p, r)
        _, p, r = best
        if r > 1:
            out.append(f"{r}x[" + " > ".join(items[i: i + p]) + "]")
        else:
            out.append(items[i])
        i += p * r
    return out


@dataclass
class _Line:
    defs: list  # tensors this line names (None = unused output)
    refs: list  # tensors its first node reads
    body: str  # text with the _REFS placeholder where the input names go
    outputs: tuple  # graph-output positions of each def


class _Encoder:
    """Names tensors in text order and run-length encodes repeated line groups."""

    def __init__(self, records: list, names: dict):
        self.records = records
        self.names = names
        self.line_of = {d: (j, q) for j, r in enumerate(records) for q, d in enumerate(r.defs) if d}
        self.users: dict = {}
        for j, r in enumerate(records):
            for ref in r.refs:
                if ref in self.line_of:
                    self.users.setdefault(self.line_of[ref][0], []).append(j)
        self.keys = [self.norm(j) for j in range(len(records))]

    def norm(self, j: int):
        r = self.records[j]
        refs = tuple(("r", j - self.line_of[x][0], self.line_of[x][1]) if x in self.line_of else ("x", x)
                     for x in r.refs)
        return r.body, refs, r.outputs

    def valid(self, i: int, p: int, r: int) -> bool:
        end = i + p * r
        for j in range(i + p, end):  # later copies read only inside the group
            for ref in self.records[j].refs:
                if ref in self.line_of and self.line_of[ref][0] < i:
                    return False
        return all(u < end for j in range(i, end - p) for u in self.users.get(j, ()))

    def groups(self) -> list:
        """(start, period, repeats) covering all lines, greedily from the top."""
        keys, n, i, result = self.keys, len(self.keys), 0, []
        while i < n:
            best = (0, 1, 1)
            for p in range(1, min(_MAX_PERIOD, (n - i) // 2) + 1):
                if keys[i] != keys[i + p]:
                    continue
                r = 1
                while i + (r + 1) * p <= n and keys[i + r * p: i + (r + 1) * p] == keys[i: i + p]:
                    r += 1
                if r > 1 and p * (r - 1) > best[0] and self.valid(i, p, r):
                    best = (p * (r - 1), p, r)
            result.append((i, best[1], best[2]))
            i += best[1] * best[2]
        return result

    def lines(self) -> list:
        alias, counter, out = {}, [0], []

        def name(d):
            if d in self.names:
                return self.names[d]
            counter[0] += 1
            self.names[d] = f"t{counter[0]}"
            return self.names[d]

        def text(run):  # one line, or parallel identical lines named together
            r = self.records[run[0]]
            refs = _join_names([self.names[alias.get(ref, ref)] for ref in r.refs])
            body = r.body.replace(_REFS, refs)
            if len(run) > 1:
                names = [name(self.records[j].defs[0]) for j in run]
                return f"{names[0]}..{names[-1]} = {len(run)}x {body}"
            lhs = ", ".join(name(d) if d else "_" for d in r.defs) if r.defs else "_"
            return f"{lhs} = {body}"

        def runs(indices):  # consecutive lines with one output each, same text and same inputs
            result = []
            for j in indices:
                r = self.records[j]
                single = len(r.defs) == 1 and r.defs[0] and not r.outputs[0]
                if result and single and self._parallel(result[-1][-1], j):
                    result[-1].append(j)
                else:
                    result.append([j])
            return result

        singles: list = []
        for i, p, r in self.groups() + [(len(self.records), 1, 0)]:
            if r == 1:
                singles.append(i)
                continue
            out += [text(run) for run in runs(singles)]
            singles = []
            if r == 0:
                break
            out.append(f"{r}x[")
            out += ["  " + text(run) for run in runs(range(i, i + p))]
            out.append("]")
            for j in range(i + p, i + p * r):
                first = self.records[i + (j - i) % p]
                for d, d0 in zip(self.records[j].defs, first.defs):
                    if d and d0:
                        alias[d] = d0
        return out

    def _parallel(self, a: int, b: int) -> bool:
        ra, rb = self.records[a], self.records[b]
        return (ra.body == rb.body and ra.refs == rb.refs and len(ra.defs) == 1 and ra.defs[0] is not None
                and not ra.outputs[0])


def _join_names(names: list) -> str:
    """``t3, t4, t5, t6`` -> ``t3..t6`` (runs of three or more consecutive names)."""
    out, k = [], 0
    while k < len(names):
        m = re.fullmatch(r"t(\d+)", names[k])
        end = k
        while m and end + 1 < len(names) and names[end + 1] == f"t{int(m.group(1)) + end + 1 - k}":
            end += 1
        out.append(f"{names[k]}..{names[end]}" if end - k >= 2 else names[k])
        if end - k < 2:
            end = k
        k = end + 1
    return ", ".join(out)


def _truncate(lines: list, max_chars: int | None, max_lines: int | None) -> tuple:
    text = "\n".join(lines)
    if (max_chars is None or len(text) <= max_chars) and (max_lines is None or len(lines) <= max_lines):
        return text, False
    kept, size = [], 0
    for k, line in enumerate(lines):
        marker = f"... [truncated: {len(lines) - k - 1} more lines]"
        fits_chars = max_chars is None or size + len(line) + 1 + len(marker) <= max_chars
        fits_lines = max_lines is None or len(kept) + 2 <= max_lines
        if not (fits_chars and fits_lines):
            break
        kept.append(line)
        size += len(line) + 1
    marker = f"... [truncated: {len(lines) - len(kept)} more lines]"
    return "\n".join(kept + [marker]), True
