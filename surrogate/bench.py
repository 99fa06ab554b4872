"""``einnas bench build``: (architecture, accuracy) records, made by a search that samples.

A build is a search recorded in an Optuna study, run by the search's own worker
loop (:func:`einnas.search.run_worker`): the same claims, heartbeats, exact trial
counts, lost-trial retries and resume as ``einnas search``. Its strategy is
:class:`~einnas.search.strategies.SampleAndMutate` (``sample``): about 70% of the
trials draw a fresh PCFG sample and 30% (``mutate_fraction``) mutate one of the best
10% of the trials scored so far, so the records cover the accuracy range a search
sees. Trial ``n`` proposes with the random stream of (study seed, ``n``) and trains
with the seed of (study seed, archid), as in a search.

What the study holds (read back by :func:`einnas.surrogate.records.load_records`):

* the study's ``einnas`` attribute: the settings every worker must share — grammar
  sha256, the task (``task``: dataset, input shape, classes, split sizes), the fixed
  training budget (``budget``: epochs, seconds, batch size, lr, sampling limits),
  the strategy and seed. A worker (or a resumed command) with other settings is refused;
* ``einnas_run``: where and how the study was created (command, date, einnas / torch
  / python versions, machine);
* each trial: the search's attributes (``arch``, ``archid``, ``params``, ``origin``,
  ``parent``, ``scored_by``, ``reason``, ``curve``, ``seconds``, ``worker``) plus
  ``test_acc``, ``train_seed``, ``device`` and ``run`` (the provenance of the worker
  that trained it).

Running the same command again continues to ``--trials``; a larger ``--trials``
extends the build; ``--workers K`` runs K processes on the study; several commands
or machines may share it (a database URL or a journal on a shared disk).
``einnas bench export`` writes the records as JSON Lines.

Example::

    einnas bench build --dataset digits --trials 300 --seed 0 --storage bench.journal --workers 2
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from einnas._util import option
from einnas.errors import ArchitectureError, UsageError
from einnas.search.evaluators import Evaluation, TrainingEvaluator
from einnas.surrogate.records import RUN_ATTR, load_records

#: Extra trial attributes a build writes (beside the search's).
TEST_ACC, TRAIN_SEED, RUN = "test_acc", "train_seed", "run"


@dataclass
class BenchConfig:
    """What ``einnas bench build`` makes; every worker of one study must agree on all but
    ``trials``, ``timeout``, ``threads``, ``device`` and ``command``."""

    dataset: str = option(help="digits, mnist1d, mnist5k, addnist5k or a folder", required=True)
    view: str = option("auto", "sequences (S, D) as tokens or as Dx1xS images, as in search "
                               "(default {default})")  # einnas.evaluate.datasets.VIEWS
    trials: int | None = option(None, "trained records in the study, all workers together (running again "
                                      "continues to N)")
    seed: int = option(0, "study seed; trial n's proposal derives from (seed, n)")
    storage: str | None = option(None, "journal file, sqlite:///FILE or database URL "
                                       "(default: runs/NAME/study.journal)")
    study_name: str | None = option(None, "(default: DATASET[-GRAMMAR]-bench-sSEED)")
    epochs: int = option(8, "training epochs, the search budget")  # einspace's search epochs
    # slower candidates are failed trials with reason timeout
    seconds: float | None = option(60.0, "time budget per trial")
    batch_size: int = option(256, "training batch size")
    lr: float = option(0.04, "peak learning rate of the cosine schedule")
    # keeps CPU training fast; the sampler enforces it analytically
    max_params: int = option(1_000_000, "largest architecture, parameters (default {default}, as in search)")
    max_activations: int = option(1_000_000, "largest architecture, activation elements per sample")
    mutate_fraction: float = option(0.3, "share of mutations of good trials")  # instead of fresh samples
    top_fraction: float = option(0.1, "parents come from this top share")  # of the scored trials
    timeout: float | None = option(None, "seconds after which this worker starts no new trial")
    threads: int | None = option(None, "torch threads per worker (default: CPUs/workers)")
    # as in train and search: cuda if present (each record stores the device it used)
    device: str = option("auto", "cpu, cuda, cuda:N or auto (default: cuda if present)")
    grammar: str | None = None
    plugins: tuple[str, ...] = ()
    heartbeat_interval: int | None = None  # None: the search's defaults
    grace_period: int | None = None
    command: str = field(default_factory=lambda: " ".join(["einnas", *sys.argv[1:]]))

    def check(self) -> None:
        """Raise :class:`UsageError` for values out of range."""
        if self.trials is None and self.timeout is None:
            raise UsageError("give --trials N, --timeout SECONDS or both")
        for name in ("trials", "epochs", "batch_size", "max_params", "max_activations", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, not {value}")
        for name in ("seconds", "lr", "timeout"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise UsageError(f"--{name} must be a positive number, not {value}")
        if not 0 <= self.mutate_fraction <= 1:
            raise UsageError(f"--mutate {self.mutate_fraction}: expected a fraction in [0, 1]")
        if not 0 < self.top_fraction <= 1:
            raise UsageError(f"--top {self.top_fraction}: expected a fraction in (0, 1]")
        if self.storage and self.storage.endswith(".jsonl"):
            raise UsageError(f"--storage {self.storage}: bench build records into an Optuna study (a journal "
                             "file such as bench.journal, or a database URL); 'einnas bench export' writes JSON Lines")
        if self.study_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.study_name):
            raise UsageError(f"--study-name {self.study_name!r}: use letters, digits, '.', '_' and '-' only")


def run_info(command: str, threads: int | None = None) -> dict:
    """Where and how records are made: the command, date, versions and machine."""
    from importlib import metadata

    import torch

    try:
        version = metadata.version("einnas")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "command": command, "date": _now(), "einnas": version, "torch": torch.__version__,
        "python": platform.python_version(), "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "host": socket.gethostname(), "threads": threads or torch.get_num_threads(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RecordingEvaluator(TrainingEvaluator):
    """Trains like the search's evaluator, and also measures test accuracy and stamps each
    trial with its training seed, device and provenance (a record needs them)."""

    @classmethod
    def create(cls, context):
        return cls(context.dataset, context.train, device=context.device, run=context.run)

    def __init__(self, dataset, config, device: str = "cpu", run: dict | None = None):
        super().__init__(dataset, config, device=device)
        self.run = dict(run or {})

    reports = False  # a record is trained to the full budget: no multi-fidelity stops

    def settings(self):
        return {**super().settings(), "test_acc": True}

    def evaluate(self, arch, seed):
        from einnas.evaluate import train
        from einnas.grammar import build_network

        self._warm_up()
        ds = self.dataset
        try:
            result = train(lambda: build_network(arch, ds.input_shape, ds.num_classes), ds, self.config,
                           seed=seed, device=self.device, test=True)
        except ArchitectureError as error:  # the builder refused the tree
            return Evaluation(False, reason="invalid", detail=str(error)[:300], extra={TRAIN_SEED: seed})
        return Evaluation(
            ok=result.ok, value=result.val_acc, reason=result.reason, detail=result.detail or "",
            params=result.params, seconds=result.seconds,
            curve=[s.val_acc for s in result.curve if s.val_acc is not None],
            extra={TEST_ACC: result.test_acc, TRAIN_SEED: seed, "epochs_run": result.epochs_run,
                   "device": result.device, RUN: {**self.run, "date": _now()}},
        )


def default_study_name(config: BenchConfig, dataset_label: str, grammar_label: str | None) -> str:
    """``<dataset>[-<grammar>]-bench-s<seed>``: the same command names the same study."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_label).strip("_.") or "data"]
    if grammar_label:
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "_", grammar_label).strip("_.") or "grammar")
    return "-".join(parts + ["bench"]) + f"-s{config.seed}"


class Bench:
    """A prepared build: dataset, space, strategy, evaluator and the opened (or joined) study.

    Constructing it loads everything and opens the study, so option, dataset and
    storage errors surface before any training; :meth:`run` runs this worker's trials.
    """

    def __init__(self, config: BenchConfig):
        from einnas.evaluate import BUILTIN_DATASETS, TrainConfig, load_dataset, resolve_device
        from einnas.grammar import DEFAULT_GRAMMAR, Limits, load_grammar
        from einnas.search.run import _version
        from einnas.search.space import SearchSpace
        from einnas.search.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR, describe_storage, open_storage, open_study
        from einnas.search.evaluators import EVALUATORS, EvaluatorContext
        from einnas.search.strategies import STRATEGIES

        config.check()
        self.config = config
        resolve_device(config.device)  # a bad device fails before the slow loads
        grammar = load_grammar(config.grammar, plugins=config.plugins)
        self.dataset = ds = load_dataset(config.dataset, view=config.view)
        limits = Limits(max_params=config.max_params, max_activations=config.max_activations)
        self.space = SearchSpace(grammar, tuple(ds.input_shape), ds.num_classes, limits)
        self.strategy = STRATEGIES["sample"](self.space, config.mutate_fraction, config.top_fraction)
        self.train_config = TrainConfig(epochs=config.epochs, seconds=config.seconds, batch_size=config.batch_size,
                                        lr=config.lr, max_params=limits.max_params, threads=config.threads)
        self.run_info = run_info(config.command, config.threads)
        self.evaluator = EVALUATORS["record"].create(EvaluatorContext(
            self.space, ds, self.train_config, device=config.device, run=self.run_info))

        builtin = Path(grammar.path) == DEFAULT_GRAMMAR
        label = config.dataset if config.dataset in BUILTIN_DATASETS else Path(config.dataset).name
        self.study_name = config.study_name or default_study_name(
            config, label, None if builtin else Path(config.grammar or grammar.path).stem)
        self.storage_spec = config.storage or str(RUNS_DIR / self.study_name / "study.journal")
        self.storage_shown = describe_storage(self.storage_spec)
        sizes = ds.sizes()
        task = {"dataset": ds.name, "input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
                "train_size": sizes["train"], "valid_size": sizes["valid"], "test_size": sizes["test"]}
        budget = {"epochs": config.epochs, "seconds": config.seconds, "batch_size": config.batch_size,
                  "lr": config.lr, "max_params": config.max_params, "max_activations": config.max_activations}
        settings = {
            "kind": "bench", "grammar_sha256": grammar.sha256,
            "grammar_name": "einspace" if builtin else Path(config.grammar or grammar.path).stem,
            "grammar_path": "einspace.lark (built-in)" if builtin else str(config.grammar or grammar.path),
            "plugins": list(config.plugins), "dataset": ds.name, "input_shape": task["input_shape"],
            "num_classes": ds.num_classes, "view": config.view, "seed": config.seed, "limits": limits.as_dict(), "task": task,
            "budget": budget, **self.strategy.settings(), **self.evaluator.settings(),
            "version": _version(), "created": time.strftime("%Y-%m-%d %H:%M:%S"), "dataset_source": ds.source,
        }
        self.heartbeat_interval = config.heartbeat_interval or HEARTBEAT_INTERVAL
        self.grace_period = config.grace_period or GRACE_PERIOD
        storage = open_storage(self.storage_spec, heartbeat_interval=self.heartbeat_interval,
                               grace_period=self.grace_period)
        self.study = open_study(storage, self.study_name, settings, seed=config.seed, shown=self.storage_shown)
        if RUN_ATTR not in self.study.user_attrs:
            self.study.set_user_attr(RUN_ATTR, self.run_info)
        self.settings = dict(self.study.user_attrs["einnas"])

    def run(self, log: Callable[[str], None] | None = None, parent: int | None = None):
        """Run this worker's trials until the study counts ``trials`` (or ``timeout``).

        With ``parent`` (a process id), stops before the next trial once that process is
        gone, so a killed command does not leave workers behind. Returns the loop's
        :class:`~einnas.search.loop.WorkerStats`.
        """
        from einnas.search.loop import run_worker

        c = self.config

        def progress(view, record):
            if parent is not None and os.getppid() != parent:
                raise _Orphaned
            if record is not None and log is not None:
                outcome = f"val {record.value:.4f}" if record.value is not None else f"failed: {record.reason}"
                log(f"[{view.counted}/{c.trials or '-'}] trial {record.number} {record.archid} {record.origin:<8} "
                    f"params {record.params or 0:>9,}  {outcome}  {record.seconds or 0:.1f}s")

        try:
            return run_worker(self.study, self.strategy, self.evaluator, seed=c.seed, trials=c.trials,
                              timeout=c.timeout, progress=progress, heartbeat_interval=self.heartbeat_interval,
                              grace_period=self.grace_period)
        except _Orphaned:
            return None

    def summary(self, evaluated: int | None = None) -> dict:
        """Counts and the best trial of the study."""
        from einnas.search.records import StudyView

        view = StudyView.of(self.study)
        reasons: dict[str, int] = {}
        for r in view.records:
            if r.failed:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
        best = view.best
        return {
            "study": self.study_name, "storage": self.storage_shown, "dataset": self.dataset.name,
            "seed": self.config.seed, "trials": self.config.trials, "records": view.counted,
            "ok": len(view.completed), "failed": reasons, "this_worker": evaluated,
            "best_val_acc": best.value if best else None, "best_archid": best.archid if best else None,
        }


class _Orphaned(Exception):
    """The command that started this worker is gone."""


def _worker_main(config_dict: dict, quiet: bool, parent: int | None = None) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a fresh (spawned) process: as the command set it
    config = BenchConfig(**config_dict)
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    Bench(config).run(log, parent=parent)


def build(config: BenchConfig, workers: int = 1, quiet: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Open the study, run ``workers`` worker processes on it (1: in this process) and summarise it."""
    if workers < 1:
        raise UsageError(f"--workers must be positive, not {workers}")
    if config.threads is None:
        config.threads = max(1, (os.cpu_count() or 1) // workers)
    bench = Bench(config)  # checks everything and creates the study, once
    if log is None and not quiet:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if log is not None:
        log(f"study {bench.study_name} in {bench.storage_shown}: {bench.dataset.describe()}")
    if workers == 1:
        stats = bench.run(None if quiet else log)
        return bench.summary(stats.evaluated if stats else None)
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(asdict(config), quiet, os.getpid())) for _ in range(workers)]

    def on_term(signum, frame):  # a killed command takes its workers with it
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # their running trials are failed and retried by the next worker
        for proc in procs:
            proc.join()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
    return bench.summary()


# --- JSON Lines: export, and the old reader's name ------------------------------------------


def read_records(*paths: str | Path, skip_bad_lines: bool = False) -> list[dict]:
    """All records of one or more sources (studies, JSON Lines files, ONNX folders); see
    :func:`einnas.surrogate.records.load_records`. Kept for callers of the old name."""
    from einnas.surrogate.records import read_source

    return [r for p in paths for r in read_source(str(p), skip_bad_lines=skip_bad_lines)]


def _exported_by_us(path: Path) -> bool:
    """Whether ``path`` is empty or looks like an ``einnas bench export`` file (first line a study record)."""
    with open(path, "rb") as file:
        first = file.readline(1 << 20)
    if not first.strip():
        return True
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and "study" in row and "arch" in row and row.get("v") is not None


def _study_storage(spec: str) -> str:
    """``spec`` if it names a study storage (URL, journal file, run folder), else :class:`UsageError`."""
    from einnas.search.storage import is_url
    from einnas.surrogate.records import is_journal

    path = Path(spec)
    if is_url(spec) or (path.is_dir() and (path / "study.journal").is_file()) or (path.is_file() and is_journal(path)):
        return spec
    what = "no such file or folder" if not path.exists() else "not a study"
    raise UsageError(f"--storage {spec}: {what} (expected an Optuna journal file, a run folder or a database URL)")


def export(storage: str, out: str | Path, study_names=None, force: bool = False) -> int:
    """Write the records of ``storage``'s einnas studies (or ``study_names``) to ``out`` as JSON
    Lines, atomically. Refuses to replace a file that ``export`` did not write unless ``force``.
    Returns the number of records written."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a folder; give a file name such as records.jsonl")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: folder {str(out.parent)!r} does not exist")
    if out.exists() and not force and not _exported_by_us(out):
        raise UsageError(f"-o {out}: exists and was not written by 'einnas bench export'; give --force to replace it")
    records = load_records([_study_storage(storage)], study_names=study_names)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            for record in records:
                file.write(json.dumps(record, separators=(",", ":")) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(records)
