"""Derivation trees: the canonical printer and the parser.

A :class:`Node` is one expansion of a grammar rule: the rule's name, which
alternative was taken and the child nodes for the rule names in it. An
:class:`Architecture` is a tree with its canonical string (one line, the identity of
the architecture) and ``archid``, a short hash of that string. The analytic shape
checker :func:`analyse` lives in :mod:`einnas.grammar.shapes` (re-exported here).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from einnas.errors import ArchitectureError
from einnas.grammar.pcfg import Grammar
# Shape analysis is a backend of the interpreter (shapes.py); its names stay importable here.
from einnas.grammar.shapes import ArchInfo, analyse, head_params  # noqa: F401

MAX_ARCH_CHARS = 2_000_000
HEADS = ("tokens", "features")


class Node:
    """One rule expansion. ``pos`` is the (line, column) it was parsed from, if any."""

    __slots__ = ("rule", "alt", "children", "pos")

    def __init__(self, rule: str, alt: int, children: tuple = (), pos: tuple[int, int] | None = None):
        self.rule, self.alt, self.children, self.pos = rule, alt, children, pos

    def walk(self):
        """All nodes in pre-order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def replace(self, old: "Node", new: "Node") -> "Node":
        """A copy of this tree with the subtree ``old`` (by identity) replaced by ``new``."""
        if self is old:
            return new
        children = tuple(c.replace(old, new) for c in self.children)
        if all(a is b for a, b in zip(children, self.children)):
            return self
        return Node(self.rule, self.alt, children, self.pos)


def to_string(grammar: Grammar, node: Node) -> str:
    """The canonical one-line string of a derivation: literals joined, ", " after commas."""
    out: list[str] = []

    def emit(n: Node) -> None:
        alt = grammar.rules[n.rule].alternatives[n.alt]
        children = iter(n.children)
        for kind, value in alt.symbols:
            if kind == "lit":
                out.append(value + " " if value == "," else value)
            else:
                emit(next(children))

    emit(node)
    return "".join(out)


def archid_of(string: str) -> str:
    """A 12-hex-character id of a canonical architecture string."""
    return hashlib.blake2b(string.encode(), digest_size=6).hexdigest()


@dataclass
class Architecture:
    """An architecture: its derivation tree, canonical string and id."""

    tree: Node
    string: str
    grammar: Grammar = field(repr=False)
    info: ArchInfo | None = field(default=None, repr=False)

    @property
    def archid(self) -> str:
        return archid_of(self.string)

    def __str__(self) -> str:
        return self.string

    @staticmethod
    def from_tree(grammar: Grammar, tree: Node, info: ArchInfo | None = None) -> "Architecture":
        return Architecture(tree, to_string(grammar, tree), grammar, info)


def parse_arch(text: str, grammar: Grammar | None = None) -> Architecture:
    """Parse an architecture string of the grammar's language (whitespace is free).

    Syntax errors raise :class:`~einnas.errors.ArchitectureError` with line and column.
    """
    import lark

    if grammar is None:
        from einnas.grammar.pcfg import load_grammar

        grammar = load_grammar()
    if len(text) > MAX_ARCH_CHARS:
        raise ArchitectureError(f"architecture string longer than {MAX_ARCH_CHARS} characters")
    if not text.strip():
        raise ArchitectureError("empty architecture string")
    try:
        tree = grammar.lark.parse(text)
    except lark.exceptions.UnexpectedCharacters as error:
        near = text[error.pos_in_stream : error.pos_in_stream + 20].split("\n")[0]
        where = f"line {error.line}, column {error.column}"
        word = re.match(r"[A-Za-z_]\w*(\([^()]*\))?", text[error.pos_in_stream :])
        if word:
            from einnas.grammar.registry import REGISTRY

            name = word.group(0).split("(")[0]
            if REGISTRY.get(name) is None:
                raise ArchitectureError(f"{where}: unknown operation {word.group(0)!r}") from None
            if word.group(0) not in {op.text for op in grammar.ops()}:
                raise ArchitectureError(
                    f"{where}: operation {word.group(0)!r} is registered but not in the grammar "
                    f"{grammar.path} (add it to a rule to use it)"
                ) from None
        raise ArchitectureError(f"{where}: unexpected text {near!r}") from None
    except lark.exceptions.UnexpectedToken as error:
        if error.token.type == "$END":
            raise ArchitectureError("unexpected end of the architecture string (unclosed bracket?)") from None
        expected = sorted(_expected_text(grammar, error.expected))[:8]
        raise ArchitectureError(
            f"line {error.line}, column {error.column}: unexpected {error.token.value!r}"
            + (f"; expected one of {', '.join(expected)}" if expected else "")
        ) from None
    except lark.exceptions.UnexpectedEOF:
        raise ArchitectureError("unexpected end of the architecture string (unclosed bracket?)") from None
    except lark.exceptions.LarkError as error:
        raise ArchitectureError(str(error).strip().splitlines()[0]) from None
    node = _convert(grammar, tree)
    return Architecture.from_tree(grammar, node)


def _expected_text(grammar: Grammar, names) -> set[str]:
    out = set()
    for name in names:
        try:
            out.add(repr(grammar.lark.get_terminal(name).pattern.value))
        except (KeyError, AttributeError):
            out.add(name)
    return out


def _convert(grammar: Grammar, tree) -> Node:
    import lark

    rule = str(tree.data)
    symbols, children, pos = [], [], None
    for child in tree.children:
        if isinstance(child, lark.Token):
            symbols.append(("lit", child.value))
            pos = pos or (child.line, child.column)
        else:
            symbols.append(("rule", str(child.data)))
            converted = _convert(grammar, child)
            children.append(converted)
            pos = pos or converted.pos
    alt = grammar.signatures[rule][tuple(symbols)]
    # A child that is reachable from `start` through p=0 choices still parses; that is
    # how seed-only operations are written.
    return Node(rule, alt, tuple(children), pos)


def describe_node(grammar: Grammar, node: Node) -> str:
    """How an error message names a node: its text (shortened) and position."""
    text = to_string(grammar, node)
    if len(text) > 60:
        text = text[:57] + "..."
    where = f" at line {node.pos[0]}, column {node.pos[1]}" if node.pos else ""
    return f"{text!r}{where}"


def to_pretty(grammar: Grammar, node: Node, width: int = 88, indent: str = "    ") -> str:
    """The canonical string laid out over several lines (the parser ignores whitespace)."""
    lines: list[str] = []

    def emit(n: Node, level: int, suffix: str) -> None:
        flat = to_string(grammar, n)
        pad = indent * level
        alt = grammar.rules[n.rule].alternatives[n.alt]
        while alt.form == "choice":
            n = n.children[0]
            alt = grammar.rules[n.rule].alternatives[n.alt]
        kinds = [kind for kind, _ in alt.symbols]
        regular = len(kinds) >= 3 and kinds[0] == "lit" and kinds[-1] == "lit" and all(
            kinds[i] != kinds[i + 1] for i in range(len(kinds) - 1)
        )
        if len(pad) + len(flat) + len(suffix) <= width or not regular:
            lines.append(pad + flat + suffix)
            return
        lines.append(pad + alt.symbols[0][1])
        children = iter(n.children)
        symbols = alt.symbols[1:-1]
        for i, (kind, _) in enumerate(symbols):
            if kind == "rule":
                after = symbols[i + 1][1] if i + 1 < len(symbols) else ""
                emit(next(children), level + 1, after)
        lines.append(pad + alt.symbols[-1][1] + suffix)

    emit(node, 0, "")
    return "\n".join(lines) + "\n"
