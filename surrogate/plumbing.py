"""Static shape plumbing: evaluated, folded, and shapes inferred through it.

Exporters compute sizes at run time (``Shape -> Gather -> Range ...``) even where
they are static, and ONNX shape inference cannot see through such chains: every
shape after them would be unknown. :func:`prepare` therefore infers shapes on a
probe copy whose symbolic input dims are replaced by sentinel primes, evaluates the
plumbing in numpy (a known-mask marks values free of the sentinels), folds it into
initializers and infers again (a few rounds). Sentinel multiples map back to
``N``/``16N``. Only plumbing free of symbolic dims is folded in the graph that is
described; the rest stays, classified as shape plumbing by the summary.
"""

from __future__ import annotations

import re

SHAPE_READERS = ("Shape", "Size")  # ONNX ops whose output depends only on the input's shape


def numel(shape) -> int:
    """Elements per sample of a tensor of ``shape``: ``N`` and unknown dims count as 1, ``16N`` as 16."""
    total = 1
    for d in shape or ():
        if isinstance(d, int):
            total *= d
        elif isinstance(d, str) and d[:1].isdigit():
            total *= int(re.match(r"\d+", d).group())
    return total


def _infer_shapes(model):
    import onnx

    for options in ({"data_prop": True}, {}):
        try:
            return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, **options)
        except Exception:  # noqa: BLE001 - shapes are best-effort; the model may still be described
            continue
    return model


_FOLD_LIMIT = 4096  # largest tensor the evaluator materialises
_SENTINELS = (1_000_003, 1_000_033, 1_000_037, 1_000_039, 1_000_081, 1_000_099, 1_000_117, 1_000_121)


def prepare(model, symbols: dict) -> tuple:
    """(model with static plumbing folded, {tensor: (elem_type, shape)}) for ``model``."""
    model = _skeleton(model)
    sentinel = dict(zip(symbols, _SENTINELS))
    base = _with_sentinels(model, sentinel) if sentinel else model
    probe = _infer_shapes(base)
    values: dict = {}
    for _ in range(4):  # each round may reveal shapes that make more plumbing static
        found = _evaluate_all(probe, values)
        if len(found) == len(values):
            break
        values = found
        probe = _infer_shapes(_fold(base, {n: v for n, (v, _) in values.items()}))
    structure = _fold(model, {n: v for n, (v, known) in values.items() if known.all()})
    back = {value: symbols[name] for name, value in sentinel.items()}
    return structure, _collect_shapes(probe.graph, back, symbols)


def _skeleton(model):
    """A copy of ``model`` without the data of large initializers (shapes need none of it)."""
    import onnx

    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, "graph")
    graph, source = skeleton.graph, model.graph
    _copy_fields(source, graph, "initializer")
    for init in source.initializer:
        if numel(tuple(init.dims)) <= _FOLD_LIMIT and init.data_location != 1:
            graph.initializer.append(init)
        else:
            stripped = graph.initializer.add()
            stripped.name, stripped.data_type = init.name, init.data_type
            stripped.dims.extend(init.dims)
    return skeleton


def _copy_fields(source, target, skip: str) -> None:
    for fd, value in source.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(target, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(target, fd.name).CopyFrom(value)
        else:
            setattr(target, fd.name, value)


def _with_sentinels(model, sentinel: dict):
    probe = type(model)()
    probe.CopyFrom(model)
    for value in (*probe.graph.input, *probe.graph.output):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in sentinel:
                d.dim_value = sentinel[d.dim_param]
            elif d.dim_param:
                d.Clear()
    return probe


def _collect_shapes(graph, back: dict, symbols: dict) -> dict:
    """{name: (elem_type, dims)} with sentinel dims mapped back to symbols."""

    def dim(d):
        if d.HasField("dim_value"):
            value = d.dim_value
            for sentinel, name in back.items():
                if value and value % sentinel == 0 and value // sentinel < 1000:
                    return name if value == sentinel else f"{value // sentinel}{name}"
            return value
        return symbols.get(d.dim_param) if d.dim_param else None

    shapes: dict = {}
    for init in graph.initializer:
        shapes[init.name] = (init.data_type, tuple(dim_value for dim_value in init.dims))
    for group in (graph.value_info, graph.output, graph.input):  # later groups win when they know a shape
        for value in group:
            if not value.type.HasField("tensor_type"):
                continue
            tt = value.type.tensor_type
            shape = tuple(dim(d) for d in tt.shape.dim) if tt.HasField("shape") else None
            if shape is not None or value.name not in shapes:
                shapes[value.name] = (tt.elem_type, shape)
    return shapes


def _fold(model, arrays: dict):
    """A copy of ``model`` where the tensors in ``arrays`` become initializers."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    arrays = {n: a for n, a in arrays.items() if a.dtype.kind in "biu" or a.ndim == 0}
    if not arrays:
        return model
    kept = [n for n in graph.node if not (n.output and all(o in arrays or not o for o in n.output))]
    plumbing = {o for n in graph.node if n.domain in ("", "ai.onnx") and n.op_type in SHAPE_READERS for o in n.output}
    plumbing |= set(arrays)
    while True:  # drop the plumbing that nothing reads any more
        used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in kept if any(o in plumbing for o in n.output) and not any(o in used for o in n.output)]
        if not dead:
            break
        kept = [n for n in kept if n not in dead]
    result = type(model)()
    result.CopyFrom(model)
    del result.graph.node[:]
    del result.graph.value_info[:]  # inferred again from the folded graph
    result.graph.node.extend(kept)
    for name in sorted(set(arrays) & used):
        result.graph.initializer.append(numpy_helper.from_array(np.asarray(arrays[name]), name))
    return result


class _Values(dict):
    """Known values by tensor name; small initializers are converted when first asked for."""

    def __init__(self, seed: dict, initializers: dict):
        super().__init__(seed)
        self.initializers = initializers

    def get(self, name, default=None):
        if name in self:
            return self[name]
        init = self.initializers.pop(name, None)
        if init is None or numel(tuple(init.dims)) > _FOLD_LIMIT or init.data_location == 1:
            return default
        import numpy as np
        from onnx import numpy_helper

        try:
            array = numpy_helper.to_array(init)
        except Exception:  # noqa: BLE001 - unreadable stored data: treat as unknown
            return default
        if array.dtype.kind not in "biuf":
            return default
        self[name] = (array, np.ones(array.shape, bool))
        return self[name]


def _evaluate_all(model, seed: dict) -> dict:
    """{tensor: (values, known)} for the shape plumbing of ``model``, beyond ``seed``."""
    import numpy as np
    from onnx import helper

    graph = model.graph
    dims = {}
    for value in (*graph.value_info, *graph.input, *graph.output):
        tt = value.type.tensor_type
        if value.type.HasField("tensor_type") and tt.HasField("shape"):
            dims[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    values = _Values(seed, {init.name: init for init in graph.initializer if init.name not in seed})
    computed: dict = dict(seed)
    sentinels = list(_SENTINELS)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type not in (*SHAPE_READERS, "Constant") and (not node.input or values.get(node.input[0]) is None):
            continue  # reads a data tensor: not plumbing
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            outs = _evaluate(node.op_type, node.input, attrs, values, dims, np)
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError, MemoryError):
            outs = None
        for name, out in zip(node.output, outs or ()):
            if name and out is not None and out[0].size <= _FOLD_LIMIT:
                if node.op_type in SHAPE_READERS:  # a sentinel is a symbolic dim: not known
                    out = (out[0], out[1] & ~np.isin(out[0], sentinels))
                values[name] = computed[name] = out
    return computed


def _evaluate(op, inputs, attrs, values, dims, np):
    """Output (values, known) pairs of one shape-plumbing node, or None if not static."""
    if op == "Shape":
        shape = dims.get(inputs[0])
        if shape is None or None in shape:
            return None
        part = shape[attrs.get("start", 0): attrs.get("end", len(shape))]
        return [(np.array(part, np.int64), np.ones(len(part), bool))]
    if op == "Size":
        shape = dims.get(inputs[0])
        if shape is None or None in shape:
            return None
        return [(np.array(numel(tuple(shape)), np.int64), np.array(True))]
    if op == "Constant":
        if "value" in attrs:
            from onnx import numpy_helper

            if numel(tuple(attrs["value"].dims)) > _FOLD_LIMIT:
                return None
            array = numpy_helper.to_array(attrs["value"])
        elif "value_int" in attrs or "value_ints" in attrs:
            array = np.array(attrs.get("value_int", attrs.get("value_ints")), np.int64)
        elif "value_float" in attrs or "value_floats" in attrs:
            array = np.array(attrs.get("value_float", attrs.get("value_floats")), np.float32)
        else:
            return None
        return [(array, np.ones(array.shape, bool))] if array.dtype.kind in "biuf" else None
    ins = [values.get(name) if name else None for name in inputs]
    if not ins or ins[0] is None:
        return None
    (v, k), rest = ins[0], ins[1:]

    def const(i, default=None):  # a fully known extra input as a numpy array
        if i >= len(rest) or rest[i] is None:
            return default
        return rest[i][0] if rest[i][1].all() else None

    if op in ("Identity", "Cast"):
        if op == "Cast":
            from onnx import helper

            v = v.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        return [(v, k)]
    if op == "Gather":
        idx = const(0)
        axis = attrs.get("axis", 0)
        return None if idx is None else [(np.take(v, idx, axis=axis), np.take(k, idx, axis=axis))]
    if op in ("Unsqueeze", "Squeeze"):
        axes = attrs.get("axes", const(0))
        if op == "Squeeze" and axes is None:
            return [(np.squeeze(v), np.squeeze(k))]
        axes = [int(a) for a in np.atleast_1d(axes)]
        if op == "Squeeze":
            return [(np.squeeze(v, tuple(axes)), np.squeeze(k, tuple(axes)))]
        rank = v.ndim + len(axes)
        axes = tuple(sorted(a % rank for a in axes))
        return [(np.expand_dims(v, axes), np.expand_dims(k, axes))]
    if op == "Concat":
        if any(x is None for x in ins):
            return None
        axis = attrs.get("axis", 0)
        return [(np.concatenate([x[0] for x in ins], axis), np.concatenate([x[1] for x in ins], axis))]
    if op == "Reshape":
        shape = const(0)
        if shape is None:
            return None
        shape = [v.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
        return [(v.reshape(shape), k.reshape(shape))]
    if op == "Slice":
        starts, ends = attrs.get("starts", const(0)), attrs.get("ends", const(1))
        axes = attrs.get("axes", const(2, list(range(len(starts)) if starts is not None else [])))
        steps = const(3, [1] * len(axes))
        if starts is None or ends is None:
            return None
        index = [slice(None)] * v.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[int(a)] = slice(int(s), int(e), int(st))
        return [(v[tuple(index)], k[tuple(index)])]
    if op == "Range":
        limit, delta = const(0), const(1)
        if not k.all() or limit is None or delta is None or delta == 0 or (limit - v) / delta > _FOLD_LIMIT:
            return None
        array = np.arange(v, limit, delta).astype(v.dtype)
        return [(array, np.ones(array.shape, bool))]
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
              "Equal": np.equal, "Less": np.less, "Greater": np.greater}
    if op in binary or op == "Div":
        if len(rest) < 1 or rest[0] is None:
            return None
        w, kw = rest[0]
        if op == "Div":
            if v.dtype.kind in "iu" and w.dtype.kind in "iu":
                if np.any(w[kw] == 0):
                    return None
                out = np.trunc(v / np.where(w == 0, 1, w)).astype(np.result_type(v, w))
            else:
                out = np.divide(v, w)
        else:
            out = binary[op](v, w)
        return [(out, np.broadcast_to(k & kw, out.shape).copy())]
    if op == "Where":
        if len(rest) < 2 or rest[0] is None or rest[1] is None:
            return None
        out = np.where(v, rest[0][0], rest[1][0])
        known = np.where(v, rest[0][1], rest[1][1]) & k
        return [(out, known)]
    return None
