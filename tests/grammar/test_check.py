"""`einnas grammar check`: reachability, termination, the mean matrix and its radius.

The size figures are checked against closed forms (einspace's critical probability
4/13, its built-network value 14/23, the expected module count) and against the
sampler on toy grammars, not against numbers copied from the implementation.
"""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from einnas.cli import main
from einnas.errors import ArchitectureError
from einnas.grammar import DEFAULT_GRAMMAR, REGISTRY, Limits, grammar_from_text, load_grammar, sample
from einnas.grammar.check import check_grammar, op_rows

DEFAULT_TEXT = DEFAULT_GRAMMAR.read_text()


def with_p(p: float) -> str:
    """The default grammar with p(module -> computation) = p, the rest shared as in einspace."""
    text = DEFAULT_TEXT.replace("// p=0.32", f"// p={p!r}").replace("(1-0.32)", f"(1-{p!r})")
    assert text != DEFAULT_TEXT or p == 0.32
    return text


def test_default_grammar_figures_match_the_closed_forms():
    report = check_grammar(load_grammar())
    p = 0.32
    mean = 13 * (1 - p) / 9  # new modules per module (reference §2.6)
    assert report.ok and report.subcritical
    assert report.modules == ["module"]
    assert report.module_mean == pytest.approx(mean)
    # The radius over all nonterminals: module -> structure -> module is two steps.
    assert report.radius == pytest.approx(math.sqrt(mean))
    # From `start`: the network makes 13/9 modules, each the root of 1/(1-mean) of them.
    assert report.expected_modules == pytest.approx(13 / 9 / (1 - mean))
    assert report.critical["p"] == pytest.approx(p)
    assert report.critical["p_critical"] == pytest.approx(4 / 13, abs=1e-9)
    assert report.critical["p_critical_built"] == pytest.approx(14 / 23, abs=1e-9)
    assert report.radius_built > 1 and math.isinf(report.expected_leaves_built)
    assert any(w.startswith("near-critical") for w in report.warnings)


@pytest.mark.parametrize("eps", [0.002, -0.002])
def test_radius_crosses_one_at_four_thirteenths(eps):
    report = check_grammar(grammar_from_text(with_p(4 / 13 + eps)))
    assert report.subcritical == (eps > 0)
    assert (report.radius < 1) == (eps > 0) and abs(report.radius - 1) < 0.01
    assert math.isinf(report.expected_modules) == (eps < 0)


@pytest.mark.parametrize("eps", [0.002, -0.002])
def test_built_radius_crosses_one_at_fourteen_twentythirds(eps):
    report = check_grammar(grammar_from_text(with_p(14 / 23 + eps)))
    assert (report.radius_built < 1) == (eps > 0)
    assert math.isinf(report.expected_leaves_built) == (eps < 0)


def test_registry_and_default_grammar_agree_both_ways():
    report = check_grammar(load_grammar())
    builtin = [n for n in REGISTRY.names() if REGISTRY.get(n).source == "einnas"]
    # every op sampled by default is sampled by the default grammar ...
    assert [n for n in report.missing if n in builtin] == []
    # ... and every other built-in is an explicit extra or a parse-only seed op
    named = {t.split("(")[0] for t in report.ops_sampled}
    for name in builtin:
        assert (name in named) == REGISTRY.get(name).sampled, name
    assert report.ops_parse_only == ["linear_x(4)", "linear_div(4)"]
    assert {"gelu", "relu", "maxpool"} <= set(report.available)


TOY = """
start: module
module: "relu"                                // p={leaf}
      | "sequential(" module "," module ")"
{extra}
"""
BRANCHY = """
start: module
module: "relu"                                // p={leaf}
      | "branching(4){{" split "," module "," join "}}"
split: "clone(4)"
join: "add"
"""


def _mean_terminals(grammar, n=1500):
    archs = sample(grammar, n, seed=7, input_shape=(4, 8), limits=Limits(max_depth=60, max_nodes=10_000))
    return sum(a.info.terminals for a in archs) / n


def test_expected_leaves_match_the_sampler():
    # sequential: each module makes 2(1-leaf) modules; leaves = modules * leaf
    leaf = 0.7
    report = check_grammar(grammar_from_text(TOY.format(leaf=leaf, extra="")))
    assert report.expected_modules == pytest.approx(1 / (1 - 2 * (1 - leaf)))
    assert report.expected_leaves == pytest.approx(report.expected_modules * leaf)
    assert _mean_terminals(grammar_from_text(TOY.format(leaf=leaf, extra=""))) == pytest.approx(
        report.expected_leaves, rel=0.12)


def test_built_leaves_count_branch_copies():
    leaf = 0.9
    grammar = grammar_from_text(BRANCHY.format(leaf=leaf))
    report = check_grammar(grammar)
    # derivation: L = leaf + (1-leaf)(2 + L); built: L = leaf + (1-leaf)(2 + 4L)
    assert report.expected_leaves == pytest.approx((leaf + 2 * (1 - leaf)) / leaf)
    built = (leaf + 2 * (1 - leaf)) / (1 - 4 * (1 - leaf))
    assert report.expected_leaves_built == pytest.approx(built)
    assert _mean_terminals(grammar) == pytest.approx(built, rel=0.15)


def test_unreachable_rules_and_silent_zero_probabilities_are_warned():
    text = TOY.format(leaf=0.7, extra='orphan: "relu" | "gelu"\nextra: "relu"')
    text = text.replace('"relu"                                // p={leaf}'.format(leaf=0.7), '"relu"  // p=0.7')
    report = check_grammar(grammar_from_text(text, "toy.lark"))
    assert report.ok
    unreachable = [w for w in report.warnings if "not reachable" in w]
    assert len(unreachable) == 2 and "'orphan'" in unreachable[0]
    zero = grammar_from_text(text.replace('| "sequential(" module "," module ")"',
                                          '| "sequential(" module "," module ")"  // p=0.3\n      | "gelu"'))
    assert any("gets probability 0" in w and '"gelu"' in w for w in check_grammar(zero).warnings)


def test_super_critical_grammar_is_reported_and_sampling_still_ends():
    grammar = grammar_from_text(with_p(0.2), "super.lark")
    report = check_grammar(grammar)
    assert not report.subcritical and report.ok
    assert math.isinf(report.expected_modules) and report.as_dict()["expected_modules"] == "infinite"
    (warning,) = [w for w in report.warnings if w.startswith("super-critical")]
    assert "0.3077" in warning and "limits" in warning
    limits = Limits()
    archs = sample(grammar, 15, seed=3, input_shape=(3, 16, 16), limits=limits)
    assert all(a.info.depth <= limits.max_depth + 1 for a in archs)
    # a budget too small for any network ends with a clear error, not a hang
    with pytest.raises(ArchitectureError, match="within the limits"):
        sample(grammar, 1, seed=0, input_shape=(3, 16, 16), limits=Limits(max_steps=3, max_restarts=5))


def test_rules_that_cannot_end_are_errors(capsys, tmp_path):
    path = tmp_path / "loop.lark"
    path.write_text(with_p(0.0))
    report = check_grammar(load_grammar(path))
    assert not report.ok and any("'module'" in e and "no terminating derivation" in e for e in report.errors)
    assert main(["grammar", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("einnas grammar check: error:") and "loop.lark" in err[0]
    with pytest.raises(ArchitectureError, match="no derivation from 'start'"):
        sample(load_grammar(path), 1, seed=0)


def test_cli_default_table_and_json(capsys):
    assert main(["grammar", "check"]) == 0
    out = capsys.readouterr().out
    assert "(sub-critical)" in out and re.search(r"expected modules per network\s+81\.2", out)
    assert re.search(r'0\.3200 / 0\.3077', out) and "leakyrelu" in out and "verdict: usable" in out
    assert main(["grammar", "check", "-f", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["subcritical"] and data["critical"]["rule"] == "module"
    assert len(data["mean"]) == len(data["nonterminals"])
    assert {row["op"] for row in data["ops"]} == set(REGISTRY.names())


def test_cli_list_ops_filters_with_wildcards(capsys):
    assert main(["grammar", "check", "--list-ops", "linear*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["op", "kind", "args"]
    assert [line.split()[0] for line in lines[1:]] == ["linear", "linear_div", "linear_x"]
    assert main(["grammar", "check", "--list-ops", "*pool", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["op"] for r in rows} == {"maxpool", "avgpool", "global_avgpool"}
    assert all(r["args"] == ("0" if r["op"] == "global_avgpool" else "3") for r in rows)
    assert [r["op"] for r in op_rows("relu")] == ["relu"]


def test_cli_super_critical_exit_zero_with_warning(capsys, tmp_path):
    path = tmp_path / "super.lark"
    path.write_text(with_p(0.2))
    assert main(["grammar", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(SUPER-critical)" in out and "warning: super-critical" in out and "expected modules per network" in out
    random.seed(0)  # the CLI's sampling must not depend on global randomness
    assert main(["sample", "-n", "5", "--grammar", str(path), "--input-shape", "3,16,16"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 6
