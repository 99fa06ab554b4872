"""Parser, printer, archid, seeds and errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from einnas.errors import ArchitectureError
from einnas.grammar import SEED_NAMES, analyse, archid_of, build_network, load_grammar, parse_arch, resolve_arch
from einnas.grammar.tree import to_pretty

# Parameter counts at input 3x64x64 with 10 classes, from the einspace reference
# (official dicts through the official compiler).
REFERENCE_PARAMS = {"resnet18": 11_178_762, "wrn16_4": 2_751_146, "vit": 4_370_442, "mlp_mixer": 6_474_762}


@pytest.fixture(scope="module")
def grammar():
    return load_grammar()


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_parameter_counts_match_reference(grammar, name):
    arch = resolve_arch(name, grammar)
    info = analyse(arch, (3, 64, 64), 10)
    assert abs(info.params / REFERENCE_PARAMS[name] - 1) < 0.05
    # round trip of the canonical string, and of the pretty layout
    assert parse_arch(arch.string, grammar).string == arch.string
    assert parse_arch(to_pretty(grammar, arch.tree), grammar).string == arch.string


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seeds_run(grammar, name):
    arch = resolve_arch(name, grammar)
    net = build_network(arch, (3, 32, 32), 7)
    assert sum(p.numel() for p in net.parameters()) == analyse(arch, (3, 32, 32), 7).params
    out = net.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_whitespace_and_comments_are_free(grammar):
    canonical = "sequential(linear(64), branching(2){clone(2), norm, identity, add})"
    messy = "sequential( linear(64) ,\n  // a comment\n  branching(2){ clone(2),norm , identity,add } )"
    assert parse_arch(messy, grammar).string == canonical
    assert parse_arch(canonical, grammar).archid == archid_of(canonical)
    assert len(archid_of(canonical)) == 12


def test_conv_fusion_equals_unfused(grammar):
    arch = parse_arch("sequential(routing[im2col(3,2,1), linear(16), col2im], leakyrelu)", grammar)
    torch.manual_seed(0)
    fused = build_network(arch, (3, 9, 9), 5, fuse=True)
    plain = build_network(arch, (3, 9, 9), 5, fuse=False)
    conv = fused.backbone.stages[0]
    assert isinstance(conv, torch.nn.Conv2d)
    linear = plain.backbone.stages[0].stages[1]
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(16, -1))
        linear.bias.copy_(conv.bias)
        plain.classifier.load_state_dict(fused.classifier.state_dict())
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(fused(x), plain(x), atol=1e-5)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("sequential(linear(64), norm", "end of the architecture string"),
        ("sequential(linear(64) norm)", "line 1, column 23"),
        ("sequential(linaer(64), norm)", "line 1, column 12: unknown operation 'linaer(64)'"),
        ("sequential(linear(65), norm)", "line 1, column 12: operation 'linear(65)' is registered but not in"),
        ("sequential(linear(64), norm) extra", "line 1, column 30"),
    ],
)
def test_syntax_errors_have_positions(grammar, text, fragment):
    with pytest.raises(ArchitectureError, match=re.escape(fragment)):
        parse_arch(text, grammar)


def test_shape_errors_name_the_node(grammar):
    arch = parse_arch("sequential(linear(64),\n routing[identity, identity, col2im])", grammar)
    with pytest.raises(ArchitectureError, match=r"'col2im' at line 2, column 30"):
        analyse(arch, (3, 8, 8))
    joined = parse_arch("branching(2){clone(2), linear(16), linear(32), add}", grammar)
    with pytest.raises(ArchitectureError, match="add needs equal shapes"):
        analyse(joined, (3, 8, 8))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "einnas.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--input-shape", "0,-3"],
        ["sample", "--input-shape", "3,a,3"],
        ["sample", "--grammar", "missing.lark"],
    ],
)
def test_cli_bad_input_is_one_line(args):
    result = _cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_cli_bad_grammar_file(tmp_path):
    bad = tmp_path / "bad.lark"
    bad.write_text('start: network\nnetwork: "linear(8)" |\n   | : oops\n')
    result = _cli("sample", "--grammar", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("note", ["p=abc", "p=0.5x", "p="])
def test_probability_that_is_not_a_number_is_an_error_with_file_and_line(note, tmp_path):
    from einnas.errors import GrammarError
    from einnas.grammar import DEFAULT_GRAMMAR, load_grammar

    lines = DEFAULT_GRAMMAR.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith('computation: "identity"'))
    lines[number - 1] += f"   // {note}"
    path = tmp_path / "bad_p.lark"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GrammarError, match=rf"bad_p.lark:{number}: probability .* after 'p='"):
        load_grammar(path)
    result = _cli("grammar", "check", str(path))
    assert result.returncode == 2 and f"bad_p.lark:{number}:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
