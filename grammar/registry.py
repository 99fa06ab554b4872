"""The op registry: every operation the grammar can name, keyed by that name.

An entry knows three things about an operation:

* its **kind** — ``"map"`` (one tensor in, one out), ``"split"`` (one in, a branch
  list out) or ``"join"`` (a branch list in, one out);
* its **shape rule** — a pure function from the input :class:`State` (and the op's
  arguments) to the output state, or a string saying why it does not apply;
* its **torch builder** — a function from the input state and arguments to an
  ``nn.Module``.

Shape rules are analytic, so sampling never runs a forward pass. A user adds an
operation with the :func:`register_op` decorator, in a plugin file::

    from einnas.grammar import register_op

    @register_op("swish", doc="x * sigmoid(x)")
    def swish(state, args):
        import torch
        return torch.nn.SiLU()

and then names ``"swish"`` in a copy of the grammar file.
"""

from __future__ import annotations

import fnmatch
import math
import operator
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Union

from einnas.errors import PluginError

IMAGE = "image"
TOKENS = "tokens"


class State(NamedTuple):
    """What the sampler and the checker know about a tensor at one point of a network.

    ``shape`` is per sample: ``(C, H, W)`` in image mode, ``(S, D)`` in token mode.
    ``fold`` is the ``(H', W')`` an unmatched im2col will be folded back to by col2im.
    """

    shape: tuple[int, ...]
    mode: str
    fold: tuple[int, int] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @staticmethod
    def for_input(shape: tuple[int, ...]) -> "State":
        """The state of a network input: 3 sizes are an image, 2 a token sequence."""
        return State(tuple(shape), IMAGE if len(shape) == 3 else TOKENS)


# A shape rule returns the output (a State, or a tuple of States for a split) or a
# reason why the op cannot apply. Joins receive a tuple of States.
ShapeResult = Union[State, tuple, str]
ShapeRule = Callable[[object, tuple], ShapeResult]
Builder = Callable[[object, tuple], "object"]


def _same_state(state, args):
    return state


@dataclass(frozen=True)
class OpSpec:
    """One registered operation. See the module docstring."""

    name: str
    build: Builder
    kind: str = "map"
    shape: ShapeRule = _same_state
    params: Callable[[object, tuple], int] | None = None
    nargs: tuple[int, ...] | None = (0,)
    sampled: bool = True
    doc: str = ""
    source: str = "einnas"
    # Indexes of the arguments that are output widths (linear(N): (0,)); width
    # multipliers (seed scaling, ``resnet18@0.25``) rescale exactly these.
    width_args: tuple[int, ...] = ()

    def check_args(self, args: tuple) -> str | None:
        """Return why ``args`` are not valid for this op, or ``None``."""
        if self.nargs is not None and len(args) not in self.nargs:
            want = " or ".join(str(n) for n in self.nargs)
            return f"'{self.name}' takes {want} argument(s), got {len(args)}"
        return None

    def count_params(self, state, args: tuple) -> int:
        """Parameters the op adds for this input; built once and counted if no rule is given."""
        if self.params is not None:
            return int(self.params(state, args))
        return _counted_params(self, state, args)


_PARAM_CACHE: dict[tuple, int] = {}


def _counted_params(spec: OpSpec, state, args: tuple) -> int:
    key = (spec.name, state, args)
    if key not in _PARAM_CACHE:
        module = spec.build(state, args)
        _PARAM_CACHE[key] = sum(p.numel() for p in module.parameters()) if hasattr(module, "parameters") else 0
    return _PARAM_CACHE[key]


@dataclass(frozen=True)
class Fusion:
    """A peephole rewrite: a module made of exactly these ops, in order, is built as one."""

    ops: tuple[str, ...]
    build: Callable[[object, list[tuple]], object]
    applies: Callable[[object, list[tuple]], bool] = lambda state, args: True


@dataclass
class Registry:
    """Operations by grammar name, plus build-time fusions."""

    ops: dict[str, OpSpec] = field(default_factory=dict)
    fusions: list[Fusion] = field(default_factory=list)

    def add(self, spec: OpSpec) -> OpSpec:
        if spec.kind not in ("map", "split", "join"):
            raise PluginError(f"operation '{spec.name}': kind must be map, split or join, not {spec.kind!r}")
        if not spec.name.isidentifier():
            raise PluginError(f"operation name {spec.name!r} is not a valid identifier")
        if spec.name in self.ops:
            raise PluginError(
                f"operation '{spec.name}' is registered twice ({self.ops[spec.name].source} and {spec.source})"
            )
        self.ops[spec.name] = spec
        return spec

    def get(self, name: str) -> OpSpec | None:
        return self.ops.get(name)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, sorted."""
        return sorted(n for n in self.ops if fnmatch.fnmatch(n, pattern))


REGISTRY = Registry()
_CURRENT_SOURCE = ["einnas"]


def register_op(
    name: str,
    *,
    kind: str = "map",
    shape: ShapeRule | None = None,
    params: Callable[[object, tuple], int] | None = None,
    nargs: tuple[int, ...] | int | None = 0,
    sampled: bool = True,
    doc: str = "",
    width_args: tuple[int, ...] = (),
) -> Callable[[Builder], Builder]:
    """Register the decorated torch builder as operation ``name``.

    ``shape(state, args)`` returns the output :class:`State` (a tuple of states for a
    ``split``; a ``join`` receives a tuple) or a string saying why the op does not
    apply; the default keeps the shape. ``params(state, args)`` counts parameters
    analytically; without it the module is built once per input and counted.
    ``nargs`` is the allowed number of integer arguments (``linear(64)`` has 1; ``None``
    allows any). ``sampled=False`` marks an extra op that the default grammar does
    not sample. ``width_args`` names the arguments that are output widths (scaled by
    width multipliers such as ``resnet18@0.25``). Registering a name twice raises :class:`~einnas.errors.PluginError`.
    """
    allowed = (nargs,) if isinstance(nargs, int) else (tuple(nargs) if nargs is not None else None)

    def decorate(build: Builder) -> Builder:
        source = _CURRENT_SOURCE[-1]
        rule, builder, counter = shape or _same_state, build, params
        if source != "einnas":
            rule = _guarded_rule(shape, name, source) if shape is not None else rule
            builder = _guarded_build(build, name, source)
            counter = _guarded_params(params, name, source) if params is not None else None
        REGISTRY.add(
            OpSpec(
                name=name, build=builder, kind=kind, shape=rule, params=counter,
                nargs=allowed, sampled=sampled, doc=doc or (build.__doc__ or "").strip().split("\n")[0],
                source=source, width_args=tuple(width_args),
            )
        )
        return build

    return decorate


def _guarded_rule(rule: ShapeRule, name: str, source: str) -> ShapeRule:
    """A plugin's shape rule that fails in one line naming the plugin and the op: raising,
    or returning something other than a State, a tuple of States or a reason string."""

    def guarded(state, args):
        try:
            out = rule(state, args)
        except Exception as error:  # noqa: BLE001 - any bug in user code becomes one line
            raise PluginError(f"{source}: the shape rule of operation '{name}' raised "
                              f"{type(error).__name__}: {error}") from None
        if isinstance(out, (State, str)) or (isinstance(out, tuple) and out and all(isinstance(o, State) for o in out)):
            return out
        raise PluginError(f"{source}: the shape rule of operation '{name}' returned "
                          f"{type(out).__name__} {out!r:.60}; expected a State, a tuple of States or a reason string")

    guarded.__wrapped__ = rule
    return guarded


def _guarded_build(build: Builder, name: str, source: str) -> Builder:
    """A plugin's builder that fails in one line: raising, or returning something that is not a torch module."""

    def guarded(state, args):
        from torch import nn

        try:
            module = build(state, args)
        except Exception as error:  # noqa: BLE001 - any bug in user code becomes one line
            raise PluginError(f"{source}: the builder of operation '{name}' raised {type(error).__name__}: {error}") from None
        if not isinstance(module, nn.Module):
            raise PluginError(f"{source}: the builder of operation '{name}' returned {type(module).__name__} "
                              f"{module!r:.60}; expected a torch.nn.Module")
        return module

    guarded.__wrapped__ = build
    guarded.__doc__ = build.__doc__
    return guarded


def _guarded_params(params, name: str, source: str):
    """A plugin's parameter count that fails in one line: raising, or not a non-negative integer."""

    def guarded(state, args):
        try:
            count = params(state, args)
        except Exception as error:  # noqa: BLE001
            raise PluginError(f"{source}: the params rule of operation '{name}' raised {type(error).__name__}: {error}") from None
        try:
            value = operator.index(count)  # ints and NumPy integers; not floats, strings or None
        except TypeError:
            value = -1
        if isinstance(count, bool) or value < 0:
            raise PluginError(f"{source}: the params rule of operation '{name}' returned {count!r:.60}; "
                              "expected a non-negative integer")
        return value

    guarded.__wrapped__ = params
    return guarded


def register_fusion(ops: tuple[str, ...], applies=None):
    """Register a builder for a module made of exactly ``ops`` (e.g. im2col, linear, col2im)."""

    def decorate(build):
        REGISTRY.fusions.append(Fusion(tuple(ops), build, applies or (lambda state, args: True)))
        return build

    return decorate
