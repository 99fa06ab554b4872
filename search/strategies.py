"""Search strategies over derivation trees: random sampling and regularised evolution.

A strategy proposes the architecture of one new trial. It keeps settings only: the
population of regularised evolution is read from the study (a :class:`StudyView`)
each time, so any number of workers on one storage cooperate and a restarted search
continues where it was. Randomness comes from the ``rng`` the search loop derives
from (study seed, trial number); strategies never touch global random state.

Example::

    space = SearchSpace(load_grammar(), (1, 8, 8), 10)
    strategy = RegularisedEvolution(space, population=10, tournament=3)
    proposal = strategy.propose(StudyView.of(study), trial_number, random.Random(...))
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

from einnas._registry import Registry
from einnas.errors import ArchitectureError, UsageError
from einnas.grammar import SEED_NAMES, Architecture, resolve_arch
from einnas.search.records import StudyView, TrialRecord
from einnas.search.space import SearchSpace

#: einspace's regularised evolution: population 100, tournament 10 (paper §4.1).
EINSPACE_POPULATION, EINSPACE_TOURNAMENT = 100, 10


@dataclass(frozen=True)
class Proposal:
    """What a strategy proposes: the architecture, where it came from, its parent trial."""

    arch: Architecture
    origin: str  # init, seed:<name>, mutation, random
    parent: int | None = None
    seed: bool = False  # an --init seed: the population's anchor, trained to the full budget (never pruned)


@dataclass(frozen=True)
class StrategyOptions:
    """What a search hands :meth:`Strategy.create` (``einnas search`` options and the study).

    A strategy takes what it uses and ignores the rest.
    """

    seeds: tuple = ()  # (label, Architecture) of --init, fitted to the input; only for takes_init
    population: int | None = None  # --population (None: the strategy's own sizing)
    tournament: int | None = None  # --tournament
    expected_trials: int | None = None  # the evaluations the search is sized for (None: unknown)
    stored: dict = field(default_factory=dict)  # settings the study's first worker stored (empty: new study)
    objectives: object = None  # einnas.search.objectives.Objectives of --objectives (None: accuracy alone)


class Strategy(ABC):
    """Proposes architectures for new trials; all search state is read from the study.

    Subclasses set ``name`` and implement :meth:`propose`. They must not keep a
    population or history in memory: two workers (or a restarted worker) holding
    equal strategy objects and equal views must propose the same thing.

    A strategy is listed in :data:`STRATEGIES` (built-ins) or declared by an installed
    package as an ``einnas.strategies`` entry point (``name = "pkg.module:Class"``); the
    search builds it with :meth:`create`. ``einnas.testing.StrategyContract`` checks one.
    """

    name: ClassVar[str]
    #: Whether ``--init`` seed architectures apply (they start the population).
    takes_init: ClassVar[bool] = False

    def __init__(self, space: SearchSpace):
        self.space = space

    @classmethod
    def create(cls, space: SearchSpace, options: StrategyOptions) -> "Strategy":
        """Called once by a search (``einnas search --strategy NAME``) to build the strategy
        from its options. The default takes the space only; override to read ``options``."""
        return cls(space)

    def settings(self) -> dict:
        """Called once when the study is opened. The settings every worker of a study must
        share; they are stored in the study and a worker whose settings differ is refused."""
        return {"strategy": self.name}

    @abstractmethod
    def propose(self, view: StudyView, trial_number: int, rng: random.Random) -> Proposal:
        """Called once for each new trial, after it was created and holds a slot.

        ``view`` is a fresh snapshot of the study (other workers' trials included);
        ``rng`` is derived from (study seed, trial number). When the proposal's archid is
        already in the study the loop calls again with the same ``rng`` (which has moved
        on), a bounded number of times.
        """


class RandomSampling(Strategy):
    """Independent draws from the PCFG: einspace's random-sampling baseline."""

    name = "random"

    def propose(self, view, trial_number, rng):
        return Proposal(self.space.sample(rng), "random")


def population_sizes(budget: int | None) -> tuple[int, int]:
    """Population and tournament sizes for a budget of evaluations.

    einspace uses 100 and 10 for 1,000 evaluations. A small budget would spend itself
    on the initial population, so the population is a third of the budget (4 to 100)
    and the tournament :func:`tournament_size` of it: 30 trials give 10 and 3.
    """
    if budget is None:
        return EINSPACE_POPULATION, EINSPACE_TOURNAMENT
    population = min(EINSPACE_POPULATION, max(4, budget // 3))
    return population, tournament_size(population)


def tournament_size(population: int) -> int:
    """About 30% of the population, 2 to 10 (einspace: 10 of 100)."""
    return min(EINSPACE_TOURNAMENT, max(2, round(0.3 * population)))


def resolve_init(spec: str | None, space: SearchSpace, budget=None) -> list[tuple[str, Architecture]]:
    """The seed architectures of ``--init``: ``random`` (none), ``mix`` (all four seeds)
    or a comma-separated list of seed names (``resnet18``, ``resnet18@0.25``) and ``@file``
    arguments.

    Every seed is fitted to the input shape (``einnas.grammar.seeds``); a seed named
    without a scale is scaled to ``budget`` (a ``SeedBudget``: the largest scale that
    fits, else its smallest). Duplicates (same archid) are dropped.
    """
    from einnas.grammar.seeds import SeedBudget, parse_seed_name, scaled_seed

    if spec is None or spec.strip() in ("", "random", "scratch"):
        return []
    items = list(SEED_NAMES) if spec.strip() == "mix" else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError(f"--init {spec!r}: expected random, mix or seed names such as resnet18,vit")
    budget = budget or SeedBudget()
    seen, out = set(), []
    shape = "x".join(map(str, space.input_shape))
    for item in items:
        try:
            seed = parse_seed_name(item)
        except ArchitectureError as error:
            raise UsageError(f"--init {item}: {error}") from None
        if seed is None and not item.startswith("@"):
            raise UsageError(
                f"--init {item!r}: expected a seed name ({', '.join(SEED_NAMES)}, or NAME@SCALE such as "
                "resnet18@0.25), mix, random or @file"
            )
        try:
            if seed is not None and item.strip() in SEED_NAMES:
                label, _, _, arch = scaled_seed(item.strip(), space.input_shape, space.num_classes, budget=budget,
                                                grammar=space.grammar)
            else:
                arch = resolve_arch(item, space.grammar, space.input_shape, space.num_classes)
                label = Path(item[1:]).stem if item.startswith("@") else item
            arch = space.parse(arch.string)
        except ArchitectureError as error:
            raise UsageError(f"--init {item}: does not work for input {shape}: {error}") from None
        if arch.archid not in seen:
            seen.add(arch.archid)
            out.append((label, arch))
    return out


class RegularisedEvolution(Strategy):
    """Regularised (ageing) evolution as in einspace (Real et al. 2019).

    The population is the last ``population`` scored trials of the study; a
    tournament of ``tournament`` members drawn with replacement picks the best as the
    parent (by :attr:`TrialRecord.fitness`: with multi-fidelity, a candidate stopped
    at a rung is compared by its accuracy there with others stopped at the same rung,
    and below those that went further), whose child is one subtree mutation (validated before it is returned).
    The oldest member leaves as each child enters. The initial population is
    ``population`` random samples, or the given seed architectures, each evaluated
    once and cycled to fill the population (einspace's RE(RN18) / RE(Mix)).
    """

    name = "re"
    takes_init = True

    @classmethod
    def create(cls, space, options):
        """Sizes as given, else as the study stored them (asking an existing study for more
        trials extends it), else scaled to the expected trials (:func:`population_sizes`)."""
        population = options.population or options.stored.get("population") or population_sizes(
            options.expected_trials)[0]
        tournament = options.tournament or options.stored.get("tournament") or tournament_size(population)
        objectives = options.objectives
        if cls is RegularisedEvolution and objectives is not None and not objectives.default:
            from einnas.search.pareto import ParetoEvolution  # NSGA-II selection over the objectives

            return ParetoEvolution(space, population, tournament, options.seeds, objectives=objectives)
        return cls(space, population, tournament, options.seeds)

    def __init__(
        self, space: SearchSpace, population: int = EINSPACE_POPULATION, tournament: int = EINSPACE_TOURNAMENT,
        init: Sequence[tuple[str, Architecture]] = (),
    ):
        super().__init__(space)
        if population < 1 or tournament < 1:
            raise UsageError(f"population ({population}) and tournament ({tournament}) must be positive")
        self.population, self.tournament = population, tournament
        self.init = tuple(init)
        self._parsed: dict[str, Architecture] = {}  # a parse cache, not search state

    def settings(self):
        return {
            "strategy": self.name, "population": self.population, "tournament": self.tournament,
            "init": [label for label, _ in self.init] or "random",
            "init_archids": [arch.archid for _, arch in self.init],
        }

    def propose(self, view, trial_number, rng):
        members = self._population(view)
        if members is None:  # still building the initial population
            return self._initial(view, rng)
        scored = [m for m in members if m.fitness is not None]
        if not scored:
            # No score yet (seeds still training in other workers, or all failed): mutate
            # a member chosen at random; with no member at all, sample afresh.
            known = [m for m in members if m.arch]
            if not known:
                return Proposal(self.space.sample(rng), "random")
            parent = known[rng.randrange(len(known))]
        else:
            sample = [scored[rng.randrange(len(scored))] for _ in range(self.tournament)]
            parent = max(sample, key=lambda m: m.fitness)  # first of the best on ties
        return Proposal(self.space.mutate(self._arch(parent.arch), rng), "mutation", parent.number)

    def _initial(self, view: StudyView, rng: random.Random) -> Proposal:
        if not self.init:
            return Proposal(self.space.sample(rng), "init")
        for label, arch in self.init:
            if arch.archid not in view.taken:
                return Proposal(arch, f"seed:{label}", seed=True)
        raise AssertionError("unreachable: every seed is in the study")

    def _population(self, view: StudyView) -> list[TrialRecord] | None:
        """The current population, or None while the initial one is being evaluated."""
        if not self.init:
            started = sum(1 for r in view.records if r.claim and r.origin == "init")
            if started < self.population:
                return None
            return _youngest(view.scored, self.population)
        holders = []
        for _, arch in self.init:
            number = view.taken.get(arch.archid)
            if number is None:
                return None
            holders.append(next(r for r in view.records if r.number == number))
        base = [holders[i % len(holders)] for i in range(self.population)]
        seeds = {arch.archid for _, arch in self.init}
        children = [r for r in view.scored if r.archid not in seeds]
        return _youngest(base + children, self.population)

    def _arch(self, string: str) -> Architecture:
        arch = self._parsed.get(string)
        if arch is None:
            arch = self._parsed[string] = self.space.parse(string)
        return arch


def _youngest(members: Sequence[TrialRecord], population: int) -> list[TrialRecord]:
    """The population: the last ``population`` members to reach the full budget, topped up
    with the last ones stopped at a rung while there are fewer (in study order).

    Only full evaluations age the population: a mutation stopped at rung 0 (most of them,
    on a task like mnist5k) does not push a member trained to the end out, so a good
    parent survives as many full evaluations as the population holds, not a handful of
    cheap rung stops."""
    full = [i for i, m in enumerate(members) if not m.pruned]
    keep = set(full[-population:])
    if len(keep) < population:
        keep.update([i for i, m in enumerate(members) if m.pruned][-(population - len(keep)):])
    return [m for i, m in enumerate(members) if i in keep]


#: The strategies by ``--strategy`` name: these, then installed packages' ``einnas.strategies``
#: entry points. ``einnas search`` takes its choices from here and builds with ``create``.
STRATEGIES = Registry("strategy", "einnas.strategies", "--strategy", "einnas.search.strategies:Strategy",
                      {"re": RegularisedEvolution, "random": RandomSampling})


class SampleAndMutate(Strategy):
    """Mostly fresh PCFG samples, a share of mutations of good trials: what ``einnas bench build`` uses.

    With probability ``mutate_fraction`` (once at least ``min_parents`` trials are
    scored) the parent is drawn uniformly from the best ``top_fraction`` of the scored
    trials (at least ``min_parents``) and mutated once; otherwise a fresh sample. So the
    records cover the accuracy range a search sees, not only the mostly-collapsed
    random networks. A parent that no longer parses (another grammar) is replaced by a
    fresh sample.
    """

    name = "sample"

    def __init__(self, space: SearchSpace, mutate_fraction: float = 0.3, top_fraction: float = 0.1,
                 min_parents: int = 5):
        super().__init__(space)
        if not 0 <= mutate_fraction <= 1 or not 0 < top_fraction <= 1:
            raise UsageError(f"mutate fraction {mutate_fraction} and top fraction {top_fraction}: expected fractions")
        self.mutate_fraction, self.top_fraction, self.min_parents = mutate_fraction, top_fraction, min_parents
        self._parsed: dict[str, Architecture] = {}  # a parse cache, not search state

    def settings(self):
        return {"strategy": self.name, "mutate_fraction": self.mutate_fraction, "top_fraction": self.top_fraction,
                "min_parents": self.min_parents}

    def propose(self, view, trial_number, rng):
        scored = view.top(len(view.completed))
        if rng.random() < self.mutate_fraction and len(scored) >= self.min_parents:
            top = scored[: max(self.min_parents, int(len(scored) * self.top_fraction))]
            parent = top[rng.randrange(len(top))]
            try:
                arch = self._parsed.get(parent.arch) or self._parsed.setdefault(parent.arch, self.space.parse(parent.arch))
                return Proposal(self.space.mutate(arch, rng), "mutation", parent.number)
            except ArchitectureError:
                pass
        return Proposal(self.space.sample(rng), "sample")


STRATEGIES["sample"] = SampleAndMutate
