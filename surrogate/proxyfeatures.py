"""Zero-cost proxies as predictor features: computed once per architecture, cached on disk.

The proxies themselves live in ``proxies.py`` (SNIP, grad-norm, synflow, NASWOT,
jacov at initialisation, data-free by default). Here: a cache so that fitting on
thousands of records computes each architecture's proxies once (JSON files keyed
by archid, input shape, classes and seed), and the one place that turns "could not
compute" into a reason that ``score`` prints (``scored without proxies: ...``).

Fit-time proxies are data-free (synthetic inputs and labels), like ``score``
without ``--dataset``; ``score --dataset D`` computes them on a batch of ``D``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from einnas.errors import EinnasError

CACHE_VERSION = 1

#: The largest file whose proxies ``score`` computes. Past these, converting the file and
#: running a batch forward and backward takes tens of seconds to minutes on a CPU
#: (VGG-19, 144M parameters and 20G MACs: about two minutes), far from any predictor's
#: training range anyway; such a file is scored without proxies and the note says so.
MAX_PROXY_PARAMS = 50_000_000
MAX_PROXY_MACS = 1_000_000_000


def _names() -> tuple:
    """The proxies used as features: all but ``flops`` (a graph feature already, and slow to count)."""
    from einnas.surrogate.proxies import PROXY_NAMES

    return tuple(n for n in PROXY_NAMES if n != "flops")


def available() -> str | None:
    """None when zero-cost proxies can be computed here, else why not."""
    try:
        import einnas.surrogate.proxies  # noqa: F401
    except ImportError as error:
        return f"zero-cost proxies are not available ({error.name or error})"
    return None


def too_large(params: int, macs: int) -> str | None:
    """Why a graph of ``params`` weights and ``macs`` multiply-adds per sample gets no proxies
    (None when it is within :data:`MAX_PROXY_PARAMS` and :data:`MAX_PROXY_MACS`)."""
    from einnas.surrogate.describe import compact_number

    for what, value, limit in (("parameters", params, MAX_PROXY_PARAMS), ("MACs per sample", macs, MAX_PROXY_MACS)):
        if value > limit:
            return f"{compact_number(int(value))} {what}, over the proxies' limit of {compact_number(limit)}"
    return None


class ProxyCache:
    """Data-free proxies of architectures, one small JSON file each (``folder=None``: memory only)."""

    def __init__(self, folder: str | Path | None, seed: int = 0):
        self.folder = Path(folder) / f"proxies-v{CACHE_VERSION}" if folder else None
        self.seed = seed
        self._memory: dict[str, dict | None] = {}

    def _key(self, archid: str, shape, classes) -> str:
        return f"{archid}-{'x'.join(map(str, shape))}-{classes}-s{self.seed}"

    def get(self, archid: str, arch: str, shape, classes, grammar=None) -> dict | None:
        """``{proxy: value}`` of an architecture (None when it cannot be computed)."""
        key = self._key(archid, shape, classes)
        if key in self._memory:
            return self._memory[key]
        path = self.folder / f"{key}.json" if self.folder else None
        known = None
        if path is not None and path.is_file():
            try:
                known = json.loads(path.read_text())["values"]
            except (OSError, ValueError, KeyError):
                known = None
        missing = _names() if known is None else tuple(n for n in _names() if n not in known)
        if known is not None and not missing:
            self._memory[key] = known
            return known
        # a file written before a proxy was added gets only the new ones computed
        value = compute_arch(arch, shape, classes, seed=self.seed, grammar=grammar, names=missing)
        if known is not None and value is not None:
            value = {**known, **value}
        self._memory[key] = value
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            tmp.write_text(json.dumps({"values": value}))
            os.replace(tmp, path)
        return value

    def for_records(self, records: Sequence[dict], graphs: Sequence, log=None) -> list[dict | None]:
        """Proxies of each record's architecture (None for ONNX-folder records and failures)."""
        from einnas.surrogate.splits import _grammar_for

        if available() is not None:
            if log:
                log(f"fitting without proxies: {available()}")
            return [None] * len(records)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny networks: one thread is faster than contending ones
        try:
            return self._for_records(records, log)
        finally:
            torch.set_num_threads(threads)

    def _for_records(self, records, log):
        from einnas.surrogate.splits import _grammar_for

        out = []
        for i, r in enumerate(records):
            if "arch" not in r:
                out.append(None)
                continue
            out.append(self.get(r["archid"], r["arch"], r["input_shape"], r["num_classes"], _grammar_for(r, None)))
            if log and (i + 1) % 500 == 0:
                log(f"proxies {i + 1}/{len(records)}")
        return out


def compute_arch(arch: str, shape, classes: int, seed: int = 0, grammar=None, batch=None,
                 names: Sequence[str] | None = None) -> dict | None:
    """Proxies ``names`` (default: every feature proxy) of an architecture string (None when
    they cannot be computed)."""
    if available() is not None:
        return None
    from einnas.surrogate.proxies import proxies_for_arch

    try:
        values = proxies_for_arch(arch, tuple(shape), int(classes), batch=batch, seed=seed, grammar=grammar,
                                  names=_names() if names is None else tuple(names))
    except (EinnasError, RuntimeError, ValueError, MemoryError):
        return None
    return _clean(values)


def compute_onnx(path, batch=None, seed: int = 0, threads: int | None = None) -> tuple[dict | None, str | None]:
    """``(proxies, None)`` of an ONNX file, or ``(None, reason)`` when they cannot be computed.

    ``threads``: torch CPU threads for the conversion and the proxies (default: torch's own
    setting, every core). One file at a time is latency-bound: on 2 idle cores the median
    einspace file at 3x32x32 scores in 184 ms with 2 threads against 337 ms with one
    (``early_fit``'s 8 forwards and 7 backwards are most of it)."""
    reason = available()
    if reason is not None:
        return None, reason
    import torch

    from einnas.surrogate.proxies import proxies_for_onnx

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        result = proxies_for_onnx(path, batch=batch, seed=seed, names=_names())
    except (EinnasError, RuntimeError, ValueError, MemoryError) as error:
        return None, " ".join(str(error).split())[:200] or type(error).__name__
    finally:
        torch.set_num_threads(before)
    values = _clean(getattr(result, "values", None) or {})
    if not values or not getattr(result, "converted", True):
        return None, " ".join(str(getattr(result, "note", None) or "the file could not be converted to torch").split())
    return values, None


def _clean(values) -> dict | None:
    if not values:
        return None
    out = {}
    for name, value in dict(values).items():
        try:
            out[str(name)] = None if value is None else float(value)
        except (TypeError, ValueError):
            out[str(name)] = None
    return out or None
