"""One search, start to finish: what ``einnas search`` runs.

:class:`SearchConfig` holds every option with a default sized for two CPU cores;
:class:`Search` opens (or joins) the study, runs this process's worker loop and
writes the results. Running the same command again continues the same study.

Example::

    from einnas.search import Search, SearchConfig

    search = Search(SearchConfig(dataset="digits", trials=30, seed=0))
    outcome = search.run()           # trials, then the final retrain, ONNX, report, plot
    print(outcome.report["best"], outcome.out_dir)
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from einnas._util import option
from einnas.errors import UsageError
from einnas.search import assisted
from einnas.search.fidelity import DEFAULT_ETA, DEFAULT_MIN_EPOCHS, Rungs
from einnas.search.loop import Progress, WorkerStats, run_worker
from einnas.search.parallel import Workers, free_cores, machine_cores
from einnas.search.records import StudyView
from einnas.search.storage import (
    GRACE_PERIOD, HEARTBEAT_INTERVAL, RUNS_DIR, describe_storage, open_storage, open_study, stored_settings,
)

# Defaults sized so that `einnas search --dataset digits --trials 30` (training, final
# retrain and export) takes a few minutes on two CPU cores.
DEFAULT_EPOCHS = 8  # einspace's search epochs
DEFAULT_SECONDS = 10.0  # the least per-candidate budget; see default_seconds()
# Seconds per (training sample x input element x epoch) on one thread of a busy 2-core
# machine, measured with the hand-designed 6-layer CNN on mnist5k (the kind of candidate
# that wins there): the automatic budget lets such a network finish its epochs.
BUDGET_PER_ELEMENT = 6.0e-6
MAX_AUTO_SECONDS = 600.0
DEFAULT_MAX_PARAMS = 1_000_000  # sampled and mutated candidates stay below this
DEFAULT_MAX_ACTIVATIONS = 250_000  # elements per sample; at batch 256 that is ~256 MB of float32
DEFAULT_FINAL_FACTOR = 4  # final retrain epochs = 4 x search epochs (einspace: 8x, at a GPU's pace)
DEFAULT_PARETO_EXPORT = 8  # front members retrained in final mode and exported (the rest listed in pareto.csv)
# Share of --timeout kept for the final retrain: the search starts no new trial after the rest,
# and the retrain trains as many of its epochs as fit in the time then left (TrainConfig.fit_seconds).
FINAL_SHARE = 0.2


@dataclass
class SearchConfig:
    """Every option of a search. ``trials`` and/or ``timeout`` bound this worker's loop."""

    dataset: str = option(help="digits, mnist1d, mnist5k, addnist5k, or a folder / .npz", required=True)
    trials: int | None = option(None, "evaluated candidates in the study, all workers together")
    # with neither trials nor timeout: default_timeout() for the dataset
    timeout: float | None = option(None, "seconds the whole command aims to take, final retrain included: no new "
                                         f"trial starts after {1 - FINAL_SHARE:.0%} of it (running ones finish), "
                                         "and the retrain keeps the epochs that fit in the rest")
    seed: int = option(0, "search seed: the same command and seed evaluate the same architectures")
    strategy: str = option("re", "re (regularised evolution), random (random sampling), sample (mostly fresh "
                                 "samples, as bench build) or an installed plugin's (einnas.search.STRATEGIES)")
    # None: the seeds scaled to the budget where the grammar can express them (they anchor the population)
    init: str | None = option(None, "RE's initial population: the four seeds scaled to the budget (default, "
                                    "where the grammar can express them; as mix), random, or seed names / @files, "
                                    "e.g. resnet18,vit")
    view: str = option("auto", "sequences (S, D) as tokens or as Dx1xS images (default auto: image for signals "
                               "of at most 4 channels, such as mnist1d)")  # einnas.evaluate.datasets.VIEWS
    population: int | None = option(None, "RE population (default: a third of --trials, 4 to 100)")  # einspace: 100
    tournament: int | None = option(None, "RE tournament size (default: 30% of the population, 2 to 10)")
    epochs: int = option(DEFAULT_EPOCHS, "training epochs per candidate")
    seconds: float | None = option(None, "time budget per candidate; slower ones fail with reason timeout "
                                         "(default: scaled to the dataset, at least "
                                         f"{DEFAULT_SECONDS:g})")  # default_seconds()
    prune: bool = option(True, "multi-fidelity: successive halving over the training curve (fidelity.py)",
                         off="train every candidate to the full budget (default: multi-fidelity, successive "
                             "halving at epochs 1, 3, ...)")
    eta: int = option(DEFAULT_ETA, "multi-fidelity: keep the best 1/ETA of the candidates at each rung")
    min_epochs: int = option(DEFAULT_MIN_EPOCHS, "multi-fidelity: epochs of the first rung")
    batch_size: int = option(256, "training batch size")  # einspace's
    lr: float = option(0.04, "peak learning rate of the cosine schedule")
    # None: the defaults above, raised to fit the --init seeds (1.25 x the largest)
    max_params: int | None = option(None, f"largest candidate, parameters (default {DEFAULT_MAX_PARAMS:,}, "
                                          "raised to fit --init seeds)")
    max_activations: int | None = option(None, "largest candidate, activation elements per sample "
                                               f"(default {DEFAULT_MAX_ACTIVATIONS:,}, raised to fit --init seeds)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto (default: cuda if present)")
    # torch CPU threads while training. One: small candidates gain nothing from intra-op
    # threads, and on a busy 2-core machine one thread made the main job 2-3x faster
    # (measured: 30 trials in 80 s instead of 268 s). Run one worker per core instead.
    threads: int | None = option(1, "torch CPU threads per worker while training (default {default}; the final "
                                    "retrain uses every core)")
    workers: int | None = option(None, "worker processes on the study, one progress display (default: the cores)")
    storage: str | None = None  # journal file path or database URL; None: <out>/study.journal
    study_name: str | None = None  # None: <dataset>-<strategy>[-<init>]-s<seed>
    out: str | None = option(None, "run folder for the study, ONNX, report and plot (default: runs/NAME)")
    final: bool = option(True, "retrain the best in final mode and export it",
                         off="skip the final retrain and ONNX export (e.g. extra workers)")
    final_epochs: int | None = option(None, f"epochs of the final retrain of the best (default "
                                            f"{DEFAULT_FINAL_FACTOR} x --epochs, fewer where --timeout leaves less "
                                            "time; given, they are never cut)")
    final_shift: int | None = option(None, "pixels of random translation while retraining the best (default: 2 for "
                                           "images of 16 pixels a side or more, else 0; 0: none)")
    grammar: str | None = None
    plugins: tuple[str, ...] = ()
    surrogate: str = option("none", "surrogate-assisted proposals: default (the shipped predictor), a predictor "
                                    "folder, or none")  # einnas.search.assisted
    evaluator: str = option("train", "train, surrogate (the predictor's score), record (train and also measure "
                                     "test accuracy, as bench build) or an installed plugin's "
                                     "(einnas.search.EVALUATORS)")
    candidates: int = option(assisted.DEFAULT_CANDIDATES, "with --surrogate: proposals ranked per trained candidate")
    kappa: float | None = option(None, "with --surrogate: rank by predicted mean + KAPPA x ensemble std (default "
                                       f"{assisted.DEFAULT_KAPPA:g})")
    refit_every: int | None = option(None, "with --surrogate: refit a predictor on the study's trained trials every "
                                           "K of them (from 10) and blend it in (default "
                                           f"{assisted.DEFAULT_REFIT_EVERY}; 0: never)")
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    top: int = 10  # rows of the results table
    # Deployment search (einnas.search.objectives): objective names in value order; a
    # latency budget in ms (an Optuna constraint); how latency is measured; how many
    # Pareto-front members the final step retrains and exports (pareto/<archid>.onnx).
    objectives: str | tuple = "accuracy"
    max_latency: float | None = None
    latency_batch: int = 1
    latency_threads: int = 1
    pareto_export: int = DEFAULT_PARETO_EXPORT

    def check(self) -> None:
        """Raise :class:`UsageError` for values out of range or inconsistent."""
        for name in ("trials", "epochs", "batch_size", "max_params", "max_activations", "population",
                     "tournament", "final_epochs", "min_epochs", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, not {value}")
        if self.final_shift is not None and self.final_shift < 0:
            raise UsageError(f"--final-shift must be 0 or more pixels, not {self.final_shift}")
        for name in ("timeout", "seconds", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name} must be positive, not {value}")
        if self.eta < 2:
            raise UsageError(f"--eta must be 2 or more (keep the best 1/eta at each rung), not {self.eta}")
        from einnas.search.evaluators import EVALUATORS
        from einnas.search.strategies import STRATEGIES

        if not STRATEGIES.get(self.strategy).takes_init and self.init not in (None, "random"):
            raise UsageError("--init seeds the population of regularised evolution; it needs --strategy re")
        if EVALUATORS.get(self.evaluator).needs_predictor and self.surrogate == "none":
            raise UsageError(f"--evaluator {self.evaluator} needs a predictor: --surrogate default or --surrogate PATH")
        if self.candidates < 1:
            raise UsageError(f"--candidates must be positive, not {self.candidates}")
        if self.refit_every is not None and self.refit_every < 0:
            raise UsageError(f"--refit-every must be 0 (never) or positive, not {self.refit_every}")
        if self.kappa is not None and not math.isfinite(self.kappa):
            raise UsageError(f"--kappa must be a finite number, not {self.kappa}")
        if self.surrogate == "none" and (self.candidates != assisted.DEFAULT_CANDIDATES or self.kappa is not None
                                         or self.refit_every is not None):
            raise UsageError("--candidates, --kappa and --refit-every tune surrogate-assisted proposals: "
                             "give --surrogate default or --surrogate PATH")
        for name in ("latency_batch", "latency_threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        if self.pareto_export < 0:
            raise UsageError(f"--pareto-export must be 0 or positive, not {self.pareto_export}")
        self.objective_spec()  # unknown, repeated or too many objectives; --max-latency <= 0
        if self.study_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.study_name):
            raise UsageError(f"--study-name {self.study_name!r}: use letters, digits, '.', '_' and '-' only")

    def objective_spec(self):
        """The :class:`~einnas.search.objectives.Objectives` of these options (raises UsageError)."""
        from einnas.evaluate.latency import LatencySettings
        from einnas.search.objectives import Objectives, parse_objectives

        return Objectives(parse_objectives(self.objectives), self.max_latency,
                          LatencySettings(batch=self.latency_batch, threads=self.latency_threads))


def default_study_name(config: SearchConfig, dataset_label: str) -> str:
    """``<dataset>-<strategy>[-<init>][-surrogate]-s<seed>``: the same command names the same study."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_label).strip("_.") or "data", config.strategy]
    if config.init not in (None, "random"):
        parts.append(re.sub(r"[^A-Za-z0-9]+", "+", Path(config.init).stem if config.init.startswith("@")
                            else config.init).strip("+"))
    if config.surrogate != "none" or config.evaluator != "train":
        parts.append(f"{config.evaluator}-assisted")
    objectives = config.objective_spec()
    if objectives.names != ("accuracy",):
        parts.append("+".join(objectives.names))
    if objectives.max_latency is not None:
        parts.append(f"max{objectives.max_latency:g}ms")
    return "-".join(parts) + f"-s{config.seed}"


@dataclass
class SearchOutcome:
    """What :meth:`Search.run` did: this worker's stats, the study's state and the report."""

    study_name: str
    storage: str
    out_dir: Path
    stats: WorkerStats
    view: StudyView
    report: dict | None = None
    files: dict = field(default_factory=dict)
    workers: int = 1  # processes this command ran on the study


def default_seconds(dataset, epochs: int) -> float:
    """The per-candidate budget when ``--seconds`` is not given: proportional to the work
    of an epoch (training samples x input elements) and the epochs, at least
    :data:`DEFAULT_SECONDS`. digits and mnist1d get 10 s for 8 epochs; mnist5k (3,000
    images of 28x28) gets 113 s, enough for a 6-layer CNN on one thread of a busy machine."""
    import math

    n_train = len(dataset.train[1])
    work = n_train * math.prod(dataset.input_shape) * epochs
    return float(min(MAX_AUTO_SECONDS, max(DEFAULT_SECONDS, round(BUDGET_PER_ELEMENT * work))))


def expected_trials(timeout: float | None, seconds: float, workers: int = 1) -> int | None:
    """The trials a time-limited search is sized for (RE's population is a third of it):
    4 per per-candidate budget of the time limit and worker, since most candidates stop at
    a rung or need a fraction of their budget (one worker: digits, 150 s: 60, population
    20; mnist5k, 15 min: 32, population 10; two workers: mnist5k 64, population 21).
    None without a time limit."""
    return None if timeout is None else max(12, round(4 * max(1, workers) * timeout / seconds))


def default_timeout(seconds: float) -> float:
    """The search's time limit when neither ``--trials`` nor ``--timeout`` is given: 15
    per-candidate budgets, 2.5 to 15 minutes (digits and mnist1d: 150 s; mnist5k: 15 min),
    the final retrain included (:data:`FINAL_SHARE`)."""
    return float(min(900.0, max(150.0, 15 * seconds)))


def check_budget(dataset, config, device) -> None:
    """Refuse (:class:`UsageError`) a time budget in which not even a linear classifier can
    train its epochs on this dataset (measured here, one epoch, before the search starts)."""
    import math

    import torch

    from einnas.evaluate import train

    if config.seconds is None:
        return
    one = replace(config, epochs=1, seconds=None, max_params=None)
    times = []
    for _ in range(2):  # the first call also pays torch's one-time start-up: keep the faster
        model = torch.nn.Sequential(torch.nn.Flatten(),
                                    torch.nn.Linear(math.prod(dataset.input_shape), dataset.num_classes))
        times.append(train(model, dataset, one, device=device).seconds)
    needed = min(times) * config.epochs
    if needed > 1.25 * config.seconds:  # the trainer's own rule: projected over budget after epoch 1
        raise UsageError(
            f"--seconds {config.seconds:g}: too small for any candidate on {dataset.name}: a linear classifier "
            f"alone needs {needed:.2g} s for {config.epochs} epochs here (give more --seconds or fewer --epochs)"
        )


def _fit(default: int, sizes: list[int]) -> int:
    """A limit that the seed architectures fit in with room for their children."""
    return max([default] + [int(1.25 * size) for size in sizes])


def _drop_unfit_mix(config: SearchConfig, seeds: list, note: bool = True) -> list:
    """With ``--init mix``, seeds over an explicit --max-params / --max-activations even
    at their smallest scale are left out with a note (named seeds are errors instead;
    the default start leaves them out quietly, ``note=False``)."""
    if (config.init or "").strip() != "mix":
        return seeds
    kept = []
    for label, arch in seeds:
        over = [flag for flag, size, limit in (("--max-params", arch.info.params, config.max_params),
                                               ("--max-activations", arch.info.activations, config.max_activations))
                if limit is not None and size > limit]
        if over and note:
            print(f"einnas: --init mix: leaving out {label} ({arch.info.params:,} parameters, "
                  f"{arch.info.activations:,} activations at its smallest: over {' and '.join(over)})", file=sys.stderr)
        elif not over:
            kept.append((label, arch))
    if not kept:
        raise UsageError("--init mix: no seed fits --max-params / --max-activations even at its smallest scale")
    return kept


def _version() -> str:
    from einnas._util import package_version

    return package_version(default="unknown")


class Search:
    """A prepared search: dataset, space, strategy, evaluator and the opened study.

    Constructing it loads everything and opens (or joins) the study, so option and
    storage errors surface before any training. :meth:`run` then runs the trials.
    """

    def __init__(self, config: SearchConfig):
        from einnas.evaluate import BUILTIN_DATASETS, TrainConfig, load_dataset
        from einnas.grammar import DEFAULT_GRAMMAR, Limits, load_grammar
        from einnas.grammar.seeds import budget_for_training
        from einnas.search.evaluators import EVALUATORS, EvaluatorContext
        from einnas.search.objectives import ObjectiveEvaluator
        from einnas.search.space import SearchSpace
        from einnas.search.strategies import STRATEGIES, StrategyOptions

        config.check()
        self.config = config
        grammar = load_grammar(config.grammar, plugins=config.plugins)
        self.dataset = load_dataset(config.dataset, view=config.view)
        self.space = SearchSpace(grammar, tuple(self.dataset.input_shape), self.dataset.num_classes)
        # the per-candidate budget: given, or scaled to the task (search.run.default_seconds)
        seconds = config.seconds if config.seconds is not None else default_seconds(self.dataset, config.epochs)
        if config.trials is None and config.timeout is None:
            config = self.config = replace(config, timeout=default_timeout(seconds))
        # Seeds named without a scale are scaled to this budget (einnas.grammar.seeds).
        budget = budget_for_training(
            self.dataset.sizes()["train"], config.epochs, seconds,
            max_params=config.max_params or DEFAULT_MAX_PARAMS,
            max_activations=config.max_activations or DEFAULT_MAX_ACTIVATIONS,
        )
        seeds = self._seeds(config, budget)
        limits = Limits(
            max_params=config.max_params or _fit(DEFAULT_MAX_PARAMS, [a.info.params for _, a in seeds]),
            max_activations=config.max_activations or _fit(DEFAULT_MAX_ACTIVATIONS, [a.info.activations for _, a in seeds]),
        )
        for label, arch in seeds:
            for what, size, limit in (("parameters", arch.info.params, limits.max_params),
                                      ("activations per sample", arch.info.activations, limits.max_activations)):
                if size > limit:
                    flag = "--max-params" if what == "parameters" else "--max-activations"
                    raise UsageError(f"--init {label}: {size:,} {what}, over {flag} {limit:,}")
        self.space = replace(self.space, limits=limits)
        label = config.dataset if config.dataset in BUILTIN_DATASETS else Path(config.dataset).name
        self.study_name = config.study_name or default_study_name(config, label)
        self.out_dir = Path(config.out) if config.out else RUNS_DIR / self.study_name
        self.storage_spec = config.storage or str(self.out_dir / "study.journal")
        self.storage_shown = describe_storage(self.storage_spec)
        # A study that exists keeps the sizes it derived from its first --trials: asking the
        # same search for more trials extends it rather than being refused as another search.
        stored = stored_settings(self.storage_spec, self.study_name) or {}
        self.objectives = objectives = config.objective_spec()
        strategy = STRATEGIES.get(config.strategy).create(self.space, StrategyOptions(
            seeds=tuple(seeds), population=config.population, tournament=config.tournament,
            expected_trials=config.trials or expected_trials(config.timeout, seconds, self.workers), stored=stored,
            objectives=objectives,
        ))
        self.train_config = TrainConfig(
            epochs=config.epochs, seconds=seconds, batch_size=config.batch_size, lr=config.lr,
            max_params=limits.max_params, threads=config.threads,
        )
        self.rungs = Rungs(config.epochs, config.min_epochs, config.eta) if config.prune else None
        if self.rungs is not None and not self.rungs.active:
            self.rungs = None  # no rung below the full budget (e.g. --epochs 1)
        evaluator = EVALUATORS.get(config.evaluator).create(EvaluatorContext(
            self.space, self.dataset, self.train_config, device=config.device, surrogate=config.surrogate,
            run={"command": " ".join(["einnas", *sys.argv[1:]])},
        ))
        if not objectives.default:
            evaluator = ObjectiveEvaluator(evaluator, objectives, self.dataset.input_shape, self.dataset.num_classes)
        if config.surrogate != "none":
            strategy = assisted.make_strategy(strategy, config.surrogate, space=self.space, seed=config.seed,
                                              candidates=config.candidates,
                                              kappa=assisted.DEFAULT_KAPPA if config.kappa is None else config.kappa,
                                              refit_every=assisted.DEFAULT_REFIT_EVERY if config.refit_every is None
                                              else config.refit_every,
                                              budget=assisted.time_budget(self.dataset, self.train_config))
            strategy.objectives = objectives  # multi-objective: rank by expected hypervolume improvement
        self.strategy, self.evaluator = strategy, evaluator

        grammar_path = (
            "einspace.lark (built-in)" if Path(grammar.path) == DEFAULT_GRAMMAR else str(config.grammar or grammar.path)
        )
        self.settings = {
            "grammar_sha256": grammar.sha256, "grammar_path": grammar_path, "plugins": list(config.plugins),
            "dataset": self.dataset.name, "input_shape": list(self.dataset.input_shape),
            "num_classes": self.dataset.num_classes, "seed": config.seed, "limits": limits.as_dict(),
            **strategy.settings(), **evaluator.settings(), "surrogate": config.surrogate,
            "fidelity": self.rungs.settings() if self.rungs is not None and evaluator.reports else None,
            "version": _version(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            **objectives.settings(),
        }
        if evaluator.reports:
            check_budget(self.dataset, self.train_config, evaluator.device)
        storage = open_storage(
            self.storage_spec, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period
        )
        self.study = open_study(storage, self.study_name, self.settings, seed=config.seed, shown=self.storage_shown,
                                directions=objectives.directions if objectives.multi else None)
        self.settings = dict(self.study.user_attrs.get("einnas", self.settings))
        if hasattr(strategy, "study"):
            strategy.study = self.study  # the assisted strategy notes its refits on the study

    @property
    def workers(self) -> int:
        """Worker processes this command runs on the study (``--workers``, default the cores)."""
        return self.config.workers or machine_cores()

    def _seeds(self, config: SearchConfig, budget) -> list:
        """RE's seed architectures. ``--init`` not given: the four seeds scaled to the budget
        (``mix``), which on every built-in task beat a random start by far (mnist5k, 7 min:
        96.4% test against 88.7% in 15 min; mnist1d, 30 trials: 75.5% against 29.5% val),
        or a random start where the grammar cannot express them (another space)."""
        from einnas.search.strategies import STRATEGIES, resolve_init

        if not STRATEGIES.get(config.strategy).takes_init:
            return []
        if config.init is not None:
            return _drop_unfit_mix(config, resolve_init(config.init, self.space, budget))
        try:
            return _drop_unfit_mix(replace(config, init="mix"), resolve_init("mix", self.space, budget), note=False)
        except UsageError:
            return []

    @property
    def search_timeout(self) -> float | None:
        """Seconds after which no new trial starts: ``--timeout`` less the final retrain's
        share (:data:`FINAL_SHARE`) when this command retrains the best."""
        c = self.config
        if c.timeout is None or not c.final:
            return c.timeout
        return c.timeout * (1 - FINAL_SHARE)

    def run(self, progress: Progress | None = None, finish: bool = True) -> SearchOutcome:
        """Run the trials with :attr:`workers` processes (this one and ``workers - 1``
        started here, see ``parallel.py``); then (``finish``) write the final results."""
        c = self.config
        began = self.began = time.monotonic()
        workers = self.workers
        if c.trials is not None and StudyView.of(self.study).counted >= c.trials:
            workers = 1  # nothing left to do: no processes to start
        with Workers(c, workers):
            stats = run_worker(
                self.study, self.strategy, self.evaluator, seed=c.seed, trials=c.trials, timeout=self.search_timeout,
                progress=progress, heartbeat_interval=c.heartbeat_interval, grace_period=c.grace_period,
                rungs=self.rungs,
            )
        stats.seconds = time.monotonic() - began  # until the last worker stopped
        if progress is not None and workers > 1:
            progress(StudyView.of(self.study), None)  # the other workers' last trials
        outcome = SearchOutcome(self.study_name, self.storage_shown, self.out_dir, stats, StudyView.of(self.study),
                                workers=workers)
        if finish:
            self.finish(outcome)
        return outcome

    def final_config(self) -> "TrainConfig":
        """How the best (and the Pareto front's members) are retrained: train + valid, longer,
        no time limit, every free core, random translation of images (``--final-shift``).

        With ``--timeout`` (and no ``--final-epochs``), the retrain aims to end with it: after
        its first epoch it keeps as many of its epochs as fit in the time the command has
        left, never fewer than ``--epochs`` (``TrainConfig.fit_seconds``)."""
        from einnas.evaluate.trainer import auto_shift

        c = self.config
        shift = auto_shift(self.dataset.input_shape) if c.final_shift is None else c.final_shift
        epochs = c.final_epochs or DEFAULT_FINAL_FACTOR * c.epochs
        fit = None
        if c.final_epochs is None and c.timeout is not None and getattr(self, "began", None) is not None:
            fit = c.timeout - (time.monotonic() - self.began)
        # One model now, so the final retrain may use every core that is free.
        return replace(self.train_config, epochs=epochs, seconds=None, max_params=None,
                       threads=max(c.threads or 1, free_cores()), shift=shift,
                       fit_seconds=fit, fit_min_epochs=min(c.epochs, epochs))

    def finish(self, outcome: SearchOutcome) -> None:
        """Retrain the best (final mode), export it to ONNX, write the plot and the report."""
        from einnas.search.report import build_report, plot_history, retrain_best, write_report

        start = time.monotonic()
        c, view, out = self.config, outcome.view, self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        files: dict = {}
        final = None
        if c.final and view.best is not None:
            config = self.final_config()
            final = retrain_best(view, self.space, self.dataset, config, seed=c.seed, device=c.device,
                                 onnx_path=out / "best.onnx", metadata={"study": self.study_name})
            if final is not None and final.onnx:
                files["onnx"] = str(out / "best.onnx")
        if self.objectives.multi and view.completed:
            from einnas.search.front import export_front

            # every member with the epochs the best was retrained for (what --timeout left it)
            config = replace(self.final_config(), fit_seconds=None)
            if final is not None and final.ok:
                config = replace(config, epochs=final.epochs)
            rows = export_front(view, self.objectives, self.space, self.dataset, config, out,
                                seed=c.seed, device=c.device, limit=c.pareto_export if c.final else 0,
                                final=final, metadata={"study": self.study_name})
            files["pareto_csv"] = str(out / "pareto.csv")
            if any(row["onnx"] for row in rows):
                files["pareto"] = str(out / "pareto")
            self.front_rows = rows
        if view.records:
            if plot_history(view, out / "history.png", title=f"{self.study_name}: {self.dataset.name}"):
                files["plot"] = str(out / "history.png")
        files.update(report_json=str(out / "report.json"), report_md=str(out / "report.md"),
                     report_html=str(out / "report.html"))
        seconds = outcome.stats.seconds + (time.monotonic() - start)
        report = build_report(view, study_name=self.study_name, storage=self.storage_shown, settings=self.settings,
                              final=final, files=files, seconds=seconds, top=c.top)
        report["workers"] = outcome.workers
        if getattr(self, "front_rows", None) is not None:
            report["pareto"] = self.front_rows  # the front: one row per member (pareto.csv)
        write_report(report, out)
        from einnas.search.html_report import write_html

        # the page draws the best's graph from best.onnx when it is that architecture's
        write_html(self.study, out / "report.html", grammar=self.space.grammar, onnx_path=files.get("onnx"))
        outcome.report, outcome.files = report, files
