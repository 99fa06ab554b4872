"""Hand-made einnas studies for the report tests and benchmark (no search, no training).

Multi-objective studies follow the search's contract: settings ``objectives`` (names in
value order), trials with ``latency_ms``, ``latency_settings``, ``macs`` beside the
usual ``arch``/``archid``/``params``/``curve``/``origin``/``scored_by``.
"""

from __future__ import annotations

import random

import optuna

from einnas.grammar.tree import archid_of

#: Architectures of the built-in grammar for input 1x8x8 (from `einnas sample`), small to large.
ARCHS = (
    "sequential(linear(16), routing[permute(1,3,2), norm, permute(3,2,1)])",
    "sequential(leakyrelu, branching(4){group(4,3), linear(128), add})",
    "routing[im2col(8,8,0), linear(256), permute(2,1)]",
    "routing[im2col(3,2,1), branching(4){clone(4), linear(512), add}, col2im]",
    "sequential(branching(4){group(4,2), linear(64), cat(1)}, sequential(linear(64), sequential(norm, "
    "routing[im2col(1,1,0), pos_enc, col2im])))",
)
#: A string that would run script or break markup if the page pasted it as HTML.
HOSTILE = '</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2">&amp;"\'<!--'
SHA256 = "3d3999082058942f9c34dc112429402a95be207d18b4e174f839d931df81aee2"  # the built-in einspace.lark
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "macs": "minimize"}


def settings(objectives=None) -> dict:
    s = {"dataset": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "strategy": "re", "evaluator": "trained",
         "seed": 0, "epochs": 4, "grammar_sha256": SHA256, "grammar_path": "einspace.lark (built-in)", "plugins": []}
    if objectives is not None:
        s["objectives"] = list(objectives)
    return s


def _attrs(arch: str, rng: random.Random, acc: float, origin: str = "mutation") -> dict:
    params = rng.randint(200, 900_000)
    return {"arch": arch, "archid": archid_of(arch), "params": params, "origin": origin, "scored_by": "trained",
            "curve": [round(acc * f, 4) for f in (0.5, 0.8, 0.95, 1.0)], "seconds": 1.0,
            "latency_ms": round(0.05 + params / 2e5 + rng.random() * 0.1, 4),
            "latency_settings": {"batch": 1, "threads": 1, "repeats": 20}, "macs": params * 3}


def make_study(objectives=("accuracy",), n: int = 12, *, seed: int = 0, failed: int = 2, pruned: int = 1,
               running: int = 0, waiting: int = 0, hostile: bool = False, name: str = "report-test",
               storage=None, legacy: bool = None, archs=ARCHS):
    """A study of ``n`` completed trials plus failed, pruned, running and waiting ones.

    ``objectives=("accuracy",)`` and ``legacy`` (default for one objective) make today's
    single-objective format: no ``objectives`` setting. ``archs`` are used in turn.
    """
    rng = random.Random(seed)
    objectives = list(objectives)
    legacy = len(objectives) == 1 if legacy is None else legacy
    study = optuna.create_study(storage=storage, study_name=name,
                                directions=[DIRECTIONS[o] for o in objectives])
    study.set_user_attr("einnas", settings(None if legacy else objectives))
    kinds = ["ok"] * n + ["failed"] * failed + ["pruned"] * pruned
    rng.shuffle(kinds)
    kinds += ["running"] * running + ["waiting"] * waiting
    for i, kind in enumerate(kinds):
        arch = archs[i % len(archs)]
        if hostile and i == 0:
            arch = HOSTILE
        acc = round(rng.uniform(0.3, 0.98), 4)
        attrs = _attrs(arch, rng, acc, origin="init" if i < 4 else "mutation")
        if hostile and i == 0:  # the best on every objective: in the table, on the front, drawn
            acc, kind = 0.99, "ok"
            attrs.update(params=100, latency_ms=0.01, macs=300)
        if kind == "ok":
            values = [{"accuracy": acc, "latency": attrs["latency_ms"], "params": attrs["params"],
                       "macs": attrs["macs"]}[o] for o in objectives]
            trial = optuna.trial.create_trial(values=values, user_attrs=attrs, state=optuna.trial.TrialState.COMPLETE)
        elif kind == "failed":
            attrs.update(reason="nan_loss", detail="loss became NaN at epoch 2")
            trial = optuna.trial.create_trial(user_attrs=attrs, state=optuna.trial.TrialState.FAIL)
        elif kind == "pruned":
            attrs.update(reason="pruned", rung=0, rung_value=round(acc / 2, 4), curve=[round(acc / 2, 4)])
            trial = optuna.trial.create_trial(user_attrs=attrs, state=optuna.trial.TrialState.PRUNED)
        elif kind == "running":
            trial = optuna.trial.create_trial(user_attrs=attrs, state=optuna.trial.TrialState.RUNNING)
        else:
            trial = optuna.trial.create_trial(user_attrs=attrs, state=optuna.trial.TrialState.WAITING)
        study.add_trial(trial)
    return study
