"""Zero-cost proxies: scores of a network at initialisation from one mini-batch.

Definitions follow ``shared/reference/predictors.md``; L is the cross-entropy of the
network's logits on the batch (inputs ``x``, labels ``y``).

=============  ===============================================================  =====
name           value                                                            scale
=============  ===============================================================  =====
``snip``       Σ |θ ⊙ ∂L/∂θ| over all parameters                                 log
``grad_norm``  Σ over parameter tensors of ‖∂L/∂θ‖₂                              log
``synflow``    θ ← |θ| (a float64 copy, eval mode), R = Σ f(1); Σ θ ⊙ ∂R/∂θ      log
``naswot``     log |det K|, K = Σ_layers c cᵀ + (1−c)(1−c)ᵀ, c the input sign    as is
               codes of every activation module (isinstance on torch's classes)
``jacov``      −Σ log(λ+k) + 1/(λ+k), λ the eigenvalues of the correlation      as is
               matrix of the per-sample input Jacobians ∂(Σf)/∂x, k = 1e-5
``params``     number of parameters                                              log
``flops``      floating-point operations of one sample's forward                 log
               (``torch.utils.flop_counter``: 2 per multiply-add; matmul, conv,
               attention ops; elementwise ops are not counted)
``early_fit``  log K − L after 7 Adam steps (lr 0.01) on the batch: how many      as is
               nats below chance a few updates take the loss (train mode,
               dropout off; the weights are put back afterwards). Not zero-cost
               but nearly: 8 forwards and 7 backwards of one batch
=============  ===============================================================  =====

``early_fit`` is an early-training proxy in the spirit of training-speed estimation (the sum
of early training losses ranks networks like their final accuracy). Data-free, it measures
how fast a network memorises random labels; its sign agrees across architecture families
where SNIP's and synflow's do not (measured on the corpus: Kendall τ +0.26 to +0.54 within
each (family, dataset) group of CNN, ResNet, MobileNet, ViT, MLP and einspace samples, where
SNIP ranges from −0.29 to +0.60).

How they are computed. The module runs in eval mode by default: batch-norm uses
its running statistics and dropout is off, which is what an ONNX inference graph
computes (exporters fold batch-norm into the convolution before it), so a torch
module and its exported file give the same proxies; ``train_mode=True`` uses batch
statistics instead, dropout still off. One forward pass records NASWOT's codes
through forward pre-hooks; two backward passes from it give the input Jacobians
(jacov) and the parameter gradients (SNIP and grad-norm share them). Synflow and
FLOPs share one forward of a batch of one. Afterwards the module is as it was: weights, gradients, buffers
(batch-norm running statistics) and every submodule's train/eval flag. The caller's
torch thread count and global RNG are left alone; synthetic data comes from a
generator seeded by ``seed``.

Data-free by default: ``x ~ N(0, 1)`` and uniform random labels, ``batch_size`` 32.
With ``batch=(x, y)`` (one batch of a task's training data) those are used instead.

Robustness: each proxy is computed in its own ``try``; a failure, NaN or ±inf gives
``nan`` for that proxy only. NASWOT is ``nan`` for a network without activation
modules (most plain einspace samples have none: they mix by softmax, matmul and
linear layers) or with a singular K (samples with identical codes); jacov is finite
but very negative (about −31/k) when all Jacobians are alike (a linear network). Values span decades (SNIP, grad-norm, synflow, params,
FLOPs): :func:`as_features` maps them to ``sign(v)·log10(1+|v|)``, which trees and
linear models both handle (trees do not need it; it changes no ranking).

Example::

    from einnas.surrogate.proxies import proxies_for_arch
    proxies_for_arch("resnet18", (3, 32, 32), 10)      # {'snip': ..., 'grad_norm': ..., ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from einnas.errors import DatasetError, UsageError

#: Every proxy :func:`compute_proxies` knows, in output order.
PROXY_NAMES: tuple[str, ...] = ("snip", "grad_norm", "synflow", "naswot", "jacov", "params", "flops", "early_fit")
#: Proxies whose values span decades; :func:`as_features` log-scales these.
LOG_SCALED: frozenset[str] = frozenset({"snip", "grad_norm", "synflow", "params", "flops"})
#: Proxies that need gradients (not available for a file that cannot be converted).
GRADIENT_PROXIES: frozenset[str] = frozenset({"snip", "grad_norm", "synflow", "jacov", "early_fit"})
DEFAULT_BATCH_SIZE = 32
JACOV_K = 1e-5
EARLY_FIT_STEPS = 8  # forwards of the batch; the last one's loss is the figure (7 updates before it)
EARLY_FIT_LR = 0.01
_DROPOUT_NAMES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")


def _activation_classes():
    from torch import nn

    # Elementwise nonlinearities: NASWOT's code is the sign of their input.
    return (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
            nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Softsign,
            nn.Tanhshrink, nn.LogSigmoid)


def _finite(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def as_features(values: dict[str, float]) -> dict[str, float]:
    """``values`` with the :data:`LOG_SCALED` ones mapped to ``sign(v)·log10(1+|v|)``."""
    out = {}
    for name, v in values.items():
        if name in LOG_SCALED and v == v:
            v = math.copysign(math.log10(1.0 + abs(v)), v)
        out[name] = v
    return out


def synthetic_batch(input_shape: Sequence[int], num_classes: int, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0):
    """``(x, y)``: ``x ~ N(0, 1)`` of shape ``(batch_size, *input_shape)``, labels uniform in ``0..K-1``."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch_size, *input_shape, generator=gen)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return x, y


class _Saved:
    """Everything a proxy pass changes on a module, to put back afterwards."""

    def __init__(self, module):
        self.module = module
        self.modes = [(m, m.training) for m in module.modules()]
        self.buffers = [(b, b.detach().clone()) for b in module.buffers()]
        self.grads = [(p, p.grad, p.requires_grad) for p in module.parameters()]

    def restore(self):
        import torch

        for m, mode in self.modes:
            m.training = mode
        with torch.no_grad():
            for b, copy in self.buffers:
                b.copy_(copy)
        for p, grad, requires in self.grads:
            p.grad = grad
            p.requires_grad_(requires)


def _logits(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.reshape(out.shape[0], -1)


def _naswot_from(kernel) -> float:
    import torch

    sign, logdet = torch.linalg.slogdet(kernel.double())
    # K has integer entries, so a nonsingular K has |det K| >= 1: a log below 0 is a
    # singular K seen through rounding (identical codes, fewer code bits than samples).
    return math.nan if float(sign) == 0 or float(logdet) < -0.5 else _finite(logdet)


def _jacov_from(jacobians) -> float:
    import warnings

    import numpy as np

    j = jacobians.reshape(jacobians.shape[0], -1).double().numpy()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one input element: "Degrees of freedom <= 0"
        corr = np.corrcoef(j)
    if not np.all(np.isfinite(corr)):
        return math.nan
    eig = np.linalg.eigvalsh(corr)
    return _finite(-np.sum(np.log(eig + JACOV_K) + 1.0 / (eig + JACOV_K)))


def _data_pass(module, x, y, wanted: set[str], out: dict, train_mode: bool) -> None:
    """One forward for NASWOT, then jacov's and the loss's backward passes."""
    import torch
    import torch.nn.functional as F

    params = [p for p in module.parameters() if p.requires_grad]
    kernel = []
    hooks = []
    if "naswot" in wanted:
        classes = _activation_classes()
        n = x.shape[0]

        def hook(mod, inputs):
            t = inputs[0] if inputs else None
            if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == n:
                # With z = ±1 codes, z zᵀ = agreements − disagreements, so
                # c cᵀ + (1−c)(1−c)ᵀ (the agreements) = (z zᵀ + bits) / 2: one matmul, not two.
                z = (t.detach() > 0).reshape(n, -1).float().mul_(2).sub_(1)
                kernel.append((z @ z.T + z.shape[1]).double() / 2)

        hooks = [m.register_forward_pre_hook(hook) for m in module.modules() if isinstance(m, classes)]
    module.train(train_mode)
    if train_mode:  # batch statistics, but no random dropout masks
        _dropout_off(module)
    xin = x.detach().clone().requires_grad_("jacov" in wanted)
    grad = torch.enable_grad() if wanted & {"jacov", "snip", "grad_norm"} else torch.no_grad()
    try:
        with grad:
            logits = _logits(module(xin))
    finally:
        for h in hooks:
            h.remove()
    if "naswot" in wanted:
        try:
            out["naswot"] = _naswot_from(sum(kernel)) if kernel else math.nan
        except Exception:
            out["naswot"] = math.nan
    if "jacov" in wanted:
        try:
            (jac,) = torch.autograd.grad(logits.sum(), xin, retain_graph=bool(wanted & {"snip", "grad_norm"}))
            out["jacov"] = _jacov_from(jac)
        except Exception:
            out["jacov"] = math.nan
    if wanted & {"snip", "grad_norm"}:
        try:
            loss = F.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
            with torch.no_grad():
                if "snip" in wanted:
                    out["snip"] = _finite(sum(float((p * g).abs().sum()) for p, g in pairs))
                if "grad_norm" in wanted:
                    out["grad_norm"] = _finite(sum(float(g.norm(2)) for _, g in pairs))
        except Exception:
            for name in wanted & {"snip", "grad_norm"}:
                out[name] = math.nan


def _dropout_off(module) -> None:
    from torch import nn

    drop = tuple(getattr(nn, name) for name in _DROPOUT_NAMES)
    for m in module.modules():
        if isinstance(m, drop):
            m.eval()


def _early_fit(module, x, y, num_classes: int) -> float:
    """log K − the cross-entropy after ``EARLY_FIT_STEPS - 1`` Adam updates on ``(x, y)``.

    Trains ``module`` itself (batch statistics, dropout off); the caller puts its weights,
    buffers and gradients back (:class:`_Saved` and the parameter copies of
    :func:`compute_proxies`)."""
    import torch
    import torch.nn.functional as F

    module.train()
    _dropout_off(module)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=EARLY_FIT_LR) if params else None
    loss = None
    with torch.enable_grad():
        for step in range(EARLY_FIT_STEPS):
            loss = F.cross_entropy(_logits(module(x)), y)
            if not math.isfinite(float(loss.detach())):
                return math.nan
            if step == EARLY_FIT_STEPS - 1 or optimizer is None:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return _finite(math.log(num_classes) - float(loss.detach()))


def _synflow(module, input_shape, out: dict, count_flops: bool) -> None:
    """Synflow on a float64 copy with |θ| in eval mode (batch-norm uses running stats);
    FLOPs are counted on the same batch-of-one forward when asked (they do not depend
    on the weights' values or dtype)."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # float64 |θ| copies swapped into the module's own tensors (cheaper than deepcopy of
    # the module tree); the original tensors are swapped back whatever happens.
    swapped = [(t, t.data) for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    try:
        with torch.no_grad():
            for t, data in swapped:
                t.data = data.to(torch.float64, copy=True)
            params = [p for p in module.parameters() if p.requires_grad]
            for p in params:
                p.data.abs_()
        module.eval()
        counter = FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
        with counter:
            r = _logits(module(torch.ones(1, *input_shape, dtype=torch.float64))).sum()
        if count_flops:
            out["flops"] = float(counter.get_total_flops())
        grads = torch.autograd.grad(r, params, allow_unused=True)
        with torch.no_grad():
            out["synflow"] = _finite(sum(float((p * g).sum()) for p, g in zip(params, grads) if g is not None))
    finally:
        for t, data in swapped:
            t.data = data


def _flops(module, input_shape) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(1, *input_shape))
    return float(counter.get_total_flops())


def count_params(module) -> int:
    """Distinct parameters of ``module`` (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def check_batch(batch, input_shape, num_classes: int, what: str = "batch"):
    """``batch`` as float / int64 tensors; :class:`DatasetError` if it does not fit the model."""
    import torch

    x, y = batch
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long().reshape(-1)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DatasetError(f"{what}: samples of shape {','.join(map(str, x.shape[1:]))} do not fit the model's "
                           f"input shape {','.join(map(str, input_shape))}")
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise DatasetError(f"{what}: {x.shape[0]} inputs and {y.shape[0]} labels; need the same number, at least 2")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DatasetError(f"{what}: labels outside 0..{num_classes - 1} (the model has {num_classes} outputs)")
    return x, y


def compute_proxies(module, input_shape, num_classes: int, batch=None, seed: int = 0,
                    names: Sequence[str] = PROXY_NAMES, batch_size: int = DEFAULT_BATCH_SIZE,
                    train_mode: bool = False) -> dict[str, float]:
    """The zero-cost proxies ``names`` of a ``torch.nn.Module`` mapping ``(B, *input_shape)`` to logits.

    ``batch=(x, y)`` uses that batch; otherwise a synthetic one of ``batch_size``
    seeded by ``seed``. Returns ``{name: float}`` in ``names`` order, ``nan`` where a
    proxy failed or was not finite. The module is restored afterwards.
    """
    unknown = [n for n in names if n not in PROXY_NAMES]
    if unknown:
        raise UsageError(f"unknown proxy {unknown[0]!r}; proxies are {', '.join(PROXY_NAMES)}")
    input_shape = tuple(int(d) for d in input_shape)
    if batch is None:
        x, y = synthetic_batch(input_shape, num_classes, batch_size, seed)
    else:
        x, y = check_batch(batch, input_shape, num_classes)
    wanted = set(names)
    out: dict[str, float] = {}
    import torch

    saved = _Saved(module)
    rng = torch.random.fork_rng(devices=[])  # random ops (RReLU, ...) must not move the caller's RNG
    rng.__enter__()
    try:
        if "params" in wanted:
            out["params"] = float(count_params(module))
        if wanted & {"snip", "grad_norm", "naswot", "jacov"}:
            try:
                _data_pass(module, x, y, wanted, out, train_mode)
            except Exception:  # the forward itself failed: none of these can be had
                pass
            finally:
                saved.restore()
        if "synflow" in wanted:
            try:
                _synflow(module, input_shape, out, "flops" in wanted)
            except Exception:
                out["synflow"] = math.nan
        if "flops" in wanted and "flops" not in out:  # not asked with synflow, or its forward failed
            try:
                out["flops"] = _flops(module, input_shape)
            except Exception:
                out["flops"] = math.nan
            finally:
                saved.restore()
        if "early_fit" in wanted:
            weights = [(p, p.detach().clone()) for p in module.parameters()]
            try:
                out["early_fit"] = _early_fit(module, x, y, num_classes)
            except Exception:
                out["early_fit"] = math.nan
            finally:
                with torch.no_grad():
                    for p, copy in weights:
                        p.copy_(copy)
                saved.restore()
    finally:
        saved.restore()
        rng.__exit__(None, None, None)
    return {n: out.get(n, math.nan) for n in names}


@dataclass
class ProxyResult:
    """Proxies of one ONNX file: ``values`` (every name in :data:`PROXY_NAMES`), whether the
    file was ``converted`` to torch, and a ``note`` saying what is missing if not."""

    values: dict[str, float]
    converted: bool
    note: str | None = None
    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    batch_mode: str | None = None  # "dynamic", "patched" or "per-sample" (see convert.py)
    extra: dict = field(default_factory=dict)


def dataset_batch(dataset, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0):
    """One batch ``(x, y)`` of ``dataset``'s training split: ``batch_size`` samples drawn without
    replacement by a generator seeded with ``seed`` (all of them if the split is smaller)."""
    import torch

    x, y = dataset.train
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(x.shape[0], generator=gen)[: min(batch_size, x.shape[0])]
    return x[idx], y[idx]


def build_seeded(arch, input_shape, num_classes: int, seed: int = 0, grammar=None):
    """Build an architecture (string, ``@file``, seed name or Architecture) with weights seeded by ``seed``."""
    import torch

    from einnas.grammar import build_network, resolve_arch

    if isinstance(arch, str):
        arch = resolve_arch(arch, grammar)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_network(arch, tuple(input_shape), num_classes)


def proxies_for_arch(arch, input_shape, num_classes: int, batch=None, seed: int = 0, grammar=None,
                     names: Sequence[str] = PROXY_NAMES, batch_size: int = DEFAULT_BATCH_SIZE,
                     cache=None) -> dict[str, float]:
    """Proxies of an architecture built with the project's builder, initialised with ``seed``.

    ``cache`` (a :class:`~einnas.surrogate.proxy_cache.ProxyCache` or a folder) keeps
    results on disk keyed by (archid, input shape, classes, seed, data or synthetic).
    """
    from einnas.grammar import resolve_arch

    if isinstance(arch, str):
        arch = resolve_arch(arch, grammar)
    store = key = None
    if cache is not None:
        from einnas.surrogate.proxy_cache import ProxyCache, cache_key

        store = cache if isinstance(cache, ProxyCache) else ProxyCache(cache)
        key = cache_key(arch.archid, input_shape, num_classes, seed, batch, batch_size)
        hit = store.get(key)
        if hit is not None and all(n in hit for n in names):
            return {n: hit[n] for n in names}
    module = build_seeded(arch, input_shape, num_classes, seed, grammar)
    values = compute_proxies(module, input_shape, num_classes, batch, seed, names, batch_size)
    if store is not None:
        store.put(key, values)
    return values


def proxies_for_onnx(source, batch=None, seed: int = 0, *, reinit: bool = True,
                     names: Sequence[str] = PROXY_NAMES, batch_size: int = DEFAULT_BATCH_SIZE,
                     name: str | None = None, batch_name: str = "batch") -> ProxyResult:
    """Proxies of an ONNX file (path, bytes or ``ModelProto``), converted to torch.

    ``reinit`` (default) re-initialises the weights with seeded torch defaults, so a
    trained file is scored at initialisation like the training records; ``reinit=False``
    keeps the file's weights. A file that cannot be converted is not an error: the
    result has ``converted=False``, the weight count from the file, NASWOT from
    onnxruntime (forward only; ``nan`` if that fails too), ``nan`` for the rest and a note. Unreadable or hostile files raise ``ModelError``.
    """
    from einnas.errors import ConversionError
    from einnas.surrogate.convert import convert_onnx, reinitialise, weight_count

    try:
        conv = convert_onnx(source, name=name)
    except ConversionError as error:
        reason = getattr(error, "reason", str(error))
        values = {n: math.nan for n in names}
        if "params" in values:
            values["params"] = float(weight_count(source))
        if "naswot" in values:
            values["naswot"] = _naswot_without_torch(source, batch, seed, batch_size, batch_name)
        return ProxyResult(values, False, f"not converted to torch: {reason}; scored without gradient proxies")
    if reinit:
        reinitialise(conv.module, seed)
    if batch is not None:
        batch = check_batch(batch, conv.input_shape, conv.num_classes, batch_name)
    values = compute_proxies(conv.module, conv.input_shape, conv.num_classes, batch, seed, names, batch_size)
    note = None
    if conv.batch == "per-sample":
        note = "fixed-batch file run sample by sample (batch-norm statistics per sample)"
    return ProxyResult(values, True, note, conv.input_shape, conv.num_classes, conv.batch)


def _naswot_without_torch(source, batch, seed: int, batch_size: int, batch_name: str) -> float:
    """NASWOT in onnxruntime for a file onnx2torch cannot convert (``nan`` if that fails too)."""
    from einnas.errors import ConversionError
    from einnas.surrogate.convert import _graph_input
    from einnas.surrogate.onnx_io import read_model
    from einnas.surrogate.ort_proxies import naswot_onnxruntime

    model = read_model(source, load_external=True)  # onnxruntime would look for external data in the working directory
    try:
        _, dims = _graph_input(model, "model")
    except ConversionError:
        return math.nan
    shape = tuple(int(d.dim_value) for d in dims[1:])
    if batch is None:
        x, _ = synthetic_batch(shape, 2, batch_size, seed)
    else:
        x, _ = check_batch(batch, shape, 1 + int(max(batch[1])), batch_name)  # labels do not matter here
    try:
        return naswot_onnxruntime(model, x)
    except Exception:  # onnxruntime cannot run it either
        return math.nan
