"""An on-disk cache of zero-cost proxies, one small JSON file per key.

Keyed by (archid, input shape, classes, seed, the data: synthetic with its batch
size, or a hash of the given batch), plus :data:`VERSION`, which changes whenever
the proxy definitions do. One file per key (in 256 sub-folders) keeps writes O(1)
for the ~10k records a predictor fit needs; each is written atomically (temporary
file + rename), so parallel workers and a killed process leave no torn file. A file
that does not parse is treated as a miss. NaN is stored as JSON ``null``.

Example::

    from einnas.surrogate.proxies import proxies_for_arch
    proxies_for_arch(arch, (3, 32, 32), 10, cache="~/.cache/einnas/proxies")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

#: Bump when a proxy's definition or computation changes: old entries are then ignored.
VERSION = 1
_MAX_ENTRY_BYTES = 64_000


def data_key(batch, batch_size: int) -> str:
    """``"synthetic:<batch_size>"`` or ``"data:<sha256 of the batch's bytes>"``."""
    if batch is None:
        return f"synthetic:{int(batch_size)}"
    import numpy as np

    digest = hashlib.sha256()
    for part in batch:
        array = np.ascontiguousarray(np.asarray(part.detach().cpu() if hasattr(part, "detach") else part))
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    return "data:" + digest.hexdigest()[:32]


def cache_key(archid: str, input_shape, num_classes: int, seed: int, batch=None, batch_size: int = 32) -> str:
    """The hex key of one proxy computation."""
    parts = [VERSION, str(archid), [int(d) for d in input_shape], int(num_classes), int(seed),
             data_key(batch, batch_size)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ProxyCache:
    """Proxy values stored under a folder (created on first write)."""

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, float] | None:
        """The stored values of ``key``, or ``None``."""
        path = self._path(key)
        try:
            if path.stat().st_size > _MAX_ENTRY_BYTES:
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        return {k: math.nan if v is None else float(v) for k, v in data.items()
                if isinstance(k, str) and (v is None or isinstance(v, (int, float)))}

    def put(self, key: str, values: dict[str, float]) -> None:
        """Store ``values`` under ``key`` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({k: (v if v == v and math.isfinite(v) else None) for k, v in values.items()})
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
