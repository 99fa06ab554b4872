"""Sampling and mutating architectures from a PCFG, shape-aware and seeded.

The sampler expands rules top-down, threading the tensor :class:`State` through the
derivation: it is the backend of the interpreter (:mod:`einnas.grammar.interpret`)
whose children are rule names, drawn as the walk reaches them. Operation alternatives
that cannot apply to the current state, or that would break a limit, are filtered out
before the choice and the survivors' probabilities renormalised. When no alternative
is left, the failure goes back to the parent, which drops its choice and tries another
(depth-first backtracking).
Every shape rule is analytic, so a draw costs microseconds per node.

Limits keep the heavy tail bounded: past ``max_depth`` nested modules or
``max_nodes`` leaves, only the shallowest alternatives of each rule remain (for
einspace: a module becomes a single computation); parameters and activations are
hard limits; a draw that needs more than ``max_steps`` expansions restarts.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from einnas.errors import ArchitectureError
from einnas.grammar.interpret import Interpreter
from einnas.grammar.pcfg import Grammar, alt_height
from einnas.grammar.registry import State
from einnas.grammar.tree import Architecture, Node, analyse


@dataclass(frozen=True)
class Limits:
    """Bounds on sampled architectures. Seeds and parsed strings are not limited."""

    max_depth: int = 16            # nested modules; beyond it only leaves are chosen
    max_nodes: int = 200           # leaves counting branch copies; soft, as max_depth
    max_params: int = 5_000_000    # hard: parameters including the head
    max_activations: int = 2_000_000  # hard: elements of all intermediate tensors, per sample
    max_steps: int = 1_000         # expansions in one draw before it restarts
    max_restarts: int = 200        # restarts before giving up with an error

    def as_dict(self) -> dict:
        return asdict(self)


class _Dead(Exception):
    """No alternative of a rule works here: the parent must choose again."""


class _Restart(Exception):
    """The draw used up its step budget."""


class _Sampler(Interpreter):
    """The sampling backend: visiting a child means drawing it from its rule name.

    One draw's running totals live here (parameters, leaves, activations, steps) and
    ``mult``, the copies of the current subtree in the built network (the branch rule).
    """

    __slots__ = ("grammar", "rng", "limits", "params", "terminals", "activations", "steps", "mult")

    def __init__(self, grammar: Grammar, rng: random.Random, limits: Limits):
        self.grammar, self.rng, self.limits = grammar, rng, limits
        self.params = self.terminals = self.activations = self.steps = 0
        self.mult = 1

    def save(self):
        return self.params, self.terminals, self.activations, self.mult

    def restore(self, saved) -> None:
        self.params, self.terminals, self.activations, self.mult = saved

    def visit(self, name: str, state, depth: int, exclude: int | None = None):
        """Draw a derivation of rule ``name`` for ``state``; returns ``(node, output state)``."""
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise _Restart
        grammar, limits = self.grammar, self.limits
        rule = grammar.rules[name]
        # Past the soft limits, or when the activations left would not pay for a few more
        # tensors of this size, only the shallowest alternatives remain.
        numel = state.numel if isinstance(state, State) else sum(s.numel for s in state)
        force = (
            depth >= limits.max_depth
            or self.terminals >= limits.max_nodes
            or self.activations + 4 * numel * self.mult > limits.max_activations
        )
        floor = grammar.min_height[name]
        candidates = []
        for alt in rule.alternatives:
            if alt.prob <= 0 or alt.index == exclude:
                continue
            if force and alt_height(alt, grammar.min_height) > floor:
                continue
            if alt.op is None:
                candidates.append((alt, None, 0, 0))
                continue
            out = alt.op.spec.shape(state, alt.op.args)
            if isinstance(out, str):
                continue
            if not isinstance(out, State) and self.terminals + 2 * self.mult * len(out) > limits.max_nodes:
                continue  # a split multiplies every leaf after it: keep the node limit in sight
            params = alt.op.spec.count_params(state, alt.op.args) * self.mult
            acts = (out.numel * self.mult) if isinstance(out, State) else 0
            if self.params + params > limits.max_params or self.activations + acts > limits.max_activations:
                continue
            candidates.append((alt, out, params, acts))

        while candidates:
            total = sum([c[0].prob for c in candidates])  # a list sums faster than a generator
            pick = self.rng.random() * total
            for i, candidate in enumerate(candidates):
                pick -= candidate[0].prob
                if pick < 0:
                    break
            alt, out, params, acts = candidates.pop(i)
            if alt.op is not None:
                self.params += params
                self.activations += acts
                self.terminals += self.mult
                return Node(name, alt.index), out
            saved = self.save()
            try:
                if alt.form == "choice":
                    child, out = self.visit(alt.children[0], state, depth)
                    return Node(name, alt.index, (child,)), out
                steps, out = self.walk(alt, alt.plan, alt.children, state, depth + 1)
                return Node(alt.rule, alt.index, _children(alt, steps)), out
            except _Dead:
                self.restore(saved)
        raise _Dead

    def visit_shared(self, name: str, state, copies: int, depth: int):
        saved_mult = self.mult
        self.mult *= copies
        result = self.visit(name, state, depth)
        self.mult = saved_mult
        return result

    def visit_unequal(self, name, branches, depth):
        raise _Dead  # one drawn design would have to fit branches of different shapes

    def mismatch(self, owner, branches, bodies):
        raise _Dead


def _children(alt, steps: list) -> tuple:
    """The child nodes of a drawn structure, in order, from the walk's per-step results."""
    if len(steps) == len(alt.children):  # only map steps (a branch step covers 3+ children)
        return tuple(steps)
    children = []
    for step, result in zip(alt.plan, steps):
        if step[0] == "map":
            children.append(result)
        else:
            children.append(result[0])
            children += result[1]
            children.append(result[2])
    return tuple(children)


def sample_one(
    grammar: Grammar, rng: random.Random, input_shape, num_classes: int = 10,
    limits: Limits | None = None, head: str = "tokens",
) -> Architecture:
    """Draw one valid architecture; ``rng`` drives every choice."""
    limits = limits or Limits()
    start = State.for_input(tuple(input_shape))
    if grammar.min_height["start"] >= 10**9:  # every draw would only run into max_steps
        raise ArchitectureError(f"{grammar.path}: no derivation from 'start' ends through alternatives of "
                                "positive probability; see `einnas grammar check`")
    for _ in range(limits.max_restarts):
        ctx = _Sampler(grammar, rng, limits)
        try:
            tree, _ = ctx.visit("start", start, 0)
        except (_Dead, _Restart):
            continue
        arch = Architecture.from_tree(grammar, tree)
        info = analyse(arch, input_shape, num_classes, head)
        if info.params <= limits.max_params and info.activations <= limits.max_activations:
            arch.info = info
            return arch
    raise ArchitectureError(
        f"could not sample a valid architecture for input {tuple(input_shape)} within the limits "
        f"({limits.max_restarts} restarts); loosen --max-params/--max-nodes or check the grammar"
    )


def sample(
    grammar: Grammar, n: int, seed: int = 0, input_shape=(3, 32, 32), num_classes: int = 10,
    limits: Limits | None = None, head: str = "tokens",
) -> list[Architecture]:
    """Draw ``n`` architectures. Draw ``i`` depends only on ``(seed, i)``, so the first
    ten of ``n=50`` are the ten of ``n=10``."""
    return [
        sample_one(grammar, random.Random(f"einnas:{seed}:{i}"), input_shape, num_classes, limits, head)
        for i in range(n)
    ]


def mutate(
    grammar: Grammar, arch: Architecture, rng: random.Random, input_shape, num_classes: int = 10,
    limits: Limits | None = None, head: str = "tokens", tries: int = 50,
) -> Architecture:
    """Resample one random subtree, never keeping the node's current choice.

    The node is uniform over the distinct subtrees of the derivation (a design shared
    by b branches counts once). Each candidate is checked analytically and against
    the limits; after ``tries`` failures a fresh sample is returned instead.
    """
    limits = limits or Limits()
    record: dict = {}
    analyse(arch, input_shape, num_classes, head, record=record)
    nodes = [
        entry for entry in record.values()
        if sum(1 for a in grammar.rules[entry[0].rule].alternatives if a.prob > 0) >= 2
        or grammar.rules[entry[0].rule].alternatives[entry[0].alt].prob <= 0
    ]
    for _ in range(tries if nodes else 0):
        node, state, depth = nodes[rng.randrange(len(nodes))]
        ctx = _Sampler(grammar, rng, limits)
        try:
            replacement, _ = ctx.visit(node.rule, state, depth, exclude=node.alt)
        except (_Dead, _Restart):
            continue
        candidate = Architecture.from_tree(grammar, arch.tree.replace(node, replacement))
        if candidate.string == arch.string:
            continue
        try:
            info = analyse(candidate, input_shape, num_classes, head)
        except ArchitectureError:
            continue
        if info.params <= limits.max_params and info.activations <= limits.max_activations:
            candidate.info = info
            return candidate
    return sample_one(grammar, rng, input_shape, num_classes, limits, head)
