"""Seed architectures (ResNet18, WRN16-4, ViT, MLP-Mixer) and resolving ARCH arguments.

Seeds are architecture strings in ``seeds/<name>.arch`` files, parsed by the grammar
like any other string (whitespace and line breaks are free in those files).
"""

from __future__ import annotations

from pathlib import Path

from einnas.errors import ArchitectureError
from einnas.grammar.pcfg import Grammar, load_grammar, read_user_text
from einnas.grammar.tree import Architecture, parse_arch

SEED_DIR = Path(__file__).with_name("seeds")
SEED_NAMES = ("resnet18", "wrn16_4", "vit", "mlp_mixer")
MAX_ARCH_FILE_BYTES = 2_000_000


def seed_text(name: str) -> str:
    """The architecture string of a seed, as stored (possibly over several lines)."""
    if name not in SEED_NAMES:
        raise ArchitectureError(f"unknown seed architecture {name!r}; seeds are {', '.join(SEED_NAMES)}")
    return (SEED_DIR / f"{name}.arch").read_text(encoding="utf-8")


def resolve_arch(text: str, grammar: Grammar | None = None) -> Architecture:
    """Turn an ARCH argument into an architecture: a seed name, ``@file`` or a string."""
    grammar = grammar or load_grammar()
    text = text.strip()
    if text in SEED_NAMES:
        return parse_arch(seed_text(text), grammar)
    if text.startswith("@"):
        path = Path(text[1:])
        content = read_user_text(path, MAX_ARCH_FILE_BYTES, ArchitectureError, "architecture file")
        try:
            return parse_arch(content, grammar)
        except ArchitectureError as error:
            raise ArchitectureError(f"{path}: {error}") from None
    if text.isidentifier() and "(" not in text and text not in _op_names(grammar):
        raise ArchitectureError(f"{text!r} is not a seed ({', '.join(SEED_NAMES)}), an @file or an architecture string")
    return parse_arch(text, grammar)


def _op_names(grammar: Grammar) -> set[str]:
    return {op.text for op in grammar.ops()}
