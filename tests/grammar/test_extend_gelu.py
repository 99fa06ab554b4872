"""Extending the grammar by editing the file: gelu, and every other extra registered op.

A copy of the default grammar with one added alternative must check, sample the new
op, build, train, export to ONNX and be described (the issue's acceptance path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from einnas.cli import main
from einnas.grammar import DEFAULT_GRAMMAR, REGISTRY, Limits, build_network, grammar_from_text, load_grammar, sample
from einnas.grammar.check import check_grammar

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "grammars" / "einspace_gelu.lark"
SMALL = Limits(max_params=30_000, max_activations=60_000)  # quick to train on a shared CPU
SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def gelu_archs():
    """The smallest sampled architectures that use gelu, for an 8x8 RGB input."""
    archs = sample(load_grammar(EXAMPLE), 80, seed=1, input_shape=SHAPE, num_classes=4, limits=SMALL)
    found = sorted((a for a in archs if "gelu" in a.string), key=lambda a: a.info.params)
    assert found, "gelu should appear in 80 samples"
    return found[:3]


def test_example_is_the_default_grammar_plus_one_line():
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    added = [line for line in lines if line.strip().startswith('| "gelu"')]
    assert len(added) == 1
    rest = "".join(line for line in lines if line not in added)
    assert rest.endswith(DEFAULT_GRAMMAR.read_text())
    assert all(line.startswith("//") for line in rest[: -len(DEFAULT_GRAMMAR.read_text())].splitlines())


def test_grammar_check_passes(capsys):
    assert main(["grammar", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "(sub-critical)" in out and "verdict: usable" in out
    assert any('"gelu"' in line and "0.0714" in line for line in out.splitlines())  # 1/14 of the leaves
    report = check_grammar(load_grammar(EXAMPLE))
    assert "gelu" in report.ops_sampled and "gelu" not in report.available


def test_sample_200_contains_gelu(capsys):
    assert main(["sample", "-n", "200", "--grammar", str(EXAMPLE), "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 200
    with_gelu = [r for r in rows if "gelu" in r["arch"]]
    assert 10 <= len(with_gelu) <= 120  # about a quarter of the samples use it
    # the same seed without gelu never names it
    assert main(["sample", "-n", "20", "-f", "json"]) == 0
    assert "gelu" not in capsys.readouterr().out


def test_gelu_samples_build_and_train(gelu_archs):
    from einnas.evaluate import TrainConfig, from_arrays, train

    torch.manual_seed(0)
    for arch in gelu_archs:
        net = build_network(arch, SHAPE, 4)
        assert any(isinstance(m, torch.nn.GELU) for m in net.modules())
        assert sum(p.numel() for p in net.parameters()) == arch.info.params
        net(torch.randn(2, *SHAPE)).square().mean().backward()
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 4, n)
        return rng.normal(0, 1, (n, *SHAPE)) + y[:, None, None, None], y

    data = from_arrays("tiny", split(64), split(32), split(32))
    arch = gelu_archs[0]
    result = train(lambda: build_network(arch, SHAPE, 4), data, TrainConfig(epochs=1, threads=1), seed=0)
    assert result.ok, (result.reason, result.detail)
    assert 0.0 <= result.val_acc <= 1.0


def test_gelu_exports_to_onnx_and_is_described(gelu_archs):
    export = pytest.importorskip("einnas.grammar.export")
    describe = pytest.importorskip("einnas.surrogate.describe")
    torch.manual_seed(0)
    net = build_network(gelu_archs[0], SHAPE, 4)
    proto = export.export_onnx(net, SHAPE, 4)
    ops = {node.op_type for node in proto.graph.node}
    assert "Gelu" in ops or "Erf" in ops, ops  # opset < 20 writes GELU with Erf
    assert export.compare_with_torch(net, proto, SHAPE) < 1e-4
    text = describe.describe(proto).text
    assert "Gelu" in text or "Erf" in text


def _extra_op_text(name: str) -> str:
    """The op written with arguments its kind of op accepts (a width factor or k,s,p)."""
    nargs = REGISTRY.get(name).nargs
    args = {0: "", 1: "(2)", 3: "(3,1,1)"}[next(n for n in (0, 1, 3) if nargs is None or n in nargs)]
    return name + args


@pytest.mark.parametrize("name", [n for n in REGISTRY.names() if not REGISTRY.get(n).sampled
                                  and REGISTRY.get(n).source == "einnas" and REGISTRY.get(n).kind == "map"])
def test_every_extra_op_is_used_by_naming_it(name):
    """Each registered extra map op works after adding one line to a grammar copy (the
    extra join, sum, is tested in test_ops_extra.py)."""
    text = DEFAULT_GRAMMAR.read_text()
    anchor = '           | "pos_enc"\n'
    op = _extra_op_text(name)
    grammar = grammar_from_text(text.replace(anchor, anchor + f'           | "{op}"   // p=0.2\n'), f"{name}.lark")
    assert op in check_grammar(grammar).ops_sampled
    archs = sample(grammar, 40, seed=2, input_shape=(4, 8, 8), num_classes=3, limits=SMALL)
    archs.sort(key=lambda a: a.info.params)
    used = [a for a in archs if op in a.string]
    assert used, f"{op} never sampled"
    net = build_network(used[0], (4, 8, 8), 3)
    assert net(torch.randn(2, 4, 8, 8)).shape == (2, 3)
    assert sum(p.numel() for p in net.parameters()) == used[0].info.params
