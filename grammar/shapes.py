"""Shape analysis: the interpreter backend that checks a tree and counts its figures.

:func:`analyse` walks a derivation tree with the op registry's analytic shape rules
(no tensors), raising :class:`~einnas.errors.ArchitectureError` at the first operation
that cannot apply, and counts parameters, leaves, activations and depth, a design
shared by b branches b times (the branch rule, :mod:`einnas.grammar.interpret`).
The states it computes can be kept (``outputs``) so that building reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from einnas.errors import ArchitectureError
from einnas.grammar.interpret import TreeInterpreter
from einnas.grammar.registry import IMAGE, State


@dataclass
class ArchInfo:
    """Analytic figures of an architecture for one input shape (per sample)."""

    params: int
    terminals: int
    depth: int
    activations: int
    input: State
    output: State
    head_params: int = 0

    def as_dict(self) -> dict:
        return {
            "params": self.params, "terminals": self.terminals, "depth": self.depth,
            "activations": self.activations, "input_shape": list(self.input.shape),
            "output_shape": list(self.output.shape), "output_mode": self.output.mode,
        }


def head_params(state: State, num_classes: int, head: str = "tokens") -> int:
    """Parameters of the classifier head closing a backbone whose output is ``state``."""
    if state.mode == IMAGE:
        features = state.shape[0]
    else:
        features = state.shape[0] if head == "tokens" else state.shape[1]
    return features * num_classes + num_classes


class Shapes(TreeInterpreter):
    """Checks and counts a tree. ``record`` (if not None) receives ``id(node) -> (node,
    input state, depth)`` for every node as it is entered, so its last entry is the node
    that failed; ``outputs`` (if not None) receives ``(id(node), input state) -> output
    state`` for every node, which :func:`~einnas.grammar.builder.build_network` reuses."""

    def __init__(self, grammar, record: dict | None = None, outputs: dict | None = None):
        super().__init__(grammar)
        self.record, self.outputs = record, outputs
        self.params = self.terminals = self.activations = self.depth = 0
        self.mult = 1  # copies of the current subtree in the built network

    def visit(self, node, state, depth: int):
        if self.record is not None:
            self.record[id(node)] = (node, state, depth)
        alt = self.rules[node.rule].alternatives[node.alt]
        if alt.op is not None:
            out = self.leaf(node, alt.op, state, depth)
        elif alt.form == "choice":
            out = self.visit(node.children[0], state, depth)[1]
        else:
            depth += 1
            if depth > self.depth:
                self.depth = depth
            out = self.walk(node, alt.plan, node.children, state, depth)[1]
        if self.outputs is not None:
            self.outputs[(id(node), state)] = out
        return None, out

    def leaf(self, node, op, state, depth: int):
        out = op.spec.shape(state, op.args)
        if isinstance(out, str):
            from einnas.grammar.tree import describe_node

            raise ArchitectureError(f"operation {describe_node(self.grammar, node)} cannot apply to "
                                    f"{shape_text(state)}: {out}")
        self.params += op.spec.count_params(state, op.args) * self.mult
        self.terminals += self.mult
        if isinstance(out, State):  # splits make views, not new tensors
            self.activations += out.numel * self.mult
        return out

    def visit_shared(self, node, state, copies: int, depth: int):
        saved = self.mult
        self.mult = saved * copies
        try:
            return self.visit(node, state, depth)
        finally:
            self.mult = saved


def analyse(arch, input_shape, num_classes: int = 10, head: str = "tokens", record: dict | None = None,
            outputs: dict | None = None) -> ArchInfo:
    """Check an architecture analytically for an input shape and count its figures.

    Raises :class:`~einnas.errors.ArchitectureError` naming the first node whose
    operation cannot apply. ``record``, if given, receives ``id(node) -> (node,
    input state, depth)`` for every node (mutation uses it); ``outputs`` receives
    ``(id(node), input state) -> output state`` (building uses it).
    """
    return run(Shapes(arch.grammar, record, outputs), arch, input_shape, num_classes, head)


def run(shapes: Shapes, arch, input_shape, num_classes: int = 10, head: str = "tokens") -> ArchInfo:
    """:func:`analyse` with a given :class:`Shapes` backend (or a subclass that counts more)."""
    start = State.for_input(tuple(input_shape))
    _, out = shapes.visit(arch.tree, start, 0)
    if not isinstance(out, State):
        raise ArchitectureError("the network ends in unjoined branches")
    extra = head_params(out, num_classes, head)
    return ArchInfo(shapes.params + extra, shapes.terminals, shapes.depth, shapes.activations, start, out, extra)


def shape_text(state) -> str:
    """How an error message names a state: ``image 3x32x32``, ``tokens 64x16``, or branches."""
    if isinstance(state, tuple) and state and isinstance(state[0], State):
        return "branches " + ", ".join(shape_text(s) for s in state)
    kind = "image" if state.mode == IMAGE else "tokens"
    return f"{kind} {'x'.join(map(str, state.shape))}"
