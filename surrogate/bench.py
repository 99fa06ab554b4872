"""Benchmark records: (architecture, accuracy) pairs made by training sampled architectures.

``einnas bench build`` fills an append-only JSON Lines file, one line per architecture
slot ``i`` in ``[0, N)``. Slot ``i`` has its own seed derived from ``(S, i)``; about 70%
of slots draw a fresh PCFG sample and 30% mutate one of the best records present when
the slot starts, so the records cover the accuracy range a search sees. Each record
stores its seed, origin and parent, the training budget, both accuracies, the
parameter count, the time and, on failure, the reason, plus where and how it was made
(command, date, einnas / torch versions, machine).

Workers coordinate through the file itself: under an exclusive ``fcntl`` lock a worker
reads the records and the claims sidecar (``FILE.claims``), claims the lowest free
slot, and later appends its record under the same lock. Any number of workers (one
command with ``--workers K``, several commands, several machines on a shared disk)
can fill one file; a killed worker's claim goes stale (its process is gone, or it is
older than ``claim_timeout``), so running the same command again resumes.

Example::

    einnas bench build --dataset digits --n 300 --seed 0 --out digits.jsonl --workers 2
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import random
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from einnas.errors import ArchitectureError, UsageError

#: Version of the record layout.
RECORD_VERSION = 1


@dataclass
class BenchConfig:
    """What ``einnas bench build`` makes; every worker of one file should use the same."""

    dataset: str
    n: int
    seed: int = 0
    out: str = "bench.jsonl"
    epochs: int | None = None  # None: the trainer's default (the search budget)
    seconds: float | None = 60.0  # per-record wall-clock budget; over it is a "timeout" record
    max_params: int = 1_000_000  # keeps CPU training fast; the sampler enforces it analytically
    max_activations: int = 1_000_000
    mutate_fraction: float = 0.3  # share of slots that mutate a good record instead of sampling
    top_fraction: float = 0.1  # parents come from this top share of the successful records
    threads: int | None = None  # torch CPU threads per worker
    device: str = "cpu"
    grammar: str | None = None
    plugins: tuple[str, ...] = ()
    claim_timeout: float | None = None  # seconds until a foreign-host claim is stale; None: from budget
    dataset_name: str | None = None  # the loaded dataset's name (records store it); set by the worker
    command: str = field(default_factory=lambda: " ".join(["einnas", *sys.argv[1:]]))

    def stale_after(self) -> float:
        if self.claim_timeout is not None:
            return self.claim_timeout
        return max(3600.0, 4 * (self.seconds or 900.0))


def slot_seed(seed: int, index: int) -> int:
    """The seed of slot ``index`` of a build with seed ``seed`` (31 bits)."""
    digest = hashlib.blake2b(f"einnas-bench:{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


# --- the file --------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[object]:
    """Open ``path`` for appending under an exclusive lock (created if missing)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist")
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_lines(handle) -> list[dict]:
    handle.seek(0)
    rows = []
    for line in handle.read().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write; its slot is simply redone
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _append_line(handle, row: dict) -> None:
    handle.seek(0, os.SEEK_END)
    if handle.tell() > 0:
        handle.seek(handle.tell() - 1)
        if handle.read(1) != "\n":  # finish a torn line so the new one parses
            handle.write("\n")
    handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def read_records(*paths: str | Path) -> list[dict]:
    """All records of one or more JSON Lines files (torn or foreign lines are skipped).

    Raises :class:`UsageError` for a missing file.
    """
    rows: list[dict] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"records file {str(path)!r} does not exist")
        with open(path, encoding="utf-8") as handle:
            rows.extend(r for r in _read_lines(handle) if "arch" in r and "archid" in r)
    return rows


def append_record(path: str | Path, record: dict) -> None:
    """Append one record to ``path`` under the file lock."""
    with locked(path) as handle:
        _append_line(handle, record)


# --- claims -------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_live(claim: dict, now: float, stale_after: float) -> bool:
    if claim.get("host") == socket.gethostname():
        pid = claim.get("pid")
        return isinstance(pid, int) and _pid_alive(pid) and now - claim.get("time", 0) < 10 * stale_after
    return now - claim.get("time", 0) < stale_after


def _name(config: BenchConfig) -> str:
    return config.dataset_name or config.dataset


def _slot_key(config: BenchConfig, record: dict) -> int | None:
    if record.get("dataset") != _name(config) or record.get("bench_seed") != config.seed:
        return None
    return record.get("index")


# --- one worker -------------------------------------------------------------------------------


@dataclass
class _Plan:
    index: int
    seed: int
    origin: str
    parent: str | None
    arch: object


def _plan_slot(config: BenchConfig, grammar, dataset, index: int, records: list[dict], limits) -> _Plan:
    from einnas.grammar import mutate, parse_arch, sample_one

    seed = slot_seed(config.seed, index)
    rng = random.Random(seed)
    same = [r for r in records if r.get("dataset") == _name(config)]
    seen = {r["archid"] for r in same}
    good = sorted((r for r in same if r.get("ok") and r.get("val_acc") is not None), key=lambda r: -r["val_acc"])
    shape, classes = dataset.input_shape, dataset.num_classes
    want_mutation = rng.random() < config.mutate_fraction and len(good) >= 5
    parent = None
    for _attempt in range(20):  # redraw duplicates of records already present
        arch = None
        if want_mutation:
            top = good[: max(5, int(len(good) * config.top_fraction))]
            parent = top[rng.randrange(len(top))]
            try:
                arch = mutate(grammar, parse_arch(parent["arch"], grammar), rng, shape, classes, limits)
            except ArchitectureError:  # a record of another grammar or shape: sample instead
                want_mutation, parent = False, None
        if arch is None:
            arch = sample_one(grammar, rng, shape, classes, limits)
        if arch.archid not in seen:
            break
    origin = "mutation" if want_mutation else "sample"
    return _Plan(index, seed, origin, parent["archid"] if (want_mutation and parent) else None, arch)


def _claim(config: BenchConfig, grammar, dataset, limits) -> _Plan | None:
    claims_path = Path(str(config.out) + ".claims")
    with locked(config.out) as handle:
        records = _read_lines(handle)
        done = {_slot_key(config, r) for r in records}
        now = time.time()
        live = set()
        if claims_path.exists():
            with open(claims_path, encoding="utf-8") as cf:
                for claim in _read_lines(cf):
                    if claim.get("dataset") == _name(config) and claim.get("bench_seed") == config.seed \
                            and _claim_live(claim, now, config.stale_after()):
                        live.add(claim.get("index"))
        index = next((i for i in range(config.n) if i not in done and i not in live), None)
        if index is None:
            return None
        plan = _plan_slot(config, grammar, dataset, index, [r for r in records if "arch" in r], limits)
        with open(claims_path, "a+", encoding="utf-8") as cf:
            _append_line(cf, {
                "index": index, "dataset": _name(config), "bench_seed": config.seed,
                "pid": os.getpid(), "host": socket.gethostname(), "time": now,
            })
        return plan


def run_info(config: BenchConfig) -> dict:
    """Where and how records are made: stored in every record."""
    from importlib import metadata

    import torch

    try:
        version = metadata.version("einnas")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "command": config.command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "einnas": version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "host": socket.gethostname(),
        "threads": config.threads or torch.get_num_threads(),
    }


def build_worker(
    config: BenchConfig, log: Callable[[str], None] | None = None, max_records: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Fill free slots of ``config.out`` until none is left (or ``max_records`` are written,
    or ``stop()`` is true); returns how many this worker wrote."""
    from einnas.evaluate import TrainConfig, load_dataset, resolve_device, train
    from einnas.grammar import Limits, build_network, load_grammar

    device = resolve_device(config.device)
    grammar = load_grammar(config.grammar, plugins=config.plugins)
    dataset = load_dataset(config.dataset)
    config.dataset_name = dataset.name
    limits = Limits(max_params=config.max_params, max_activations=config.max_activations)
    train_config = TrainConfig(seconds=config.seconds, threads=config.threads)
    if config.epochs is not None:
        train_config.epochs = config.epochs
    budget = {
        "epochs": train_config.epochs, "seconds": config.seconds, "batch_size": train_config.batch_size,
        "lr": train_config.lr, "max_params": config.max_params, "max_activations": config.max_activations,
    }
    info = run_info(config)
    written = 0
    while (max_records is None or written < max_records) and not (stop and stop()):
        plan = _claim(config, grammar, dataset, limits)
        if plan is None:
            break
        arch = plan.arch
        result = train(
            lambda: build_network(arch, dataset.input_shape, dataset.num_classes), dataset, train_config,
            seed=plan.seed, device=device, test=True,
        )
        record = {
            "v": RECORD_VERSION,
            "arch": arch.string,
            "archid": arch.archid,
            "dataset": dataset.name,
            "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes,
            "budget": budget,
            "ok": result.ok,
            "val_acc": result.val_acc,
            "test_acc": result.test_acc,
            "params": result.params or (arch.info.params if arch.info else None),
            "seconds": round(result.seconds, 3),
            "reason": result.reason,
            "detail": result.detail or None,
            "index": plan.index,
            "bench_seed": config.seed,
            "seed": plan.seed,
            "origin": plan.origin,
            "parent": plan.parent,
            "grammar": grammar.sha256,
            "device": str(device),
            "run": {**info, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        }
        append_record(config.out, record)
        written += 1
        if log is not None:
            acc = f"val {record['val_acc']:.4f}" if result.ok else f"failed: {result.reason}"
            log(f"[{plan.index}/{config.n}] {arch.archid} {plan.origin:<8} params {record['params']:>9,}  "
                f"{acc}  {result.seconds:.1f}s")
    return written


def _worker_main(config_dict: dict, quiet: bool, parent: int | None = None) -> None:
    config = BenchConfig(**config_dict)
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    # A worker whose parent command died stops after its current record (its claim stays
    # until then; a restarted command skips it only while this process lives).
    build_worker(config, log, stop=(lambda: os.getppid() != parent) if parent else None)


def build(config: BenchConfig, workers: int = 1, quiet: bool = False) -> dict:
    """Run ``workers`` worker processes (1: in this process) and summarise the file."""
    if config.n <= 0:
        raise UsageError(f"--n {config.n}: must be positive")
    if not 0 <= config.mutate_fraction <= 1:
        raise UsageError(f"--mutate {config.mutate_fraction}: expected a fraction in [0, 1]")
    from einnas.evaluate import load_dataset, resolve_device

    resolve_device(config.device)
    config.dataset_name = load_dataset(config.dataset).name  # a bad name fails here, once
    with locked(config.out):
        pass  # creates the file and checks the folder
    if workers <= 1:
        _worker_main(asdict(config), quiet)
    else:
        import multiprocessing

        if config.threads is None:
            config.threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(asdict(config), quiet, os.getpid())) for _ in range(workers)]
        import signal

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
                    proc.terminate()
            for proc in procs:
                proc.join()
            raise
        finally:
            signal.signal(signal.SIGTERM, old)
    return summarize(config)


def summarize(config: BenchConfig) -> dict:
    """Counts and the best record of this build's slots in ``config.out``."""
    records = [r for r in read_records(config.out) if _slot_key(config, r) is not None]
    ok = [r for r in records if r.get("ok")]
    best = max(ok, key=lambda r: r["val_acc"], default=None)
    reasons: dict[str, int] = {}
    for r in records:
        if not r.get("ok"):
            reasons[r.get("reason") or "?"] = reasons.get(r.get("reason") or "?", 0) + 1
    return {
        "out": str(config.out), "dataset": config.dataset, "seed": config.seed, "n": config.n,
        "records": len({r["index"] for r in records}), "ok": len(ok), "failed": reasons,
        "best_val_acc": best["val_acc"] if best else None, "best_archid": best["archid"] if best else None,
    }
