"""Plugins: a user's Python file registers new ops that a grammar copy then samples.

The registry is process-global, so every op registered here has a name unique to
this test module; failing plugins either register nothing or a unique name.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from einnas.cli import main
from einnas.errors import ArchitectureError
from einnas.grammar import DEFAULT_GRAMMAR, Limits, analyse, build_network, load_grammar, parse_arch, sample
from einnas.grammar.check import check_grammar

ROOT = Path(__file__).resolve().parents[2]
TAG = uuid.uuid4().hex[:8]
SWISH, SE = f"swish_{TAG}", f"se_{TAG}"
SHAPE = (8, 16, 16)  # 8 channels: se(4) applies to the input itself

PLUGIN = '''
import torch
from torch import nn

from einnas.grammar import IMAGE, register_op


class Swish(nn.Module):
    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


@register_op("{swish}", params=lambda state, args: 1, doc="x * sigmoid(beta x), learnable beta")
def build_swish(state, args):
    return Swish()


class SqueezeExcite(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.down, self.up = nn.Linear(channels, hidden), nn.Linear(hidden, channels)

    def forward(self, x):
        w = torch.sigmoid(self.up(torch.relu(self.down(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]


def se_shape(state, args):
    if state.mode != IMAGE:
        return "squeeze-excitation needs an image (C, H, W)"
    if args[0] < 1 or state.shape[0] % args[0]:
        return f"{{state.shape[0]}} channels do not reduce by {{args[0]}}"
    return state


def se_params(state, args):
    c, h = state.shape[0], state.shape[0] // args[0]
    return 2 * c * h + h + c


@register_op("{se}", shape=se_shape, params=se_params, nargs=1, doc="se(r): squeeze-and-excitation")
def build_se(state, args):
    return SqueezeExcite(state.shape[0], state.shape[0] // args[0])
'''


def grammar_text(*ops: str) -> str:
    """The default grammar with ``ops`` added to `computation` at p=0.15 each."""
    text = DEFAULT_GRAMMAR.read_text()
    anchor = '           | "pos_enc"\n'
    added = "".join(f'           | "{op}"   // p=0.15\n' for op in ops)
    assert anchor in text
    return text.replace(anchor, anchor + added)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    plugin, lark = folder / "myops.py", folder / "mine.lark"
    plugin.write_text(PLUGIN.format(swish=SWISH, se=SE))
    lark.write_text(grammar_text(SWISH, f"{SE}(4)"))
    return plugin, lark


def _run(*code_or_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, timeout=180)


def _cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_plugin_ops_are_checked_sampled_and_trained(files):
    plugin, lark = files
    grammar = load_grammar(lark, plugins=[str(plugin)])
    report = check_grammar(grammar)
    assert report.ok and report.subcritical
    assert SWISH in report.ops_sampled and f"{SE}(4)" in report.ops_sampled
    small = Limits(max_params=50_000, max_activations=100_000)  # quick to run on a shared CPU
    archs = sorted(sample(grammar, 60, seed=0, input_shape=SHAPE, limits=small), key=lambda a: a.info.params)
    used = {op: [a for a in archs if op in a.string] for op in (SWISH, SE)}
    assert all(used.values()), "both plugin ops should appear in 60 samples"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for arch in used[SWISH][:2] + used[SE][:2]:
        net = build_network(arch, SHAPE, 10)
        assert sum(p.numel() for p in net.parameters()) == arch.info.params  # the plugin's params rule
        net(torch.randn(2, *SHAPE)).square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_plugin_ops_export_to_onnx_and_are_described(files):
    import einnas.grammar.export as export
    import einnas.surrogate.describe as describe
    plugin, lark = files
    grammar = load_grammar(lark, plugins=[str(plugin)])
    torch.manual_seed(0)
    net = build_network(parse_arch(f"sequential({SE}(4), {SWISH})", grammar), SHAPE, 10)
    proto = export.export_onnx(net, SHAPE, 10)
    assert export.compare_with_torch(net, proto, SHAPE) < 1e-4
    text = describe.describe(proto).text
    assert "Sigmoid" in text and "ReduceMean" in text and "Relu" in text


def test_plugin_shape_rule_rejects_tokens(files):
    plugin, lark = files
    grammar = load_grammar(lark, plugins=[str(plugin)])
    arch = parse_arch(f"routing[im2col(1,1,0), {SE}(4), col2im]", grammar)
    with pytest.raises(ArchitectureError, match="needs an image"):
        analyse(arch, SHAPE, 10)
    assert analyse(parse_arch(f"sequential({SE}(4), {SWISH})", grammar), SHAPE, 10).output.shape == SHAPE


def test_cli_check_and_sample_with_plugin(files, capsys):
    plugin, lark = files
    assert main(["grammar", "check", str(lark), "--plugin", str(plugin)]) == 0
    out = capsys.readouterr().out
    assert "squeeze-and-excitation" in out and "verdict: usable" in out
    assert main(["sample", "-n", "30", "--grammar", str(lark), "--plugin", str(plugin),
                 "--input-shape", ",".join(map(str, SHAPE))]) == 0
    assert SWISH in capsys.readouterr().out


@pytest.mark.parametrize("body,expected", [
    ("x = (\n", "SyntaxError"),
    ("import einnas\n\n\nraise RuntimeError('boom')\n", "line 4): RuntimeError: boom"),
    ("from einnas.grammar import register_op\nregister_op('relu')(lambda s, a: None)\n",
     "'relu' is registered twice"),
    (f"from einnas.grammar import register_op\nfor _ in range(2):\n    register_op('twice_{TAG}')(lambda s, a: None)\n",
     f"'twice_{TAG}' is registered twice"),
])
def test_bad_plugins_are_one_line_exit_2(tmp_path, capsys, body, expected):
    plugin = tmp_path / "broken.py"
    plugin.write_text(body)
    line = _cli_error(capsys, "grammar", "check", "--plugin", str(plugin))
    assert line.startswith("einnas grammar check: error:") and expected in line and "broken.py" in line


def test_plugin_cannot_take_a_builtin_name_first(tmp_path):
    """Loaded before anything else, a plugin naming "relu" fails; the built-ins stay whole."""
    plugin = tmp_path / "early.py"
    plugin.write_text("from einnas.grammar import register_op\nregister_op('relu')(lambda s, a: None)\n")
    code = ("from einnas.errors import PluginError; from einnas.grammar.plugins import load_plugins\n"
            f"try:\n    load_plugins([{str(plugin)!r}])\nexcept PluginError as e:\n    print(e)\n"
            "from einnas.grammar import REGISTRY, load_grammar; load_grammar()\n"
            "print(REGISTRY.get('relu').source)")
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"operation 'relu' is registered twice (einnas and plugin {plugin})", "einnas"]


def test_missing_plugin_and_unknown_op(tmp_path, capsys):
    assert "file not found" in _cli_error(capsys, "grammar", "check", "--plugin", str(tmp_path / "nope.py"))
    assert "No module named" in _cli_error(capsys, "grammar", "check", "--plugin", f"no_such_module_{TAG}")
    lark = tmp_path / "typo.lark"
    lark.write_text(grammar_text("gelux"))
    line = _cli_error(capsys, "grammar", "check", str(lark))
    assert "typo.lark:" in line and "unknown operation 'gelux'" in line


def test_example_plugin_runs_in_a_fresh_process(tmp_path):
    """The documented example: examples/plugins/swish.py with a grammar naming "swish"."""
    lark = tmp_path / "swish.lark"
    lark.write_text(grammar_text("swish"))
    plugin = ROOT / "examples" / "plugins" / "swish.py"
    assert len(plugin.read_text().splitlines()) < 30
    # Without the plugin (a fresh process knows no "swish"): one line, exit status 2.
    done = _run("-m", "einnas.cli", "sample", "-n", "1", "--grammar", str(lark))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown operation 'swish'" in done.stderr and "--plugin" in done.stderr
    # With it: check, then sample, in one process (torch is imported once).
    argv = ["--grammar", str(lark), "--plugin", str(plugin)]
    code = ("import sys; from einnas.cli import main; "
            f"sys.exit(main(['grammar', 'check', '-f', 'json', *{argv!r}]) or main(['sample', '-n', '40', *{argv!r}]))")
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    report, table = done.stdout.split("\narchid", 1)
    assert '"swish"' in report and "swish" in table


def test_short_search_with_plugin_grammar(tmp_path):
    """A search over a plugin grammar records the grammar and samples the new op.

    Uses the search's Python API in a fresh process (the plugin must not leak into
    this one); switch to `einnas search ... --grammar --plugin` once it is stable.
    """
    text = DEFAULT_GRAMMAR.read_text().replace('computation: "identity"', 'computation: "swish"   // p=0.5\n'
                                               '           | "identity"')
    lark = tmp_path / "swish.lark"
    lark.write_text(text)
    plugin = ROOT / "examples" / "plugins" / "swish.py"
    code = (
        "import sys; from einnas.search.run import Search, SearchConfig; "
        f"Search(SearchConfig(dataset='digits', trials=2, seed=0, epochs=1, final=False, out={str(tmp_path / 'run')!r}, "
        f"grammar={str(lark)!r}, plugins=({str(plugin)!r},), threads=1, strategy='random')).run()"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["settings"]["grammar_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert report["settings"]["plugins"] == [str(plugin)]
    assert report["trials"]["completed"] == 2
    assert any("swish" in row["arch"] for row in report["top"])


BAD_RULES = {
    "raises": "def rule(state, args):\n    raise KeyError('channels')\n",
    "wrong_type": "def rule(state, args):\n    return [state]\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_RULES))
def test_plugin_whose_shape_rule_fails_is_one_line_and_a_failed_trial_in_search(kind, tmp_path):
    """Fresh processes: the broken op must not stay in this process's registry."""
    op = f"bad_{kind}_{TAG}"
    plugin = tmp_path / "badrule.py"
    plugin.write_text("from einnas.grammar import register_op\n" + BAD_RULES[kind]
                      + f"@register_op({op!r}, shape=rule)\ndef build(state, args):\n"
                      "    import torch\n    return torch.nn.Identity()\n")
    lark = tmp_path / "bad.lark"
    lark.write_text(DEFAULT_GRAMMAR.read_text().replace('computation: "identity"',
                                                        f'computation: "{op}"   // p=0.9\n           | "identity"'))
    done = _run("-m", "einnas.cli", "sample", "-n", "3", "--grammar", str(lark), "--plugin", str(plugin),
                "--input-shape", "1,8,8")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "badrule.py" in done.stderr and f"operation '{op}'" in done.stderr
    assert ("raised KeyError" if kind == "raises" else "returned list") in done.stderr
    code = (
        "import json; from einnas.search.run import Search, SearchConfig; "
        f"o = Search(SearchConfig(dataset='digits', trials=2, seed=0, epochs=1, final=False, "
        f"out={str(tmp_path / 'run')!r}, grammar={str(lark)!r}, plugins=({str(plugin)!r},), threads=1, "
        "strategy='random')).run(); print(json.dumps([[r.status, r.reason] for r in o.view.records]))"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [["failed", "plugin_error"]] * 2  # failed, not lost
