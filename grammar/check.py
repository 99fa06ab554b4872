"""Checking a grammar: reachability, termination and the expected size of its networks.

:func:`check_grammar` takes a loaded :class:`~einnas.grammar.pcfg.Grammar` (loading
already rejects unknown operations and invalid probabilities) and reports:

* the rules, their alternatives and probabilities, and which rules are sampled,
  parse-only (reachable only through ``p=0`` alternatives) or unreachable;
* the operations the grammar samples or only parses, and the registered operations
  it leaves out (both directions between the grammar file and the op registry);
* rules that cannot terminate through positive-probability alternatives (an error);
* the **mean matrix** ``M[X, Y] = Σ_alt p(alt) · (number of Y in alt)`` over the
  sampled nonterminals, its spectral radius and whether the grammar is sub-critical
  (radius < 1: derivations are finite with probability 1 and have a finite mean
  size). A design shared by ``b`` branches counts once in the derivation; the
  *built* matrix counts its ``b`` copies, i.e. the size of the built network (the
  branch rule of :mod:`einnas.grammar.interpret`, :func:`shares_design`);
* the expected number of module expansions and of leaves per network, from
  ``N = (I − M)⁻¹`` (infinite when super-critical), and, for the recursive choice
  rule (einspace's ``module``), the critical probability of its non-recursive
  alternatives: for einspace, p(module → computation) > 4/13.

The figures use the grammar's probabilities before shape filtering and limits, which
the sampler applies on top (they make real samples somewhat smaller).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

import einnas.grammar.ops  # noqa: F401  (registers the built-in operations, for op_rows)
import einnas.grammar.ops_extra  # noqa: F401  (LRN, global pooling, dropout, sum, flatten)
from einnas.grammar.interpret import shares_design
from einnas.grammar.pcfg import _RULE_START, Grammar, _scan_annotations, _split_comment
from einnas.grammar.registry import IMAGE, REGISTRY, TOKENS, State

NEAR_CRITICAL = 0.97
_NO_PATH = 10**9  # pcfg._min_heights marks rules without a terminating path with this
# Input states on which a split op reports its branch count (shape rules are analytic).
_PROBES = (State((64, 64, 64), IMAGE), State((64, 64), TOKENS), State((3, 32, 32), IMAGE))


@dataclass
class RuleInfo:
    """One rule: its kind, where it is, how it is reached and its alternatives ``(text, p)``."""

    name: str
    kind: str
    line: int
    status: str  # "sampled", "parse-only" or "unreachable"
    alternatives: list[tuple[str, float]]


@dataclass
class GrammarReport:
    """What :func:`check_grammar` found. ``ok`` is false when ``errors`` is not empty."""

    path: str
    sha256: str
    rules: list[RuleInfo]
    ops_sampled: list[str]
    ops_parse_only: list[str]
    missing: list[str]        # registered ops marked sampled=True that this grammar never samples
    available: list[str]      # registered extra ops (sampled=False) not named here
    nonterminals: list[str]
    mean: np.ndarray = field(repr=False)
    mean_built: np.ndarray = field(repr=False)
    radius: float
    radius_built: float
    modules: list[str]         # the recursive choice rules counted as "modules"
    module_mean: float | None  # new modules per module (einspace: 13(1-p)/9)
    expected_modules: float
    expected_leaves: float
    expected_modules_built: float
    expected_leaves_built: float
    critical: dict | None
    warnings: list[str]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def subcritical(self) -> bool:
        return self.radius < 1.0

    def as_dict(self) -> dict:
        """A JSON-ready dict (infinite figures are written as the string ``"infinite"``)."""
        data = asdict(self)
        data["mean"], data["mean_built"] = self.mean.tolist(), self.mean_built.tolist()
        data.update(ok=self.ok, subcritical=self.subcritical)
        return {k: ("infinite" if isinstance(v, float) and math.isinf(v) else v) for k, v in data.items()}


def _alt_text(alt) -> str:
    return " ".join(f'"{value}"' if kind == "lit" else value for kind, value in alt.symbols)


def _reach(grammar: Grammar, positive: bool) -> set[str]:
    seen, stack = {"start"}, ["start"]
    while stack:
        for alt in grammar.rules[stack.pop()].alternatives:
            if positive and alt.prob <= 0:
                continue
            for child in alt.children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return seen


def _branch_count(grammar: Grammar, rule: str, memo: dict) -> tuple[float, bool]:
    """Expected number of branches a split rule makes, and whether every count was known."""
    if rule in memo:
        return memo[rule]
    memo[rule] = (2.0, False)  # guards against a cycle of choices
    total, known = 0.0, True
    for alt in grammar.rules[rule].alternatives:
        if alt.prob <= 0:
            continue
        if alt.op is None:
            b, k = _branch_count(grammar, alt.children[0], memo)
        else:
            outs = [alt.op.spec.shape(probe, alt.op.args) for probe in _PROBES]
            counts = [len(o) for o in outs if isinstance(o, tuple)]
            b, k = (float(counts[0]), True) if counts else (2.0, False)
        total, known = total + alt.prob * b, known and k
    memo[rule] = (total, known)
    return memo[rule]


def _alt_rows(grammar: Grammar, alt, index: dict, memo: dict, notes: list[str]):
    """The rows one alternative adds to the mean and built matrices, at probability 1."""
    mean, built = np.zeros(len(index)), np.zeros(len(index))
    for child in alt.children:
        mean[index[child]] += 1
        built[index[child]] += 1
    for step in alt.plan:
        if step[0] == "branch" and shares_design(step):  # the branch rule: b built copies of one design
            b, known = _branch_count(grammar, step[1], memo)
            built[index[step[2][0]]] += b - 1
            if not known:
                notes.append(f"branch count of split rule {step[1]!r} unknown; assumed 2")
    return mean, built


def _matrices(grammar: Grammar, names: list[str], notes: list[str]):
    """Mean and built matrices, and every sampled alternative's rows (for :func:`_critical`)."""
    index = {n: i for i, n in enumerate(names)}
    mean, built = np.zeros((len(names), len(names))), np.zeros((len(names), len(names)))
    rows, memo = {}, {}
    for name in names:
        for alt in grammar.rules[name].alternatives:
            if alt.prob > 0:
                rows[(name, alt.index)] = _alt_rows(grammar, alt, index, memo, notes)
                mean[index[name]] += alt.prob * rows[(name, alt.index)][0]
                built[index[name]] += alt.prob * rows[(name, alt.index)][1]
    return mean, built, rows


def _radius(matrix: np.ndarray) -> float:
    return float(max(abs(np.linalg.eigvals(matrix)))) if matrix.size else 0.0


def _expected(matrix: np.ndarray, radius: float, weights: np.ndarray) -> float:
    """Expected total of ``weights`` over all expansions from ``start`` (row 0)."""
    if radius >= 1.0 - 1e-12:
        return math.inf
    counts = np.linalg.solve((np.eye(len(matrix)) - matrix).T, np.eye(len(matrix))[0])
    return float(counts @ weights)


def _cycles(mean: np.ndarray) -> np.ndarray:
    """``reach[i, j]``: rule j is reachable from rule i in one or more expansions."""
    step = (mean > 0).astype(float)
    reach = step.copy()
    for _ in range(len(mean)):
        reach = ((reach + reach @ step) > 0).astype(float)
    return reach > 0


def _module_rules(grammar: Grammar, names: list[str], reach: np.ndarray) -> list[str]:
    """Recursive rules whose alternatives are all rule names (einspace: ``module``)."""
    recursive = [n for i, n in enumerate(names) if reach[i, i]]
    choice = [n for n in recursive if all(a.form == "choice" for a in grammar.rules[n].alternatives)]
    return choice or recursive


def _critical(grammar: Grammar, names: list[str], mats, reach: np.ndarray, rule: str) -> dict | None:
    """The probability of ``rule``'s non-recursive alternatives at which the radius is 1."""
    i = names.index(rule)
    cycle = {n for j, n in enumerate(names) if reach[i, j] and reach[j, i]}
    alts = [a for a in grammar.rules[rule].alternatives if a.prob > 0]
    leaf = [a for a in alts if not set(a.children) & cycle]
    p_leaf = sum(a.prob for a in leaf)
    if not leaf or len(leaf) == len(alts):
        return None
    mean, built, rows = mats

    def crossing(matrix, which):
        row_leaf = sum(a.prob * rows[(rule, a.index)][which] for a in leaf)
        row_rec = sum(a.prob * rows[(rule, a.index)][which] for a in alts if a not in leaf)

        def radius_at(p):  # the leaf alternatives get p in all, keeping their ratios
            m = matrix.copy()
            m[i] = p / p_leaf * row_leaf + (1 - p) / (1 - p_leaf) * row_rec
            return _radius(m)

        if radius_at(1.0) >= 1.0:
            return None  # recursion that this rule's probabilities cannot stop
        lo, hi = 0.0, 1.0
        for _ in range(50):  # the radius falls as p rises
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if radius_at(mid) >= 1.0 else (lo, mid)
        return hi

    return {"rule": rule, "leaf_alternatives": [_alt_text(a) for a in leaf], "p": p_leaf,
            "p_critical": crossing(mean, 0), "p_critical_built": crossing(built, 1)}


def _module_mean(mean: np.ndarray, names: list[str], modules: list[str]) -> float | None:
    """Radius of the module-to-module mean matrix: new modules made by one module."""
    h = [names.index(m) for m in modules]
    o = [i for i in range(len(names)) if i not in h]
    if not h:
        return None
    m_oo = mean[np.ix_(o, o)]
    if o and _radius(m_oo) >= 1.0:
        return None  # recursion that does not pass through a module: no per-module figure
    through = mean[np.ix_(h, o)] @ np.linalg.solve(np.eye(len(o)) - m_oo, mean[np.ix_(o, h)]) if o else 0
    return _radius(mean[np.ix_(h, h)] + through)


def check_grammar(grammar: Grammar) -> GrammarReport:
    """Check a loaded grammar and compute its size figures (see the module docstring).

    Example::

        from einnas.grammar import default_grammar
        from einnas.grammar.check import check_grammar

        report = check_grammar(default_grammar())
        report.subcritical, report.expected_modules    # (True, about 80)
    """
    errors, warnings, notes = [], [], []
    sampled_rules, any_rules = _reach(grammar, True), _reach(grammar, False)
    rules = []
    for name, rule in grammar.rules.items():
        status = "sampled" if name in sampled_rules else "parse-only" if name in any_rules else "unreachable"
        rules.append(RuleInfo(name, rule.kind, rule.line, status,
                              [(_alt_text(a), round(a.prob, 6)) for a in rule.alternatives]))
        if status == "unreachable":
            warnings.append(f"{grammar.path}:{rule.line}: rule {name!r} is not reachable from 'start'")
        elif status == "sampled" and grammar.min_height[name] >= _NO_PATH:
            errors.append(f"{grammar.path}:{rule.line}: rule {name!r} has no terminating derivation "
                          "through alternatives of positive probability")
    for lineno, line in enumerate(grammar.text.splitlines(), 1):  # Lark drops rules `start` never uses
        match = _RULE_START.match(_split_comment(line)[0])
        if match and match.group(2) not in grammar.rules:
            warnings.append(f"{grammar.path}:{lineno}: rule {match.group(2)!r} is not reachable from 'start'")
    annotations = _scan_annotations(grammar.text, grammar.path)
    for name, rule in grammar.rules.items():
        for alt in rule.alternatives:
            if alt.prob == 0 and annotations.get((name, alt.index), (0, None))[1] is None:
                warnings.append(f"{grammar.path}:{alt.line}: {_alt_text(alt)} in rule {name!r} gets probability 0 "
                                "because the other alternatives' p= already sum to 1")

    sampled, parse_only = [], []
    for rule in grammar.rules.values():
        for alt in rule.alternatives:
            if alt.op is not None:
                live = alt.prob > 0 and rule.name in sampled_rules
                (sampled if live else parse_only).append(alt.op.text)
    sampled = list(dict.fromkeys(sampled))
    parse_only = [t for t in dict.fromkeys(parse_only) if t not in sampled]
    sampled_names = {t.split("(")[0] for t in sampled}
    named = sampled_names | {t.split("(")[0] for t in parse_only}
    missing = [n for n in REGISTRY.names() if REGISTRY.get(n).sampled and n not in sampled_names]
    available = [n for n in REGISTRY.names() if not REGISTRY.get(n).sampled and n not in named]

    names = ["start"] + [n for n in grammar.rules if n in sampled_rules and n != "start"]
    mats = _matrices(grammar, names, notes)
    mean, built, _ = mats
    radius, radius_built = _radius(mean), _radius(built)
    reach = _cycles(mean)
    modules = _module_rules(grammar, names, reach)
    module_mean = _module_mean(mean, names, modules)
    is_module = np.array([n in modules for n in names], dtype=float)
    leaves = np.array([sum(a.prob for a in grammar.rules[n].alternatives if a.op is not None) for n in names])
    critical = _critical(grammar, names, mats, reach, modules[0]) if modules else None

    if radius >= 1.0:
        warnings.append(
            f"super-critical: the spectral radius is {radius:.3f} >= 1, so the expected network size is "
            "infinite and derivations may never end; samples stay finite only through the sampler's limits"
            + (f" (raise p({critical['rule']} -> {' | '.join(critical['leaf_alternatives'])}) above "
               f"{critical['p_critical']:.4f})" if critical and critical["p_critical"] is not None else "")
        )
    elif max(radius, module_mean or 0.0) >= NEAR_CRITICAL:
        per_module = f"each module makes {module_mean:.3f} new modules on average" if module_mean else ""
        warnings.append(
            f"near-critical: spectral radius {radius:.3f}{', ' if per_module else ''}{per_module}; sizes have "
            "a heavy tail and many samples are cut by the sampler's limits"
        )
    warnings.extend(dict.fromkeys(notes))
    return GrammarReport(
        path=grammar.path, sha256=grammar.sha256, rules=rules, ops_sampled=sampled, ops_parse_only=parse_only,
        missing=missing, available=available, nonterminals=names, mean=mean, mean_built=built,
        radius=radius, radius_built=radius_built, modules=modules, module_mean=module_mean,
        expected_modules=_expected(mean, radius, is_module), expected_leaves=_expected(mean, radius, leaves),
        expected_modules_built=_expected(built, radius_built, is_module),
        expected_leaves_built=_expected(built, radius_built, leaves),
        critical=critical, warnings=warnings, errors=errors,
    )


def _nargs(spec) -> str:
    return "any" if spec.nargs is None else "|".join(map(str, spec.nargs))


def op_rows(pattern: str = "*", report: GrammarReport | None = None) -> list[dict]:
    """Registered operations matching a wildcard, with their use in ``report``'s grammar."""
    sampled = {t.split("(")[0] for t in report.ops_sampled} if report else set()
    parsed = {t.split("(")[0] for t in report.ops_parse_only} if report else set()
    rows = []
    for name in REGISTRY.names(pattern):
        spec = REGISTRY.get(name)
        use = "sampled" if name in sampled else "parse-only" if name in parsed else "-"
        row = {"op": name, "kind": spec.kind, "args": _nargs(spec), "default": "sampled" if spec.sampled else "extra"}
        rows.append({**row, **({"in grammar": use} if report else {}), "source": spec.source, "doc": spec.doc})
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else "infinite" if math.isinf(value) else f"{value:.{digits}f}"


def format_report(report: GrammarReport) -> str:
    """The report as text: rules, figures, then warnings, errors and the verdict."""
    out = [f"grammar  {report.path}  (sha256 {report.sha256[:12]})", "", "rules (probability of each alternative)"]
    for rule in report.rules:
        note = "" if rule.status == "sampled" else f"  [{rule.status}]"
        out.append(f"  {rule.name}  ({rule.kind}, line {rule.line}){note}")
        out += [f"    {p:.4f}  {text}" for text, p in rule.alternatives]
    used = [r for r in op_rows(report=report) if r["in grammar"] != "-"]
    width = max([len(r["op"]) for r in used] + [2])
    out += ["", "operations named in the grammar"]
    out += [f"  {r['op'].ljust(width)}  {r['kind']:<5}  args {r['args']:<4}  {r['in grammar']:<10}  {r['doc']}"
            for r in used]
    crit = report.critical
    figures = [
        ("spectral radius", f"{_fmt(report.radius)}  ({'sub' if report.subcritical else 'SUPER'}-critical)"),
        (f"new modules per module ({', '.join(report.modules) or '-'})", _fmt(report.module_mean)),
        ("expected modules per network", _fmt(report.expected_modules, 1)),
        ("expected leaves per network", _fmt(report.expected_leaves, 1)),
    ]
    if crit:
        arrow = f"p({crit['rule']} -> {' | '.join(crit['leaf_alternatives'])})"
        figures.append((f"{arrow} now / critical", f"{crit['p']:.4f} / {_fmt(crit['p_critical'], 4)}"))
    figures += [
        ("built network, b copies counted: radius", _fmt(report.radius_built)),
        ("built network: expected leaves", _fmt(report.expected_leaves_built, 1)
         + (f"  (finite for p > {crit['p_critical_built']:.4f})" if crit and crit["p_critical_built"] else "")),
    ]
    width = max(len(k) for k, _ in figures)
    out += ["", "figures (grammar probabilities, before shape filtering and sampler limits)"]
    out += [f"  {k.ljust(width)}  {v}" for k, v in figures]
    if report.missing:
        out += ["", "registered ops this grammar never samples: " + ", ".join(report.missing)]
    if report.available:
        out += ["extra ops you can name in a copy of this file: " + ", ".join(report.available)]
    out += [""] + [f"warning: {w}" for w in report.warnings] + [f"error: {e}" for e in report.errors]
    if report.errors:
        out.append(f"verdict: NOT usable ({len(report.errors)} error(s))")
    else:
        kind = "sub-critical" if report.subcritical else "super-critical, bounded only by the sampler limits"
        out.append(f"verdict: usable ({kind}; {len(report.warnings)} warning(s))")
    return "\n".join(out)
