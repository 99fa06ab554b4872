"""Seeds scaled to a budget and fitted to every built-in input; sequences viewed as images."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from einnas.errors import ArchitectureError, DatasetError
from einnas.grammar import build_network, default_grammar, parse_arch, resolve_arch
from einnas.grammar.registry import IMAGE, TOKENS
from einnas.grammar.scaling import epoch_seconds, estimate, fit_to_input
from einnas.grammar.seeds import (
    SCALES, SEED_NAMES, SeedBudget, budget_for_training, parse_seed_name, scaled_seed, seed_arch, seeds_for,
)

REFERENCES = Path(__file__).parents[2] / "grammar" / "references"
# The input of every built-in dataset in every view: digits, mnist1d as a 1x40 image
# (the default view) and as tokens, mnist5k.
SHAPES = [(1, 8, 8), (1, 1, 40), (40, 1), (1, 28, 28)]


def torch_params(arch, shape, classes=10):
    return sum(p.numel() for p in build_network(arch, shape, classes).parameters())


def widths(arch) -> set[int]:
    """The linear(N) widths an architecture names (from its derivation tree)."""
    grammar = arch.grammar
    out = set()
    for node in arch.tree.walk():
        op = grammar.rules[node.rule].alternatives[node.alt].op
        if op is not None and op.name == "linear":
            out.add(op.args[0])
    return out


@pytest.mark.parametrize("name", SEED_NAMES)
@pytest.mark.parametrize("multiplier,depth", [(0.25, 1.0), (0.0625, 1.0), (0.03125, 0.5)])
def test_scaled_seed_analytic_params_match_torch(name, multiplier, depth):
    for shape in [(1, 28, 28), (40, 1)]:
        arch = seed_arch(name, multiplier, input_shape=shape, depth=depth)
        assert estimate(arch, shape, 10).params == arch.info.params == torch_params(arch, shape)


def larger(name, seed, shape):
    """The next larger rung of the scaling ladder above a ScaledSeed."""
    if seed.depth < 1:
        return seed_arch(name, seed.width, input_shape=shape, depth=min(1.0, seed.depth * 2))
    return seed_arch(name, seed.width * 2, input_shape=shape)


def test_width_multiplier_scales_and_snaps_to_grammar_widths():
    full, quarter = resolve_arch("resnet18"), resolve_arch("resnet18@0.25")
    assert widths(full) == {64, 128, 256, 512}
    assert widths(quarter) == {16, 32, 64, 128}
    # 1/8 of 64 is 8, below the grammar's smallest linear width: snapped to 16.
    assert widths(resolve_arch("resnet18@0.125")) == {16, 32, 64}
    assert resolve_arch("resnet18@1/4").archid == quarter.archid
    # The scaled string is in the grammar's language: it parses back to itself.
    assert parse_arch(quarter.string).archid == quarter.archid
    # Relative widths (linear_x / linear_div of the Mixer) are left alone.
    assert "linear_x(4)" in resolve_arch("mlp_mixer@0.125").string


@pytest.mark.parametrize("text", ["resnet18@0", "resnet18@100", "vit@-1", "vit@0.5d2"])
def test_bad_multiplier_is_an_architecture_error(text):
    with pytest.raises(ArchitectureError):
        resolve_arch(text)


def test_seed_names():
    assert parse_seed_name("vit") == ("vit", 1.0, 1.0)
    assert parse_seed_name(" wrn16_4@0.5 ") == ("wrn16_4", 0.5, 1.0)
    assert parse_seed_name("vit@1/32d0.5") == ("vit", 0.03125, 0.5)
    assert parse_seed_name("linear(64)") is None and parse_seed_name("alexnet@0.5") is None
    with pytest.raises(ArchitectureError, match="NAME@MULTIPLIER"):
        resolve_arch("alexnet@0.5")


@pytest.mark.parametrize("name", SEED_NAMES)
def test_chosen_scale_is_the_largest_that_fits(name):
    shape = (1, 28, 28)
    limit = 200_000
    seed = scaled_seed(name, shape, 10, max_params=limit)
    assert seed.arch.info.params <= limit
    if seed.width != SCALES[0]:
        assert estimate(larger(name, seed, shape), shape, 10).params > limit
    # A MAC bound is honoured the same way.
    seed = scaled_seed(name, shape, 10, max_macs=20_000_000)
    assert estimate(seed.arch, shape, 10).macs <= 20_000_000
    if seed.width != SCALES[0]:
        assert estimate(larger(name, seed, shape), shape, 10).macs > 20_000_000


def test_depth_multiplier_drops_repeated_blocks():
    shape = (1, 1, 40)
    full, half = seed_arch("resnet18", 0.25, input_shape=shape), seed_arch("resnet18", 0.25, input_shape=shape, depth=0.5)
    assert half.info.terminals < full.info.terminals and half.info.params < full.info.params
    assert half.info.output == full.info.output  # stage transitions stay: same output shape
    assert widths(half) == widths(full)
    assert resolve_arch("resnet18@0.25d0.5", input_shape=shape).archid == half.archid
    with pytest.raises(ArchitectureError, match="needs the input shape"):
        resolve_arch("resnet18@0.25d0.5")


@pytest.mark.parametrize("name", ["resnet18", "vit"])
def test_chosen_scale_is_the_largest_within_the_time_estimate(name):
    shape, budget = (1, 28, 28), budget_for_training(3000, 8, 60.0)
    seed = scaled_seed(name, shape, 10, budget=budget)
    figures = estimate(seed.arch, shape, 10)
    assert epoch_seconds(figures, 3000) <= 60.0 / 8 and seed.width < 1
    bigger = estimate(larger(name, seed, shape), shape, 10)
    assert epoch_seconds(bigger, 3000) > 60.0 / 8
    # The estimate grows with every figure it is made of.
    assert epoch_seconds(bigger, 3000) > epoch_seconds(figures, 3000) > epoch_seconds(figures, 1000)


def test_a_seed_that_fits_nowhere_is_its_smallest_scale_not_dropped():
    seed = scaled_seed("resnet18", (1, 8, 8), 10, max_params=10)
    assert seed.label == "resnet18@0.03125d0.25" and seed.arch.info.params > 10
    assert widths(seed.arch) == {16}  # every width at the grammar's smallest
    labels = [label for label, _ in seeds_for((1, 8, 8), 10, SeedBudget(max_params=10))]
    assert [label.split("@")[0] for label in labels] == list(SEED_NAMES)


def test_seeds_for_a_training_budget():
    budget = budget_for_training(1077, 8, 10.0, max_params=1_000_000)
    assert budget.max_epoch_seconds == 10.0 / 8 and budget.train_size == 1077
    seeds = seeds_for((1, 8, 8), 10, budget)
    assert [label.split("@")[0] for label, _ in seeds] == list(SEED_NAMES)
    for label, arch in seeds:
        assert "@" in label  # none fits at full width
        assert resolve_arch(label, input_shape=(1, 8, 8)).archid == arch.archid  # the label names it
        assert budget.fits(estimate(arch, (1, 8, 8), 10))  # digits is small: every seed has a form that fits


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_has_a_form_for_every_builtin_input(name, shape):
    arch = seed_arch(name, 0.0625, input_shape=shape)
    net = build_network(arch, shape, 10)
    x = torch.randn(4, *shape)
    out = net(x)
    assert out.shape == (4, 10)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_token_form_replaces_convolutions_and_patch_embeddings():
    grammar = default_grammar()
    for name in ("resnet18", "vit"):
        arch = seed_arch(name, 0.25, grammar, input_shape=(40, 1))
        assert "im2col" not in arch.string and "col2im" not in arch.string
        assert arch.info.output.mode == TOKENS
    # A 4x4 patch embedding cannot cut a 1x40 image: the closest im2col that applies.
    vit = seed_arch("vit", 0.25, grammar, input_shape=(1, 1, 40))
    assert "sequential(routing[im2col(3,2,1), linear(128), identity]" in vit.string and "im2col(4,4,0)" not in vit.string
    # ResNet keeps its convolutions on the image view: nothing to repair.
    resnet = seed_arch("resnet18", 0.25, grammar)
    assert fit_to_input(resnet, (1, 1, 40)).archid == resnet.archid


def test_token_models_pool_over_tokens_and_classify_features():
    vit = seed_arch("vit", 0.25, input_shape=(1, 8, 8))
    assert vit.info.output.shape == (128, 4)  # features first: the head averages the 4 tokens
    assert build_network(vit, (1, 8, 8), 10).classifier.in_features == 128
    # ResNet on tokens is not a token model: it keeps the per-position head.
    resnet = seed_arch("resnet18", 0.25, input_shape=(40, 1))
    assert resnet.info.output.shape == (40, 128)
    # Without an input shape the seed is the stored one (the paper's head and size).
    assert "permute(2,1)]" not in resolve_arch("vit").string[-40:]


def test_an_unfixable_architecture_still_raises():
    # add of a 16-wide and a 32-wide branch: no leaf replacement makes it apply.
    arch = parse_arch("branching(2){clone(2), linear(16), linear(32), add}")
    with pytest.raises(ArchitectureError, match="add"):
        fit_to_input(arch, (40, 1))


def test_sequence_image_view():
    from einnas.evaluate import load_dataset
    from einnas.evaluate.datasets import with_view

    tokens = load_dataset("mnist1d")
    image = load_dataset("mnist1d", view="image")
    assert tokens.input_shape == (40, 1) and image.input_shape == (1, 1, 40) and image.mode == IMAGE
    assert image.train[0].shape == (3200, 1, 1, 40)
    assert torch.equal(image.valid[0][:, 0, 0, :], tokens.valid[0][:, :, 0])
    assert torch.equal(image.test[1], tokens.test[1])
    assert load_dataset("mnist1d", view="auto").input_shape == (1, 1, 40)  # a 1-channel signal
    digits = load_dataset("digits")
    assert with_view(digits, "tokens") is digits and with_view(digits, "image") is digits
    with pytest.raises(DatasetError, match="--view 'sideways'"):
        load_dataset("digits", view="sideways")


def test_im2col_on_a_one_row_image_is_a_1d_convolution():
    arch = parse_arch("routing[im2col(3,1,1), linear(16), col2im]")
    torch.manual_seed(0)
    net = build_network(arch, (2, 1, 12), 10, fuse=False)
    conv = net.backbone
    linear = next(m for m in conv.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(3, 2, 1, 12)
    # Unfold columns are (C, kh, kw); the padded rows kh = 0, 2 only ever see zeros.
    weight = linear.weight.reshape(16, 2, 3, 3)[:, :, 1, :]
    expected = torch.nn.functional.conv1d(x[:, :, 0, :], weight, linear.bias, padding=1)
    assert torch.allclose(conv(x)[:, :, 0, :], expected, atol=1e-5)


def test_a_1d_cnn_trains_on_the_image_view():
    from einnas.evaluate import TrainConfig, load_dataset, train

    dataset = load_dataset("mnist1d", view="image")
    arch = resolve_arch(f"@{REFERENCES / 'digits_cnn3.arch'}")  # three convs: 40 -> 20 -> 10 columns
    result = train(lambda: build_network(arch, dataset.input_shape, 10), dataset,
                   TrainConfig(epochs=4, threads=1), seed=0)
    assert result.ok and result.val_acc > 0.4  # chance 0.1; an MLP reaches ~0.3 in 8 epochs


@pytest.mark.parametrize("name", sorted(p.stem for p in REFERENCES.glob("*.arch")))
def test_reference_architectures_build_for_their_task(name):
    task = name.split("_")[0]
    shape, classes = {"digits": ((1, 8, 8), 10), "mnist1d": ((1, 1, 40), 10), "mnist5k": ((1, 28, 28), 10),
                      "addnist5k": ((3, 28, 28), 20)}[task]
    arch = resolve_arch(f"@{REFERENCES / f'{name}.arch'}")
    net = build_network(arch, shape, classes)
    assert net(torch.randn(2, *shape)).shape == (2, classes)


def test_built_networks_pickle_and_round_trip():
    arch = seed_arch("vit", 0.125, input_shape=(1, 8, 8))  # every op class of the seeds but group
    net = build_network(arch, (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    clone = pickle.loads(pickle.dumps(net))
    assert torch.equal(clone(x), net(x))
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)  # our own object, written just above
    assert torch.equal(loaded(x), net(x))
    grouped = build_network(parse_arch("branching(2){group(2,1), linear(16), linear(16), cat(1)}"), (4, 6), 3)
    assert pickle.loads(pickle.dumps(grouped))(torch.ones(1, 4, 6)).shape == (1, 3)


def test_loading_the_grammar_does_not_import_torch():
    code = "import sys, einnas.grammar, einnas.cli; einnas.grammar.resolve_arch('resnet18@0.25'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_init_mix_on_mnist1d_runs_the_seeds(tmp_path, capsys):
    from einnas.cli import main

    code = main(["search", "--dataset", "mnist1d", "--init", "mix", "--trials", "5", "--epochs", "1",
                 "--seconds", "30", "--threads", "1", "--max-params", "100000", "--max-activations", "100000",
                 "--no-final", "-q", "-f", "json", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    seeds = [row for row in report["top"] if row["origin"].startswith("seed:")]
    # Every seed was scaled (a label NAME@SCALE), fitted to the 1x40 image and trained.
    assert sorted(row["origin"].split(":")[1].split("@")[0] for row in seeds) == sorted(SEED_NAMES)
    assert all("@" in row["origin"] and row["val_acc"] is not None for row in seeds)
    assert report["settings"]["input_shape"] == [1, 1, 40]  # the task records the view's shape
