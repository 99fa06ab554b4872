"""Records and splits: which records are usable, how they are described and split.

:func:`split_of` assigns every architecture, by a hash of its archid, to ``test``
(held out: never used for fitting or model selection), ``val`` (model selection)
or ``train``. :func:`featurize` turns records into a :class:`Dataset`: one described
graph per usable record, its feature row (graph, task, proxies), accuracy, group
(the dataset: ranking pairs never mix protocols), family (the grammar it was
sampled from) and split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from einnas.errors import UsageError

SPLITS = ("train", "val", "test")


def split_of(archid: str, holdout: float = 0.2, val: float = 0.15, salt: str = "einnas-split-v1") -> str:
    """``test`` for a ``holdout`` share of archids, ``val`` for a ``val`` share of the rest, else ``train``."""
    digest = hashlib.blake2b(f"{salt}:{archid}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest[:4], "big") / 2**32
    if u < holdout:
        return "test"
    v = int.from_bytes(digest[4:], "big") / 2**32
    return "val" if v < val else "train"


def usable(records: Sequence[dict]) -> list[dict]:
    """Successful records with an accuracy, one per (dataset, archid) (the first kept)."""
    seen, out = set(), []
    for r in records:
        if not r.get("ok") or r.get("val_acc") is None:
            continue
        key = (r.get("dataset"), r["archid"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def family_of(record: dict) -> str:
    """The family of a record: its grammar's name, else a short hash of its grammar, else ``onnx``/``?``."""
    name = record.get("grammar_name") or record.get("family")
    if name:
        return str(name)
    grammar = record.get("grammar")
    if isinstance(grammar, str) and grammar in _KNOWN_GRAMMARS:
        return _KNOWN_GRAMMARS[grammar]
    command = str((record.get("run") or {}).get("command", "")).split()
    if "--grammar" in command[:-1]:  # a grammar file edited since: its name still says which family
        return Path(command[command.index("--grammar") + 1]).stem
    if isinstance(grammar, str) and grammar:
        return grammar if len(grammar) <= 24 else grammar[:8]
    return "onnx" if "onnx" in record else "?"


def _grammar_names() -> dict:
    """sha256 of each grammar file shipped with einnas -> its name (``einspace``, ``cnn``, ...)."""
    root = Path(__file__).resolve().parent.parent / "grammar"
    out = {}
    for path in [root / "einspace.lark", *sorted((root / "spaces").glob("*.lark"))]:
        if path.is_file():
            out[hashlib.sha256(path.read_bytes()).hexdigest()] = path.stem
    return out


_KNOWN_GRAMMARS = _grammar_names()


def graph_records(records: Sequence[dict], cache=None, grammar=None, log=None) -> tuple[list, list[dict]]:
    """Describe every record's architecture (cached); records that cannot be exported are dropped."""
    from einnas.errors import EinnasError
    from einnas.surrogate.features import describe_arch, describe_file

    graphs, kept = [], []
    for i, r in enumerate(records):
        try:
            if "onnx" in r:  # a record of an ONNX-Bench-style folder
                graphs.append(describe_file(r["onnx"], key=r["archid"]))
            else:
                graphs.append(describe_arch(r["arch"], r["input_shape"], r["num_classes"], cache,
                                            _grammar_for(r, grammar)))
        except EinnasError as error:
            if log:
                log(f"skipped {r['archid']}: {error}")
            continue
        kept.append(r)
        if log and (i + 1) % 500 == 0:
            log(f"described {i + 1}/{len(records)}")
    return graphs, kept


def _grammar_for(record: dict, default):
    """The grammar a record's architecture parses with: a shipped grammar by its family name, else ``default``."""
    name = family_of(record)
    if name != "einspace" and name in _KNOWN_GRAMMARS.values():
        return _load_grammar(name)
    return default


def _load_grammar(name: str):
    from einnas.grammar import load_grammar

    if name not in _GRAMMARS:
        root = Path(__file__).resolve().parent.parent / "grammar" / "spaces"
        _GRAMMARS[name] = load_grammar(root / f"{name}.lark")
    return _GRAMMARS[name]


_GRAMMARS: dict = {}


@dataclass
class Dataset:
    """Featurised records: feature rows, text (unused), accuracies, groups (datasets), splits, chance."""

    records: list[dict]
    graphs: list
    numeric: np.ndarray
    text: np.ndarray | None
    y: np.ndarray
    groups: np.ndarray
    splits: np.ndarray
    chance: np.ndarray = field(default=None)
    families: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.families is None:
            self.families = np.array([family_of(r) for r in self.records]) if self.records else np.array([])
        if self.chance is None:
            self.chance = np.full(len(self.y), 0.1)

    def rows(self, mask: np.ndarray) -> "Dataset":
        pick = np.flatnonzero(mask)
        return Dataset([self.records[i] for i in pick], [self.graphs[i] for i in pick], self.numeric[pick],
                       None if self.text is None else self.text[pick], self.y[pick], self.groups[pick],
                       self.splits[pick], self.chance[pick], self.families[pick])

    def texts(self) -> list[str] | None:
        """Description texts of the rows (None when any row has no described graph)."""
        if any(g is None for g in self.graphs):
            return None
        return [g.text for g in self.graphs]


def featurize(records: Sequence[dict], encoder=None, cache=None, holdout: float = 0.2, log=None,
              proxies=None) -> Dataset:
    """Describe and split successful records; ``proxies``: a :class:`ProxyCache` to add proxy features."""
    from einnas.grammar import load_grammar
    from einnas.surrogate.features import feature_table
    from einnas.surrogate.task import Task

    graphs, kept = graph_records(usable(records), cache, load_grammar(), log)
    tasks = [Task.of_record(r) for r in kept]
    values = proxies.for_records(kept, graphs, log=log) if proxies is not None else None
    numeric, _ = feature_table(graphs, tasks=tasks, proxies=values)
    return Dataset(
        kept, graphs, numeric, None,
        np.array([r["val_acc"] for r in kept], dtype=np.float64),
        np.array([str(r.get("dataset")) for r in kept]),
        np.array([split_of(r["archid"], holdout) for r in kept]),
        np.array([1.0 / (r.get("num_classes") or g.classes or 10) for r, g in zip(kept, graphs)]),
    )


def load_records(paths: Sequence[str], label_key: str | None = None, log=None) -> list[dict]:
    """Records from JSON Lines files, studies and ONNX folders (``records.load_records`` where present)."""
    try:
        from einnas.surrogate.records import load_records as load
    except ImportError:
        load = None
    if load is not None:
        return load(paths, label_key=label_key, log=log)
    from einnas.surrogate.bench import read_records
    from einnas.surrogate.onnxbench import read_folder

    out: list[dict] = []
    for path in paths:
        if Path(path).is_dir():
            out.extend(read_folder(path, key=label_key, log=log))
        else:
            out.extend(read_records(path))
    if not out:
        raise UsageError(f"no records in {', '.join(map(str, paths))}")
    return out
