"""Strategies act on trees and read their population from a study view."""

import random

import pytest

from einnas.errors import UsageError
from einnas.search import (
    RandomSampling, RegularisedEvolution, StudyView, TrialRecord, population_sizes, resolve_init, tournament_size,
)


def record(number, arch, value=None, state="COMPLETE", origin="init", reason=None):
    return TrialRecord(
        number=number, state=state, value=value if state == "COMPLETE" else None, arch=arch.string,
        archid=arch.archid, params=arch.info.params, origin=origin, parent=None, scored_by="trained",
        reason=reason, detail="", seconds=1.0, retried=False, retry_of=None, attrs={},
    )


def test_population_scales_with_budget():
    assert population_sizes(None) == (100, 10)
    assert population_sizes(1000) == (100, 10)
    assert population_sizes(30) == (10, 3)
    assert population_sizes(5) == (4, 2)
    assert tournament_size(100) == 10 and tournament_size(4) == 2


def test_random_sampling_is_seeded(fake):
    space = fake.make_space()
    strategy = RandomSampling(space)
    a = strategy.propose(StudyView([]), 0, random.Random(1))
    b = strategy.propose(StudyView([]), 0, random.Random(1))
    assert a.arch.string == b.arch.string and a.origin == "random"


def test_re_builds_initial_population_then_mutates_tournament_winner(fake):
    space = fake.make_space()
    strategy = RegularisedEvolution(space, population=4, tournament=10)
    rng = random.Random(0)
    first = strategy.propose(StudyView([]), 0, rng)
    assert first.origin == "init"
    archs = [space.sample(random.Random(i)) for i in range(4)]
    # three initial members claimed: still initial
    view = StudyView([record(i, a, value=0.1 * i) for i, a in enumerate(archs[:3])])
    assert strategy.propose(view, 3, random.Random(0)).origin == "init"
    view = StudyView([record(i, a, value=[0.2, 0.9, 0.1, 0.3][i]) for i, a in enumerate(archs)])
    picks = [strategy.propose(view, 4, random.Random(s)) for s in range(8)]
    assert all(p.origin == "mutation" for p in picks)
    # 10 draws with replacement from 4 members: trial 1 (0.9) is in 94% of tournaments
    assert sum(p.parent == 1 for p in picks) >= 6
    assert all(p.arch.archid != archs[p.parent].archid for p in picks)  # the child differs


def test_re_ages_out_the_oldest(fake):
    space = fake.make_space()
    strategy = RegularisedEvolution(space, population=2, tournament=2)
    archs = [space.sample(random.Random(i)) for i in range(4)]
    # the best (trial 0) is older than the last two members: never a parent again
    view = StudyView([record(0, archs[0], 0.99), record(1, archs[1], 0.1),
                      record(2, archs[2], 0.2, origin="mutation"), record(3, archs[3], 0.3, origin="mutation")])
    parents = {strategy.propose(view, 4, random.Random(s)).parent for s in range(10)}
    assert parents <= {2, 3}


def test_failed_members_are_never_parents(fake):
    space = fake.make_space()
    strategy = RegularisedEvolution(space, population=3, tournament=3)
    archs = [space.sample(random.Random(i)) for i in range(3)]
    view = StudyView([record(0, archs[0], state="FAIL", reason="nan_loss"), record(1, archs[1], 0.5),
                      record(2, archs[2], state="FAIL", reason="timeout")])
    assert {strategy.propose(view, 3, random.Random(s)).parent for s in range(5)} == {1}


def test_seeded_init_proposes_each_seed_once_then_mutates_them(fake):
    space = fake.make_space()
    seeds = resolve_init("mix", space)
    assert [label for label, _ in seeds] == ["resnet18", "wrn16_4", "vit", "mlp_mixer"]
    strategy = RegularisedEvolution(space, population=100, tournament=10, init=seeds)
    recs = []
    for i, (label, arch) in enumerate(seeds):
        proposal = strategy.propose(StudyView(recs), i, random.Random(i))
        assert proposal.origin == f"seed:{label}" and proposal.arch.archid == arch.archid
        recs.append(record(i, arch, value=None, state="RUNNING", origin=proposal.origin))
    # all seeds still running (other workers): mutate one of them without waiting
    child = strategy.propose(StudyView(recs), 4, random.Random(4))
    assert child.origin == "mutation" and child.parent in range(4)
    recs = [record(0, seeds[0][1], 0.7, origin="seed:resnet18")] + recs[1:]
    child = strategy.propose(StudyView(recs), 5, random.Random(5))
    assert child.parent == 0  # the only scored member wins every tournament


def test_resolve_init_errors(fake):
    space = fake.make_space()
    assert resolve_init(None, space) == [] and resolve_init("random", space) == []
    with pytest.raises(UsageError, match="seed name"):
        resolve_init("resnet19", space)
    assert len(resolve_init("resnet18,resnet18", space)) == 1
