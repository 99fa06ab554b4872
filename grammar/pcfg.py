"""Load a grammar file into a PCFG: rules, alternatives, probabilities and ops.

The file is a plain Lark grammar. Lark compiles it (so the same file parses
architecture strings); this module reads the compiled rules, attaches the
``// p=...`` probability written after each alternative, and resolves each quoted
operation (``"linear(64)"``) against the op registry.

Alternatives come in three forms:

* **op** — a single quoted operation: a leaf of the derivation;
* **choice** — a single rule name: expands to that rule;
* **structure** — punctuation and rule names, e.g. ``"sequential(" module "," module ")"``.
  The children run one after another on the tensor; after a ``split`` child, the
  following ``map`` children run on the branches (one per branch, or one design for
  all) until a ``join`` child merges them.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from einnas.errors import GrammarError
from einnas.grammar.registry import REGISTRY, OpSpec

DEFAULT_GRAMMAR = Path(__file__).with_name("einspace.lark")
# Conventional search spaces shipped with einnas, searchable by name (`--grammar cnn`).
SPACES_DIR = Path(__file__).with_name("spaces")
_SPACE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
MAX_GRAMMAR_BYTES = 1_000_000
_OP_LITERAL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\(([^()]*)\))?$")
_RULE_START = re.compile(r"^\s*([?!]?)([a-z_][a-z_0-9]*)(\.-?\d+)?\s*:")



@dataclass(frozen=True)
class OpCall:
    """An operation with its integer arguments, as written in the grammar: ``linear(64)``."""

    name: str
    args: tuple[int, ...]
    spec: OpSpec

    @property
    def text(self) -> str:
        return f"{self.name}({','.join(map(str, self.args))})" if self.args else self.name


@dataclass
class Alternative:
    """One alternative of a rule. ``symbols`` holds ('lit', text) and ('rule', name) pairs."""

    rule: str
    index: int
    symbols: tuple[tuple[str, str], ...]
    prob: float
    line: int
    op: OpCall | None = None
    plan: tuple = ()

    @cached_property  # the sampler's walk reads it at every structure it draws
    def children(self) -> tuple[str, ...]:
        return tuple(name for kind, name in self.symbols if kind == "rule")

    @property
    def form(self) -> str:
        if self.op is not None:
            return "op"
        return "choice" if len(self.symbols) == 1 else "structure"

    def signature(self) -> tuple:
        return tuple(self.symbols)


@dataclass
class Rule:
    name: str
    alternatives: list[Alternative] = field(default_factory=list)
    kind: str = "map"
    line: int = 0


@dataclass
class Grammar:
    """A loaded grammar: rules by name, the Lark parser and where it came from."""

    rules: dict[str, Rule]
    text: str
    path: str
    lark: object
    min_height: dict[str, int]
    signatures: dict[str, dict[tuple, int]]
    plugins: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def ops(self) -> list[OpCall]:
        """Every operation the grammar names, in file order (duplicates removed)."""
        seen, out = set(), []
        for rule in self.rules.values():
            for alt in rule.alternatives:
                if alt.op is not None and alt.op.text not in seen:
                    seen.add(alt.op.text)
                    out.append(alt.op)
        return out


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval_prob(expr: str, where: str) -> float:
    """Evaluate ``1/3`` or ``(1-0.32)/3``: numbers and + - * / only, never eval()."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError

    try:
        value = walk(ast.parse(expr.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError):
        raise GrammarError(f"{where}: probability {expr.strip()!r} is not a number or simple arithmetic") from None
    if not 0.0 <= value <= 1.0:
        raise GrammarError(f"{where}: probability {value:g} is outside [0, 1]")
    return value


_P_ANNOTATION = re.compile(r"//.*?\bp\s*=\s*(.*)$")
_ARITHMETIC = re.compile(r"[0-9.()+\-*/ ]*")


def _prob_text(comment: str, where: str) -> str | None:
    """The text of a ``// p=...`` annotation, or None. A value that is not arithmetic
    (``p=abc``, ``p=0.5x``) is an error, not a silently ignored comment."""
    match = _P_ANNOTATION.search(comment)
    if match is None:
        return None
    rest = match.group(1)
    expr = _ARITHMETIC.match(rest).group(0)
    tail = rest[len(expr):]
    if not expr.strip() or (tail and expr == expr.rstrip()):
        token = rest.split()[0] if rest.split() else ""
        raise GrammarError(f"{where}: probability {token!r} after 'p=' is not a number or simple arithmetic")
    return expr


def _scan_annotations(text: str, path: str) -> dict[tuple[str, int], tuple[int, float | None]]:
    """Map (rule, alternative index) -> (line, probability or None) from the file text."""
    found: dict[tuple[str, int], tuple[int, float | None]] = {}
    rule, index = None, -1
    for lineno, raw in enumerate(text.splitlines(), 1):
        code, comment = _split_comment(raw)
        match = _RULE_START.match(code)
        if match:
            rule, index = match.group(2), 0
            code = code[match.end():]
            if code.strip():
                found.setdefault((rule, 0), (lineno, None))
        elif code.strip().startswith("%") or re.match(r"^\s*[A-Z_][A-Z_0-9]*(\.\d+)?\s*:", code):
            rule = None
            continue
        if rule is None:
            continue
        _refuse_ebnf(code, rule, f"{path}:{lineno}")
        alternatives = 0
        for part in _top_level_bars(code):
            if part == "|":
                index += 1
            elif part.strip():
                found.setdefault((rule, index), (lineno, None))
                alternatives += 1
        prob = _prob_text(comment, f"{path}:{lineno}") if comment else None
        if prob is not None and alternatives > 1:  # which one it belongs to would be a guess
            raise GrammarError(f"{path}:{lineno}: 'p=' after {alternatives} alternatives on one line; "
                               "write one alternative per line when you annotate it")
        if prob is not None:
            found[(rule, index)] = (found.get((rule, index), (lineno, None))[0],
                                    _eval_prob(prob, f"{path}:{lineno}"))
    return found


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # a quoted literal, escapes included


def _refuse_ebnf(code: str, rule: str, where: str) -> None:
    """Lark expands ``x?``, ``[x]``, ``x*``, ``x+`` and ``x~n`` into hidden alternatives and
    rules, which would shift every ``p=`` after them: refuse them where they are written."""
    used = sorted(set(_QUOTED.sub("", code)) & set("?[]*+~"))
    if used:
        raise GrammarError(f"{where}: rule {rule!r}: operator {''.join(used)!r} is not supported in an architecture "
                           "grammar (operators ?, *, +, ~ and [] hide alternatives); write the alternatives out")


def _split_comment(line: str) -> tuple[str, str]:
    in_str = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            in_str = not in_str
        elif not in_str and line.startswith("//", i):
            return line[:i], line[i:]
    return line, ""


def _top_level_bars(code: str) -> list[str]:
    parts, buf, in_str = [], "", False
    for i, ch in enumerate(code):
        if ch == '"' and (i == 0 or code[i - 1] != "\\"):
            in_str = not in_str
        if ch == "|" and not in_str:
            parts += [buf, "|"]
            buf = ""
        else:
            buf += ch
    return parts + [buf]


def parse_op_literal(text: str, where: str) -> tuple[str, tuple[int, ...]] | None:
    """Split ``linear(64)`` into ('linear', (64,)); None if the text is not op-shaped."""
    match = _OP_LITERAL.match(text)
    if not match:
        return None
    name, argtext = match.group(1), match.group(2)
    if argtext is None or not argtext.strip():
        return name, ()
    try:
        return name, tuple(int(a) for a in argtext.split(","))
    except ValueError:
        raise GrammarError(f"{where}: arguments of {text!r} must be integers") from None


def load_grammar(path: str | Path | None = None, plugins=()) -> Grammar:
    """Load and check a grammar file (``None``: the built-in einspace grammar).

    ``plugins`` are Python modules or files that register extra operations; they are
    imported before the grammar's operation names are resolved.
    """
    from einnas.grammar.plugins import load_plugins

    load_plugins(plugins)
    return _load_cached(str(resolve_grammar(path)), tuple(plugins))


def space_names() -> list[str]:
    """Names of the built-in search spaces: ``einspace`` and every ``grammar/spaces/*.lark``."""
    return ["einspace"] + sorted(p.stem for p in SPACES_DIR.glob("*.lark") if p.stem != "einspace")


def space_for_sha256(sha256: str) -> str | None:
    """The name of the built-in space whose file text has this SHA-256 (``Grammar.sha256``,
    what studies and records store), or ``None``: how a record's architecture string is
    parsed with the grammar that made it, e.g. ``load_grammar(space_for_sha256(r["grammar"]))``.
    """
    for name in space_names():
        if hashlib.sha256(resolve_grammar(name).read_text(encoding="utf-8").encode()).hexdigest() == sha256:
            return name
    return None


def space_rows() -> list[dict]:
    """One row per built-in space: its name, file (relative to the package) and first comment line."""
    rows = []
    for name in space_names():
        path = resolve_grammar(name)
        first = next((line.lstrip("/ ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("//") and line.strip("/ ")), "")
        rows.append({"name": name, "file": str(path.relative_to(DEFAULT_GRAMMAR.parent.parent)), "about": first})
    return rows


def resolve_grammar(path: str | Path | None) -> Path:
    """The grammar file for ``--grammar``: ``None`` or ``einspace`` is the default file,
    a built-in space name (``cnn``) is ``grammar/spaces/<name>.lark``, anything else a path.

    A bare name (letters, digits, ``_``) that is neither a space nor an existing file
    raises :class:`GrammarError` listing the available names. Built-in names win over
    a file of the same name in the working folder (write ``./cnn`` for that file).
    """
    if path is None:
        return DEFAULT_GRAMMAR
    text = str(path)
    if _SPACE_NAME.match(text):
        if text == "einspace":
            return DEFAULT_GRAMMAR
        shipped = SPACES_DIR / f"{text}.lark"
        if shipped.is_file():
            return shipped
        if not Path(text).is_file():
            raise GrammarError(f"unknown grammar {text!r}: not a file, nor a built-in space "
                               f"(available: {', '.join(space_names())})")
    return Path(text)


def read_user_text(path: str | Path, max_bytes: int, error: type, what: str) -> str:
    """Read a user's text file with a size limit; problems raise ``error`` as one line."""
    file = Path(path)
    try:
        if file.stat().st_size > max_bytes:
            raise error(f"{path}: {what} is larger than {max_bytes} bytes")
        with open(file, "rb") as handle:  # bounded: /dev/zero or a growing file reports size 0
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise error(f"{path}: {what} is larger than {max_bytes} bytes")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"{path}: cannot read {what} ({problem})") from None


@lru_cache(maxsize=32)
def _load_cached(path: str, plugins: tuple) -> Grammar:
    return grammar_from_text(read_user_text(path, MAX_GRAMMAR_BYTES, GrammarError, "grammar file"), path, plugins)


def grammar_from_text(text: str, path: str = "<grammar>", plugins: tuple = ()) -> Grammar:
    """Build a :class:`Grammar` from grammar text (see :func:`load_grammar`)."""
    import lark

    import einnas.grammar.ops  # noqa: F401  (registers the built-in operations)
    import einnas.grammar.ops_extra  # noqa: F401  (LRN, global pooling, dropout, sum, flatten)

    try:
        parser = lark.Lark(text, parser="lalr", lexer="contextual", keep_all_tokens=True, start="start")
    except lark.exceptions.GrammarError as error:
        raise GrammarError(_lark_grammar_error(str(error), path)) from None
    except lark.exceptions.UnexpectedInput as error:
        raise GrammarError(f"{path}:{error.line}:{error.column}: grammar syntax error") from None
    except lark.exceptions.LarkError as error:
        raise GrammarError(f"{path}: {str(error).strip().splitlines()[0]}") from None
    except OSError as error:  # %import of a grammar file that is not there or not readable
        raise GrammarError(f"{path}: %import failed: {error.strerror or error}: {error.filename!r}") from None

    notes = _scan_annotations(text, path)
    rules: dict[str, Rule] = {}
    for lark_rule in parser.rules:
        name = lark_rule.origin.name
        name = name.value if hasattr(name, "value") else str(name)
        if name.startswith("_") or lark_rule.options.expand1:
            raise GrammarError(
                f"{path}: rule {name!r}: operators ?, *, +, [] and inlined rules are not supported in an "
                "architecture grammar; write the alternatives out"
            )
        line, prob = notes.get((name, lark_rule.order), (0, None))
        where = f"{path}:{line}" if line else path
        symbols = []
        for sym in lark_rule.expansion:
            if sym.is_term:
                pattern = parser.get_terminal(sym.name).pattern
                if type(pattern).__name__ != "PatternStr":
                    raise GrammarError(f"{where}: rule {name!r}: only quoted text may appear, not terminal {sym.name}")
                symbols.append(("lit", pattern.value))
            else:
                symbols.append(("rule", sym.name))
        if not symbols:
            raise GrammarError(f"{where}: rule {name!r} has an empty alternative")
        alt = Alternative(name, lark_rule.order, tuple(symbols), -1.0 if prob is None else prob, line)
        if len(symbols) == 1 and symbols[0][0] == "lit":
            alt.op = _resolve_op(symbols[0][1], where, name)
        rules.setdefault(name, Rule(name, line=line)).alternatives.append(alt)

    for rule in rules.values():
        rule.alternatives.sort(key=lambda a: a.index)
        _assign_probabilities(rule, path)
    if "start" not in rules:
        raise GrammarError(f"{path}: the grammar has no 'start' rule")
    _infer_kinds(rules, path)
    for rule in rules.values():
        for alt in rule.alternatives:
            if alt.form == "structure":
                alt.plan = _plan(alt, rules, path)
    signatures = {name: {alt.signature(): alt.index for alt in rule.alternatives} for name, rule in rules.items()}
    return Grammar(rules, text, path, parser, _min_heights(rules), signatures, tuple(plugins))


def _lark_grammar_error(message: str, path: str) -> str:
    """Lark's multi-line grammar errors as one line naming the file (and the line where lark knows it)."""
    import re

    text = message.strip()
    found = re.match(r"Unexpected (.{1,40}?),? at line (\d+) column (\d+)", text)
    if found:  # an unclosed quote or bracket, a stray colon: lark's context lines follow
        return f"{path}:{found[2]}:{found[3]}: grammar syntax error (unexpected {found[1].lower()})"
    if "collision" in text:  # two rules derive the same text: the parser could not tell them apart
        names = sorted(set(re.findall(r"<(\w+) :", text)))  # sorted: lark lists them in hash order
        return (f"{path}: ambiguous grammar: rules {' and '.join(repr(n) for n in names)} can derive the same text "
                "(a rule that only repeats another, or a rule that is its own only alternative)")
    return f"{path}: {text.splitlines()[0]}"


def _resolve_op(literal: str, where: str, rule: str) -> OpCall:
    parsed = parse_op_literal(literal, where)
    if parsed is None:
        raise GrammarError(f"{where}: rule {rule!r}: {literal!r} is neither an operation nor part of a structure")
    name, args = parsed
    spec = REGISTRY.get(name)
    if spec is None:
        raise GrammarError(f"{where}: rule {rule!r}: unknown operation {name!r} (see `einnas grammar check` for the registered ones, or load a --plugin)")
    problem = spec.check_args(args)
    if problem:
        raise GrammarError(f"{where}: rule {rule!r}: {problem}")
    return OpCall(name, args, spec)


def _assign_probabilities(rule: Rule, path: str) -> None:
    given = sum(a.prob for a in rule.alternatives if a.prob >= 0)
    free = [a for a in rule.alternatives if a.prob < 0]
    if given > 1.0 + 1e-6:
        raise GrammarError(f"{path}:{rule.line}: probabilities of rule {rule.name!r} sum to {given:.4g} > 1")
    if free:
        share = max(0.0, 1.0 - given) / len(free)
        for alt in free:
            alt.prob = share
    elif abs(given - 1.0) > 1e-6:
        raise GrammarError(f"{path}:{rule.line}: probabilities of rule {rule.name!r} sum to {given:.4g}, not 1")
    if sum(a.prob for a in rule.alternatives) <= 0:
        raise GrammarError(f"{path}:{rule.line}: rule {rule.name!r} has no alternative with positive probability")


def _infer_kinds(rules: dict[str, Rule], path: str) -> None:
    """A rule's kind (map/split/join) is that of its ops; structures are maps."""
    kinds: dict[str, str] = {}
    for _ in range(len(rules) + 1):
        for rule in rules.values():
            found = set()
            for alt in rule.alternatives:
                if alt.op is not None:
                    found.add(alt.op.spec.kind)
                elif alt.form == "structure":
                    found.add("map")
                elif alt.children[0] in kinds:
                    found.add(kinds[alt.children[0]])
            if len(found) > 1:
                raise GrammarError(
                    f"{path}:{rule.line}: rule {rule.name!r} mixes {' and '.join(sorted(found))} alternatives; "
                    "splits, joins and tensor-to-tensor modules need separate rules"
                )
            if found:
                kinds[rule.name] = found.pop()
    for rule in rules.values():
        rule.kind = kinds.get(rule.name, "map")


def _plan(alt: Alternative, rules: dict[str, Rule], path: str) -> tuple:
    """Turn a structure's children into steps: ('map', rule) or ('branch', split, body, join)."""
    steps, children, i = [], alt.children, 0
    where = f"{path}:{alt.line}: rule {alt.rule!r}"
    while i < len(children):
        kind = rules[children[i]].kind
        if kind == "map":
            steps.append(("map", children[i]))
            i += 1
        elif kind == "split":
            j = i + 1
            while j < len(children) and rules[children[j]].kind == "map":
                j += 1
            if j == len(children) or rules[children[j]].kind != "join":
                raise GrammarError(f"{where}: split {children[i]!r} is not closed by a join rule")
            if j == i + 1:
                raise GrammarError(f"{where}: split {children[i]!r} has no branch module before its join")
            steps.append(("branch", children[i], tuple(children[i + 1 : j]), children[j]))
            i = j + 1
        else:
            raise GrammarError(f"{where}: join {children[i]!r} has no split before it")
    return tuple(steps)


def _min_heights(rules: dict[str, Rule]) -> dict[str, int]:
    """Smallest derivation height of each rule (op leaf = 1); used to force termination."""
    inf = 10**9
    height = {name: inf for name in rules}
    for _ in range(len(rules) + 2):
        for rule in rules.values():
            for alt in rule.alternatives:
                if alt.prob <= 0:
                    continue
                h = alt_height(alt, height)
                if h < height[rule.name]:
                    height[rule.name] = h
    return height


def alt_height(alt: Alternative, height: dict[str, int]) -> int:
    if alt.op is not None:
        return 1
    if alt.form == "choice":
        return height[alt.children[0]]
    return 1 + max(height[c] for c in alt.children)
