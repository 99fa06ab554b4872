"""Grammar files from strangers: each mistake is one GrammarError naming the file (and line where known);
architecture strings too large to allocate are refused before torch tries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from einnas.errors import ArchitectureError, GrammarError
from einnas.grammar import DEFAULT_GRAMMAR, grammar_from_text

BASE = Path(DEFAULT_GRAMMAR).read_text()


def _edit(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_an_unclosed_quote_names_file_line_and_column_on_one_line():
    text = _edit('sequential: "sequential(" module "," module ")"', 'sequential: "sequential(" module "," module ")')
    with pytest.raises(GrammarError) as info:
        grammar_from_text(text, "my.lark")
    message = str(info.value)
    assert message.startswith(f"my.lark:{_line_of(text, 'sequential: ')}:") and "syntax error" in message
    assert "\n" not in message and "<string>" not in message


def test_an_import_of_a_missing_grammar_is_a_grammar_error():
    # Before: FileNotFoundError, a traceback.
    with pytest.raises(GrammarError, match=r"my.lark: %import failed: .*nowhere"):
        grammar_from_text(BASE + "\n%import nowhere.FOO\n", "my.lark")


@pytest.mark.parametrize("text, rules", [
    ("start: network\nnetwork: network\n", "'start' and 'network'"),
    (_edit("module: computation         // p=0.32", "module: copy         // p=0.32")
     + '\ncopy: "sequential(" module "," module ")"\n', "'sequential' and 'copy'"),
])
def test_rules_the_parser_cannot_tell_apart_are_named_on_one_line(text, rules):
    with pytest.raises(GrammarError) as info:
        grammar_from_text(text, "my.lark")
    assert str(info.value).startswith("my.lark: ambiguous grammar: rules ") and rules in str(info.value)
    assert "\n" not in str(info.value)


def test_a_probability_after_two_alternatives_on_one_line_is_refused():
    # Before: silently given to the last alternative of the line.
    text = _edit('| "pos_enc"', '| "pos_enc" | "gelu"  // p=0.1')
    with pytest.raises(GrammarError, match=rf"my.lark:{_line_of(text, 'gelu')}: 'p=' after 2 alternatives"):
        grammar_from_text(text, "my.lark")


def test_one_annotated_alternative_per_line_still_loads():
    grammar = grammar_from_text(_edit('| "pos_enc"', '| "pos_enc"\n           | "gelu"  // p=0.1'), "my.lark")
    probs = {alt.op.text: alt.prob for alt in grammar.rules["computation"].alternatives}
    assert probs["gelu"] == pytest.approx(0.1) and probs["pos_enc"] == pytest.approx(probs["norm"])


def test_linear_div_by_zero_is_an_op_that_cannot_apply():
    # Before: ZeroDivisionError from the shape rule while sampling or exporting.
    from einnas.grammar import parse_arch
    from einnas.grammar.shapes import analyse

    grammar = grammar_from_text(_edit('| "linear_div(4)"    // p=0', '| "linear_div(0)"    // p=0'), "my.lark")
    arch = parse_arch("sequential(linear_div(0), linear(16))", grammar)
    with pytest.raises(ArchitectureError, match="linear_div"):
        analyse(arch, (3, 8, 8), 10)


def test_an_architecture_too_large_to_allocate_is_refused_before_building():
    from einnas.grammar import build_network, parse_arch

    grammar = grammar_from_text(_edit('| "linear(16)"', '| "linear(16)"\n           | "linear(1000000000000)"'),
                                "my.lark")
    arch = parse_arch("sequential(linear(1000000000000), linear(16))", grammar)
    with pytest.raises(ArchitectureError, match="einnas builds at most"):
        build_network(arch, (3, 8, 8), 10)


def test_cli_unknown_operation_in_a_user_grammar_is_one_line_exit_2(tmp_path):
    path = tmp_path / "my.lark"
    path.write_text(_edit('| "pos_enc"', '| "pos_encx"'))
    proc = subprocess.run([sys.executable, "-m", "einnas.cli", "sample", "-n", "2", "--grammar", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and f"my.lark:{_line_of(path.read_text(), 'pos_encx')}" in proc.stderr
    assert "unknown operation 'pos_encx'" in proc.stderr
