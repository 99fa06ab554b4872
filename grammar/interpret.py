"""One walk over derivations, with one small backend per job (lark's Interpreter style).

Shape analysis (:mod:`einnas.grammar.shapes`), building (:mod:`einnas.grammar.builder`),
sampling (:mod:`einnas.grammar.sampler`) and the MAC estimate
(:func:`einnas.grammar.scaling.estimate`) are backends of :class:`Interpreter`. The
walk of a *structure* alternative and the branch rule are written here, once; a
backend only says what visiting one child means (analyse a subtree, build it into a
module, or draw it from a rule name) and what a design shared by branches costs.

**The walk.** A structure alternative's ``plan`` (made by :mod:`einnas.grammar.pcfg`)
is a sequence of steps. A ``("map", rule)`` step visits the next child on the current
state, and its output state becomes the current state. A ``("branch", split, body,
join)`` step visits the split on the current state, which yields a tuple of branch
states; then visits the body children on the branches (the branch rule, below); then
visits the join on the tuple of the branches' outputs, which yields the new current
state. Children are consumed in order: tree nodes for the tree backends, the rule
names of the alternative for the sampler, which draws each child as it goes.

**The branch rule.** *One inner module is one design for all b branches; otherwise
there is one module per branch* (:func:`shares_design`). A shared design on b equal
branch states is visited once standing for b copies (:meth:`Interpreter.visit_shared`:
analysis and the sampler count its parameters, leaves and activations b times; the
builder, which sets ``share = False``, builds b separately initialised modules). A
shared design on unequal branch states is visited once per branch
(:meth:`Interpreter.visit_unequal`; the sampler refuses it, since one drawn design must
fit every branch). With one module per branch, child i runs on branch i; any other
count of body children is a mismatch (:meth:`Interpreter.mismatch`). The grammar
checker (:mod:`einnas.grammar.check`) counts built copies with the same
:func:`shares_design`.
"""

from __future__ import annotations


def shares_design(step: tuple) -> bool:
    """Whether a ``("branch", split, body, join)`` plan step applies one body design to
    every branch (one body child) rather than one design per branch."""
    return len(step[2]) == 1


class Interpreter:
    """The walk of a structure alternative; subclasses implement :meth:`visit`.

    ``visit(item, state, depth) -> (result, output state)`` interprets one child: a
    :class:`~einnas.grammar.tree.Node`, or a rule name for the sampler. The other hooks
    have defaults that suit a backend which visits every design once per branch.
    """

    __slots__ = ()  # the sampler's backend keeps its per-draw totals in slots

    #: Whether a design shared by equal branches is visited once (standing for all of
    #: them) rather than once per branch.
    share = True

    def visit(self, item, state, depth: int):
        """Interpret one child on ``state``; returns ``(result, output state)``."""
        raise NotImplementedError

    def visit_shared(self, item, state, copies: int, depth: int):
        """Interpret one design that stands for ``copies`` branches of equal ``state``
        (called only when :attr:`share` is true). Counting backends multiply here."""
        return self.visit(item, state, depth)

    def visit_unequal(self, item, branches: tuple, depth: int):
        """Interpret one shared design on branches of different states: once per branch.
        Returns ``(results, output states)``, one of each per branch."""
        pairs = [self.visit(item, branch, depth) for branch in branches]
        return [r for r, _ in pairs], tuple(out for _, out in pairs)

    def mismatch(self, owner, branches: tuple, bodies: list):
        """A split made ``len(branches)`` branches but the structure has another number
        (not 1) of body children. ``owner`` is the structure's node (or alternative)."""
        raise NotImplementedError

    def walk(self, owner, plan: tuple, items, state, depth: int):
        """Run a structure's ``plan`` over its children ``items`` from ``state``.

        Returns ``(steps, output state)``: one entry per plan step, the child's result
        for a map step and ``(split, bodies, join)`` results for a branch step, where
        ``bodies`` has one result per body visit (see the module docstring).
        """
        items, visit = iter(items), self.visit  # local names: the sampler's hot path
        steps = []
        for step in plan:
            if step[0] == "map":
                result, state = visit(next(items), state, depth)
                steps.append(result)
                continue
            split, branches = visit(next(items), state, depth)
            bodies = [next(items) for _ in step[2]]
            if shares_design(step):  # the branch rule: one design for all branches
                if self.share and len(set(branches)) == 1:
                    result, out = self.visit_shared(bodies[0], branches[0], len(branches), depth)
                    results, outs = [result], (out,) * len(branches)
                else:
                    results, outs = self.visit_unequal(bodies[0], branches, depth)
            elif len(bodies) == len(branches):  # else one design per branch
                results, outs = [], []
                for body, branch in zip(bodies, branches):
                    result, out = visit(body, branch, depth)
                    results.append(result)
                    outs.append(out)
                outs = tuple(outs)
            else:
                self.mismatch(owner, branches, bodies)
            join, state = visit(next(items), outs, depth)
            steps.append((split, results, join))
        return steps, state


class TreeInterpreter(Interpreter):
    """An interpreter over an existing derivation tree: dispatches a node on the form
    of its alternative (operation leaf, choice, structure)."""

    def __init__(self, grammar):
        self.grammar = grammar
        self.rules = grammar.rules

    def visit(self, node, state, depth: int):
        alt = self.rules[node.rule].alternatives[node.alt]
        if alt.op is not None:
            return self.leaf(node, alt.op, state, depth)
        if alt.form == "choice":
            return self.visit(node.children[0], state, depth)
        return self.structure(node, alt, state, depth + 1)

    def leaf(self, node, op, state, depth: int):
        """An operation leaf ``op`` (an :class:`~einnas.grammar.pcfg.OpCall`) on ``state``."""
        raise NotImplementedError

    def structure(self, node, alt, state, depth: int):
        """A structure node; ``depth`` already counts it. The default walks its plan."""
        return self.walk(node, alt.plan, node.children, state, depth)

    def mismatch(self, owner, branches, bodies):
        from einnas.errors import ArchitectureError
        from einnas.grammar.tree import describe_node

        raise ArchitectureError(
            f"{describe_node(self.grammar, owner)}: {len(branches)} branches but {len(bodies)} branch modules"
        )
