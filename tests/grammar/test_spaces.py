"""The conventional search spaces shipped in grammar/spaces/, and `--grammar NAME`.

Each family must load, pass `grammar check` (sub-critical), be an unambiguous LALR(1)
grammar (so every sampled string parses back to the same derivation), sample valid
networks at the issue's image sizes, and build them with the analytic parameter
count. The ONNX side (every op type of the onnx model zoo) is in test_zoo_coverage.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from einnas.cli import main
from einnas.errors import GrammarError
from einnas.grammar import (
    DEFAULT_GRAMMAR, Limits, build_network, load_grammar, parse_arch, resolve_grammar, sample, space_names,
)
from einnas.grammar.check import check_grammar

SPACES = DEFAULT_GRAMMAR.parent / "spaces"
FAMILIES = ["cnn", "resnet", "mobilenet", "transformer", "mlp"]
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 28, 28), (3, 32, 32)]
SMALL = Limits(max_params=300_000, max_activations=300_000)  # quick to build on a shared CPU


def test_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
    assert resolve_grammar(None) == resolve_grammar("einspace") == DEFAULT_GRAMMAR
    assert resolve_grammar("cnn") == SPACES / "cnn.lark"
    assert set(FAMILIES) | {"einspace", "einspace_extra"} <= set(space_names())
    own = tmp_path / "mine.lark"
    own.write_text(DEFAULT_GRAMMAR.read_text())
    assert resolve_grammar(str(own)) == own  # a path still works
    monkeypatch.chdir(tmp_path)
    Path("cnn").write_text("start: x\n")  # a file named like a space: the space wins ...
    assert resolve_grammar("cnn") == SPACES / "cnn.lark"
    assert resolve_grammar("./cnn") == Path("./cnn")  # ... unless written as a path
    Path("plain").write_text(DEFAULT_GRAMMAR.read_text())
    assert resolve_grammar("plain") == Path("plain")  # a bare name that is only a file
    with pytest.raises(GrammarError, match=r"unknown grammar 'cnnn'.*available: einspace, .*resnet"):
        resolve_grammar("cnnn")


def test_cli_takes_a_space_name_and_refuses_an_unknown_one(capsys):
    assert main(["sample", "-n", "3", "--grammar", "resnet", "--input-shape", "1,8,8", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and all(r["arch"].startswith("sequential(sequential(") for r in rows)
    assert all("branching(2){clone(2)" in r["arch"] or "routing[im2col" in r["arch"] for r in rows)
    assert main(["sample", "-n", "1", "--grammar", "nosuchspace"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuchspace" in err[0] and "cnn" in err[0] and "mlp" in err[0]
    assert main(["grammar", "check", "--list-spaces", "-f", "json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(FAMILIES) <= set(listed) and listed["cnn"]["file"] == "grammar/spaces/cnn.lark"


def _lalr_conflicts(text: str) -> list[str]:
    """Lark resolves shift/reduce conflicts silently (as shift): collect them from its log."""
    import lark

    found = []

    class Collect(logging.Handler):
        def emit(self, record):
            if "onflict" in record.getMessage() or "ollision" in record.getMessage():
                found.append(record.getMessage())

    logger, handler = logging.getLogger("lark"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        lark.Lark(text, parser="lalr", lexer="contextual", keep_all_tokens=True, debug=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return found


@pytest.mark.parametrize("name", FAMILIES)
def test_family_checks_subcritical_and_unambiguous(name):
    grammar = load_grammar(name)
    report = check_grammar(grammar)
    assert report.ok and report.subcritical, report.errors
    assert _lalr_conflicts(grammar.text) == []
    assert grammar.text.count("//") > 10  # documented for users who extend it


def test_conflict_detector_sees_an_ambiguous_list():
    ambiguous = (
        'start: net\nnet: items | "sequential(" items "," tail ")"\n'
        'items: item | "sequential(" item "," items ")"\nitem: "relu"\ntail: "norm"\n'
    )
    assert _lalr_conflicts(ambiguous)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_family_samples_round_trip_and_build(name, shape):
    grammar = load_grammar(name)
    archs = sample(grammar, 12, seed=3, input_shape=shape, num_classes=10, limits=SMALL)
    assert len({a.string for a in archs}) >= 6  # a space, not a handful of nets
    for arch in archs:
        again = parse_arch(arch.string, grammar)
        assert again.string == arch.string
        assert [(n.rule, n.alt) for n in again.tree.walk()] == [(n.rule, n.alt) for n in arch.tree.walk()]
    torch.manual_seed(0)
    for arch in sorted(archs, key=lambda a: a.info.params)[:2]:
        net = build_network(arch, shape, 10)
        assert sum(p.numel() for p in net.parameters()) == arch.info.params
        assert net.eval()(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("name, marker, share", [
    ("cnn", "routing[im2col(", 1.0), ("resnet", "branching(2){clone(2), ", 0.7), ("mobilenet", "dwconv(", 0.9),
    ("transformer", "branching(2){clone(2), sequential(norm, ", 1.0), ("mlp", "routing[flatten, ", 1.0),
])
def test_family_samples_look_like_the_family(name, marker, share):
    archs = sample(load_grammar(name), 30, seed=5, input_shape=(3, 32, 32), limits=SMALL)
    assert sum(marker in a.string for a in archs) >= share * len(archs)
    if name == "cnn":
        assert not any(", add}" in a.string or ", sum}" in a.string for a in archs)  # plain: no residuals


@pytest.mark.parametrize("name", FAMILIES)
def test_every_alternative_of_a_family_is_sampled(name):
    """No dead alternative: each one with p > 0 appears in 80 samples at 3x32x32 (a
    branch that is not one rule, or widths that never agree, would never be drawn)."""
    grammar = load_grammar(name)
    used = {(n.rule, n.alt) for arch in sample(grammar, 80, seed=7, input_shape=(3, 32, 32))
            for n in arch.tree.walk()}
    wanted = {(rule.name, alt.index) for rule in grammar.rules.values() for alt in rule.alternatives if alt.prob > 0}
    assert sorted(wanted - used) == []


def _einspace_union(archs) -> str:
    """einspace_extra.lark with every op the samples use added where they use it
    (after "routing[" a prerouting, before "]" a postrouting, after "{" a split,
    before "}" a join, anywhere else a computation), as parse-only alternatives."""
    import re

    text = (SPACES / "einspace_extra.lark").read_text()
    op = r"[a-z_][a-z_0-9]*(?:\([0-9,]+\))?"
    places = {"prerouting": r"routing\[(OP),", "postrouting": r", (OP)\]", "split2": r"\{(OP),",
              "join2": r", (OP)\}", "computation": r"(?:\(|, )(OP)(?=[,)])"}
    found = {rule: set() for rule in places}
    for arch in archs:
        for rule, pattern in places.items():
            found[rule] |= set(re.findall(pattern.replace("OP", op), arch.string))
    found["computation"] -= {"sequential", "branching"}
    for rule, ops in found.items():
        present = set(re.findall(r'"(' + op + r')"', text.split(f"\n{rule}:")[1].split("\n\n")[0]))
        extra = "".join(f'\n    | "{o}"   // p=0' for o in sorted(ops - present))
        text = re.sub(rf"(\n{rule}:[^\n]*(?:\n[ \t]+\|[^\n]*)*)", lambda m: m.group(1) + extra, text, count=1)
    return text


@pytest.mark.parametrize("name", FAMILIES)
def test_family_samples_are_einspace_language_strings(name):
    """A family is a PCFG over the same language: its samples parse with einspace's own
    rules (sequential / branching / routing / computation) once its op settings are
    named there, and mean the same network (same parameter count)."""
    from einnas.grammar import analyse, grammar_from_text

    archs = sample(load_grammar(name), 40, seed=9, input_shape=(3, 32, 32), limits=SMALL)
    union = grammar_from_text(_einspace_union(archs), f"einspace+{name}.lark")
    for arch in archs:
        again = parse_arch(arch.string, union)
        assert again.string == arch.string
        assert analyse(again, (3, 32, 32), 10).params == arch.info.params
