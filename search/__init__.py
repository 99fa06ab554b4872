"""The Optuna-driven search: strategies over derivation trees, with the study as the record.

An architecture is never encoded as ``suggest_*`` calls: each trial carries its
canonical architecture string (and archid, parameter count, how it was scored,
failure reason, training curve) as user attributes, strategies act on trees and
read their population from the study's trials. Any number of workers on one
storage (a journal file, SQLite or PostgreSQL) cooperate; a restarted search
continues where it was; ``optuna-dashboard <storage>`` shows it unchanged.

Public names::

    Search(SearchConfig(dataset="digits", trials=30, seed=0)).run()   # what `einnas search` does
    SearchConfig, SearchOutcome, default_study_name
    Strategy (ABC: propose(view, trial_number, rng) -> Proposal), Proposal,
    RandomSampling, RegularisedEvolution, population_sizes, tournament_size, resolve_init
    Evaluator (ABC: evaluate(arch, seed) -> Evaluation), Evaluation, TrainingEvaluator
    STRATEGIES, EVALUATORS: the tables by --strategy / --evaluator name (built-ins, then the
    einnas.strategies / einnas.evaluators entry points); Strategy.create(space, StrategyOptions),
    Evaluator.create(EvaluatorContext) build one as a search does
    SearchSpace(grammar, input_shape, num_classes, limits): sample / mutate / parse
    StudyView, TrialRecord: a study's trials as the search reads them
    run_worker(study, strategy, evaluator, seed=, trials=, timeout=): the worker loop
    open_storage(spec), open_study(storage, name, settings), load_study(storage, name, shown)
    trial_rng(seed, number), training_seed(seed, archid)
    Objectives, ObjectiveEvaluator, parse_objectives: deployment (multi-objective) search (objectives.py)
    ParetoEvolution, hypervolume, non_dominated_ranks, crowding_distances: Pareto fronts (pareto.py)

Hooks for surrogate assistance (``einnas.search.assisted``, imported only when
``--surrogate`` is not ``none`` or ``--evaluator surrogate`` is given)::

    make_strategy(base: Strategy, surrogate: str, *, space: SearchSpace, seed: int) -> Strategy
    make_evaluator(surrogate: str, *, space: SearchSpace, dataset) -> Evaluator   # scored_by "predicted"

``surrogate`` is ``"default"`` (the shipped predictor) or a path. The returned
strategy must keep ``.space`` and follow :class:`Strategy` (no state outside the study).
"""

from einnas.search.evaluators import EVALUATORS, Evaluation, Evaluator, EvaluatorContext, TrainingEvaluator
from einnas.search.loop import WorkerStats, run_worker, training_seed, trial_rng
from einnas.search.records import StudyView, TrialRecord, records_from_trials
from einnas.search.run import Search, SearchConfig, SearchOutcome, default_study_name
from einnas.search.space import SearchSpace
from einnas.search.storage import load_study, open_existing, open_storage, open_study
from einnas.search.strategies import (
    STRATEGIES, Proposal, RandomSampling, RegularisedEvolution, Strategy, StrategyOptions, population_sizes,
    resolve_init, tournament_size,
)

__all__ = [
    "EVALUATORS", "STRATEGIES", "Evaluation", "Evaluator", "EvaluatorContext", "ObjectiveEvaluator", "Objectives", "ParetoEvolution", "Proposal", "RandomSampling", "RegularisedEvolution", "Search",
    "SearchConfig", "SearchOutcome", "SearchSpace", "Strategy", "StrategyOptions", "StudyView", "TrainingEvaluator", "TrialRecord",
    "WorkerStats", "default_study_name", "load_study", "open_existing", "open_storage", "open_study", "population_sizes",
    "crowding_distances", "hypervolume", "non_dominated_ranks", "parse_objectives",
    "records_from_trials", "resolve_init", "run_worker", "tournament_size", "training_seed", "trial_rng",
]
