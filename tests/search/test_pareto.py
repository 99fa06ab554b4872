"""Pareto math on hand-computed fronts, NSGA-II selection in regularised evolution, EHVI."""

import math
import random

import numpy as np
import pytest

from einnas.search.objectives import Objectives
from einnas.search.pareto import (
    ParetoEvolution, crowding_distances, dominates, hypervolume, non_dominated_ranks, pareto_front, selection_keys,
)
from einnas.search.records import LATENCY_MS, StudyView, TrialRecord


def test_dominance_and_ranks_on_a_hand_sorted_set():
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (1, 2)) and not dominates((1, 3), (2, 1))
    # front 0: a, b, c; front 1: d (dominated by b), e (by c); front 2: f (by d and e)
    points = [(1, 5), (2, 3), (4, 1), (3, 4), (5, 2), (6, 6)]
    assert non_dominated_ranks(points) == [0, 0, 0, 1, 1, 2]
    assert pareto_front(points) == [0, 1, 2]
    assert non_dominated_ranks([(1, 1), (1, 1)]) == [0, 0]  # equal points do not dominate each other


def test_crowding_distance_by_hand():
    # sorted on x: 0, 1, 3, 4 (range 4); on y: 4, 3, 1, 0 (range 4)
    d = crowding_distances([(0, 4), (1, 3), (3, 1), (4, 0)])
    assert d[0] == d[3] == math.inf
    assert d[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((4 - 1) / 4 + (3 - 0) / 4)
    d = crowding_distances([(0, 4), (1, 3), (2, 2.5), (4, 0)])
    assert d[2] == pytest.approx((4 - 1) / 4 + (3 - 0) / 4) and d[1] == pytest.approx(2 / 4 + 1.5 / 4)


def test_hypervolume_2d_and_3d_by_hand():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(3 + 2 + 1)
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3)], (4, 4)) == pytest.approx(6)  # a dominated point adds 0
    assert hypervolume([(5, 1)], (4, 4)) == 0  # not better than the reference
    assert hypervolume([], (1, 1)) == 0
    # two boxes [0,2]x[0,1]x[0,1] (volume 2) and [0,1]x[0,2]x[0,2] (volume 4) overlap in [0,1]^3 (1)
    assert hypervolume([(0, 1, 1), (1, 0, 0)], (2, 2, 2)) == pytest.approx(2 * 1 * 1 + 1 * 2 * 2 - 1)
    # inclusion-exclusion for three 3-D boxes with reference (3, 3, 3)
    pts = [(1, 2, 2), (2, 1, 2), (2, 2, 1)]
    single, pair, triple = 2 * 1 * 1, 1 * 1 * 1, 1 * 1 * 1
    assert hypervolume(pts, (3, 3, 3)) == pytest.approx(3 * single - 3 * pair + triple)


def test_selection_keys_feasible_then_level_then_rank_then_crowding():
    vectors = [(-0.9, 5.0), (-0.5, 1.0), (-0.7, 3.0), (-0.6, 4.0), (-0.99, 0.1), (-0.95, 9.0)]
    levels = [1000, 1000, 1000, 1000, 1000, 0]
    violations = [0, 0, 0, 0, 2.5, 0]
    keys = selection_keys(vectors, levels, violations)
    order = sorted(range(6), key=lambda i: keys[i])
    assert order[-1] == 4  # infeasible loses to all, whatever its objectives
    assert order[-2] == 5  # a lower fidelity level loses to every full-budget feasible member
    assert keys[3][3] == 1 and all(keys[i][3] == 0 for i in (0, 1, 2))  # (-0.6, 4) is dominated by (-0.7, 3)
    assert keys[2][4] > keys[0][4]  # the middle of the front is more crowded than its ends (inf)


def _record(number, arch, acc, latency, violation=0.0):
    return TrialRecord(number, "COMPLETE", acc, arch.string, arch.archid, arch.info.params, "init", None, "trained",
                       None, "", 1.0, False, None, {LATENCY_MS: latency}, values=(acc, latency),
                       constraints={"latency_ms": violation})


def test_pareto_evolution_takes_its_parent_from_the_feasible_front(fake):
    space = fake.make_space()
    rng = random.Random(0)
    archs = []
    while len(archs) < 6:
        a = space.sample(rng)
        if a.archid not in {b.archid for b in archs}:
            archs.append(a)
    # trials 0..5: 1 and 3 are the feasible front; 5 is the most accurate but infeasible
    records = [_record(0, archs[0], 0.5, 2.0), _record(1, archs[1], 0.8, 1.0), _record(2, archs[2], 0.4, 3.0),
               _record(3, archs[3], 0.3, 0.2), _record(4, archs[4], 0.2, 5.0), _record(5, archs[5], 0.95, 0.1, 1.0)]
    view = StudyView(records)
    strategy = ParetoEvolution(space, 6, 40, objectives=Objectives(("accuracy", "latency"), max_latency=2.0))
    parents = {strategy.propose(view, 6, random.Random(seed)).parent for seed in range(30)}
    assert parents <= {1, 3} and parents  # a tournament of the whole population: the front wins
    assert strategy.settings()["selection"] == "pareto"


def test_ehvi_is_the_exact_improvement_without_uncertainty():
    from einnas.search.ehvi import FrontRanker

    class Arch:
        string, archid = "x", "x"

    front = [TrialRecord(i, "COMPLETE", acc, "x", f"a{i}", 10, "init", None, "trained", None, "", 1.0, False, None,
                         {LATENCY_MS: lat}, values=(acc, lat)) for i, (acc, lat) in enumerate([(0.8, 2.0), (0.5, 1.0)])]
    ranker = FrontRanker(Objectives(("accuracy", "latency")), None)
    costs = [{"latency": 3.0}, {"latency": 0.5}, {"latency": 2.0}]
    gain = ranker.expected_improvement(costs, np.array([0.7, 0.6, 0.9]), np.zeros(3), StudyView(front),
                                       random.Random(0))
    # reference: accuracy 0, latency 1.1 x 3.0 = 3.3; front area (minimising -acc): 0.8*(3.3-2) + 0.5*(2-1)
    assert gain[0] == 0  # (0.7, 3 ms) is dominated by (0.8, 2 ms)
    # faster than the fastest member and more accurate than it: a new strip plus a wider one
    assert gain[1] == pytest.approx(0.6 * (1.0 - 0.5) + (0.6 - 0.5) * (2.0 - 1.0))
    assert gain[2] == pytest.approx((0.9 - 0.8) * (3.3 - 2.0))  # more accurate at the same latency


def test_front_ranker_measures_candidates_and_ranks_feasible_by_ehvi(fake):
    """The assisted strategy's multi-objective ranking: latency measured on each candidate's
    export, candidates over --max-latency last, the rest by expected hypervolume improvement."""
    from einnas.search.ehvi import FrontRanker

    space = fake.make_space()
    rng = random.Random(11)
    archs = []
    while len(archs) < 4:
        a = space.sample(rng)
        if a.archid not in {b.archid for b in archs}:
            archs.append(a)

    class Cache(dict):
        def get(self, key):
            return super().get(key)

        def put(self, record):
            self[record.key if hasattr(record, "key") else len(self)] = record

    class Stub:  # the predictor's side: fixed accuracies, no uncertainty
        cache = Cache()

        def __init__(self):
            self.space = space

        def graphs(self, archs):
            return [a.archid for a in archs]

        def predict(self, graphs, predictor=None):
            means = {a.archid: m for a, m in zip(archs, (0.9, 0.5, 0.7, 0.6))}
            return np.array([means[g] for g in graphs]), np.zeros(len(graphs))

    ranker = FrontRanker(Objectives(("accuracy", "latency")), Stub())
    latencies = [ranker.costs(a)["latency"] for a in archs]
    assert all(lat > 0 for lat in latencies) and len(Stub.cache) == 4  # one export: timed and described
    budget = sorted(latencies)[2]  # the slowest candidate is over the budget
    ranker.objectives = Objectives(("accuracy", "latency"), max_latency=budget)
    scores = ranker.scores(archs, StudyView([]), random.Random(0), fallback=np.zeros(4))
    slowest = int(np.argmax(latencies))
    assert int(np.argmin(scores)) == slowest
    ref = 1.1 * max(latencies)
    ehvi = [m * (ref - lat) for m, lat in zip((0.9, 0.5, 0.7, 0.6), latencies)]  # empty front: one box each
    feasible = [i for i in range(4) if i != slowest]
    assert sorted(feasible, key=lambda i: -scores[i]) == sorted(feasible, key=lambda i: -ehvi[i])


def test_promotion_at_a_rung_by_rank_then_crowding():
    from einnas.search.pareto import promotes

    assert promotes((0.0, 1.0), [], 3)  # the first at a rung always continues
    others = [(-0.9, 1.0), (-0.8, 0.5), (-0.7, 0.2)]  # one front of three
    assert not promotes((-0.6, 2.0), others, 3)  # dominated by all: n 4, keep 1
    assert promotes((-0.95, 0.1), others, 3)  # dominates all: rank 0 alone
    # n 6, keep 2: a point on the first front beside one other (both extremes there)
    assert promotes((-0.9, 0.1), [(-0.95, 0.5), (-0.5, 0.5), (-0.4, 0.6), (-0.3, 0.7), (-0.2, 0.8)], 3)
    # a duplicate of the one point before it ties and is placed after it: n 2, keep 1
    assert not promotes((-0.8, 0.5), [(-0.8, 0.5)], 3)
    # with eta 2 and 6 others the best three of seven continue: the fourth of one line does not
    line = [(-1.0 + 0.1 * i, 0.0 + 0.1 * i) for i in range(7)]  # each dominates the next
    assert promotes(line[2], line[:2] + line[3:], 2)
    assert not promotes(line[3], line[:3] + line[4:], 2)
