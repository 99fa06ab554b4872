"""Building a derivation tree into a PyTorch module, and closing it into a network.

The builder is a visitor over the same tree the checker walks: each operation's
registry entry builds its module; a structure becomes a :class:`Stages` module that
threads the tensor (or the branch list) through its children. A structure made of
exactly the ops of a registered fusion (im2col, linear, col2im) is built as the
fused module (a Conv2d), which is mathematically identical and much faster.
"""

from __future__ import annotations

from einnas.errors import UsageError
from einnas.grammar.registry import IMAGE, REGISTRY, State
from einnas.grammar.tree import HEADS, Architecture, Node, analyse



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


def build_module(grammar, node: Node, state, fuse: bool = True):
    """Build one subtree for an input state; returns ``(module, output state)``."""
    from torch import nn

    alt = grammar.rules[node.rule].alternatives[node.alt]
    if alt.op is not None:
        out = alt.op.spec.shape(state, alt.op.args)
        return alt.op.spec.build(state, alt.op.args), out
    if alt.form == "choice":
        return build_module(grammar, node.children[0], state, fuse)
    if fuse:
        fused = _fused(grammar, alt, node, state)
        if fused is not None:
            out = state
            for child in node.children:
                op = _leaf_op(grammar, child)
                out = op.spec.shape(out, op.args)
            return fused, out
    kinds, modules = [], []
    children = iter(node.children)
    for step in alt.plan:
        if step[0] == "map":
            module, state = build_module(grammar, next(children), state, fuse)
            if not isinstance(module, nn.Identity):
                kinds.append("map")
                modules.append(module)
            continue
        split, branches = build_module(grammar, next(children), state, fuse)
        bodies = [next(children) for _ in step[2]]
        if len(bodies) == 1:
            bodies = bodies * len(branches)
        # Each branch gets its own module: a design shared by b branches still has b
        # separately initialised sets of weights.
        built = [build_module(grammar, body, branch, fuse) for body, branch in zip(bodies, branches)]
        join, state = build_module(grammar, next(children), tuple(out for _, out in built), fuse)
        kinds += ["split", "branches", "join"]
        modules += [split, nn.ModuleList([m for m, _ in built]), join]
    if not modules:
        return nn.Identity(), state
    if kinds == ["map"]:
        return modules[0], state
    from einnas.grammar._torch_modules import Stages

    return Stages(kinds, modules), state


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
    info = analyse(arch, input_shape, num_classes, head)
    backbone, out = build_module(arch.grammar, arch.tree, State.for_input(tuple(input_shape)), fuse)
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
