"""Rewriting a derivation tree to a width, a depth and an input: how seeds fit any task.

The rewrites replace operation leaves by other alternatives of the same grammar rule
or drop whole blocks, so the result is always a string of the grammar's language (it
parses, mutates and records like any other architecture):

* :func:`scale_widths` multiplies every output width of the ops that declare one
  (``register_op(..., width_args=...)``: ``linear(N)``) and snaps it to the nearest
  width the rule offers (``linear(16)`` ... ``linear(2048)`` in einspace);
* :func:`fit_to_input` repairs, one leaf at a time, the operations that cannot apply
  to the given input: a leaf is replaced by the same operation with the closest
  arguments that apply, else by a leaf of its rule that leaves the tensor unchanged
  (``identity``). On tokens, ``routing[im2col(3,1,1), linear(64), col2im]`` becomes
  ``routing[identity, linear(64), identity]``; on a 1x40 image a 4x4 patch embedding
  ``im2col(4,4,0)`` becomes ``im2col(3,2,1)``;
* :func:`scale_depth` keeps the first part of the repeatable (shape-keeping,
  branching) blocks.

:func:`estimate` gives the analytic figures a budget is checked against: parameters,
activations and multiply-accumulates (MACs) per sample; :func:`epoch_seconds` turns
them into an estimated training time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from einnas.errors import ArchitectureError
from einnas.grammar.registry import State
from einnas.grammar.shapes import Shapes
from einnas.grammar.shapes import run as run_shapes
from einnas.grammar.tree import Architecture, Node, analyse

MAX_REPAIRS = 500


def _op_alternatives(grammar, rule: str) -> list[tuple[int, object]]:
    return [(a.index, a.op) for a in grammar.rules[rule].alternatives if a.op is not None]


def _snap(value: float, choices: list[int]) -> int:
    """The choice nearest to ``value`` on a log scale (ties go to the larger one)."""
    return min(choices, key=lambda c: (abs(math.log(c) - math.log(max(value, 1e-9))), -c))


def scale_widths(arch: Architecture, multiplier: float) -> Architecture:
    """``arch`` with every declared output width multiplied by ``multiplier`` and snapped
    to the widths its grammar rule offers. Relative widths (``linear_x``) stay as they are."""
    if not multiplier > 0:
        raise ArchitectureError(f"width multiplier must be positive, not {multiplier}")
    grammar = arch.grammar

    def rewrite(node: Node) -> Node:
        alt = grammar.rules[node.rule].alternatives[node.alt]
        op = alt.op
        if op is None:
            children = tuple(rewrite(c) for c in node.children)
            if all(a is b for a, b in zip(children, node.children)):
                return node
            return Node(node.rule, node.alt, children, node.pos)
        width_args = getattr(op.spec, "width_args", ())
        if not width_args or multiplier == 1:
            return node
        same = [(i, o) for i, o in _op_alternatives(grammar, node.rule) if o.name == op.name
                and all(o.args[j] == op.args[j] for j in range(len(op.args)) if j not in width_args)
                and len(o.args) == len(op.args)]
        target = list(op.args)
        for j in width_args:
            target[j] = _snap(op.args[j] * multiplier, sorted({o.args[j] for _, o in same}))
        for index, other in same:
            if list(other.args) == target:
                return Node(node.rule, index, (), node.pos)
        return node

    return Architecture.from_tree(grammar, rewrite(arch.tree))


def _has_split(grammar, node: Node) -> bool:
    for n in node.walk():
        op = grammar.rules[n.rule].alternatives[n.alt].op
        if op is not None and op.spec.kind == "split":
            return True
    return False


def scale_depth(arch: Architecture, depth: float, input_shape, num_classes: int = 10) -> Architecture:
    """``arch`` with only the first ``ceil(depth x n)`` of its n repeatable blocks.

    A repeatable block is the first part of a two-part chain (``sequential(X, rest)``)
    that keeps the tensor's shape and has branches (a residual block, an attention or
    MLP sub-layer): dropping it (``sequential(X, rest)`` -> ``rest``) leaves every other
    shape as it was. Blocks inside a block are not counted; stage transitions (which
    change the shape) always stay. ``arch`` must apply to ``input_shape``.
    """
    if not 0 < depth <= 1:
        raise ArchitectureError(f"depth multiplier must be in (0, 1], not {depth}")
    grammar = arch.grammar
    record: dict = {}
    analyse(arch, input_shape, num_classes, record=record)
    blocks: list[tuple[Node, Node]] = []

    def visit(node: Node, inside: bool) -> None:
        alt = grammar.rules[node.rule].alternatives[node.alt]
        chain = alt.op is None and len(node.children) == 2 and [step[0] for step in alt.plan] == ["map", "map"]
        if chain and not inside:
            first, rest = node.children
            if record[id(first)][1] == record[id(rest)][1] and _has_split(grammar, first):
                blocks.append((node, rest))
                visit(first, True)
                visit(rest, False)
                return
        for child in node.children:
            visit(child, inside)

    visit(arch.tree, False)
    tree = arch.tree
    for parent, rest in blocks[math.ceil(depth * len(blocks)):]:
        tree = tree.replace(parent, rest)
    return Architecture.from_tree(grammar, tree)


class _Latest(dict):
    """A record that keeps the most recently visited node last (a node visited twice moves)."""

    def __setitem__(self, key, value):
        self.pop(key, None)
        super().__setitem__(key, value)


def _repair(grammar, node: Node, state) -> int | None:
    """The alternative that replaces a failing leaf, or ``None`` when nothing applies."""
    op = grammar.rules[node.rule].alternatives[node.alt].op
    if op is None or not isinstance(state, State):
        return None
    same, neutral = [], []
    for index, other in _op_alternatives(grammar, node.rule):
        out = other.spec.shape(state, other.args)
        if isinstance(out, str) or not isinstance(out, State) or other.spec.kind != op.spec.kind:
            continue
        if other.name == op.name and len(other.args) == len(op.args):
            same.append((sum(abs(a - b) for a, b in zip(other.args, op.args)), index))
        elif out == state:
            neutral.append(index)
    if same:
        return min(same)[1]
    return neutral[0] if neutral else None


def fit_to_input(arch: Architecture, input_shape, num_classes: int = 10) -> Architecture:
    """``arch`` with the leaves that cannot apply to ``input_shape`` replaced (see the
    module docstring); the architecture itself when it already applies.

    Raises :class:`~einnas.errors.ArchitectureError` when a failing leaf has no
    replacement; the result always passes :func:`~einnas.grammar.tree.analyse`.
    """
    grammar = arch.grammar
    for _ in range(MAX_REPAIRS):
        record = _Latest()
        try:
            arch.info = analyse(arch, input_shape, num_classes, record=record)
            return arch
        except ArchitectureError:
            if not record:
                raise
            # The node analysed last is the one whose operation failed.
            node, state, _ = next(reversed(record.values()))
            index = _repair(grammar, node, state)
            if index is None:
                raise
            fixed = Node(node.rule, index, (), node.pos)
            arch = Architecture.from_tree(grammar, arch.tree.replace(node, fixed))
    raise ArchitectureError(f"no form of the architecture applies to input {input_shape} after {MAX_REPAIRS} repairs")


@dataclass(frozen=True)
class Estimate:
    """Analytic figures per sample: parameters (with the head), activations, MACs, and
    the number of operation leaves (counting branch copies) of one forward pass."""

    params: int
    activations: int
    macs: int
    terminals: int = 0


def estimate(arch: Architecture, input_shape, num_classes: int = 10) -> Estimate:
    """Parameters, activations and an estimate of the multiply-accumulates of one forward
    pass per sample.

    An operation with P parameters applied at every position of its input (all axes
    but the last) costs P x positions MACs: exact for ``linear`` and hence for
    convolutions written as im2col + linear, and for norms up to a factor of 2.
    Operations without parameters cost their output size (elementwise work); a
    matmul join costs its output size times the inner size.
    """
    costs = _Costs(arch.grammar)
    info = run_shapes(costs, arch, input_shape, num_classes)
    return Estimate(info.params, info.activations, info.head_params + costs.macs, info.terminals)


class _Costs(Shapes):
    """Shape analysis that also sums each leaf's MACs, a shared design's b times."""

    def __init__(self, grammar):
        super().__init__(grammar)
        self.macs = 0

    def leaf(self, node, op, state, depth: int):
        out = super().leaf(node, op, state, depth)
        params = op.spec.count_params(state, op.args)
        if params and isinstance(state, State):
            cost = params * (state.numel // state.shape[-1])
        elif isinstance(out, State) and isinstance(state, tuple) and len(state) == 2 \
                and state[0].shape[-1] == state[1].shape[-2 if len(state[1].shape) > 1 else -1]:
            cost = out.numel * state[0].shape[-1]  # a product of the two branches
        else:
            cost = out.numel if isinstance(out, State) else 0
        self.macs += cost * self.mult
        return out


# Training cost on one CPU thread, fitted on 10 (architecture, dataset) pairs of seeds
# and references (benchmarks/bench_seeds.py --train prints estimate and measurement;
# a shared 2-core machine):
# small networks are bound by memory traffic and per-op overhead, not by arithmetic.
MACS_PER_SECOND = 4.0e10      # forward MACs; a training step costs about 3 forward passes
SECONDS_PER_ACTIVATION = 5.7e-9  # per activation element per sample, forward + backward
SECONDS_PER_OP = 5.2e-4       # per operation leaf per batch, forward + backward


def epoch_seconds(figures: Estimate, train_size: int, batch_size: int = 256) -> float:
    """An estimate of one training epoch's seconds on one CPU thread (within about 2x)."""
    batches = -(-train_size // batch_size)
    return (train_size * (3 * figures.macs / MACS_PER_SECOND + figures.activations * SECONDS_PER_ACTIVATION)
            + batches * figures.terminals * SECONDS_PER_OP)
