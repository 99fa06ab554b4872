"""The ``einnas`` command line: one small class per subcommand, nothing else.

Each command class names itself, adds its arguments and runs. Errors caused by the
user (:class:`einnas.errors.EinnasError`) are printed once, as one line on stderr,
with exit status 2. Heavy imports happen inside ``run`` so ``einnas --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import ClassVar, Sequence

from einnas.errors import EinnasError, UsageError


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape such as ``3,32,32`` (image) or ``40,1`` (tokens)."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected integers such as 3,32,32 or 40,1") from None
    if len(dims) not in (2, 3) or any(d <= 0 for d in dims):
        raise UsageError(f"--input-shape {text!r}: expected 2 (tokens S,D) or 3 (image C,H,W) positive sizes")
    return dims


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def add_grammar_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", metavar="FILE", help="grammar file (default: the built-in einspace grammar)")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
        help="Python module or file registering extra operations (repeatable)",
    )


def load_grammar_from(args: argparse.Namespace):
    from einnas.grammar import load_grammar

    return load_grammar(args.grammar, plugins=args.plugin)


def emit(rows: list[dict], fmt: str, columns: Sequence[str]) -> None:
    """Print rows as an aligned table or as JSON lines-free JSON list."""
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


class Command:
    """A subcommand: ``name`` on the command line, ``help`` in ``einnas --help``."""

    name: ClassVar[str]
    help: ClassVar[str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Called once when the parser is built."""

    def run(self, args: argparse.Namespace) -> int:
        """Called with the parsed arguments; returns the exit status."""
        raise NotImplementedError


# --- grammar commands -------------------------------------------------------


class Sample(Command):
    name = "sample"
    help = "sample architectures from the grammar"

    def add_arguments(self, parser):
        parser.add_argument("-n", type=positive_int, default=10, help="number of architectures (default 10)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--input-shape", default="3,32,32", help="C,H,W (image) or S,D (tokens); default 3,32,32")
        parser.add_argument("--classes", type=positive_int, default=10)
        parser.add_argument("-f", "--format", choices=["table", "json"], default="table")
        add_grammar_options(parser)

    def run(self, args):
        from einnas.grammar import sample

        grammar = load_grammar_from(args)
        shape = parse_shape(args.input_shape)
        rows = []
        for arch in sample(grammar, args.n, seed=args.seed, input_shape=shape, num_classes=args.classes):
            info = arch.info
            rows.append({"archid": arch.archid, "params": info.params, "terminals": info.terminals, "arch": arch.string})
        emit(rows, args.format, ["archid", "params", "terminals", "arch"])
        return 0


# --- onnx commands ------------------------------------------------------------

# --- evaluate commands --------------------------------------------------------

# --- search commands ----------------------------------------------------------

# --- surrogate commands -------------------------------------------------------


def _commands() -> list[Command]:
    def walk(cls):
        for sub in cls.__subclasses__():
            if "name" in sub.__dict__:
                yield sub
            yield from walk(sub)

    return [cls() for cls in walk(Command)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="einnas",
        description="Neural architecture search over a grammar-defined space (einspace), "
        "with an ONNX-text surrogate predictor and Optuna-driven search.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in _commands():
        words = command.name.split()
        target = sub
        if len(words) == 2:
            if words[0] not in groups:
                group = sub.add_parser(words[0], help=f"{words[0]} commands")
                groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            target = groups[words[0]]
        p = target.add_parser(words[-1], help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    try:
        return command.run(args)
    except EinnasError as error:
        if args.verbose:
            raise
        print(f"einnas {command.name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"einnas {command.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
