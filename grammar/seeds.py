"""Seed architectures (ResNet18, WRN16-4, ViT, MLP-Mixer), scaled to a task, and ARCH arguments.

Seeds are architecture strings in ``seeds/<name>.arch`` files, parsed by the grammar
like any other string (whitespace and line breaks are free in those files). At full
width they have 2.8M-11.2M parameters, too many for a CPU budget, so a seed name may
carry a width multiplier: ``resnet18@0.25`` is ResNet18 with every ``linear(N)``
width multiplied by 0.25 and snapped to the widths the grammar offers (16 ... 2048
in einspace; see :func:`einnas.grammar.scaling.scale_widths`). Given an input shape,
a seed is also fitted to it (:func:`einnas.grammar.scaling.fit_to_input`): on token
inputs the convolutions become per-token linear layers and the patch embeddings are
skipped; on a 1xL image (a sequence viewed as an image) a 4x4 patch embedding
becomes a strided 3-wide one. Both rewrites stay inside the grammar's language.

For a search, :func:`seeds_for` picks for every seed the largest scale whose
analytic parameters, activations, MACs and estimated epoch time fit a :class:`SeedBudget`
(widths first; at the smallest widths, depth: ``vit@0.03125d0.5`` keeps half of the
repeatable blocks, :func:`einnas.grammar.scaling.scale_depth`)::

    budget = budget_for_training(train_size=3000, epochs=8, seconds=10, max_params=1_000_000)
    for label, arch in seeds_for((1, 28, 28), 10, budget):
        print(label, arch.info.params)          # resnet18@0.125 ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from fractions import Fraction
from pathlib import Path

from einnas.errors import ArchitectureError
from einnas.grammar.pcfg import Grammar, load_grammar, read_user_text
from einnas.grammar.scaling import Estimate, epoch_seconds, estimate, fit_to_input, scale_depth, scale_widths
from einnas.grammar.registry import TOKENS
from einnas.grammar.tree import Architecture, analyse, parse_arch

SEED_DIR = Path(__file__).with_name("seeds")
SEED_NAMES = ("resnet18", "wrn16_4", "vit", "mlp_mixer")
MAX_ARCH_FILE_BYTES = 2_000_000
#: The width multipliers :func:`seeds_for` tries, largest first (each halves the widths).
SCALES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+|\d+/\d+)"
_NAME = re.compile(rf"^([A-Za-z_]\w*)@{_NUMBER}(?:d{_NUMBER})?$")
#: Depth multipliers tried once the widths are at the grammar's smallest.
DEPTHS = (0.5, 0.25)


@dataclass(frozen=True)
class SeedBudget:
    """What a seed may cost: parameters (with the head), activations and MACs per
    sample, and estimated seconds per training epoch over ``train_size`` samples
    (:func:`einnas.grammar.scaling.epoch_seconds`). ``None`` means unbounded."""

    max_params: int | None = None
    max_activations: int | None = None
    max_macs: int | None = None
    max_epoch_seconds: float | None = None
    train_size: int = 0
    batch_size: int = 256

    def fits(self, figures: Estimate) -> bool:
        """Whether an :class:`~einnas.grammar.scaling.Estimate` is within every bound."""
        seconds = epoch_seconds(figures, self.train_size, self.batch_size) if self.max_epoch_seconds else None
        pairs = ((figures.params, self.max_params), (figures.activations, self.max_activations),
                 (figures.macs, self.max_macs), (seconds, self.max_epoch_seconds))
        return all(limit is None or value <= limit for value, limit in pairs)


def budget_for_training(train_size: int, epochs: int, seconds: float | None, *, max_params: int | None = None,
                        max_activations: int | None = None, batch_size: int = 256) -> SeedBudget:
    """A budget in which ``epochs`` epochs over ``train_size`` samples are estimated to
    finish in ``seconds`` (no time bound when ``seconds`` is ``None``)."""
    per_epoch = seconds / max(1, epochs) if seconds is not None else None
    return SeedBudget(max_params, max_activations, None, per_epoch, train_size, batch_size)


def seed_text(name: str) -> str:
    """The architecture string of a seed, as stored (possibly over several lines)."""
    if name not in SEED_NAMES:
        raise ArchitectureError(f"unknown seed architecture {name!r}; seeds are {', '.join(SEED_NAMES)}")
    return (SEED_DIR / f"{name}.arch").read_text(encoding="utf-8")


def parse_seed_name(text: str) -> tuple[str, float, float] | None:
    """``"resnet18@0.25"`` -> ``("resnet18", 0.25, 1.0)``, ``"vit@0.03125d0.5"`` -> ``("vit",
    0.03125, 0.5)`` (width, depth), ``"vit"`` -> ``("vit", 1.0, 1.0)``; ``None`` when ``text``
    is not a seed name. Raises for a seed with an unusable multiplier."""
    text = text.strip()
    if text in SEED_NAMES:
        return text, 1.0, 1.0
    match = _NAME.match(text)
    if not match or match.group(1) not in SEED_NAMES:
        return None
    width = float(Fraction(match.group(2)))
    depth = float(Fraction(match.group(3))) if match.group(3) else 1.0
    if not 0 < width <= 64:
        raise ArchitectureError(f"{text!r}: the width multiplier must be in (0, 64], not {match.group(2)}")
    if not 0 < depth <= 1:
        raise ArchitectureError(f"{text!r}: the depth multiplier must be in (0, 1], not {match.group(3)}")
    return match.group(1), width, depth


def seed_label(name: str, multiplier: float, depth: float = 1.0) -> str:
    """The seed name of a scaled seed: ``seed_label("vit", 0.125) == "vit@0.125"``,
    ``seed_label("vit", 0.03125, 0.5) == "vit@0.03125d0.5"``."""
    if multiplier == 1 and depth == 1:
        return name
    return f"{name}@{multiplier:g}" + (f"d{depth:g}" if depth != 1 else "")


def seed_arch(name: str, multiplier: float = 1.0, grammar: Grammar | None = None, input_shape=None,
              num_classes: int = 10, depth: float = 1.0) -> Architecture:
    """A seed at a width (and depth) multiplier; fitted to ``input_shape`` (with
    ``arch.info`` set) if given. A depth below 1 needs the input shape."""
    grammar = grammar or load_grammar()
    arch = parse_arch(seed_text(name), grammar)
    if multiplier != 1:
        arch = scale_widths(arch, multiplier)
    if input_shape is None:
        if depth != 1:
            raise ArchitectureError(f"{seed_label(name, multiplier, depth)}: a depth multiplier needs the input shape")
        return arch
    shape = "x".join(map(str, input_shape))
    try:
        arch = fit_to_input(arch, tuple(input_shape), num_classes)
        if depth != 1:
            arch = fit_to_input(scale_depth(arch, depth, tuple(input_shape), num_classes), tuple(input_shape),
                                num_classes)
    except ArchitectureError as error:
        label = seed_label(name, multiplier, depth)
        raise ArchitectureError(f"seed {label} has no form for input {shape}: {error}") from None
    if _token_model(name, grammar) and arch.info.output.mode == TOKENS:
        arch = _pool_tokens(arch, tuple(input_shape), num_classes)
    return arch


# The reference input of the seeds (einspace's 3x64x64).
_NATIVE_INPUT = (3, 64, 64)
_TOKEN_MODELS: dict[tuple[str, str], bool] = {}


def _token_model(name: str, grammar: Grammar) -> bool:
    """Whether a seed is a token model (ViT, Mixer): its output at its native input is tokens."""
    key = (name, grammar.sha256)
    if key not in _TOKEN_MODELS:
        _TOKEN_MODELS[key] = analyse(parse_arch(seed_text(name), grammar), _NATIVE_INPUT).output.mode == TOKENS
    return _TOKEN_MODELS[key]


def _pool_tokens(arch: Architecture, input_shape, num_classes: int) -> Architecture:
    """A token model closed the usual ViT way: features to the first axis, so the head
    averages over tokens and classifies the features. einnas's default token head
    averages each token's features instead, which after a final LayerNorm is zero for
    every token (measured: ViT and Mixer seeds at chance on digits; 81% and 71% validation
    with this pooling). A seed resolved without an input shape is the stored one, with
    the paper's head and parameter count."""
    try:
        pooled = parse_arch(f"sequential({arch.string}, routing[identity, identity, permute(2,1)])", arch.grammar)
        pooled.info = analyse(pooled, input_shape, num_classes)
    except ArchitectureError:  # a grammar without these forms: keep the paper's head
        return arch
    return pooled


class ScaledSeed(NamedTuple):
    """A seed scaled to a budget: its label (``resnet18@0.0625``), multipliers and architecture."""

    label: str
    width: float
    depth: float
    arch: Architecture


def scaled_seed(name: str, input_shape, num_classes: int = 10, *, max_params: int | None = None,
                max_macs: int | None = None, max_activations: int | None = None,
                budget: SeedBudget | None = None, grammar: Grammar | None = None) -> ScaledSeed:
    """The largest scale at which seed ``name`` fits the bounds (the keyword limits, or
    a whole ``budget``), fitted to the input.

    Widths shrink first (:data:`SCALES`); once they are all at the grammar's smallest,
    the depth (:data:`DEPTHS`). A seed that fits at no scale is replaced by its smallest
    form (the nearest one), never dropped: the caller checks ``arch.info`` against its
    own limits.
    """
    budget = budget or SeedBudget(max_params, max_activations, max_macs)
    grammar = grammar or load_grammar()
    shape = tuple(input_shape)
    seen: set[str] = set()
    best = None
    for width in SCALES:
        arch = seed_arch(name, width, grammar, shape, num_classes)
        if arch.archid in seen:  # every width already at the grammar's smallest
            break
        seen.add(arch.archid)
        best = ScaledSeed(seed_label(name, width), width, 1.0, arch)
        if budget.fits(estimate(arch, shape, num_classes)):
            return best
    for depth in DEPTHS:
        arch = seed_arch(name, best.width, grammar, shape, num_classes, depth)
        if arch.archid in seen:  # no repeatable block left to drop
            continue
        seen.add(arch.archid)
        best = ScaledSeed(seed_label(name, best.width, depth), best.width, depth, arch)
        if budget.fits(estimate(arch, shape, num_classes)):
            return best
    return best


def seeds_for(input_shape, num_classes: int, budget: SeedBudget, names=SEED_NAMES,
              grammar: Grammar | None = None) -> list[tuple[str, Architecture]]:
    """Every seed scaled to ``budget`` and fitted to the input: ``[(label, arch)]`` with
    labels such as ``"resnet18@0.25"`` that :func:`resolve_arch` accepts back."""
    return [scaled_seed(name, input_shape, num_classes, budget=budget, grammar=grammar)[::3] for name in names]


def resolve_arch(text: str, grammar: Grammar | None = None, input_shape=None, num_classes: int = 10) -> Architecture:
    """Turn an ARCH argument into an architecture: a seed name (``resnet18``,
    ``resnet18@0.25``), ``@file`` or a string. Seeds are fitted to ``input_shape`` when
    it is given; files and strings are taken as written."""
    grammar = grammar or load_grammar()
    text = text.strip()
    seed = parse_seed_name(text)
    if seed is not None:
        return seed_arch(seed[0], seed[1], grammar, input_shape, num_classes, seed[2])
    if text.startswith("@"):
        path = Path(text[1:])
        content = read_user_text(path, MAX_ARCH_FILE_BYTES, ArchitectureError, "architecture file")
        try:
            return parse_arch(content, grammar)
        except ArchitectureError as error:
            raise ArchitectureError(f"{path}: {error}") from None
    if re.match(r"^[A-Za-z_]\w*@", text):
        raise ArchitectureError(f"{text!r}: a scaled seed is NAME@MULTIPLIER with NAME one of {', '.join(SEED_NAMES)}, "
                                "e.g. resnet18@0.25")
    if text.isidentifier() and "(" not in text and text not in _op_names(grammar):
        raise ArchitectureError(f"{text!r} is not a seed ({', '.join(SEED_NAMES)}), an @file or an architecture string")
    return parse_arch(text, grammar)


def _op_names(grammar: Grammar) -> set[str]:
    return {op.text for op in grammar.ops()}
