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

from einnas import _checks
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


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


class RegistryChoices:
    """argparse ``choices`` read from a table of names (``einnas.search.STRATEGIES``, ...) when
    first needed: listing them in ``--help`` or checking a value. Installed packages' entry
    points are in the table, and ``einnas --help`` imports nothing for it."""

    def __init__(self, module: str, table: str):
        self.module, self.table = module, table

    def names(self) -> list[str]:
        import importlib

        return list(getattr(importlib.import_module(self.module), self.table))

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name) -> bool:
        return name in self.names()


def config_option(parser, config, name: str, *flags: str, **kwargs) -> None:
    """The option of field ``name`` of the config dataclass ``config`` (``SearchConfig``,
    ``BenchConfig``): its default and help come from the field (``einnas._util.option``), so
    the command line and the Python API cannot drift apart. ``kwargs`` (``type``, ``metavar``,
    ``choices``) are argparse's. A field that defaults to True becomes a ``--no-NAME`` flag."""
    import dataclasses

    from einnas._util import format_default

    spec = next(f for f in dataclasses.fields(config) if f.name == name)
    default = None if spec.default is dataclasses.MISSING else spec.default
    text = spec.metadata.get("help", "")
    if default is True:
        parser.add_argument(*(flags or [f"--no-{name.replace('_', '-')}"]), action="store_true",
                            help=(spec.metadata.get("off") or f"turn off: {text}").replace("%", "%%"))
        return
    if "{default}" in text:
        text = text.replace("{default}", format_default(default))
    elif default not in (None, False, "", ()) and "(default" not in text:
        text += f" (default {format_default(default)})"
    if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
        kwargs.setdefault("required", True)
    else:
        kwargs.setdefault("default", default)
    text = text.replace("%", "%%")
    if isinstance(kwargs.get("choices"), RegistryChoices):
        text += "; all: %(choices)s"  # listed when help is shown: installed plugins included
    parser.add_argument(*(flags or [f"--{name.replace('_', '-')}"]), help=text, **kwargs)


def add_grammar_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", metavar="FILE_OR_NAME",
                        help="grammar file, or a built-in space: einspace (default), einspace_extra, cnn, resnet, "
                             "mobilenet, transformer, mlp (`einnas grammar check --list-spaces`)")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
        help="Python module or file registering extra operations (repeatable)",
    )


#: The size limits of a candidate, the same in every command that samples (``search`` raises
#: them to fit its --init seeds). Equal to einnas.search.run's defaults (a test checks it);
#: repeated here because importing the search package would make ``einnas --help`` slow.
DEFAULT_MAX_PARAMS, DEFAULT_MAX_ACTIVATIONS = 1_000_000, 250_000


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    from einnas.grammar.sampler import Limits

    d = Limits(max_params=DEFAULT_MAX_PARAMS, max_activations=DEFAULT_MAX_ACTIVATIONS)
    group = parser.add_argument_group("sampling limits")
    group.add_argument("--max-params", type=positive_int, default=d.max_params,
                       help=f"largest architecture, parameters; default {d.max_params:,} (as in search)")
    group.add_argument("--max-nodes", type=positive_int, default=d.max_nodes,
                       help=f"leaves (branch copies counted) after which only leaves are drawn; default {d.max_nodes}")
    group.add_argument("--max-depth", type=positive_int, default=d.max_depth,
                       help=f"nested modules after which only leaves are drawn; default {d.max_depth}")
    group.add_argument("--max-activations", type=positive_int, default=d.max_activations,
                       help=f"elements of all intermediate tensors per sample; default {d.max_activations:,}")


def limits_from(args: argparse.Namespace):
    from einnas.grammar.sampler import Limits

    return Limits(max_depth=args.max_depth, max_nodes=args.max_nodes, max_params=args.max_params,
                  max_activations=args.max_activations)


def load_grammar_from(args: argparse.Namespace):
    from einnas.grammar import load_grammar

    return load_grammar(args.grammar, plugins=args.plugin)


def emit(data, fmt: str, columns: Sequence[str] = (), *, rows: list[dict] | None = None,
         before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
    """The one printer of a command's result (``-f/--format``).

    ``json``: ``data`` as indented JSON (raw numbers). Otherwise (``table``, ``text``): the
    ``before`` lines, then with ``columns`` an aligned table of ``rows`` (default: ``data``,
    a list of dicts; cells through ``format_cell``, so no ``None`` or braces), then ``after``.
    """
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    for line in before:
        print(line)
    if columns:
        from einnas._util import format_cell

        cells = [{c: format_cell(r.get(c)) for c in columns} for r in (data if rows is None else rows)]
        widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns}
        print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
        for row in cells:
            print("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    for line in after:
        print(line)


def pairs(items, width: int) -> list[str]:
    """``key value`` lines with the keys left-aligned in ``width`` characters."""
    return [f"{key:<{width}} {value}" for key, value in items]


class Command:
    """A subcommand: ``name`` on the command line, ``help`` in ``einnas --help``.

    Listed in :data:`COMMANDS`. A command with ``formats`` gets ``-f/--format`` (the first
    is the default) and prints its result through :func:`emit`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    #: Output formats of ``-f/--format``, the default first; empty: the command has no such option.
    formats: ClassVar[tuple[str, ...]] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Called once when the parser is built."""

    def run(self, args: argparse.Namespace) -> int:
        """Called with the parsed arguments; returns the exit status."""
        raise NotImplementedError


# --- grammar commands -------------------------------------------------------


#: Most architectures one ``einnas sample`` draws.
MAX_SAMPLE = 1_000_000


class Sample(Command):
    name = "sample"
    help = "sample architectures from the grammar"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("-n", type=positive_int, default=10, help="number of architectures (default 10)")
        parser.add_argument("--seed", type=nonnegative_int, default=0)
        parser.add_argument("--input-shape", default="3,32,32", help="C,H,W (image) or S,D (tokens); default 3,32,32")
        parser.add_argument("--classes", type=positive_int, default=10)
        add_limit_options(parser)
        add_grammar_options(parser)

    def run(self, args):
        from einnas.grammar import sample

        if args.n > MAX_SAMPLE:  # they are all held (and sorted into a table) before printing
            raise UsageError(f"-n {args.n}: at most {MAX_SAMPLE:,} architectures per call "
                             "(draw more with other --seed values)")
        grammar = load_grammar_from(args)
        shape = parse_shape(args.input_shape)
        rows = []
        archs = sample(grammar, args.n, seed=args.seed, input_shape=shape, num_classes=args.classes,
                       limits=limits_from(args))
        for arch in archs:
            info = arch.info
            rows.append({"archid": arch.archid, "params": info.params, "terminals": info.terminals, "arch": arch.string})
        emit(rows, args.format, ["archid", "params", "terminals", "arch"])
        return 0


class GrammarCheck(Command):
    name = "grammar check"
    help = "validate a grammar file; print its rules, ops, expected size and whether it is sub-critical"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", metavar="FILE", help="grammar file (default: the built-in einspace grammar)")
        parser.add_argument(
            "--list-ops", nargs="?", const="*", metavar="PATTERN",
            help="list the registered operations (optionally matching a wildcard such as 'linear*') and exit",
        )
        parser.add_argument("--list-spaces", action="store_true",
                            help="list the built-in search spaces (names for --grammar) and exit")
        add_grammar_options(parser)

    def run(self, args):
        from einnas.errors import GrammarError
        from einnas.grammar.check import check_grammar, format_report, op_rows
        from einnas.grammar.plugins import load_plugins

        if args.file and args.grammar and args.file != args.grammar:
            raise UsageError(f"two grammar files given ({args.file} and --grammar {args.grammar}); give one")
        load_plugins(args.plugin)
        path = args.file or args.grammar
        if args.list_spaces:
            from einnas.grammar.pcfg import space_rows

            emit(space_rows(), args.format, ["name", "file", "about"])
            return 0
        if args.list_ops is not None and path is None:
            emit(op_rows(args.list_ops), args.format, ["op", "kind", "args", "default", "source", "doc"])
            return 0
        from einnas.grammar import load_grammar

        report = check_grammar(load_grammar(path, plugins=args.plugin))
        if args.list_ops is not None:
            rows = op_rows(args.list_ops, report)
            emit(rows, args.format, ["op", "kind", "args", "default", "in grammar", "source", "doc"])
        elif args.format == "json":
            emit({**report.as_dict(), "ops": op_rows(report=report)}, args.format)
        else:
            emit(None, args.format, before=[format_report(report)])
        if report.errors:
            more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
            raise GrammarError(report.errors[0] + more)
        return 0


# --- onnx commands ------------------------------------------------------------


class Export(Command):
    name = "export"
    help = "build one architecture and export it to a self-contained ONNX file"

    def add_arguments(self, parser):
        parser.add_argument("arch", metavar="ARCH", help="architecture string, @file, or seed name")
        parser.add_argument("-o", "--out", "--output", dest="output", required=True, metavar="FILE",
                            help="ONNX file to write (an existing ONNX file is replaced only with --force)")
        parser.add_argument("--force", action="store_true",
                            help="replace an existing ONNX file at --out (never a file of another kind)")
        parser.add_argument("--input-shape", default="3,32,32", help="C,H,W (image) or S,D (tokens); default 3,32,32")
        parser.add_argument("--classes", type=positive_int, default=10)
        parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                            help="torch exporter (default torchscript: ~10x faster; dynamo needs onnxscript)")
        add_grammar_options(parser)

    def run(self, args):
        from einnas.grammar import resolve_arch
        from einnas.grammar.export import export_onnx

        _checks.check_output_file(args.output, "-o", force=args.force, kind="an ONNX file",
                                  is_kind=_checks.is_onnx_file)
        shape = parse_shape(args.input_shape)
        arch = resolve_arch(args.arch, load_grammar_from(args), shape, args.classes)  # seeds fit the input
        model = export_onnx(arch, shape, args.classes, args.output, exporter=args.exporter)
        print(f"wrote {args.output}: archid {arch.archid}, {len(model.graph.node)} nodes, {model.ByteSize()} bytes")
        return 0


class Describe(Command):
    name = "describe"
    help = "print the text description of an ONNX model (what the predictor reads)"
    formats = ("text", "json")

    def add_arguments(self, parser):
        parser.add_argument("model", metavar="MODEL.onnx", help="ONNX file (any source)")
        parser.add_argument("--max-chars", type=positive_int, help="cut the text to this many characters (marked)")
        parser.add_argument("--max-lines", type=positive_int, help="cut the text to this many lines (marked)")

    def run(self, args):
        from einnas.surrogate.describe import describe

        result = describe(args.model, max_chars=args.max_chars, max_lines=args.max_lines)
        s = result.summary
        emit(result.as_dict(), args.format, before=[
            result.text,
            f"\nparams {s.params}  macs {s.macs}  flops {s.flops}  depth {s.depth}  "
            f"nodes {s.nodes} (+{s.folded} folded)" + ("  [text truncated]" if result.truncated else ""),
            "ops: " + ", ".join(f"{op} {count}" for op, count in s.op_counts.items()),
        ])
        return 0


# --- evaluate commands --------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


class Train(Command):
    name = "train"
    help = "train one architecture on a dataset; print validation and test accuracy"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("arch", metavar="ARCH", help="architecture string, @file, or seed name (e.g. resnet18)")
        parser.add_argument(
            "--dataset", required=True, metavar="D",
            help="digits, mnist1d, mnist5k, addnist5k, or an Unseen-NAS folder / .npz file",
        )
        parser.add_argument("--view", choices=["auto", "image", "tokens"], default="auto",
                            help="sequences (S, D) as tokens or as Dx1xS images for 1-D convolutions "
                                 "(default auto: image for signals of at most 4 channels, such as mnist1d)")
        parser.add_argument("--epochs", type=positive_int, default=8, help="epochs (default 8, einspace's search budget)")
        parser.add_argument(
            "--seconds", type=_positive_float, metavar="T",
            help="time limit; a run that exceeds it (or is projected to) fails with reason timeout",
        )
        parser.add_argument("--seed", type=nonnegative_int, default=0)
        parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if present)")
        parser.add_argument("--batch-size", type=positive_int, default=256)
        parser.add_argument("--lr", type=_positive_float, default=0.04)
        parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
        parser.add_argument("--final", action="store_true", help="train on train+valid, report test accuracy only")
        parser.add_argument("--shift", type=nonnegative_int, metavar="PX",
                            help="random translation of images by up to PX pixels while training (default: with "
                                 "--final, what a search's final retrain uses: 2 for images of 16 pixels a side or "
                                 "more, else 0; without --final, 0: the search's protocol)")
        add_grammar_options(parser)

    def run(self, args):
        from tqdm import tqdm

        from einnas.evaluate import TrainConfig, load_dataset, resolve_device, train
        from einnas.evaluate.trainer import auto_shift
        from einnas.grammar import build_network, resolve_arch
        from einnas.grammar.seeds import parse_seed_name

        device = resolve_device(args.device)  # a bad device fails before the slow loads
        grammar = load_grammar_from(args)
        if parse_seed_name(args.arch) is None:  # a bad ARCH fails before the slow loads (a seed name is checked
            resolve_arch(args.arch, grammar)      # by parsing it; its depth form needs the dataset's input shape)
        dataset = load_dataset(args.dataset, view=args.view)
        arch = resolve_arch(args.arch, grammar, dataset.input_shape, dataset.num_classes)  # seeds fit the input
        shift = args.shift if args.shift is not None else (auto_shift(dataset.input_shape) if args.final else 0)
        config = TrainConfig(
            epochs=args.epochs, seconds=args.seconds, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
            shift=shift,
        )
        bar = tqdm(
            total=args.epochs, desc=f"train {arch.archid}", unit="epoch", file=sys.stderr, leave=False,
            disable=args.quiet or not sys.stderr.isatty(),
        )

        def progress(stats):
            bar.set_postfix(loss=f"{stats.train_loss:.3f}", **({} if stats.val_acc is None else {"val": _pct(stats.val_acc)}))
            bar.update(1)

        try:
            result = train(
                lambda: build_network(arch, dataset.input_shape, dataset.num_classes), dataset, config,
                seed=args.seed, device=device, final=args.final, test=True, progress=progress,
            )
        finally:
            bar.close()
        data = result.to_dict()
        data.update(archid=arch.archid, arch=arch.string, dataset=dataset.name)
        status = "ok" if result.ok else f"failed: {result.reason}: {result.detail}"
        pct = _pct
        rows = [
            ("arch", arch.archid + (f" ({args.arch.strip()})" if len(args.arch) <= 40 else "")),
            ("dataset", dataset.describe()),
            ("device", result.device),
            ("params", f"{result.params:,}"),
            ("epochs", f"{result.epochs_run}/{args.epochs}" + (" (final: train+valid)" if args.final else "")
             + (f", shifts of up to {shift} px" if shift else "")),
            ("val_acc", pct(result.val_acc)),
            ("test_acc", pct(result.test_acc)),
            ("seconds", f"{result.seconds:.1f}"),
            ("status", status),
        ]
        emit(data, args.format, before=pairs(rows, 9))
        return 0 if result.ok else 1


# --- search commands ----------------------------------------------------------


def _add_study_options(parser, creating: bool = False) -> None:
    parser.add_argument(
        "--storage", metavar="FILE_OR_URL",
        help="journal file, sqlite:///FILE or database URL such as postgresql://user@host/db "
        + ("(default: DIR/study.journal)" if creating else "(default: runs/NAME/study.journal)"),
    )
    parser.add_argument(
        "--study-name", metavar="NAME",
        help="(default: DATASET-STRATEGY[-INIT]-sSEED)" if creating else "study in the storage (default: its only one)",
    )


def _pct(value) -> str:
    from einnas._util import format_accuracy

    return format_accuracy(value)


def _milliseconds(text: str) -> float:
    """``2``, ``2ms`` or ``0.5 ms``: milliseconds (other units are refused, not guessed)."""
    import re

    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected milliseconds, e.g. 2 or 2ms")
    return float(match.group(1))


class Search(Command):
    name = "search"
    help = "search architectures on a dataset (regularised evolution or random sampling) in an Optuna study"
    formats = ("table", "json")

    def add_arguments(self, parser):
        from einnas.search.run import SearchConfig as C

        config_option(parser, C, "dataset", metavar="D")
        config_option(parser, C, "trials", type=positive_int, metavar="N")
        config_option(parser, C, "timeout", type=_positive_float, metavar="T")
        config_option(parser, C, "seed", type=nonnegative_int)
        config_option(parser, C, "strategy", choices=RegistryChoices("einnas.search.strategies", "STRATEGIES"),
                      metavar="NAME")
        config_option(parser, C, "init", metavar="SEEDS")
        config_option(parser, C, "view", choices=["auto", "image", "tokens"])
        config_option(parser, C, "population", type=positive_int)
        config_option(parser, C, "tournament", type=positive_int)
        config_option(parser, C, "epochs", type=positive_int)
        config_option(parser, C, "seconds", type=_positive_float)
        config_option(parser, C, "prune")
        config_option(parser, C, "eta", type=positive_int)
        config_option(parser, C, "min_epochs", type=positive_int)
        config_option(parser, C, "batch_size", type=positive_int)
        config_option(parser, C, "lr", type=_positive_float)
        config_option(parser, C, "max_params", type=positive_int)
        config_option(parser, C, "max_activations", type=positive_int)
        config_option(parser, C, "final_epochs", type=positive_int)
        config_option(parser, C, "final_shift", type=nonnegative_int, metavar="PX")
        config_option(parser, C, "final")
        _add_study_options(parser, creating=True)
        config_option(parser, C, "out", "-o", "--out", metavar="DIR")
        config_option(parser, C, "surrogate", metavar="default|PATH|none")
        config_option(parser, C, "evaluator", choices=RegistryChoices("einnas.search.evaluators", "EVALUATORS"),
                      metavar="NAME")
        config_option(parser, C, "candidates", type=positive_int, metavar="N")
        config_option(parser, C, "kappa", type=float)
        config_option(parser, C, "refit_every", type=int, metavar="K")
        config_option(parser, C, "device")
        config_option(parser, C, "threads", type=positive_int)
        config_option(parser, C, "workers", type=positive_int, metavar="N")
        add_grammar_options(parser)
        deploy = parser.add_argument_group("deployment (multi-objective) search")
        deploy.add_argument("--objectives", default="accuracy", metavar="LIST",
                            help="objectives in order, two or three of accuracy, latency, params, macs, accuracy "
                                 "among them, e.g. accuracy,latency: a multi-objective study whose best trials "
                                 "are the Pareto front (default accuracy)")
        deploy.add_argument("--max-latency", type=_milliseconds, metavar="MS",
                            help="latency budget in milliseconds (a constraint: the best and the front keep to it)")
        deploy.add_argument("--latency-batch", type=positive_int, default=1, help="batch at which latency is timed (default 1)")
        deploy.add_argument("--latency-threads", type=positive_int, default=1,
                            help="onnxruntime CPU threads when timing latency (default 1)")
        deploy.add_argument("--pareto-export", type=nonnegative_int, metavar="K",
                            help="retrain and export at most K members of the Pareto front to pareto/ (default 8)")

    def run(self, args):
        import optuna

        from einnas.search import Search as Runner
        from einnas.search import SearchConfig
        from einnas.search.progress import SearchProgress

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if args.out:  # a run folder that cannot take the results is found before any training
            _checks.check_output_folder(args.out, "--out")
        given = dict(
            dataset=args.dataset, trials=args.trials, timeout=args.timeout, seed=args.seed, strategy=args.strategy,
            init=args.init, population=args.population, tournament=args.tournament, epochs=args.epochs,
            seconds=args.seconds, batch_size=args.batch_size, lr=args.lr, max_params=args.max_params,
            max_activations=args.max_activations, final_epochs=args.final_epochs, final_shift=args.final_shift,
            storage=args.storage,
            study_name=args.study_name, out=args.out, surrogate=args.surrogate, evaluator=args.evaluator,
            candidates=args.candidates, kappa=args.kappa, refit_every=args.refit_every,
            device=args.device, threads=args.threads, workers=args.workers, grammar=args.grammar, plugins=tuple(args.plugin),
            final=not args.no_final, view=args.view, prune=not args.no_prune, eta=args.eta, min_epochs=args.min_epochs,
            objectives=args.objectives, max_latency=args.max_latency, latency_batch=args.latency_batch,
            latency_threads=args.latency_threads, pareto_export=args.pareto_export,
        )
        runner = Runner(SearchConfig(**{k: v for k, v in given.items() if v is not None}))
        if not args.out:
            _checks.check_output_folder(str(runner.out_dir), "--out")
        if not args.quiet:
            s = runner.settings
            print(f"study {runner.study_name} in {runner.storage_shown}", file=sys.stderr)
            print(f"{runner.dataset.describe()}; strategy {s.get('strategy')}"
                  + (f" (population {s['population']}, tournament {s['tournament']}, init {s['init']})" if "population" in s else "")
                  + f"; {s.get('evaluator')}; {runner.workers} worker(s), {runner.train_config.seconds:g} s per candidate"
                  + (f", rungs at epochs {s['fidelity']['rungs']}" if s.get("fidelity") else "")
                  + (f"; objectives {', '.join(s['objectives'])}" if s.get("objectives", ["accuracy"]) != ["accuracy"] else "")
                  + (f", latency under {s['max_latency']:g} ms" if s.get("max_latency") is not None else "")
                  + (f"; no new trial after {runner.search_timeout:g} s" if runner.config.timeout else "")
                  + (f", the final retrain in the rest of {runner.config.timeout:g} s"
                     if runner.config.timeout and runner.search_timeout != runner.config.timeout else ""),
                  file=sys.stderr)
        with SearchProgress(args.trials, quiet=args.quiet) as progress:
            outcome = runner.run(progress=progress, finish=False)
        if not args.quiet and not args.no_final and outcome.view.best is not None:
            config = runner.final_config()
            if config.fit_seconds is None:
                epochs = f"{config.epochs} epochs"
            elif config.fit_seconds < 1:
                epochs = f"{config.fit_min_epochs} epochs (--epochs: --timeout is spent)"
            else:
                epochs = (f"up to {config.epochs} epochs, as many as fit in the {config.fit_seconds:.0f} s "
                          "--timeout leaves")
            print(f"retraining the best (trial {outcome.view.best.number}) in final mode, {epochs} ...",
                  file=sys.stderr)
        runner.finish(outcome)
        report = outcome.report
        if args.format == "json":
            print(json.dumps(report, indent=2))
            return 0 if report["best"] else 1
        t = report["trials"]
        print(f"study {outcome.study_name}: {t['counted']} trials evaluated ({t['completed']} scored, "
              + (f"{t['pruned']} pruned, " if t.get("pruned") else "") + f"{t['failed']} failed), "
              f"{outcome.workers} worker(s), {outcome.stats.seconds:.1f} s")
        # with --evaluator surrogate the scores are predictions: say so in every label
        score = "predicted" if report["settings"].get("evaluator") == "predicted" else "val_acc"
        rows = [dict(row, **{score: _pct(row["val_acc"])}) for row in report["top"]]
        if rows:
            emit(rows, "table", ["rank", "trial", score, "params", "archid", "origin"])
        best, final = report["best"], report["final"]
        if best:
            arch = best["arch"] if len(best["arch"]) <= 400 else best["arch"][:400] + " ... (einnas best --arch-only)"
            print(f"best: trial {best['trial']} {best['archid']} {'predicted' if score == 'predicted' else 'val'} "
                  f"{_pct(best['val_acc'])}: {arch}")
        if final:
            shifted = f", shifts of up to {final['shift']} px" if final.get("shift") else ""
            print(f"final: test {_pct(final['test_acc'])} after {final['epochs']} epochs on train+valid{shifted}"
                  if final["ok"]
                  else f"final: retrain failed: {final['reason']}: {final['detail']}")
        if report.get("pareto"):
            print(f"Pareto front ({len(report['pareto'])} members; {' vs '.join(report['settings']['objectives'])}):")
            emit([_front_row(r) for r in report["pareto"]], "table", FRONT_COLUMNS)
        for key, path in outcome.files.items():
            print(f"{key}: {path}")
        return 0 if best else 1


FRONT_COLUMNS = ["trial", "accuracy", "latency_ms", "params", "macs", "test_acc", "archid", "onnx"]


def _front_row(row: dict) -> dict:
    """A Pareto-front row for a table (accuracies as percentages)."""
    return dict(row, accuracy=_pct(row.get("accuracy")), test_acc=_pct(row.get("test_acc")) if row.get("test_acc") is not None else "",
                latency_ms=f"{row['latency_ms']:.3f}" if isinstance(row.get("latency_ms"), (int, float)) else "")


class Trials(Command):
    name = "trials"
    help = "list the trials of a search study"
    formats = ("table", "json")

    def add_arguments(self, parser):
        _add_study_options(parser)
        parser.add_argument("--sort", choices=["number", "value"], default="number",
                            help="row order: trial number (default) or value, best first")
        parser.add_argument("--limit", type=positive_int, metavar="K", help="show only K rows")
        parser.add_argument("--arch", action="store_true", help="add the architecture string column")

    def run(self, args):
        from einnas.search import StudyView, open_existing

        study, _ = open_existing(args.storage, args.study_name)
        records = list(StudyView.of(study).records)
        if args.sort == "value":  # full-budget candidates first, then pruned ones by rung and accuracy there
            records.sort(key=lambda r: (r.fitness is None, tuple(-x for x in r.fitness or ()), r.number))
        records = records[: args.limit] if args.limit else records
        rows = [dict(r.as_dict(), reason=r.reason or "",
                     value=f"({_pct(r.attrs.get('rung_value'))} at epoch {len(r.attrs.get('curve') or [])})"
                     if r.pruned else _pct(r.value)) for r in records]
        emit([r.as_dict() for r in records], args.format,
             ["number", "status", "value", "params", "archid", "origin", "parent", "reason", "seconds"]
             + (["arch"] if args.arch else []), rows=rows)
        return 0


class Best(Command):
    name = "best"
    help = "show the best architectures of a search study"
    formats = ("table", "json")

    def add_arguments(self, parser):
        _add_study_options(parser)
        parser.add_argument("-n", type=positive_int, default=1, help="how many (default 1)")
        parser.add_argument("--arch-only", action="store_true", help="print only the best architecture string")

    def run(self, args):
        from einnas.errors import StudyError
        from einnas.search import StudyView, open_existing

        study, shown = open_existing(args.storage, args.study_name)
        if len(study.directions) > 1:  # a multi-objective study: its best is the Pareto front
            return self._front(study, shown, args)
        top = StudyView.of(study).top(args.n)
        if not top:
            raise StudyError(f"study {study.study_name!r} in {shown}: no completed trial yet")
        if args.arch_only:
            print(top[0].arch)
        elif args.format == "json":
            print(json.dumps([r.as_dict() for r in top], indent=2))
        else:
            predicted = (study.user_attrs.get("einnas") or {}).get("evaluator") == "predicted"
            for rank, r in enumerate(top, 1):
                print(f"{rank}. trial {r.number}  {'predicted' if predicted else 'val'} {_pct(r.value)}  params {r.params}  archid {r.archid}  "
                      f"origin {r.origin}\n   {r.arch}")
        return 0

    @staticmethod
    def _front(study, shown, args) -> int:
        """The Pareto front (Optuna's ``best_trials``, constraints kept), most accurate first."""
        from einnas.errors import StudyError
        from einnas.search import StudyView
        from einnas.search.front import row

        numbers = {t.number for t in study.best_trials}
        front = sorted((r for r in StudyView.of(study).records if r.number in numbers),
                       key=lambda r: (-(r.value or 0.0), r.number))
        if not front:
            raise StudyError(f"study {study.study_name!r} in {shown}: no completed trial within its constraints yet")
        if args.arch_only:
            print(front[0].arch)
        elif args.format == "json":
            print(json.dumps([r.as_dict() for r in front], indent=2))
        else:
            names = (study.user_attrs.get("einnas") or {}).get("objectives") or []
            print(f"Pareto front of {study.study_name}: {len(front)} trials ({' vs '.join(names)})")
            emit([_front_row(row(r)) for r in front], "table", [c for c in FRONT_COLUMNS if c not in ("test_acc", "onnx")] + ["arch"])
        return 0


class Report(Command):
    name = "report"
    help = "write report.html for a study, finished or running: history, Pareto front, top architectures, best graph"

    def add_arguments(self, parser):
        _add_study_options(parser)
        parser.add_argument("-o", "--out", "--output", dest="output", default="report.html", metavar="FILE",
                            help="HTML file to write (default report.html; an existing einnas report is replaced "
                                 "only with --force, any other file never)")
        parser.add_argument("--force", action="store_true", help="replace an existing einnas report at -o")
        parser.add_argument("--no-graph", action="store_true",
                            help="leave out the drawing of the best architecture's ONNX graph (no torch import)")
        add_grammar_options(parser)
        for action in parser._actions:
            if "--grammar" in action.option_strings:
                action.help = "grammar that parses the best architecture for its drawing (default: the study's own built-in space)"

    def run(self, args):
        import optuna

        from einnas.search import open_existing
        from einnas.search.html_report import check_study, is_report_file, write_html

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _checks.check_output_file(args.output, "-o", force=args.force, kind="an einnas report",
                                  is_kind=is_report_file)
        study, shown = open_existing(args.storage, args.study_name)
        check_study(study, shown)
        grammar = load_grammar_from(args) if (args.grammar or args.plugin) else None
        path = write_html(study, args.output, grammar=grammar, graph=not args.no_graph)
        print(f"wrote {path}: study {study.study_name} ({len(study.get_trials(deepcopy=False))} trials)")
        return 0


# --- surrogate commands -------------------------------------------------------


class BenchBuild(Command):
    name = "bench build"
    help = "train sampled (and mutated) architectures into an Optuna study of records, as a search does"
    formats = ("table", "json")

    def add_arguments(self, parser):
        from einnas.surrogate.bench import BenchConfig as C

        config_option(parser, C, "dataset", metavar="D")
        config_option(parser, C, "view", choices=["auto", "image", "tokens"])
        config_option(parser, C, "trials", "--trials", "--n", type=positive_int, metavar="N")
        config_option(parser, C, "timeout", type=_positive_float, metavar="T")
        config_option(parser, C, "seed", type=nonnegative_int)
        config_option(parser, C, "storage", metavar="FILE_OR_URL")
        config_option(parser, C, "study_name", metavar="NAME")
        parser.add_argument("-o", "--out", metavar="FILE", help="same as --storage (a journal file)")
        config_option(parser, C, "epochs", type=positive_int)
        config_option(parser, C, "seconds", type=_positive_float)
        config_option(parser, C, "batch_size", type=positive_int)
        config_option(parser, C, "lr", type=_positive_float)
        config_option(parser, C, "max_params", type=positive_int)
        config_option(parser, C, "max_activations", type=positive_int)
        config_option(parser, C, "mutate_fraction", "--mutate", type=float)
        config_option(parser, C, "top_fraction", "--top", type=float)
        parser.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
        config_option(parser, C, "threads", type=positive_int)
        config_option(parser, C, "device")
        add_grammar_options(parser)

    def run(self, args):
        import optuna

        from einnas.surrogate.bench import BenchConfig, build

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if args.out and args.storage and args.out != args.storage:
            raise UsageError(f"--out {args.out} and --storage {args.storage}: give one")
        if args.out and args.out.endswith(".jsonl"):
            raise UsageError(f"--out {args.out}: bench build records into an Optuna study now; give a journal file "
                             "(--storage bench.journal) and write JSON Lines with 'einnas bench export'")
        config = BenchConfig(
            dataset=args.dataset, view=args.view, trials=args.trials, timeout=args.timeout, seed=args.seed,
            storage=args.storage or args.out, study_name=args.study_name, epochs=args.epochs, seconds=args.seconds,
            batch_size=args.batch_size, lr=args.lr, max_params=args.max_params, max_activations=args.max_activations,
            mutate_fraction=args.mutate, top_fraction=args.top, threads=args.threads, device=args.device,
            grammar=args.grammar, plugins=tuple(args.plugin),
        )
        summary = build(config, workers=args.workers, quiet=args.quiet)
        emit(summary, args.format, before=pairs(summary.items(), 13))
        return 0


class BenchExport(Command):
    name = "bench export"
    help = "write the records of a study (bench build or search) as JSON Lines"

    def add_arguments(self, parser):
        parser.add_argument("--storage", required=True, metavar="FILE_OR_URL",
                            help="journal file, run folder, sqlite:///FILE or database URL")
        parser.add_argument("--study-name", action="append", metavar="NAME",
                            help="export only this study (repeatable; default: all einnas studies of the storage)")
        parser.add_argument("-o", "--out", "--output", dest="output", required=True, metavar="FILE.jsonl",
                            help="JSON Lines file to write")
        parser.add_argument("--force", action="store_true", help="replace a file that bench export did not write")

    def run(self, args):
        from einnas.surrogate.bench import export

        count = export(args.storage, args.output, study_names=args.study_name, force=args.force)
        print(f"wrote {args.output}: {count} records")
        return 0


def _fmt_metric(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _add_records_options(parser) -> None:
    parser.add_argument("--study-name", action="append", metavar="NAME",
                        help="read only this study of each storage given (repeatable; default: all einnas studies)")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="skip malformed lines of JSON Lines files (counted) instead of refusing the file")


def _load_records(args, log):
    from einnas.surrogate.records import load_records

    return load_records(args.records, label_key=args.label_key, log=log, study_names=args.study_name,
                        skip_bad_lines=args.skip_bad_lines)


class SurrogateFit(Command):
    name = "surrogate fit"
    help = "fit the surrogate predictor on benchmark records; report held-out Kendall tau / Spearman rho"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("records", nargs="+", metavar="RECORDS",
                            help="studies (journal files, run folders, sqlite:/// or postgresql:// URLs) of "
                                 "'einnas bench build' or 'einnas search', JSON Lines files, or folders of ONNX "
                                 "files with the accuracy in metadata_props (ONNX-Bench style)")
        _add_records_options(parser)
        parser.add_argument("-o", "--out", required=True, metavar="DIR",
                            help="predictor folder to write (an existing predictor is replaced only with --force)")
        parser.add_argument("--force", action="store_true", help="replace the predictor already in --out")
        parser.add_argument("--seed", type=nonnegative_int, default=0)
        parser.add_argument("--holdout", type=float, default=0.2,
                            help="share of architectures held out for the report, never fitted (default 0.2)")
        parser.add_argument("--members", type=positive_int, default=5, help="ensemble members (default 5)")
        parser.add_argument("--text", action="store_true",
                            help="add the learned text head's score as a feature (default: off, see docs/surrogate.md)")
        parser.add_argument("--no-text", action="store_true", help="numeric graph features only (the default)")
        parser.add_argument("--no-proxies", action="store_true", help="no zero-cost proxy features")
        parser.add_argument("--blend", default="1", metavar="auto|W",
                            help="weight in [0, 1] of the trees in their blend with a committee of zero-cost "
                                 "proxies (default 1: the trees alone); auto: chosen by leave-one-family-out "
                                 "cross-validation on the training records")
        parser.add_argument("--label-key", metavar="KEY", help="metadata_props key of the accuracy in ONNX folders")
        parser.add_argument("--cache", metavar="DIR", help="cache folder (default: ~/.cache/einnas)")

    def run(self, args):
        from einnas.surrogate.encoder import cache_dir
        from einnas.surrogate.features import DescriptionCache
        import os

        from einnas.surrogate.predictor import FitConfig, featurize, fit, provenance, save_atomic
        from einnas.surrogate.proxyfeatures import ProxyCache

        if not 0 <= args.holdout < 1:
            raise UsageError(f"--holdout {args.holdout}: expected a fraction in [0, 1)")
        blend = None
        if args.blend != "auto":
            try:
                blend = float(args.blend)
            except ValueError:
                blend = float("nan")
            if not 0 <= blend <= 1:
                raise UsageError(f"--blend {args.blend}: expected auto or a weight in [0, 1]")
        _checks.check_records_inputs(args.records, "RECORDS")
        _checks.check_predictor_out(args.out, args.force)  # before the minutes of fitting
        log = None if args.quiet else (lambda line: print(f"einnas surrogate fit: {line}", file=sys.stderr, flush=True))
        records = _load_records(args, log)
        folder = args.cache or cache_dir()
        proxies = None if args.no_proxies else ProxyCache(folder, seed=0)
        data = featurize(records, None, DescriptionCache(folder), holdout=args.holdout, log=log, proxies=proxies)
        meta = {"holdout": args.holdout,
                "provenance": provenance(args.seed, [r for r in args.records if "://" not in r], argv=args.argv),
                # where the records were, relative to the predictor: `surrogate eval DIR` finds them
                "records_paths": [r if "://" in r else os.path.relpath(os.path.abspath(r), os.path.abspath(args.out))
                                  for r in args.records]}
        config = FitConfig(use_text=args.text and not args.no_text, use_proxies=not args.no_proxies,
                           members=args.members, seed=args.seed, blend=blend)
        predictor = fit(data, config, meta=meta, log=log)
        save_atomic(predictor, args.out)
        meta = predictor.meta
        emit({"out": args.out, "training": meta["training"], "selection": meta["selection"],
              "heldout": meta["heldout"]}, args.format, before=pairs(
            [("predictor", args.out)]
            + [("records", f"{name}: train {info['train']}, val {info['val']}, held out {info['test']}")
               for name, info in meta["training"].items()]
            + [("selected", meta["config_chosen"])]
            + [("blend", f"weight of the trees {meta.get('blend_selection', {}).get('weight', 1.0):g} "
                         "(the rest: the zero-cost proxy committee)")]
            + [("held out", f"{name}: n {m['n']}, Kendall tau {_fmt_metric(m['kendall_tau'])}, "
                            f"Spearman rho {_fmt_metric(m['spearman_rho'])}") for name, m in meta["heldout"].items()],
            10))
        return 0


class SurrogateEval(Command):
    name = "surrogate eval"
    help = "Kendall tau and Spearman rho of a predictor on the held-out split of records"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("predictor", nargs="?", default="default", metavar="DIR",
                            help="predictor folder (default: the shipped one)")
        parser.add_argument("--records", nargs="+", metavar="RECORDS",
                            help="studies, JSON Lines files or ONNX folders, as for 'surrogate fit' "
                                 "(default: the records the predictor was fitted on, where they still are)")
        _add_records_options(parser)
        parser.add_argument("--split", choices=["test", "all"], default="test",
                            help="test: the held-out architectures only (default); all: every record "
                                 "(fair only for datasets the predictor was not fitted on)")
        parser.add_argument("--label-key", metavar="KEY")
        parser.add_argument("--cache", metavar="DIR", help="cache folder (default: ~/.cache/einnas)")

    def run(self, args):
        from einnas.surrogate.encoder import cache_dir
        from einnas.surrogate.features import DescriptionCache
        from einnas.surrogate.predictor import evaluate_records
        from einnas.surrogate.proxyfeatures import ProxyCache
        from einnas.surrogate.score import load_predictor

        if args.records:
            _checks.check_records_inputs(args.records, "--records")
        predictor = load_predictor(args.predictor)
        log = None if args.quiet else (lambda line: print(f"einnas surrogate eval: {line}", file=sys.stderr, flush=True))
        if not args.records:
            args.records = _checks.fitted_records(predictor, args.predictor)
        records = _load_records(args, log)
        folder = args.cache or cache_dir()
        proxies = ProxyCache(folder, seed=0) if predictor.config.use_proxies else None
        rows = evaluate_records(predictor, records, None, DescriptionCache(folder), split=args.split, log=log,
                                proxies=proxies)
        metrics = ("kendall_tau", "spearman_rho", "kendall_tau_above_chance", "params_kendall_tau")
        emit(rows, args.format, ["dataset", "split", "n", *metrics, "note"],
             rows=[{**r, **{k: _fmt_metric(r.get(k)) for k in metrics}} for r in rows])
        return 0


class Score(Command):
    name = "score"
    help = "predicted accuracy (with uncertainty) of ONNX files"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", metavar="MODEL.onnx")
        parser.add_argument("--predictor", default="default", metavar="DIR",
                            help="predictor folder (default: the shipped one)")
        parser.add_argument("--dataset", metavar="D",
                            help="condition on this task (built-in name or folder); proxies on a batch of it")
        parser.add_argument("--no-proxies", action="store_true", help="skip zero-cost proxies (faster)")
        parser.add_argument("--threads", type=positive_int, help="torch CPU threads for the proxies")

    def run(self, args):
        from einnas.surrogate.score import Scorer, load_predictor

        dataset = None
        if args.dataset:
            from einnas.evaluate.datasets import load_dataset

            dataset = load_dataset(args.dataset)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        scorer = Scorer(load_predictor(args.predictor), dataset=dataset, proxies=not args.no_proxies)
        results = scorer.score_files(args.files)
        failed = [r for r in results if r.error is not None]
        for r in failed:
            print(f"einnas score: error: {r.error}", file=sys.stderr)
        good = [r for r in results if r.error is None]
        targets = sorted({r.target for r in good})
        lines = [f"predicted: {target}" + (f" ({sum(r.target == target for r in good)} files)"
                                           if len(targets) > 1 else "") for target in targets]
        if good:
            lines.append("rank: percentile among the predictor's training records on that task (comparable across files)")
        rows = [{"file": r.name, "predicted": _pct(r.mean), "std": f"± {100 * r.std:.1f}",
                 "rank": "-" if r.rank is None else f"{r.rank:.0f}", "params": f"{r.params:,}",
                 "note": r.note} for r in good]
        emit([r.as_dict() for r in results], args.format,
             ["file", "predicted", "std", "rank", "params", "note"] if rows else (), rows=rows, before=lines)
        return 2 if failed else 0


class Proxies(Command):
    name = "proxies"
    help = "zero-cost proxies (SNIP, grad-norm, synflow, NASWOT, jacov, params, FLOPs) of ONNX files or architectures"
    formats = ("table", "json")

    def add_arguments(self, parser):
        parser.add_argument("models", nargs="+", metavar="MODEL.onnx|ARCH")
        parser.add_argument("--input-shape", help="for ARCH: C,H,W or S,D (default 3,32,32, or the dataset's)")
        parser.add_argument("--classes", type=positive_int, help="for ARCH: classes (default 10, or the dataset's)")
        parser.add_argument("--dataset", metavar="D", help="use one batch of this dataset's training data")
        parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
        parser.add_argument("--seed", type=nonnegative_int, default=0, help="initialisation and batch seed (default 0)")
        parser.add_argument("--keep-weights", action="store_true", help="ONNX: score the file's weights, not a fresh init")
        add_grammar_options(parser)

    def run(self, args):
        from pathlib import Path

        from einnas.surrogate.proxies import PROXY_NAMES, dataset_batch, proxies_for_arch, proxies_for_onnx

        if args.batch_size < 2:
            raise UsageError("--batch-size must be at least 2 (NASWOT and jacov compare samples)")
        data = batch = None
        if args.dataset:
            from einnas.evaluate import load_dataset

            data = load_dataset(args.dataset)
            batch = dataset_batch(data, args.batch_size, args.seed)
        shape = parse_shape(args.input_shape) if args.input_shape else None
        if data is not None and shape is not None and shape != data.input_shape:
            raise UsageError(f"--input-shape {args.input_shape} differs from dataset {data.name}'s "
                             f"{','.join(map(str, data.input_shape))}")
        if data is not None and args.classes and args.classes != data.num_classes:
            raise UsageError(f"--classes {args.classes} differs from dataset {data.name}'s {data.num_classes}")
        shape = shape or (data.input_shape if data else (3, 32, 32))
        classes = args.classes or (data.num_classes if data else 10)
        grammar = None
        rows = []
        for model in args.models:
            if model.lower().endswith(".onnx") or Path(model).is_file() and not model.startswith("@"):
                where = f"{model} with dataset {data.name}" if data else model
                result = proxies_for_onnx(model, batch=batch, seed=args.seed, reinit=not args.keep_weights,
                                          batch_size=args.batch_size, name=model, batch_name=where)
                row = {"model": model, "converted": result.converted, **result.values, "note": result.note or ""}
            else:
                grammar = grammar or load_grammar_from(args)
                values = proxies_for_arch(model, shape, classes, batch=batch, seed=args.seed, grammar=grammar,
                                          batch_size=args.batch_size)
                row = {"model": model if len(model) <= 40 else model[:37] + "...", "converted": True, **values, "note": ""}
            rows.append(row)
        emit([{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows], args.format,
             ["model", "converted", *PROXY_NAMES, "note"],
             rows=[{**r, **{n: f"{r[n]:.4g}" for n in PROXY_NAMES}, "converted": "yes" if r["converted"] else "no"}
                   for r in rows])
        return 0


#: Every subcommand, in the order of ``einnas --help`` (as optuna's ``_COMMANDS``). A command
#: class missing here is not on the command line (tests/test_cli.py checks none is left out).
COMMANDS: tuple[type[Command], ...] = (
    Sample, GrammarCheck, Export, Describe, Train, Search, Trials, Best, BenchBuild, BenchExport, SurrogateFit,
    SurrogateEval, Score, Proxies, Report,
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and a pointer to ``--help``, exit status 2.

    A subcommand's parser gets its arguments when first used (parsing or help), so
    ``einnas sample`` does not build the options of every other command and a command may
    read its defaults from modules that are slow to import (``search``: SearchConfig).
    """

    _pending = None  # (command, common-help filler) whose arguments are added on first use

    def _complete(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._complete()
        return super().format_help()

    def format_usage(self):
        self._complete()
        return super().format_usage()

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


#: Help for options that are the same in every command (filled in where a command gave none).
_COMMON_HELP = {
    "--seed": "random seed (default 0)",
    "--classes": "number of classes of the network's output (default 10)",
    "--batch-size": "training batch size (default 256)",
    "--lr": "peak learning rate of the cosine schedule (default 0.04)",
    "--label-key": "metadata_props key of the accuracy in ONNX folders (default: the usual names)",
    "--max-chars": "cut the text to this many characters (marked)",
}


def _global_options() -> argparse.ArgumentParser:
    """-v/-q, accepted before or after the subcommand (SUPPRESS: a subcommand's default never
    overrides what was given before it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors (the exit status stays the same)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or log lines on stderr")
    return common


def _add_command_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """The command's own arguments, then ``-f/--format`` if it has formats, then common help."""
    command.add_arguments(parser)
    if command.formats:
        others = " or ".join(command.formats[1:])
        parser.add_argument("-f", "--format", choices=list(command.formats), default=command.formats[0],
                            help=f"output: {command.formats[0]} (default) or {others}; json gives raw numbers "
                                 "(fractions, not percentages)")
    for action in parser._actions:
        if action.help is None:
            action.help = next((_COMMON_HELP[o] for o in action.option_strings if o in _COMMON_HELP), None)


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``einnas`` parser. ``lazy`` (what :func:`main` uses): a subcommand's arguments are
    added when that subcommand is parsed or asked for help; otherwise all at once."""
    from einnas._util import package_version

    common = _global_options()
    parser = _Parser(
        prog="einnas", parents=[common],
        description="Neural architecture search over a grammar-defined space (einspace), "
        "with an ONNX-text surrogate predictor and Optuna-driven search.",
    )
    parser.add_argument("--version", action="version", version=f"einnas {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in (cls() for cls in COMMANDS):
        words = command.name.split()
        target = sub
        if len(words) == 2:
            if words[0] not in groups:
                group = sub.add_parser(words[0], help=f"{words[0]} commands", parents=[common])
                groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True,
                                                        parser_class=_Parser)
            target = groups[words[0]]
        p = target.add_parser(words[-1], help=command.help, description=command.help, parents=[common])
        p.set_defaults(_command=command)
        p._pending = lambda parser, command=command: _add_command_arguments(parser, command)
        if not lazy:
            p._complete()
    return parser


def _quiet_third_party() -> None:
    """Keep other libraries' progress bars and advisories ("Loading weights") out of our output."""
    import os

    for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    parser = build_parser(lazy=True)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded as provenance by some commands
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    _quiet_third_party()
    prog = f"einnas {command.name}"
    warnings.formatwarning = lambda message, category, *rest, **kw: f"{prog}: warning: {message}\n"
    try:
        return command.run(args)
    except EinnasError as error:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `einnas sample | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except PermissionError as error:  # a file or folder einnas must write but may not
        if args.verbose:
            import traceback

            traceback.print_exc()
        where = f": {error.filename}" if error.filename else ""
        print(f"{prog}: error: permission denied{where} ({error.strerror or error})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
