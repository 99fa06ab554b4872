"""Pins of sampling, mutation, analysis, building and cost estimates, recorded before the interpreter.

``data/interpreter_pins.json`` was written by the code as it was before shape analysis,
building and sampling became backends of one interpreter (grammar/interpret.py):
for einspace and two conventional spaces at the main input shapes, the archids (hashes
of the canonical strings) of the first 30 samples for seeds 0-2, a hash of their
analytic figures, a chain of 15 mutations and a hash of the built module trees. Any
change to the walk, the branch rule, the sampler's choices, the builder's modules or the
MAC estimate (``data/estimate_pins.json``, same origin) shows up here. Re-record only for an intended change of the sampled distribution.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from einnas.grammar import build_network, load_grammar, mutate, sample

PINS = json.loads((Path(__file__).parent / "data" / "interpreter_pins.json").read_text())


def _info_key(info):
    return [info.params, info.terminals, info.depth, info.activations, info.head_params,
            list(info.output.shape), info.output.mode]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def _case(key):
    space, shape = key.split(":")
    return load_grammar(space), tuple(int(s) for s in shape.split(","))


@pytest.mark.parametrize("key", sorted(PINS))
def test_samples_are_the_recorded_ones(key):
    grammar, shape = _case(key)
    for seed in range(3):
        archs = sample(grammar, 30, seed=seed, input_shape=shape)
        assert [a.archid for a in archs] == PINS[key][f"seed{seed}"], (key, seed)
        assert _digest([_info_key(a.info) for a in archs]) == PINS[key][f"info{seed}"], (key, seed)


@pytest.mark.parametrize("key", sorted(PINS))
def test_mutation_chain_is_the_recorded_one(key):
    grammar, shape = _case(key)
    rng = random.Random(f"pin:{key}")
    arch = sample(grammar, 1, seed=0, input_shape=shape)[0]
    chain = []
    for _ in range(15):
        arch = mutate(grammar, arch, rng, shape)
        chain.append(arch.archid)
    assert chain == PINS[key]["mutations"]


@pytest.mark.parametrize("key", sorted(PINS))
def test_built_modules_are_the_recorded_ones(key):
    grammar, shape = _case(key)
    built = [hashlib.sha256(repr(build_network(a, shape, 10)).encode()).hexdigest()[:16]
             for a in sample(grammar, 6, seed=1, input_shape=shape)]
    assert built == PINS[key]["built"]


MACS = json.loads((Path(__file__).parent / "data" / "estimate_pins.json").read_text())


@pytest.mark.parametrize("key", sorted(MACS))
def test_cost_estimates_are_the_recorded_ones(key):
    """``scaling.estimate`` (params, activations, MACs, leaves) of 30 samples or the seeds."""
    from einnas.grammar import SEED_NAMES, resolve_arch
    from einnas.grammar.scaling import estimate

    space, shape = key.split(":")
    shape = tuple(int(s) for s in shape.split(","))
    if space == "seeds":
        archs = [resolve_arch(name, input_shape=shape) for name in SEED_NAMES]
    else:
        archs = sample(load_grammar(space), 30, seed=0, input_shape=shape)
    figures = [estimate(a, shape, 10) for a in archs]
    assert [[e.params, e.activations, e.macs, e.terminals] for e in figures] == MACS[key]
