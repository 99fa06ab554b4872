"""Building a derivation tree into a PyTorch module, and closing it into a network.

The builder is a backend of the interpreter (:mod:`einnas.grammar.interpret`) run
after shape analysis, whose states it reuses: each operation's registry entry builds
its module; a structure becomes a :class:`Stages` module that threads the tensor (or
the branch list) through its children. A structure made of exactly the ops of a
registered fusion (im2col, linear, col2im) is built as the fused module (a Conv2d),
which is mathematically identical and much faster.
"""

from __future__ import annotations

from einnas.errors import ArchitectureError, UsageError
from einnas.grammar.interpret import TreeInterpreter
from einnas.grammar.registry import IMAGE, REGISTRY, State
from einnas.grammar.shapes import Shapes, analyse
from einnas.grammar.tree import HEADS, Architecture, Node

#: Largest network :func:`build_network` allocates: 2**29 float32 parameters are 2 GiB, what
#: one ONNX file holds; an architecture string such as linear(10**12) is refused before torch
#: tries to allocate it (a MemoryError, a C++ overflow, or the OOM killer).
MAX_BUILD_PARAMS = 2**29
#: Activations (elements of all intermediate tensors) of one sample, 4 GiB of float32.
MAX_BUILD_ACTIVATIONS = 2**30


def _leaf_op(grammar, node: Node):
    alt = grammar.rules[node.rule].alternatives[node.alt]
    while alt.form == "choice":
        node = node.children[0]
        alt = grammar.rules[node.rule].alternatives[node.alt]
    return alt.op


def _fused(grammar, alt, node: Node, state):
    if not REGISTRY.fusions or any(step[0] != "map" for step in alt.plan):
        return None
    ops = [_leaf_op(grammar, child) for child in node.children]
    if any(op is None for op in ops):
        return None
    names = tuple(op.name for op in ops)
    for fusion in REGISTRY.fusions:
        args = [op.args for op in ops]
        if fusion.ops == names and fusion.applies(state, args):
            return fusion.build(state, args)
    return None


class Builder(TreeInterpreter):
    """Builds a tree into modules, reusing the states that shape analysis computed.

    ``outputs`` maps ``(id(node), input state)`` to the node's output state (from
    :class:`~einnas.grammar.shapes.Shapes`). A design shared by b branches is built b
    times (``share = False``): separately initialised weights for each branch.
    """

    share = False

    def __init__(self, grammar, outputs: dict, fuse: bool = True):
        super().__init__(grammar)
        self.outputs, self.fuse = outputs, fuse

    def leaf(self, node, op, state, depth: int):
        return op.spec.build(state, op.args), self.outputs[(id(node), state)]

    def structure(self, node, alt, state, depth: int):
        from torch import nn

        if self.fuse:
            fused = _fused(self.grammar, alt, node, state)
            if fused is not None:
                return fused, self.outputs[(id(node), state)]
        kinds, modules = [], []
        steps, state = self.walk(node, alt.plan, node.children, state, depth)
        for step, built in zip(alt.plan, steps):
            if step[0] == "map":
                if not isinstance(built, nn.Identity):
                    kinds.append("map")
                    modules.append(built)
                continue
            split, bodies, join = built
            kinds += ["split", "branches", "join"]
            modules += [split, nn.ModuleList(bodies), join]
        if not modules:
            return nn.Identity(), state
        if kinds == ["map"]:
            return modules[0], state
        from einnas.grammar._torch_modules import Stages

        return Stages(kinds, modules), state


def build_module(grammar, node: Node, state, fuse: bool = True):
    """Build one subtree for an input state; returns ``(module, output state)``.

    The subtree is analysed first (raising :class:`~einnas.errors.ArchitectureError`
    where an operation cannot apply), then built from the analysed states.
    """
    outputs: dict = {}
    Shapes(grammar, outputs=outputs).visit(node, state, 0)
    return Builder(grammar, outputs, fuse).visit(node, state, 0)


def build_network(arch: Architecture, input_shape, num_classes: int = 10, head: str = "tokens", fuse: bool = True):
    """Build ``arch`` into a network mapping ``(B, *input_shape)`` to ``(B, num_classes)``.

    The head averages the backbone output and classifies it linearly. Image output
    ``(C, H, W)``: mean over H, W, then Linear(C). Token output ``(S, D)``: with
    ``head="tokens"`` (default, as in einspace) mean over D then Linear(S) — a
    classifier over per-token summaries, which keeps parameter counts and results
    comparable with the paper and suits sequence inputs such as mnist1d (D = 1);
    with ``head="features"`` mean over S then Linear(D), the usual ViT pooling.
    """
    if head not in HEADS:
        raise UsageError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    outputs: dict = {}
    info = analyse(arch, input_shape, num_classes, head, outputs=outputs)
    if info.params > MAX_BUILD_PARAMS or info.activations > MAX_BUILD_ACTIVATIONS:
        raise ArchitectureError(
            f"the architecture has {info.params:,} parameters and {info.activations:,} activations per sample for "
            f"input {'x'.join(map(str, input_shape))}; einnas builds at most {MAX_BUILD_PARAMS:,} and "
            f"{MAX_BUILD_ACTIVATIONS:,} (allocating it would exhaust memory)")
    backbone, out = Builder(arch.grammar, outputs, fuse).visit(arch.tree, State.for_input(tuple(input_shape)), 0)
    if out.mode == IMAGE:
        pool, features = (2, 3), out.shape[0]
    elif head == "tokens":
        pool, features = (2,), out.shape[0]
    else:
        pool, features = (1,), out.shape[1]
    from einnas.grammar._torch_modules import Network

    network = Network(backbone, pool, features, num_classes)
    network.arch_info = info
    return network
