"""Safe loading of untrusted ONNX files.

``onnx.load`` trusts its input: it follows external-data paths wherever they point
and has no limits. Everything einnas reads from a user (``describe``, ``score``)
goes through :func:`read_model` instead, which

* refuses files over a size limit before reading them;
* decodes the protobuf itself, turning decode errors into :class:`ModelError`;
* refuses external-data locations that leave the model's folder (absolute paths,
  ``..``, symbolic links pointing out), and by default reads no external data at
  all (the description needs shapes, not weights); with ``load_external=True`` it
  reads the data only from inside the folder, with offsets and lengths checked;
* checks limits on node count, subgraph nesting, dimensions and tensor sizes.

Example::

    from einnas.surrogate.onnx_io import read_model
    model = read_model("model.onnx")          # ModelError on anything hostile
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Iterator

from einnas.errors import ModelError

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class LoadLimits:
    """Limits applied to every untrusted model (defaults suit any real network)."""

    max_bytes: int = 512 * 2**20  # the .onnx file itself; protobuf caps a model at 2 GiB anyway
    max_external_bytes: int = 4 * 2**30  # all external data read with load_external=True
    max_nodes: int = 200_000  # nodes in all graphs together, subgraphs included
    max_subgraph_depth: int = 16  # nesting of If/Loop/Scan bodies
    max_dim: int = 2**31 - 1  # any single dimension of a tensor or value shape
    max_elements: int = 2**40  # product of one tensor's dimensions


DEFAULT_LIMITS = LoadLimits()
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL, without importing onnx at module import


def read_model(source, *, limits: LoadLimits | None = None, load_external: bool = False) -> "onnx.ModelProto":
    """Read an ONNX model from a path, bytes or a ``ModelProto``, safely.

    Raises :class:`ModelError` (one line naming the file and the problem) for a
    missing or oversized file, bytes that are not an ONNX model, external data
    outside the model's folder, or a model outside ``limits``. A ``ModelProto``
    passed in is checked, not copied.
    """
    import onnx
    from google.protobuf.message import DecodeError

    limits = limits or DEFAULT_LIMITS
    base_dir: Path | None = None
    if isinstance(source, onnx.ModelProto):
        model, name = source, "model"
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, name = bytes(source), "model"
        else:
            path = Path(source)
            name = str(path)
            data = _read_file(path, limits)
            base_dir = path.resolve().parent
        if len(data) > limits.max_bytes:
            raise ModelError(f"{name}: {len(data)} bytes is over the limit of {limits.max_bytes}")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as error:
            raise ModelError(f"{name}: not an ONNX model (protobuf decode failed: {_first_line(error)})") from None
    if not model.HasField("graph"):
        raise ModelError(f"{name}: not an ONNX model (no graph)")
    check_limits(model, limits, name)
    _check_external_data(model, base_dir, name, limits, load_external)
    _check_not_empty(model, name)
    for graph, _ in iter_graphs(model.graph):
        for tensor in graph.initializer:
            _check_tensor_data(tensor, f"{name}: initializer {tensor.name!r}")
    return model


def _check_not_empty(model, name: str) -> None:
    """A graph with no nodes or no outputs has nothing to describe or score (it would
    otherwise get a confident prediction)."""
    if not model.graph.output:
        raise ModelError(f"{name}: the graph has no outputs; nothing to describe or score")
    if not model.graph.node:
        raise ModelError(f"{name}: the graph has no nodes; nothing to describe or score")


# Elements per stored item of the typed data fields, where it is not 1.
_COMPLEX = {14: 2, 15: 2}  # COMPLEX64 (float_data), COMPLEX128 (double_data): real and imaginary parts
_PACKED_4BIT = {21, 22, 23}  # UINT4, INT4, FLOAT4E2M1: two elements per byte / int32


def _check_tensor_data(tensor, where: str) -> None:
    """Refuse a tensor whose dims claim more (or fewer) elements than its data holds.

    Its parameter count would otherwise be made up (2e9 x 2 elements described from
    32 bytes as ``params=4G``). External data is checked where it is read.
    """
    import math

    import onnx

    if tensor.data_location == _EXTERNAL or tensor.data_type in (0, onnx.TensorProto.STRING):
        return
    claimed = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            return  # a type this onnx does not know: nothing to compare against
        need = (claimed + 1) // 2 if tensor.data_type in _PACKED_4BIT else claimed * itemsize
        have = len(tensor.raw_data)
        if have != need:
            raise ModelError(f"{where} claims {claimed:,} elements ({need:,} bytes) but holds {have:,} bytes of data")
        return
    stored = max(len(tensor.float_data), len(tensor.int32_data), len(tensor.int64_data), len(tensor.double_data),
                 len(tensor.uint64_data))
    need = claimed * _COMPLEX.get(tensor.data_type, 1)
    if tensor.data_type in _PACKED_4BIT:
        need = (claimed + 1) // 2
    if stored != need:
        raise ModelError(f"{where} claims {claimed:,} elements but holds data for {stored:,}")


def check_limits(model: "onnx.ModelProto", limits: LoadLimits | None = None, name: str = "model") -> None:
    """Raise :class:`ModelError` if ``model`` is outside ``limits`` (nodes, nesting, dims)."""
    limits = limits or DEFAULT_LIMITS
    nodes = 0
    for graph, depth in iter_graphs(model.graph):
        if depth > limits.max_subgraph_depth:
            raise ModelError(f"{name}: subgraphs nested {depth} deep (limit {limits.max_subgraph_depth})")
        nodes += len(graph.node)
        if nodes > limits.max_nodes:
            raise ModelError(f"{name}: more than {limits.max_nodes} nodes")
        for tensor in _graph_tensors(graph):
            _check_dims(list(tensor.dims), f"{name}: tensor {tensor.name!r}", limits)
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
                _check_dims(dims, f"{name}: value {value.name!r}", limits, product=False)


def iter_graphs(graph, depth: int = 0) -> Iterator[tuple["onnx.GraphProto", int]]:
    """Yield ``(graph, nesting depth)`` for ``graph`` and every subgraph inside it."""
    yield graph, depth
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_graphs(attr.g, depth + 1)
            for sub in attr.graphs:
                yield from iter_graphs(sub, depth + 1)


def _graph_tensors(graph) -> Iterator["onnx.TensorProto"]:
    """Every tensor stored in ``graph`` itself (initializers and tensor attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices


def _check_dims(dims: list[int], what: str, limits: LoadLimits, product: bool = True) -> None:
    total = 1
    for d in dims:
        if d < 0 or d > limits.max_dim:
            raise ModelError(f"{what} has an absurd dimension {d} (limit {limits.max_dim})")
        total *= d
    if product and total > limits.max_elements:
        raise ModelError(f"{what} has {total} elements (limit {limits.max_elements})")


def _read_file(path: Path, limits: LoadLimits) -> bytes:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ModelError(f"{path}: not a file")
        if size > limits.max_bytes:
            raise ModelError(f"{path}: {size} bytes is over the limit of {limits.max_bytes}")
        with open(path, "rb") as handle:
            return handle.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from None


def _check_external_data(model, base_dir: Path | None, name: str, limits: LoadLimits, load: bool) -> None:
    """Refuse external-data locations outside ``base_dir``; read them if ``load``."""
    budget = limits.max_external_bytes
    for graph, _ in iter_graphs(model.graph):
        for tensor in _graph_tensors(graph):
            if tensor.data_location != _EXTERNAL:
                continue
            info = {entry.key: entry.value for entry in tensor.external_data}
            where = f"{name}: tensor {tensor.name!r}"
            target = _inside(info.get("location", ""), base_dir, where)
            if load:
                if target is None:
                    raise ModelError(f"{where} keeps its data in an external file, and the model was not read from a folder")
                budget -= _load_external(tensor, target, info, where, budget)


def _inside(location: str, base_dir: Path | None, where: str) -> Path | None:
    """The file ``location`` names, which must lie inside ``base_dir``."""
    posix = PurePosixPath(location.replace("\\", "/"))
    hostile = (
        not location or "\0" in location or posix.is_absolute() or ".." in posix.parts
        or bool(PureWindowsPath(location).drive)
    )
    if hostile:
        raise ModelError(f"{where} keeps its data at {location!r}, outside the model's folder; refusing to read it")
    if base_dir is None:
        return None
    target = (base_dir / posix).resolve()
    if not target.is_relative_to(base_dir):  # a symbolic link leading out
        raise ModelError(f"{where} keeps its data at {location!r}, which leads outside the model's folder")
    return target


def _load_external(tensor, target: Path, info: dict, where: str, budget: int) -> int:
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"{where}: external data offset/length are not integers") from None
    try:
        size = target.stat().st_size
        if not target.is_file():
            raise ModelError(f"{where}: external data {target.name!r} is not a file")
    except FileNotFoundError:
        raise ModelError(f"{where}: external data file {target.name!r} is missing") from None
    length = size - offset if length is None else length
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"{where}: external data range {offset}+{length} is outside {target.name!r} ({size} bytes)")
    if length > budget:
        raise ModelError(f"{where}: external data over the limit")
    with open(target, "rb") as handle:
        handle.seek(offset)
        tensor.raw_data = handle.read(length)
    del tensor.external_data[:]
    tensor.data_location = 0
    return length


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

