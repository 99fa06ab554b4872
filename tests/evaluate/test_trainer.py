"""The trainer: protocol, seeding, final mode, and failures that come back as results."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from einnas.errors import PluginError, UsageError
from einnas.evaluate import (
    REASONS,
    TrainConfig,
    TrainResult,
    check_size,
    from_arrays,
    load_dataset,
    resolve_device,
    train,
)


@pytest.fixture(scope="module")
def blobs():
    """Four Gaussian blobs in 2x4x4 images: easy, tiny, and quick to train on."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 4, n)
        x = rng.normal(0, 1, (n, 2, 4, 4))
        x[:, 0, 0, 0] += 4 * (y % 2)
        x[:, 1, 3, 3] += 4 * (y // 2)
        return x, y

    return from_arrays("blobs", split(301), split(100), split(100))


def cfg(**overrides):
    """Tiny models run fastest (and robustly beside other busy processes) on one thread."""
    return TrainConfig(threads=1, **overrides)


def mlp(in_features=32, classes=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, classes))


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32, 4)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


class SlowNet(nn.Module):
    def __init__(self, delay=0.05):
        super().__init__()
        self.linear, self.delay = nn.Linear(32, 4), delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.linear(x.flatten(1))


class Raises(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.linear, self.error = nn.Linear(32, 4), error

    def forward(self, x):
        raise self.error


def test_learns_blobs(blobs):
    result = train(mlp, blobs, cfg(epochs=4, batch_size=64), seed=0, test=True)
    assert isinstance(result, TrainResult) and result.ok and result.reason is None
    assert result.val_acc > 0.8 and result.test_acc > 0.8
    assert result.params == sum(p.numel() for p in mlp().parameters())
    assert result.epochs_run == 4 and len(result.curve) == 4
    assert [c.epoch for c in result.curve] == [1, 2, 3, 4]
    assert result.curve[-1].val_acc == result.val_acc
    assert result.curve[-1].train_loss < result.curve[0].train_loss
    # 301 = 4 full batches of 64 + 45: every sample is seen once per epoch
    assert result.samples == 4 * 301 and result.throughput > 0
    assert 0 < result.train_seconds <= result.seconds


def test_default_protocol_is_einspace():
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay) == (
        8, 256, 0.04, 0.9, 3e-4)


def test_same_seed_same_accuracy_on_cpu(blobs):
    config = cfg(epochs=3, batch_size=32)
    a = train(mlp, blobs, config, seed=7)
    b = train(mlp, blobs, config, seed=7)
    c = train(mlp, blobs, config, seed=8)
    assert a.ok and b.ok and c.ok
    assert a.val_acc == b.val_acc
    assert [s.train_loss for s in a.curve] == [s.train_loss for s in b.curve]
    assert [s.train_loss for s in a.curve] != [s.train_loss for s in c.curve]


def test_a_single_leftover_sample_is_dropped(blobs):
    # 301 = 3 * 100 + 1: a batch of one would break BatchNorm in training mode
    result = train(mlp, blobs, cfg(epochs=1, batch_size=100), seed=0)
    assert result.ok and result.samples == 300


def test_final_mode_trains_on_train_and_valid(blobs):
    result = train(mlp, blobs, cfg(epochs=4, batch_size=64), seed=0, final=True)
    assert result.ok and result.val_acc is None and result.test_acc > 0.8
    assert result.samples == 4 * 401
    assert all(c.val_acc is None for c in result.curve)


def test_accepts_a_module_and_reports_progress(blobs):
    seen = []
    result = train(mlp(), blobs, cfg(epochs=3, batch_size=128), seed=0, progress=seen.append)
    assert result.ok and [s.epoch for s in seen] == [1, 2, 3] and seen[0].epochs == 3
    assert seen[-1].seconds <= result.seconds


def test_restores_global_state(blobs):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    train(mlp, blobs, cfg(epochs=1), seed=0)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)


def test_nan_loss_is_a_failure(blobs):
    result = train(NaNNet, blobs, cfg(epochs=2), seed=0)
    assert not result.ok and result.reason == "nan_loss"
    assert "non-finite" in result.detail and result.val_acc is None


def test_time_budget_exceeded_is_a_failure(blobs):
    config = cfg(epochs=2, batch_size=32, seconds=0.2)  # ~10 steps of 50 ms per epoch
    result = train(SlowNet, blobs, config, seed=0)
    assert not result.ok and result.reason == "timeout" and "0.2 s" in result.detail
    assert result.epochs_run == 0 and 0 < result.samples < 301  # stopped mid-epoch, not at its end


def test_projected_overrun_stops_after_first_epoch(blobs):
    config = cfg(epochs=20, batch_size=128, seconds=2.0)  # ~0.15 s per epoch * 20 = 3 s
    result = train(lambda: SlowNet(0.05), blobs, config, seed=0)
    assert not result.ok and result.reason == "timeout" and "projected" in result.detail
    assert result.epochs_run == 1 and len(result.curve) == 1  # not one epoch more


def test_parameter_limit_rejects_before_training(blobs):
    calls = []
    model = mlp()
    model.register_forward_hook(lambda *a: calls.append(1))
    result = train(model, blobs, cfg(max_params=100), seed=0)
    assert not result.ok and result.reason == "too_large"
    assert "parameters > limit 100" in result.detail and result.params > 100
    assert calls == [] and result.epochs_run == 0


def test_activation_limit_rejects_before_training(blobs):
    result = train(mlp, blobs, cfg(max_activation_bytes=10_000), seed=0)
    assert not result.ok and result.reason == "too_large" and "activations" in result.detail


def test_check_size_estimate():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10))
    check = check_size(model, (1, 4, 4), batch_size=10, max_activation_bytes=10**9)
    # leaf outputs per sample: conv 128 + relu 128 + flatten 128 + linear 10 floats
    assert check.ok and check.activation_bytes == (128 * 3 + 10) * 4 * 10
    assert check_size(model, (1, 4, 4), 10, max_activation_bytes=10**9, activations=100).activation_bytes == 4000
    assert check_size(model, (1, 4, 4), 10).activation_bytes is None  # no limit: nothing runs
    assert not check_size(model, (1, 4, 4), 10, max_params=10).ok


@pytest.mark.parametrize(
    "error, reason, text",
    [
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied\nmore"), "runtime_error", "shapes cannot"),
        (ValueError("bad split size"), "runtime_error", "ValueError: bad split size"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "oom", "out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), "oom", "allocate"),
        (KeyError("missing"), "runtime_error", "KeyError: 'missing'"),  # outside the usual list
        (PluginError("plugin my_ops.py: op 'x' failed"), "plugin_error", "my_ops.py"),
    ],
)
def test_run_time_errors_are_failures(blobs, error, reason, text):
    result = train(lambda: Raises(error), blobs, cfg(epochs=1), seed=0)
    assert not result.ok and result.reason == reason and text in result.detail
    assert "\n" not in result.detail and result.reason in REASONS


def test_wrong_output_shape_is_a_failure(blobs):
    result = train(lambda: mlp(classes=7), blobs, cfg(epochs=1), seed=0)
    assert not result.ok and result.reason == "runtime_error" and "output shape" in result.detail


def test_learns_digits_with_default_budget():
    digits = load_dataset("digits")
    result = train(lambda: mlp(64, 10), digits, cfg(), seed=0, test=True)
    assert result.ok and result.val_acc > 0.85 and result.test_acc > 0.85


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="expected cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training(blobs):
    result = train(mlp, blobs, cfg(epochs=4, batch_size=64), seed=0, device="cuda", test=True)
    assert result.ok and result.device.startswith("cuda") and result.val_acc > 0.8
    nan = train(NaNNet, blobs, cfg(epochs=2), seed=0, device="cuda")
    assert nan.reason == "nan_loss"


class SlowFirstLeaf(nn.Module):
    """One step: a first leaf slower than the budget, then a second leaf that counts its calls."""

    def __init__(self, delay):
        super().__init__()
        self.first, self.second, self.delay, self.second_calls = nn.Linear(32, 32), nn.Linear(32, 4), delay, 0
        self.second.register_forward_pre_hook(lambda *a: setattr(self, "second_calls", self.second_calls + 1))

    def forward(self, x):
        x = self.first(x.flatten(1))
        time.sleep(self.delay)
        return self.second(x)


def test_time_budget_is_checked_inside_a_step(blobs):
    net = SlowFirstLeaf(1.5)  # the budget leaves room for the set-up on a busy machine
    result = train(net, blobs, cfg(epochs=1, batch_size=512, seconds=1.0), seed=0)  # one step per epoch
    assert not result.ok and result.reason == "timeout" and "inside a step" in result.detail
    # the sleep follows the first leaf, so the hook on the second leaf stops the step right after it
    assert net.second_calls == 1 and result.samples == 0
    assert not net.first._forward_hooks and not net.second._forward_hooks  # hooks removed afterwards


class _SlowBackward(torch.autograd.Function):
    """Identity forward; a backward slower than the budget."""

    @staticmethod
    def forward(ctx, x, delay):
        ctx.delay = delay
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        time.sleep(ctx.delay)
        return grad, None


class SlowBackwardNet(nn.Module):
    def __init__(self, delay):
        super().__init__()
        self.first, self.second, self.delay = nn.Linear(32, 32), nn.Linear(32, 4), delay

    def forward(self, x):
        return self.second(_SlowBackward.apply(self.first(x.flatten(1)), self.delay))


def test_time_budget_is_checked_inside_the_backward_pass(blobs):
    net = SlowBackwardNet(1.5)
    before = net.first.weight.detach().clone()
    # the budget leaves room for the set-up and a forward pass on a busy machine; the backward overruns it
    result = train(net, blobs, cfg(epochs=1, batch_size=512, seconds=1.0), seed=0)  # one step per epoch
    assert not result.ok and result.reason == "timeout" and "inside a backward pass" in result.detail
    assert result.samples == 0 and torch.equal(net.first.weight.detach(), before)  # no optimiser step taken


@pytest.fixture
def learning_rates(monkeypatch):
    """The learning rate of every optimiser step the trainer takes (SGD recorded)."""
    seen = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", Recording)
    return seen


def test_learning_rate_follows_the_cosine_schedule(blobs, learning_rates):
    seen = learning_rates
    result = train(mlp, blobs, cfg(epochs=4, batch_size=100, lr=0.1), seed=0)  # 3 steps per epoch
    assert result.ok and len(seen) == 12
    total = len(seen)
    expected = [0.05 * (1 + np.cos(np.pi * k / total)) for k in range(total)]
    assert seen == pytest.approx(expected)  # starts at lr, halves mid-way, anneals towards 0
    assert seen[0] == pytest.approx(0.1) and seen[-1] < 0.01


def test_random_shift_translates_each_image_within_the_bound():
    from einnas.evaluate.trainer import random_shift

    x = torch.zeros(64, 2, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the middle: its new place is the sample's offset
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    places = {tuple(torch.nonzero(s[0]).tolist()[0]) for s in shifted}
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in places) and len(places) > 10
    assert torch.equal(shifted[:, 0], shifted[:, 1])  # one offset per sample, all channels alike
    again = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    ramp = torch.arange(9.0).expand(8, 1, 9, 9).clone()  # edges are replicated, not zero-filled
    moved = random_shift(ramp, 3, torch.Generator().manual_seed(1))
    assert moved.min() == 0 and moved.max() == 8 and all(len(set(row.tolist())) >= 6 for row in moved[:, 0, 0])
    signal = torch.arange(12.0).reshape(1, 1, 1, 12).repeat(16, 1, 1, 1)  # a 1xL image moves along L only
    assert random_shift(signal, 2, torch.Generator().manual_seed(2)).shape == signal.shape


def test_auto_shift_only_for_images_large_enough():
    from einnas.evaluate.trainer import auto_shift

    assert auto_shift((1, 28, 28)) == 2 and auto_shift((3, 32, 16)) == 2
    assert auto_shift((1, 8, 8)) == 0 and auto_shift((3, 15, 64)) == 0 and auto_shift((1, 1, 40)) == 0
    assert auto_shift((40, 1)) == 0  # tokens


def test_shift_changes_training_but_not_its_determinism(blobs):
    plain = train(mlp, blobs, cfg(epochs=2, batch_size=64), seed=0)
    shifted = train(mlp, blobs, cfg(epochs=2, batch_size=64, shift=1), seed=0)
    again = train(mlp, blobs, cfg(epochs=2, batch_size=64, shift=1), seed=0)
    assert plain.ok and shifted.ok
    assert [s.train_loss for s in shifted.curve] == [s.train_loss for s in again.curve]
    assert [s.train_loss for s in shifted.curve] != [s.train_loss for s in plain.curve]


def test_fit_seconds_keeps_the_epochs_that_fit_and_anneals_over_them(blobs, learning_rates):
    seen = learning_rates
    # out of time from the start: the least epochs allowed, not a failure
    result = train(mlp, blobs, cfg(epochs=20, batch_size=100, lr=0.1, fit_seconds=0.0, fit_min_epochs=3), seed=0)
    assert result.ok and result.epochs_run == 3 and [s.epochs for s in result.curve] == [3, 3, 3]
    # epoch 1 on the schedule of 20 epochs (60 steps), the rest annealed over the 3 kept (9 steps)
    expected = [0.05 * (1 + np.cos(np.pi * k / 60)) for k in range(3)] \
        + [0.05 * (1 + np.cos(np.pi * k / 9)) for k in range(3, 9)]
    assert seen == pytest.approx(expected) and seen[-1] < 0.005
    seen.clear()
    assert train(mlp, blobs, cfg(epochs=4, batch_size=100, fit_seconds=1e6), seed=0).epochs_run == 4  # all fit
    # about 0.2 s an epoch (3 steps and a validation pass of 50 ms sleeps each): a second's worth is kept
    slow = train(lambda: SlowNet(0.05), blobs, cfg(epochs=50, batch_size=128, fit_seconds=1.0), seed=0)
    assert slow.ok and 1 <= slow.epochs_run <= 6
