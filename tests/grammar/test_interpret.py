"""The interpreter (grammar/interpret.py): the walk and the branch rule, and its backends.

The ops registered here have names unique to this test module (the registry is
process-global).
"""

from __future__ import annotations

import random
import uuid

import pytest
import torch

from einnas.errors import ArchitectureError
from einnas.grammar import State, analyse, build_network, parse_arch, register_op, sample
from einnas.grammar.builder import build_module
from einnas.grammar.interpret import TreeInterpreter
from einnas.grammar.pcfg import grammar_from_text
from einnas.grammar.sampler import Limits, sample_one

TAG = uuid.uuid4().hex[:8]
UNEVEN, COUNTED = f"uneven_{TAG}", f"counted_{TAG}"
CALLS = {"shape": 0}


def _uneven_shape(state, args):
    s, d = state.shape
    if d % 3:
        return "features do not split 2:1"
    return (State((s, 2 * d // 3), state.mode), State((s, d // 3), state.mode))


@register_op(UNEVEN, kind="split", shape=_uneven_shape, params=lambda s, a: 0, sampled=False,
             doc="test: two branches of 2/3 and 1/3 of the features")
def _build_uneven(state, args):
    from torch import nn

    class Uneven(nn.Module):
        def forward(self, x):
            d = x.shape[-1]
            return [x[..., : 2 * d // 3], x[..., 2 * d // 3 :]]

    return Uneven()


def _counted_shape(state, args):
    CALLS["shape"] += 1
    return state


@register_op(COUNTED, shape=_counted_shape, params=lambda s, a: 0, sampled=False, doc="test: counts shape calls")
def _build_counted(state, args):
    return torch.nn.Identity()


GRAMMAR = f'''
start: net
net: "branching(4){{" split4 "," module "," join "}}"
   | "branching(2){{" split2 "," module "," module "," join "}}"
   | "three(2){{" split2 "," module "," module "," module "," join "}}"   // p=0
   | "uneven{{" uneven "," module "," join "}}"   // p=0
   | "sequential(" module "," module ")"
module: "linear(16)" | "{COUNTED}"
split4: "clone(4)"
split2: "clone(2)"
uneven: "{UNEVEN}"
join: "add"
%import common.WS
%ignore WS
'''


@pytest.fixture(scope="module")
def grammar():
    return grammar_from_text(GRAMMAR, "<test interpret>")


class _Visits(TreeInterpreter):
    """A backend that logs each visit of a linear leaf with its copies."""

    def __init__(self, grammar, share):
        super().__init__(grammar)
        self.share, self.log = share, []

    def leaf(self, node, op, state, depth):
        if op.name == "linear":
            self.log.append(("visit", state.shape))
        return None, op.spec.shape(state, op.args)

    def visit_shared(self, node, state, copies, depth):
        self.log.append(("shared", copies))
        return self.visit(node, state, depth)


def test_one_design_is_visited_once_for_all_branches_unless_the_backend_builds_copies(grammar):
    arch = parse_arch("branching(4){clone(4), linear(16), add}", grammar)
    start = State((5, 8), "tokens")
    shared = _Visits(grammar, share=True)
    shared.visit(arch.tree, start, 0)
    assert shared.log == [("shared", 4), ("visit", (5, 8))]
    each = _Visits(grammar, share=False)
    each.visit(arch.tree, start, 0)
    assert each.log == [("visit", (5, 8))] * 4


def test_shared_design_counts_b_copies_and_builds_b_separate_modules(grammar):
    arch = parse_arch("branching(4){clone(4), linear(16), add}", grammar)
    info = analyse(arch, (5, 8), num_classes=3)
    linear = 8 * 16 + 16
    assert info.params - info.head_params == 4 * linear
    assert info.terminals == 6 and info.activations == 4 * 5 * 16 + 5 * 16
    torch.manual_seed(0)
    net = build_network(arch, (5, 8), 3)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][:-1]  # the last is the head
    assert len(linears) == 4 and len({id(m.weight) for m in linears}) == 4
    assert not torch.equal(linears[0].weight, linears[1].weight)
    assert sum(p.numel() for p in net.parameters()) == info.params


def test_a_design_per_branch_runs_child_i_on_branch_i(grammar):
    arch = parse_arch("branching(2){clone(2), linear(16), linear(16), add}", grammar)
    info = analyse(arch, (5, 8), num_classes=3)
    assert info.params - info.head_params == 2 * (8 * 16 + 16)
    mixed = parse_arch(f"branching(2){{clone(2), linear(16), {COUNTED}, add}}", grammar)
    with pytest.raises(ArchitectureError) as error:
        analyse(mixed, (5, 8))
    assert str(error.value).startswith("operation 'add' at line 1, column ")
    assert "cannot apply to branches tokens 5x16, tokens 5x8: " in str(error.value)


def test_shared_design_on_unequal_branches_is_analysed_per_branch(grammar):
    arch = parse_arch(f"uneven{{{UNEVEN}, linear(16), add}}", grammar)
    info = analyse(arch, (5, 9), num_classes=3)
    assert info.params - info.head_params == (6 * 16 + 16) + (3 * 16 + 16)
    net = build_network(arch, (5, 9), 3)
    assert net(torch.randn(2, 5, 9)).shape == (2, 3)
    assert sum(p.numel() for p in net.parameters()) == info.params


def test_a_count_mismatch_names_the_node(grammar):
    arch = parse_arch("three(2){clone(2), linear(16), linear(16), linear(16), add}", grammar)
    with pytest.raises(ArchitectureError) as error:
        analyse(arch, (5, 8))
    assert str(error.value) == ("'three(2){clone(2), linear(16), linear(16), linear(16), add}' at line 1, "
                                "column 1: 2 branches but 3 branch modules")
    with pytest.raises(ArchitectureError, match="2 branches but 3 branch modules"):
        build_module(grammar, arch.tree, State((5, 8), "tokens"))


def test_the_sampler_never_draws_one_design_for_unequal_branches():
    rules = f'''
start: net
net: "uneven{{" uneven "," module "," join "}}" | "sequential(" module "," module ")"
module: "linear(16)" | "identity"
uneven: "{UNEVEN}"
join: "add"
%import common.WS
%ignore WS
'''
    both = grammar_from_text(rules, "<uneven or sequential>")
    assert {a.string.split("(")[0] for a in sample(both, 20, seed=0, input_shape=(5, 9))} == {"sequential"}
    only = grammar_from_text(rules.replace(' | "sequential(" module "," module ")"', ""), "<uneven>")
    with pytest.raises(ArchitectureError, match="could not sample a valid architecture"):
        sample_one(only, random.Random(0), (5, 9), limits=Limits(max_restarts=5))


def test_build_network_reuses_the_analysed_states(grammar):
    arch = parse_arch(f"branching(4){{clone(4), {COUNTED}, add}}", grammar)
    CALLS["shape"] = 0
    analyse(arch, (5, 8))
    analysed = CALLS["shape"]
    assert analysed == 1  # the shared design once, standing for its 4 copies
    CALLS["shape"] = 0
    build_network(arch, (5, 8), 3)
    assert CALLS["shape"] == analysed  # the analysis inside build_network, nothing more


def test_build_module_of_a_subtree_matches_the_whole_network(grammar):
    for arch in sample(grammar, 10, seed=3, input_shape=(5, 8)):
        module, out = build_module(grammar, arch.tree, State((5, 8), "tokens"))
        assert out == analyse(arch, (5, 8)).output
        assert module(torch.randn(2, 5, 8)).shape == (2, *out.shape)
