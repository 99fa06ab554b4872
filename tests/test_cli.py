"""Conventions every command shares: --version, global -v/-q, one-line argparse errors, help text."""

import argparse
import subprocess
import sys

import pytest

from einnas.cli import build_parser, main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "einnas.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_version():
    from einnas._util import package_version

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"einnas {package_version()}"


@pytest.mark.parametrize("argv", [
    ["-v", "sample", "-n", "1", "--input-shape", "0,0"], ["sample", "-n", "1", "--input-shape", "0,0", "-v"],
    ["-q", "sample", "-n", "1", "--input-shape", "0,0"], ["sample", "-q", "-n", "1", "--input-shape", "0,0"],
])
def test_global_flags_before_or_after_the_subcommand_keep_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1].startswith("einnas sample: error: --input-shape")
    assert ("Traceback" in err) == ("-v" in argv)  # -v shows the traceback, the status stays 2


@pytest.mark.parametrize("argv, needle", [
    (["search", "--dataset", "digits", "--trials", "nope"], "--trials"),
    (["search", "--seed", "-5", "--dataset", "digits", "--trials", "2"], "--seed"),
    (["export"], "ARCH"),
    (["nosuchcommand"], "nosuchcommand"),
])
def test_argparse_errors_are_one_line_with_a_pointer_to_help(argv, needle, tmp_path):
    proc = run(*argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "--help'" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no empty study left behind


def test_every_option_has_help():
    def walk(parser, prog):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prog} {name}")
            elif action.option_strings and action.dest != "help":
                yield prog, action

    missing = [f"{prog} {action.option_strings[0]}" for prog, action in walk(build_parser(), "einnas")
               if not action.help]
    assert missing == []


def test_output_flag_is_o_out_everywhere():
    parser = build_parser()
    subs = {}

    def walk(p, prog):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prog} {name}")
            elif "--out" in action.option_strings or "-o" in action.option_strings:
                subs[prog] = set(action.option_strings)

    walk(parser, "einnas")
    assert {"einnas export", "einnas search", "einnas bench build", "einnas surrogate fit"} <= set(subs)
    assert all({"-o", "--out"} <= flags for flags in subs.values())


def test_tables_show_one_accuracy_format_and_no_none_or_braces(capsys):
    from einnas._util import format_accuracy
    from einnas.cli import emit

    assert [format_accuracy(v) for v in (0.9556, 0.9388888888888889, 1.0, None)] == ["95.6%", "93.9%", "100.0%", "-"]
    emit([{"a": None, "b": {}, "c": {"timeout": 2, "oom": 1}, "d": []}], "table", ["a", "b", "c", "d"])
    out = capsys.readouterr().out
    assert "None" not in out and "{" not in out and "[" not in out and "timeout 2, oom 1" in out


def _readme_commands():
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part.strip())
                if words and words[0] in ("einnas", ".venv/bin/einnas"):
                    yield words[1:]


def test_every_readme_command_parses_as_written():
    commands = list(_readme_commands())
    assert len(commands) >= 20
    parser = build_parser()
    for words in commands:
        try:
            args = parser.parse_args(words)
        except SystemExit as exit:  # pragma: no cover - the message names the command
            raise AssertionError(f"README command does not parse: einnas {' '.join(words)}") from exit
        assert getattr(args, "_command", None) is not None, words


def test_readme_activates_the_environment_before_bare_commands():
    from pathlib import Path

    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [m for m in re.finditer(r"```bash\n(.*?)```", text, re.S) if re.search(r"^einnas ", m.group(1), re.M)]
    assert blocks and "source .venv/bin/activate" in text[:blocks[0].start(1) + blocks[0].group(1).index("einnas ")]


def test_the_same_limits_have_the_same_defaults_in_every_command():
    from einnas.cli import DEFAULT_MAX_ACTIVATIONS, DEFAULT_MAX_PARAMS
    from einnas.search import run

    assert (DEFAULT_MAX_PARAMS, DEFAULT_MAX_ACTIVATIONS) == (run.DEFAULT_MAX_PARAMS, run.DEFAULT_MAX_ACTIVATIONS)
    parser = build_parser()
    sample = parser.parse_args(["sample"])
    bench = parser.parse_args(["bench", "build", "--dataset", "digits", "--n", "1", "-o", "r.jsonl"])
    assert sample.max_params == bench.max_params == DEFAULT_MAX_PARAMS
    assert sample.max_activations == DEFAULT_MAX_ACTIVATIONS
    helps = {a.dest: a.help for a in parser._subparsers._group_actions[0].choices["search"]._actions}
    assert f"{DEFAULT_MAX_PARAMS:,}" in helps["max_params"]


def test_every_training_command_defaults_to_the_same_device():
    parser = build_parser()
    commands = {
        "train": ["train", "resnet18", "--dataset", "digits"],
        "search": ["search", "--dataset", "digits"],
        "bench build": ["bench", "build", "--dataset", "digits", "--trials", "1"],
    }
    devices = {name: parser.parse_args(argv).device for name, argv in commands.items()}
    assert set(devices.values()) == {"auto"}, devices


def test_the_command_table_holds_every_command_once_and_format_is_added_once():
    import einnas.cli as cli

    defined = {cls for cls in vars(cli).values()
               if isinstance(cls, type) and issubclass(cls, cli.Command) and "name" in cls.__dict__}
    assert set(cli.COMMANDS) == defined and len(cli.COMMANDS) == len(defined)
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for cls in cli.COMMANDS:
        words = cls.name.split()
        p = subs[words[0]] if len(words) == 1 else subs[words[0]]._subparsers._group_actions[0].choices[words[1]]
        formats = [a for a in p._actions if "--format" in a.option_strings]
        assert len(formats) == (1 if cls.formats else 0), cls.name
        if cls.formats:
            assert formats[0].choices == list(cls.formats) and formats[0].default == cls.formats[0]


def test_a_command_parser_is_built_only_when_used(capsys):
    """`einnas sample` builds no other command's options; `einnas X --help` shows X's in full."""
    parser = build_parser(lazy=True)
    args = parser.parse_args(["sample", "-n", "2", "-f", "json"])
    assert args.n == 2 and args.format == "json"
    subs = parser._subparsers._group_actions[0].choices
    assert not [a for a in subs["search"]._actions if "--dataset" in a.option_strings]
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--help"])
    out = capsys.readouterr().out
    assert "--dataset D" in out and "--format {table,json}" in out and "--strategy NAME" in out


def test_emit_prints_json_or_lines_and_a_table(capsys):
    from einnas.cli import emit

    emit({"a": 0.5}, "json", ["a"], rows=[{"a": "50.0%"}], before=["head"])
    assert capsys.readouterr().out == '{\n  "a": 0.5\n}\n'
    emit({"a": 0.5}, "table", ["a"], rows=[{"a": "50.0%"}], before=["head"], after=["tail"])
    assert capsys.readouterr().out == "head\na\n50.0%\ntail\n"
    emit(None, "text", before=["only lines"])
    assert capsys.readouterr().out == "only lines\n"


def test_search_and_bench_build_defaults_are_the_config_dataclasses_defaults():
    """No default written twice: what `einnas search` passes when an option is left out is
    what SearchConfig (the Python API) uses, and the same for bench build and BenchConfig."""
    import dataclasses

    from einnas.search import SearchConfig
    from einnas.search.run import DEFAULT_MAX_PARAMS
    from einnas.surrogate.bench import BenchConfig

    parser = build_parser()
    search = vars(parser.parse_args(["search", "--dataset", "digits"]))
    bench = vars(parser.parse_args(["bench", "build", "--dataset", "digits"]))
    renamed = {"mutate_fraction": "mutate", "top_fraction": "top", "prune": "no_prune", "final": "no_final"}
    for config, parsed in ((SearchConfig, search), (BenchConfig, bench)):
        fields = [f for f in dataclasses.fields(config) if f.metadata.get("help")]
        assert len(fields) >= 15
        for f in fields:
            dest = renamed.get(f.name, f.name)
            expected = (not f.default) if dest.startswith("no_") else f.default
            if f.name == "dataset":
                continue
            assert parsed[dest] == expected, (config.__name__, f.name)
    assert BenchConfig("d").max_params == DEFAULT_MAX_PARAMS  # bench build's help says "as in search"


def test_an_option_takes_its_default_and_help_from_the_config_field():
    import argparse
    import dataclasses

    from einnas._util import option
    from einnas.cli import config_option

    @dataclasses.dataclass
    class Config:
        name: str = option(help="what to call it", required=True)
        size: int = option(12_345, "how big")
        rate: float = option(0.5, "how fast, {default} per second")
        auto: int | None = option(None, "left to the search (default: derived)")
        share: float = option(0.3, "a 30% share")
        check: bool = option(True, "check things", off="skip the checks")

    parser = argparse.ArgumentParser()
    for name in ("name", "size", "rate", "auto", "share", "check"):
        config_option(parser, Config, name)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["size"] == "how big (default 12,345)" and helps["rate"] == "how fast, 0.5 per second"
    assert helps["auto"] == "left to the search (default: derived)" and helps["no_check"] == "skip the checks"
    assert "30%" in parser.format_help()  # a literal percent survives argparse's formatting
    args = parser.parse_args(["--name", "x", "--no-check"])
    assert (args.size, args.rate, args.auto, args.no_check) == (12_345, 0.5, None, True)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a field without a default is a required option


def test_help_imports_no_search_package_numpy_or_torch():
    """`einnas --help` stays instant: the search options (read from SearchConfig) are built only
    when `search` itself is used."""
    code = ("import sys\nfrom einnas.cli import main\nfor argv in (['--help'], ['sample', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('einnas.search', 'numpy', 'torch', 'optuna') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
