"""ONNX -> torch, for the zero-cost proxies of files einnas did not build.

:func:`convert_onnx` reads the file through the hostile-file loader
(:func:`einnas.surrogate.onnx_io.read_model`, size and shape limits included),
prepares a copy of the graph and converts it with ``onnx2torch``:

* weights produced by ``ConstantOfShape`` nodes (the onnx package's "light" model
  zoo stores its weights that way) are folded into initializers, within
  :data:`MAX_FOLDED_ELEMENTS` (a tiny file must not allocate gigabytes);
* ``Dropout`` nodes become ``Identity`` (their inference meaning), so proxies are
  deterministic whatever mode the module runs in;
* a trailing ``Softmax`` / ``LogSoftmax`` is cut: the cross-entropy proxies need logits;
* float initializers that onnx2torch keeps as buffers (MatMul weights, positional
  encodings, ...) become parameters, so gradient proxies see every weight.

**Batch dimension.** einnas exports a dynamic batch. A file with a fixed batch
``B`` (usually 1) gets its input's batch made symbolic and every ``Reshape`` whose
constant shape starts with ``B`` rewritten to start with ``0`` (copy the batch);
if the converted module then maps a batch of 2 to 2 rows, it is used batched
(``batch="patched"``). Otherwise the module is wrapped to run sample by sample
(``batch="per-sample"``): correct for every proxy except that batch normalisation
in training mode then normalises over one sample.

Conversion failures raise :class:`~einnas.errors.ConversionError` with a one-line
reason; unreadable or hostile files raise :class:`~einnas.errors.ModelError`.

``onnx2torch`` imports torchvision for two detection ops (NMS, RoiAlign). Where
torchvision is missing or broken (its PyPI wheel needs CUDA torch), a stand-in that
fails only if those ops run is used during the import and removed afterwards.
"""

from __future__ import annotations

import sys
import types
import warnings
from dataclasses import dataclass

from einnas.errors import ConversionError

#: Most elements that folding ``ConstantOfShape`` weights may allocate (1 GiB of float32).
MAX_FOLDED_ELEMENTS = 2**28
_LOGIT_OPS = ("Softmax", "LogSoftmax")
_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class Converted:
    """A converted module: ``module`` maps ``(B, *input_shape)`` to ``(B, num_classes)``."""

    module: object
    input_shape: tuple[int, ...]
    num_classes: int
    batch: str  # "dynamic", "patched" or "per-sample"
    promoted: tuple[str, ...] = ()  # names of parameters that were onnx2torch buffers


def _onnx2torch():
    """onnx2torch, imported once, with the converters of :func:`_register_newer_ops` added."""
    if "onnx2torch" not in sys.modules:
        _register_newer_ops(_import_onnx2torch())
        # onnx2torch 1.5's Slice indexes with a list (a torch deprecation warning on every
        # forward); the result is right, the noise would reach the user's terminal.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch\.")
    return sys.modules["onnx2torch"]


def _import_onnx2torch():
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or a CUDA wheel beside CPU torch (RuntimeError at import)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]

        def unavailable(*args, **kwargs):
            raise RuntimeError("this op needs torchvision, which is not usable here")

        stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = ops.box_convert = unavailable
        stub.ops = ops
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
        try:
            import onnx2torch
        finally:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
        return onnx2torch
    import onnx2torch

    return onnx2torch


def _fail(name: str, reason: str) -> ConversionError:
    reason = reason.rstrip(".")
    error = ConversionError(f"{name}: {reason}")
    error.reason = reason  # without the file name, for notes
    return error


def _register_newer_ops(onnx2torch) -> None:
    """Converters onnx2torch 1.5 lacks for ops einnas exports at opset 18: Reduce*-18 (axes
    became an input) with constant axes, and Pad-18/19/21 without the new ``axes`` input
    (then identical to Pad-13)."""
    from onnx2torch.node_converters import reduce as red
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def reduce18(node, graph):
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            axes = [int(a) for a in get_const_value(node.input_values[1], graph).reshape(-1).tolist()]
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            import torch

            module = torch.nn.Identity()
        else:
            module = red.OnnxReduceStaticAxes(node.operation_type, axes or None, node.attributes.get("keepdims", 1))
        return OperationConverterResult(module, OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    pad13 = _CONVERTER_REGISTRY[OperationDescription("", "Pad", 13)]

    def pad_without_axes(node, graph):
        if len(node.input_values) > 3 and node.input_values[3]:
            raise NotImplementedError("Pad with an axes input is not implemented")
        return pad13(node, graph)

    wanted = [(op, 18, reduce18) for op in red._TORCH_FUNCTION_FROM_ONNX_TYPE if op != "ReduceSum"]
    wanted += [("Pad", v, pad_without_axes) for v in (18, 19, 21, 23)]
    for op, version, converter in wanted:
        if OperationDescription("", op, version) not in _CONVERTER_REGISTRY:
            add_converter(operation_type=op, version=version)(converter)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(error).__name__)


def _graph_input(model, name: str):
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise _fail(name, f"{len(inputs)} graph inputs; proxies need exactly one (the image or tokens)")
    value = inputs[0]
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type not in _FLOAT_TYPES:
        raise _fail(name, f"input {value.name!r} is not a float tensor")
    dims = list(tensor.shape.dim)
    if len(dims) < 2 or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims[1:]):
        raise _fail(name, f"input {value.name!r} has no fixed per-sample shape")
    return value, dims


def _fold_constant_of_shape(model, name: str) -> None:
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and len(n.output) == 1}
    keep, total = [], 0
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or not node.input or (node.input[0] not in inits and node.input[0] not in consts):
            keep.append(node)
            continue
        source = inits.get(node.input[0])
        if source is None:
            source = next(a.t for a in consts[node.input[0]].attribute if a.name == "value")
        shape = [int(d) for d in numpy_helper.to_array(source).reshape(-1)]
        size = int(np.prod(shape)) if shape else 1
        total += size
        if any(d < 0 for d in shape) or total > MAX_FOLDED_ELEMENTS:
            raise _fail(name, f"ConstantOfShape weights over {MAX_FOLDED_ELEMENTS} elements; not folded")
        fill = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
        model.graph.initializer.append(numpy_helper.from_array(np.full(shape, fill.reshape(-1)[0], fill.dtype),
                                                               node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _simplify(model) -> None:
    """Dropout -> Identity; cut a trailing Softmax/LogSoftmax so the output is logits."""
    used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Dropout" and not any(o in used for o in node.output[1:]):
            del node.input[1:]
            del node.output[1:]
            del node.attribute[:]
            node.op_type = "Identity"
    if len(model.graph.output) == 1:
        out = model.graph.output[0]
        producer = next((n for n in model.graph.node if out.name in n.output), None)
        used = sum(out.name in n.input for n in model.graph.node)
        if producer is not None and producer.op_type in _LOGIT_OPS and not used:
            producer.op_type, producer.domain = "Identity", ""
            del producer.attribute[:]


def _make_batch_symbolic(model, dims, fixed: int) -> None:
    from onnx import numpy_helper

    dims[0].ClearField("dim_value")
    dims[0].dim_param = "N"
    for out in model.graph.output:
        shape = out.type.tensor_type.shape.dim
        if shape and shape[0].HasField("dim_value") and shape[0].dim_value == fixed:
            shape[0].ClearField("dim_value")
            shape[0].dim_param = "N"
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.ndim == 1 and shape.size and shape[0] == fixed:
                shape[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))


def _promote_buffers(module) -> tuple[str, ...]:
    import torch

    container = getattr(module, "initializers", None)
    if container is None:
        return ()
    names = []
    for key, buf in list(container._buffers.items()):
        if buf is not None and buf.is_floating_point() and buf.numel() >= 2:
            del container._buffers[key]
            container.register_parameter(key, torch.nn.Parameter(buf.detach().clone()))
            names.append(f"initializers.{key}")
    return tuple(names)


def _probe(module, input_shape, batch: int):
    import torch

    with torch.no_grad():
        out = module(torch.zeros(batch, *input_shape))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConversionError(f"output {got} for a batch of {batch}; expected ({batch}, classes)")
    return int(out.shape[1])


def _convert(model, name: str):
    onnx2torch = _onnx2torch()
    try:
        module = onnx2torch.convert(model)
    except Exception as error:  # onnx2torch raises NotImplementedError, KeyError, ValueError, ...
        raise _fail(name, f"onnx2torch cannot convert it: {_one_line(error)}") from None
    return module


def convert_onnx(source, *, name: str | None = None) -> Converted:
    """Convert an ONNX file (path, bytes or ``ModelProto``) to a torch module for proxies.

    Raises :class:`~einnas.errors.ModelError` for a file that cannot be read safely,
    :class:`~einnas.errors.ConversionError` (one line) for one that cannot be converted.
    """
    import onnx

    from einnas.surrogate.onnx_io import read_model

    name = name or (str(source) if not isinstance(source, (bytes, bytearray, onnx.ModelProto)) else "model")
    # External weights are read here, from inside the model's folder only: left as
    # references, onnx2torch would resolve them against the working directory.
    original = read_model(source, load_external=True)
    model = onnx.ModelProto()
    model.CopyFrom(original)
    value, dims = _graph_input(model, name)
    input_shape = tuple(int(d.dim_value) for d in dims[1:])
    _fold_constant_of_shape(model, name)
    _simplify(model)
    # IR 3 wants every initializer listed as an input; the folded weights are not, and
    # shape inference then gives up. IR 4 lifts that rule and changes nothing else.
    model.ir_version = max(model.ir_version, 4)
    del model.graph.value_info[:]  # recomputed by onnx2torch's shape inference
    fixed = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
    if fixed is None:
        module = _convert(model, name)
        promoted = _promote_buffers(module)
        module = _logits(module)
        try:
            classes = _probe(module, input_shape, 2)
        except Exception as error:
            raise _fail(name, f"the converted module fails: {_one_line(error)}") from None
        return Converted(module, input_shape, classes, "dynamic", promoted)
    unpatched = onnx.ModelProto()
    unpatched.CopyFrom(model)
    graph_input = next(v for v in model.graph.input if v.name == value.name)
    _make_batch_symbolic(model, list(graph_input.type.tensor_type.shape.dim), fixed)
    try:
        module = _onnx2torch().convert(model)
        promoted = _promote_buffers(module)
        module = _logits(module)
        classes = _probe(module, input_shape, fixed + 1)  # not the fixed size: batchable?
        return Converted(module, input_shape, classes, "patched", promoted)
    except Exception:  # the rewrite did not make it batchable: run sample by sample
        pass
    module = _convert(unpatched, name)
    promoted = _promote_buffers(module)
    wrapped = _logits(_per_sample(module, fixed))
    try:
        classes = _probe(wrapped, input_shape, 2 * fixed)
    except Exception as error:
        raise _fail(name, f"the converted module fails: {_one_line(error)}") from None
    return Converted(wrapped, input_shape, classes, "per-sample", promoted)


def _logits(module):
    from torch import nn

    class Logits(nn.Module):
        """The first output of the converted graph, with trailing axes of size 1 dropped
        (a classifier ending in a 1x1 convolution gives ``(B, K, 1, 1)``)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            while out.dim() > 2 and out.shape[-1] == 1:
                out = out.squeeze(-1)
            return out

    return Logits(module)


def _per_sample(module, fixed: int):
    import torch
    from torch import nn

    class PerSample(nn.Module):
        """Runs a fixed-batch module on slices of ``fixed`` samples and concatenates."""

        def __init__(self, inner, size):
            super().__init__()
            self.inner, self.size = inner, size

        def forward(self, x):
            if x.shape[0] % self.size:
                raise ValueError(f"batch {x.shape[0]} is not a multiple of the file's fixed batch {self.size}")
            outs = [self.inner(x[i:i + self.size]) for i in range(0, x.shape[0], self.size)]
            return torch.cat([o[0] if isinstance(o, (tuple, list)) else o for o in outs])

    return PerSample(module, fixed)


def reinitialise(module, seed: int) -> None:
    """Give ``module`` fresh, seeded default weights (``reset_parameters`` where a layer has one).

    Parameters without a layer (promoted initializers) get U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    the default of ``nn.Linear``, with fan_in the second-to-last axis (the ONNX MatMul layout).
    The caller's global RNG state is kept.
    """
    import math

    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        owned = set()
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and sub is not module:
                sub.reset_parameters()
                owned.update(id(p) for p in sub.parameters(recurse=False))
        with torch.no_grad():
            for p in module.parameters():
                if id(p) not in owned:
                    fan_in = p.shape[-2] if p.dim() >= 2 else p.shape[0]
                    bound = 1.0 / math.sqrt(max(1, fan_in))
                    p.uniform_(-bound, bound)


def weight_count(source) -> int:
    """Float weights of an ONNX file (initializers and folded ``ConstantOfShape`` weights), without converting it."""
    import numpy as np
    from onnx import numpy_helper

    from einnas.surrogate.onnx_io import read_model

    model = read_model(source)
    inits = {t.name: t for t in model.graph.initializer}
    total = sum(int(np.prod(t.dims)) for t in inits.values() if t.data_type in _FLOAT_TYPES)
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            fill = next((a.t for a in node.attribute if a.name == "value"), None)
            if fill is None or fill.data_type in _FLOAT_TYPES:
                total += int(np.prod([int(d) for d in numpy_helper.to_array(inits[node.input[0]]).reshape(-1)]))
    return total
