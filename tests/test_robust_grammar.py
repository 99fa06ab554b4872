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
    ("start: network\nnetwork: network\n", "'network' and 'start'"),
    (_edit("module: computation         // p=0.32", "module: copy         // p=0.32")
     + '\ncopy: "sequential(" module "," module ")"\n', "'copy' and 'sequential'"),
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


@pytest.mark.parametrize("written, shown", [
    ('"sequential(" module "," [module] ")"', "[]"),
    ('"sequential(" module "," (module)? ")"', "?"),
    ('"sequential(" module "," module+ ")"', "+"),
])
def test_ebnf_operators_that_hide_alternatives_are_refused_on_their_line(written, shown):
    # Lark would expand them into extra alternatives and shift every p= below them
    text = _edit('sequential: "sequential(" module "," module ")"', "sequential: " + written)
    with pytest.raises(GrammarError) as info:
        grammar_from_text(text, "my.lark")
    line = _line_of(text, "sequential: ")
    assert str(info.value).startswith(f"my.lark:{line}: rule 'sequential': operator {shown!r} is not supported")


def test_ebnf_characters_inside_quoted_text_are_plain_text():
    text = _edit('"sequential(" module "," module ")"', '"sequential(" module "," module ")" | "[x]?" ')
    with pytest.raises(GrammarError, match=r"'\[x\]\?' is neither an operation"):  # text, not an operator
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


BAD_PLUGINS = {  # body after "import torch; from einnas.grammar import register_op", op name OP
    "build_raises": "@register_op(OP)\ndef b(state, args):\n    raise KeyError('boom')\n",
    "build_returns_int": "@register_op(OP)\ndef b(state, args):\n    return 5\n",
    "params_raise": "@register_op(OP, params=lambda s, a: {}['x'])\ndef b(state, args):\n    return torch.nn.Identity()\n",
    "params_negative": "@register_op(OP, params=lambda s, a: -10**9)\ndef b(state, args):\n    return torch.nn.Identity()\n",
    "params_float": "@register_op(OP, params=lambda s, a: 2.5)\ndef b(state, args):\n    return torch.nn.Identity()\n",
    "sys_exit": "import sys\nsys.exit(3)\n",
}
EXPECTED = {
    "build_raises": "the builder of operation 'OP' raised KeyError: 'boom'",
    "build_returns_int": "the builder of operation 'OP' returned int 5; expected a torch.nn.Module",
    "params_raise": "the params rule of operation 'OP' raised KeyError",
    "params_negative": "the params rule of operation 'OP' returned -1000000000",
    "params_float": "the params rule of operation 'OP' returned 2.5",
    "sys_exit": "called sys.exit(3) while being imported",
}


def test_plugins_whose_builder_or_params_rule_fail_are_one_line_exit_2(tmp_path):
    # Before: KeyError / TypeError tracebacks (exit 1), a negative count accepted, sys.exit ending einnas silently.
    # One fresh process for all cases, so the broken ops never reach this process's registry.
    import json

    for name, body in BAD_PLUGINS.items():
        op = f"robust_{name}"
        (tmp_path / f"{name}.py").write_text("import torch\nfrom einnas.grammar import register_op\n"
                                             + body.replace("OP", repr(op)))
        (tmp_path / f"{name}.lark").write_text(_edit('| "pos_enc"', f'| "pos_enc"\n           | "{op}"  // p=0.9'))
    script = (
        "import contextlib, io, json, sys\nfrom einnas.cli import main\nout = {}\n"
        f"for name in {sorted(BAD_PLUGINS)!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        f"        rc = main(['sample', '-n', '5', '--input-shape', '1,8,8', '--grammar', {str(tmp_path)!r} + f'/{{name}}.lark',"
        f" '--plugin', {str(tmp_path)!r} + f'/{{name}}.py'])\n"
        "    out[name] = [rc, err.getvalue()]\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for name, (rc, stderr) in results.items():
        assert rc == 2, (name, stderr)
        assert stderr.count("\n") == 1 and f"plugin {tmp_path}/{name}.py" in stderr, (name, stderr)
        assert EXPECTED[name].replace("OP", f"robust_{name}") in stderr, (name, stderr)
        assert "plugin plugin" not in stderr


def test_an_export_whose_forward_raises_outside_the_usual_types_is_one_line():
    import torch

    from einnas.grammar.export import export_onnx

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise KeyError("fwd")

    with pytest.raises(ArchitectureError, match=r"^cannot export to ONNX: the forward pass raised KeyError: 'fwd'$"):
        export_onnx(Broken(), (4,), 2)
