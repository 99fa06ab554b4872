"""Export an architecture (or any trained ``torch.nn.Module``) to one ONNX file.

The file is self-contained (weights inside, no ``.onnx.data`` sidecar), has a
dynamic batch dimension named ``N`` on input ``x`` and output ``y``, carries the
shapes of every intermediate tensor (``onnx.shape_inference``), passes
``onnx.checker`` (full check) and is written atomically (temporary file + rename:
never a half-written output).

Exporter choice (measured with torch 2.13.0, onnx 1.23.2, on a 2-core CPU; the
benchmark ``benchmarks/bench_export_describe.py`` prints the current figures):

=================================  ======================  ======================
per export, warm process           TorchScript (legacy)     dynamo (``torch.export``)
=================================  ======================  ======================
conv + attention + im2col test net  0.08–0.20 s             2.0–2.8 s (first: 6.9 s)
sampled einspace architectures      median ~0.1 s           median ~1.8 s
needs onnxscript                    no                      yes
=================================  ======================  ======================

Both match torch to ~1e-7. The target is an export at most 0.3 s (median), so the
default is the TorchScript exporter (``dynamo=False``), opset 18, although it is
deprecated: the search exports many candidates. Its extra shape-plumbing nodes for
the dynamic batch are folded away by :func:`einnas.surrogate.describe.describe`.
``exporter="dynamo"`` selects the new exporter where onnxscript is installed; it is
the way forward when the legacy one is removed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from einnas.errors import ArchitectureError, EinnasError, ModelError, UsageError

if TYPE_CHECKING:
    import onnx
    import torch

OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
_MAX_PROTO = 2**31 - 2**20  # protobuf's 2 GiB limit, with room for the graph


def export_onnx(
    model,
    input_shape: Sequence[int],
    num_classes: int = 10,
    path: str | os.PathLike | None = None,
    *,
    grammar=None,
    exporter: str = "torchscript",
    opset: int = OPSET,
    metadata: dict | None = None,
) -> "onnx.ModelProto":
    """Export ``model`` to ONNX and return the checked ``ModelProto``; write it to ``path`` if given.

    ``model`` is a ``torch.nn.Module`` (trained or not; exported in eval mode, its
    training flag restored afterwards), an :class:`~einnas.grammar.Architecture`, or
    an ARCH text (architecture string, ``@file`` or seed name) built with
    :func:`einnas.grammar.build_network`. ``input_shape`` excludes the batch:
    ``(C, H, W)`` or ``(S, D)``. ``metadata`` adds string key/values to the file
    (an architecture's string and archid are added automatically).

    >>> export_onnx("resnet18", (3, 32, 32), 10, "resnet18.onnx")   # doctest: +SKIP
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise UsageError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    input_shape = tuple(int(d) for d in input_shape)
    props = {"input_shape": ",".join(map(str, input_shape)), "num_classes": str(num_classes)}
    if not isinstance(model, torch.nn.Module):
        from einnas.grammar import build_network, resolve_arch

        arch = resolve_arch(model, grammar) if isinstance(model, str) else model
        props.update(arch=arch.string, archid=arch.archid)
        model = build_network(arch, input_shape, num_classes)
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})
    proto = _export(model, input_shape, exporter, opset)
    proto.producer_name, proto.producer_version = "einnas", _version()
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ModelError(f"the exported model fails the ONNX checker: {str(error).splitlines()[0]}") from None
    if proto.ByteSize() > _MAX_PROTO:
        raise ModelError(f"the model is {proto.ByteSize()} bytes, over the 2 GiB a single ONNX file can hold")
    if path is not None:
        write_atomic(path, proto.SerializeToString())
    return proto


def _export(module: "torch.nn.Module", input_shape: tuple, exporter: str, opset: int) -> "onnx.ModelProto":
    import onnx
    import torch

    # Batch 2, not 1: a tracer may specialise size-1 dimensions.
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    was_training, threads = module.training, torch.get_num_threads()
    module.eval()
    # One thread: tracing is mostly Python and small kernels, and on a busy 2-core
    # machine more threads made each export ~3x slower (measured: 0.08 s vs 0.27 s median).
    torch.set_num_threads(1)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                return _export_dynamo(module, example, opset)
            buffer = io.BytesIO()
            torch.onnx.export(
                module, (example,), buffer, dynamo=False, opset_version=opset, input_names=["x"],
                output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, do_constant_folding=True,
            )
            return onnx.load_from_string(buffer.getvalue())
    except (RuntimeError, TypeError, ValueError, IndexError, torch.onnx.errors.OnnxExporterError) as error:
        message = str(error).strip().splitlines()
        raise ArchitectureError(f"cannot export to ONNX: {message[0] if message else type(error).__name__}") from None
    except EinnasError:
        raise
    except Exception as error:  # noqa: BLE001 - a plugin op's forward is foreign code (KeyError, ...)
        message = str(error).strip().splitlines()
        raise ArchitectureError(f"cannot export to ONNX: the forward pass raised {type(error).__name__}"
                                f"{': ' + message[0] if message else ''}") from None
    finally:
        module.train(was_training)
        torch.set_num_threads(threads)


def _export_dynamo(module, example, opset):
    import torch

    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError:
        raise UsageError("exporter='dynamo' needs the onnxscript package (pip install onnxscript)") from None
    program = torch.onnx.export(
        module, (example,), dynamo=True, external_data=False, verbose=False, opset_version=max(opset, 18),
        input_names=["x"], output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=2**20)}},
    )
    return program.model_proto


@contextlib.contextmanager
def _quiet():
    """Silence exporter warnings (deprecation, tracer) and the dynamo exporter's log lines."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`einnas._util.write_atomic`),
    with one-line :class:`UsageError` messages for a path that cannot be written."""
    from einnas._util import write_atomic as _write

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{target}: folder {str(folder)!r} does not exist")
    try:
        _write(target, data)
    except OSError as error:
        raise UsageError(f"{target}: cannot write ({error.strerror or error})") from None


def compare_with_torch(module, model: "onnx.ModelProto", input_shape: Sequence[int],
                       batch_sizes: Sequence[int] = (1, 3), seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and ``module`` on random inputs.

    One random input per batch size (seeded), so a dynamic batch is exercised too.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # tiny graphs: threads only contend
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    was_training = module.training
    module.eval()
    worst = 0.0
    try:
        for batch in batch_sizes:
            x = torch.randn(batch, *input_shape, generator=generator)
            with torch.no_grad():
                expected = module(x).numpy()
            got = session.run(None, {name: x.numpy()})[0]
            if got.shape != expected.shape:
                return float("inf")
            if not np.array_equal(np.isnan(got), np.isnan(expected)):
                return float("inf")
            if got.size:
                worst = max(worst, float(np.nanmax(np.abs(got - expected))))
    finally:
        module.train(was_training)
    return worst


def _version() -> str:
    from einnas._util import package_version

    return package_version()
