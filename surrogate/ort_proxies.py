"""Forward-only proxies of an ONNX file that cannot be converted to torch, in onnxruntime.

NASWOT needs only the inputs of the activations: the graph gets those tensors as
extra outputs and runs once in onnxruntime (CPU, the caller's torch thread count).
Activations are the ONNX standard's elementwise nonlinearities (:data:`ACTIVATION_OPS`,
the same family as the torch module classes hooked in :mod:`proxies`). A file with a
fixed batch runs in slices of that batch. Anything that fails gives ``nan``.
"""

from __future__ import annotations

import math

#: ONNX operator types (default domain) whose input sign is a NASWOT code.
ACTIVATION_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "Tanh", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
})


def naswot_onnxruntime(model, x) -> float:
    """NASWOT of ``model`` (a checked ``ModelProto``) on inputs ``x`` (a float tensor ``(B, ...)``)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from einnas.surrogate.proxies import _naswot_from

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    graph_input = next(v for v in m.graph.input if v.name not in inits)
    taps = list(dict.fromkeys(n.input[0] for n in m.graph.node
                              if n.op_type in ACTIVATION_OPS and n.domain in ("", "ai.onnx") and n.input))
    if not taps:
        return math.nan
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in taps if t not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    dim0 = graph_input.type.tensor_type.shape.dim[0]
    step = int(dim0.dim_value) if dim0.HasField("dim_value") and dim0.dim_value > 0 else x.shape[0]
    data = x.detach().numpy().astype(np.float32)
    if data.shape[0] % step:
        return math.nan
    parts = [session.run(taps, {graph_input.name: data[i:i + step]}) for i in range(0, data.shape[0], step)]
    n, kernel = data.shape[0], None
    for j in range(len(taps)):
        t = np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
        if t.ndim == 0 or t.shape[0] != n:
            continue
        c = torch.from_numpy((t.reshape(n, -1) > 0).astype(np.float32))
        k = (c @ c.T + (1 - c) @ (1 - c).T).double()
        kernel = k if kernel is None else kernel + k
    return math.nan if kernel is None else _naswot_from(kernel)
