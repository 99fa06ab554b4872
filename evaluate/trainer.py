"""Train one candidate from scratch with the einspace protocol; never raise for a bad candidate.

The protocol (einspace, paper §4.1 and its ``trainers.py``): SGD with momentum 0.9,
learning rate 0.04, weight decay 3e-4, cosine annealing to 0 over the budget, batch
256, no augmentation; fitness is the validation accuracy after the last epoch. Final
mode retrains on train + valid and reports test accuracy. ``TrainConfig.shift`` adds
random translation of images (a search's final retrain uses :func:`auto_shift`).

Whatever goes wrong with the *candidate* — a NaN loss, out of memory, a time budget
exceeded, an operation failing at run time, a network too large for the limits —
comes back as a :class:`TrainResult` with ``ok=False`` and a short ``reason`` code
(``nan_loss``, ``oom``, ``timeout``, ``runtime_error``, ``too_large``) plus a
``detail`` line. Only errors of the caller (an invalid device) raise.

Example::

    from einnas.evaluate import load_dataset, train, TrainConfig
    result = train(lambda: MyNet(), load_dataset("digits"), TrainConfig(epochs=3), seed=0)
    print(result.ok, result.val_acc, result.seconds)
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Union

from einnas.errors import EinnasError, PluginError, UsageError

if TYPE_CHECKING:
    import torch

    from einnas.evaluate.datasets import Dataset

#: Failure reason codes of :class:`TrainResult`.
REASONS = ("nan_loss", "oom", "timeout", "runtime_error", "too_large", "plugin_error")


@dataclass
class TrainConfig:
    """How one candidate is trained. Defaults follow einspace's search protocol."""

    epochs: int = 8  # einspace's search epochs (one eighth of its 64 final epochs)
    # Wall-clock limit for the whole call (training and evaluation); None = none.
    # Exceeding it, or being projected after the first epoch to exceed it by 25%,
    # is a failure with reason "timeout": the epoch budget defines the schedule.
    seconds: float | None = None
    batch_size: int = 256
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 3e-4
    eval_batch_size: int = 1024  # evaluation holds no activations for backward
    max_params: int | None = None  # reject larger candidates before training
    max_activation_bytes: int | None = None  # estimated activation memory of one training batch
    amp: bool = True  # bf16 autocast where the device supports it (CUDA only)
    threads: int | None = None  # torch CPU threads during the call (restored after); None = leave
    # Random translation of image inputs by up to this many pixels per training sample
    # (edge pixels replicated; 0 = none, einspace's protocol). Tokens are never shifted.
    shift: int = 0
    # Seconds the whole call should fit in (None = no such goal): after the first epoch the
    # epochs are cut to those that fit at its pace (never below fit_min_epochs), and the cosine
    # schedule anneals over the epochs kept. Unlike `seconds`, overrunning it is no failure.
    fit_seconds: float | None = None
    fit_min_epochs: int = 1


@dataclass
class EpochStats:
    """One point of the training curve (``val_*`` are None in final mode)."""

    epoch: int
    epochs: int
    train_loss: float
    val_acc: float | None
    val_loss: float | None
    seconds: float


@dataclass
class TrainResult:
    """The outcome of :func:`train`: accuracies, cost and, on failure, the reason."""

    ok: bool
    reason: str | None = None  # one of REASONS when not ok
    detail: str = ""
    val_acc: float | None = None  # validation accuracy after the last epoch (None in final mode)
    test_acc: float | None = None  # when asked for, or in final mode
    seconds: float = 0.0  # wall clock of the whole call
    train_seconds: float = 0.0  # time spent in training steps only
    samples: int = 0  # training samples processed
    params: int = 0
    epochs_run: int = 0
    stopped: bool = False  # ended early because ``progress`` asked (a multi-fidelity rung)
    device: str = "cpu"
    curve: list[EpochStats] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Training samples per second of training-step time."""
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        data = asdict(self)
        data["throughput"] = self.throughput
        return data


class _Failure(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


ModelSource = Union["torch.nn.Module", Callable[[], "torch.nn.Module"]]


def resolve_device(name: "str | torch.device | None" = "auto") -> "torch.device":
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises :class:`UsageError` for an unavailable or unknown device.
    """
    import torch

    text = "auto" if name is None else str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"device {text!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {text!r}: CUDA is not available (torch {torch.__version__}, no usable GPU)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UsageError(f"device {text!r}: only cpu and cuda are supported")
    return device


@dataclass
class SizeCheck:
    """Result of :func:`check_size`; ``detail`` says which limit was exceeded."""

    ok: bool
    params: int
    activation_bytes: int | None
    detail: str = ""


def count_params(model: "torch.nn.Module") -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_size(
    model: "torch.nn.Module",
    input_shape: tuple[int, ...],
    batch_size: int,
    max_params: int | None = None,
    max_activation_bytes: int | None = None,
    activations: int | None = None,
) -> SizeCheck:
    """Check a model against a parameter limit and an activation-memory estimate.

    The estimate is ``batch_size`` times the bytes of every leaf module's float32
    output for one sample. ``activations`` (elements per sample, e.g. from
    ``einnas.grammar.analyse``) skips the batch-1 forward that measures it otherwise;
    with no activation limit nothing is run. A forward that fails raises.
    """
    import torch

    params = count_params(model)
    if max_params is not None and params > max_params:
        return SizeCheck(False, params, None, f"{params:,} parameters > limit {max_params:,}")
    if max_activation_bytes is None:
        return SizeCheck(True, params, None)
    if activations is None:
        activations = 0
        sizes: list[int] = []

        def hook(_module, _inputs, output):
            for out in output if isinstance(output, (tuple, list)) else (output,):
                if isinstance(out, torch.Tensor):
                    sizes.append(out.numel())

        handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        try:
            model.eval()
            with torch.inference_mode():
                model(torch.zeros((1, *input_shape), device=device))
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        activations = sum(sizes)
    nbytes = int(activations) * 4 * batch_size
    if nbytes > max_activation_bytes:
        return SizeCheck(
            False, params, nbytes,
            f"estimated activations {_mib(nbytes)} at batch {batch_size} > limit {_mib(max_activation_bytes)}",
        )
    return SizeCheck(True, params, nbytes)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB" if nbytes >= 2**20 else f"{nbytes:,} bytes"


# --- global state that a call changes and restores ------------------------------------------


@contextlib.contextmanager
def _scoped_state(seed: int, device: "torch.device", threads: int | None):
    import torch

    old_threads = torch.get_num_threads()
    old_bench = torch.backends.cudnn.benchmark
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            torch.manual_seed(seed)
            if threads:
                torch.set_num_threads(threads)
            # On CPU the kernels training uses are deterministic for a fixed thread count
            # (tested). torch.use_deterministic_algorithms is not called: it imports
            # torch._inductor, 3-10 s on two cores, and changes nothing here.
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
            yield
        finally:
            torch.set_num_threads(old_threads)
            torch.backends.cudnn.benchmark = old_bench


def _is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


# --- the training run -------------------------------------------------------------------------


class _Run:
    """One call of :func:`train`; keeps partial progress so failures can report it."""

    def __init__(self, dataset, config: TrainConfig, device, final: bool, test: bool, progress, start: float):
        self.dataset, self.config, self.device = dataset, config, device
        self.final, self.test, self.progress = final, test, progress
        self.start = start
        self.deadline = start + config.seconds if config.seconds is not None else math.inf
        self.result = TrainResult(ok=False, device=str(device))
        self.amp = bool(config.amp and device.type == "cuda" and _bf16_ok(device))

    def _check_time(self, where: str) -> None:
        now = time.perf_counter()
        if now > self.deadline:
            raise _Failure(
                "timeout", f"time budget of {self.config.seconds:g} s exceeded {where} ({now - self.start:.1f} s)"
            )

    def _watch_deadline(self, model) -> None:
        """Check the time budget inside a step too: a forward hook on every leaf module, and
        through it a gradient hook on the leaf's output for the backward pass.

        Between steps is not enough: one slow step ran 20 s against a 3 s budget. The hooks
        are one clock read per leaf per pass (benchmarks/bench_trainer.py prints their cost);
        an exception raised in a gradient hook leaves ``backward()`` as itself.
        """
        import torch

        self._hooks = []
        if self.deadline == math.inf:
            return
        deadline, clock = self.deadline, time.perf_counter

        def backward_hook(grad):
            if clock() > deadline:
                self._check_time("inside a backward pass")

        def hook(module, inputs, output):
            if clock() > deadline:
                self._check_time("inside a step")
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(backward_hook)

        for module in model.modules():
            if next(module.children(), None) is None:
                self._hooks.append(module.register_forward_hook(hook))

    def _unwatch(self) -> None:
        for handle in getattr(self, "_hooks", ()):
            handle.remove()

    def _autocast(self):
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def run(self, source: ModelSource, seed: int) -> TrainResult:
        import torch
        import torch.nn.functional as F

        cfg, ds, device, res = self.config, self.dataset, self.device, self.result
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise UsageError(f"epochs ({cfg.epochs}) and batch size ({cfg.batch_size}) must be positive")
        model = source() if not isinstance(source, torch.nn.Module) else source
        # Networks from einnas.grammar.build_network carry analytic sizes: no forward needed.
        activations = getattr(getattr(model, "arch_info", None), "activations", None)
        size = check_size(
            model, ds.input_shape, cfg.batch_size, cfg.max_params, cfg.max_activation_bytes, activations
        )
        res.params = size.params
        if not size.ok:
            raise _Failure("too_large", size.detail)
        model.to(device)
        self._model = model
        self._watch_deadline(model)

        x_train, y_train = ds.train
        if self.final:
            x_train, y_train = torch.cat([ds.train[0], ds.valid[0]]), torch.cat([ds.train[1], ds.valid[1]])
        x_train, y_train = x_train.to(device), y_train.to(device)
        n = len(y_train)
        bs = min(cfg.batch_size, n)
        # A last batch of one sample breaks BatchNorm in training mode; drop only that one.
        batches = n // bs + (1 if n % bs > 1 else 0)
        epochs = cfg.epochs  # fit_seconds may cut it after the first epoch
        total_steps = epochs * batches
        optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        generator = torch.Generator().manual_seed(seed)  # shuffling has its own stream
        check_every = 1 if device.type == "cpu" else 25  # a finite-loss check syncs CUDA
        step = 0
        epoch = 0
        while epoch < epochs:
            epoch += 1
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            for b in range(batches):
                idx = perm[b * bs:(b + 1) * bs]
                xb, yb = x_train[idx], y_train[idx]
                if cfg.shift > 0 and xb.dim() == 4:
                    xb = random_shift(xb, cfg.shift, generator)
                # Cosine annealing to 0 over all steps (einspace anneals per epoch; same end point).
                lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total_steps))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with self._autocast():
                    out = model(xb)
                if step == 0 and tuple(out.shape) != (len(yb), ds.num_classes):
                    raise _Failure(
                        "runtime_error",
                        f"output shape {tuple(out.shape)}, expected ({len(yb)}, {ds.num_classes})",
                    )
                loss = F.cross_entropy(out.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                step += 1
                res.samples += len(yb)
                if step % check_every == 0 or b == batches - 1:
                    if not math.isfinite(loss_sum.item()):
                        raise _Failure("nan_loss", f"non-finite training loss at epoch {epoch}, step {step}")
                self._check_time(f"in epoch {epoch}")
            res.train_seconds += time.perf_counter() - t0
            train_loss = loss_sum.item() / batches
            val_acc = val_loss = None
            if not self.final:
                val_acc, val_loss = self._evaluate(model, ds.valid, f"validating epoch {epoch}")
            if epoch == 1 and cfg.fit_seconds is not None and epochs > 1:
                epochs = _epochs_that_fit(cfg, time.perf_counter() - t0, time.perf_counter() - self.start)
                total_steps = epochs * batches  # the rest of the cosine anneals over the epochs kept
            stats = EpochStats(epoch, epochs, train_loss, val_acc, val_loss, time.perf_counter() - self.start)
            res.curve.append(stats)
            res.epochs_run = epoch
            if self.progress is not None and self.progress(stats) is True and epoch < epochs:
                res.stopped = True  # the caller stops it here (e.g. a multi-fidelity rung)
                break
            if epoch == 1 and epochs > 1 and cfg.seconds is not None:
                projected = (time.perf_counter() - self.start) * epochs
                if projected > 1.25 * cfg.seconds:
                    raise _Failure(
                        "timeout",
                        f"projected {projected:.1f} s for {epochs} epochs after epoch 1 > "
                        f"time budget of {cfg.seconds:g} s",
                    )
        res.val_acc = res.curve[-1].val_acc
        if self.final or self.test:
            res.test_acc, _ = self._evaluate(model, ds.test, "testing")
        res.ok = True
        return res

    def _evaluate(self, model, split, where: str) -> tuple[float, float]:
        import torch
        import torch.nn.functional as F

        x, y = split
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        bs = self.config.eval_batch_size
        with torch.inference_mode():
            for i in range(0, len(y), bs):
                xb = x[i:i + bs].to(self.device, non_blocking=True)
                yb = y[i:i + bs].to(self.device, non_blocking=True)
                with self._autocast():
                    out = model(xb).float()
                loss_sum += F.cross_entropy(out, yb, reduction="sum")
                correct += (out.argmax(1) == yb).sum()
                self._check_time(where)
        return correct.item() / len(y), loss_sum.item() / len(y)


AUTO_SHIFT = 2  # pixels: the final retrain's translation for images of AUTO_SHIFT_MIN_SIDE and more a side
AUTO_SHIFT_MIN_SIDE = 16


def _epochs_that_fit(cfg: TrainConfig, epoch_seconds: float, elapsed: float) -> int:
    """Epochs of a ``fit_seconds`` run, decided after its first: the first (``elapsed``
    seconds into the call, ``epoch_seconds`` of them its own) and as many more at its pace
    as fit in the rest; at least ``fit_min_epochs``, at most ``epochs``."""
    more = (cfg.fit_seconds - elapsed) // max(epoch_seconds, 1e-9)
    return int(min(cfg.epochs, max(cfg.fit_min_epochs, 1 + max(0, more))))


def auto_shift(input_shape) -> int:
    """The final retrain's default translation for inputs of ``input_shape``: 2 pixels for
    images at least 16 pixels high and wide (MNIST-like 28×28: +1.1 points of test accuracy
    for the 6-layer reference CNN, ``docs/search.md``), none for small images, 1×L signals
    and tokens, where a 2-pixel shift is a large part of the input."""
    shape = tuple(input_shape)
    return AUTO_SHIFT if len(shape) == 3 and min(shape[1:]) >= AUTO_SHIFT_MIN_SIDE else 0


def random_shift(x: "torch.Tensor", pixels: int, generator: "torch.Generator") -> "torch.Tensor":
    """Translate each image of a ``(B, C, H, W)`` batch by up to ``pixels`` along each axis.

    Edge pixels are replicated into the gap (normalised data has no zero background); an
    axis of length 1 (a signal seen as a 1×L image) is not shifted along. The offsets come
    from ``generator``, so a training seed gives the same augmentation.
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    ph, pw = (pixels if h > 1 else 0), (pixels if w > 1 else 0)
    padded = F.pad(x, (pw, pw, ph, ph), mode="replicate")
    dy = torch.randint(0, 2 * ph + 1, (b, 1), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (b, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _bf16_ok(device) -> bool:
    import torch

    try:
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported()
    except (RuntimeError, AssertionError):
        return False


# Errors a candidate typically causes while being built or run ("oom" is told apart). Any
# other exception from a candidate (a plugin op's KeyError) fails it too, as runtime_error:
# one candidate must not stop a search. EinnasError (bad user input such as a device) propagates.
_CANDIDATE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError, AssertionError, MemoryError)


@functools.cache
def _load_optimiser_machinery() -> None:
    """Import what torch's optimisers load on first use (``torch._dynamo``: 2-4 s, more on a
    busy machine) before a candidate's clock starts: a once-per-process cost of the library
    must not time out the first candidate of every worker."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def train(
    model: ModelSource,
    dataset: "Dataset",
    config: TrainConfig | None = None,
    *,
    seed: int = 0,
    device: "str | torch.device" = "cpu",
    final: bool = False,
    test: bool = False,
    progress: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train a candidate from scratch and score it; failures come back as results.

    ``model`` is a module or, better, a zero-argument factory: a factory is called
    after seeding, so the same ``seed`` gives the same initial weights and, on CPU,
    the same accuracy. ``final=True`` trains on train + valid and reports test
    accuracy; ``test=True`` also reports test accuracy in search mode. ``progress``
    is called with an :class:`EpochStats` after every epoch; when it returns True
    training stops there with ``ok=True, stopped=True`` (the scores are those of
    that epoch).
    """
    import torch

    config = config or TrainConfig()
    device = resolve_device(device)
    _load_optimiser_machinery()
    start = time.perf_counter()
    run = _Run(dataset, config, device, final, test, progress, start)
    result = run.result
    with _scoped_state(seed, device, config.threads):
        try:
            run.run(model, seed)
        except _Failure as failure:
            result.ok, result.reason, result.detail = False, failure.reason, failure.detail
        except _CANDIDATE_ERRORS as error:
            reason = "oom" if _is_oom(error) else "runtime_error"
            result.ok, result.reason, result.detail = False, reason, _first_line(error)
        except PluginError as error:  # a plugin's op failing inside the candidate
            result.ok, result.reason, result.detail = False, "plugin_error", str(error)[:300]
        except EinnasError:
            raise  # bad user input (a device, a config): the command reports it
        except Exception as error:  # noqa: BLE001 - anything a candidate's forward raises fails the candidate
            result.ok, result.reason, result.detail = False, "runtime_error", _first_line(error)
        finally:
            run._unwatch()
            run.__dict__.pop("_model", None)  # free the candidate before emptying the cache
            if device.type == "cuda" and not result.ok:
                torch.cuda.empty_cache()
    result.seconds = time.perf_counter() - start
    return result
