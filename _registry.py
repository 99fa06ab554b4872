"""Name tables of the extension points, and the one loader of installed packages' entry points.

An installed package extends einnas by declaring entry points in its metadata::

    [project.entry-points."einnas.ops"]          # modules whose import registers operations
    myops = "mypkg.ops"
    [project.entry-points."einnas.strategies"]   # Strategy subclasses, by --strategy name
    anneal = "mypkg.search:Annealing"
    [project.entry-points."einnas.evaluators"]   # Evaluator subclasses, by --evaluator name
    zero-cost = "mypkg.search:ZeroCostEvaluator"

:func:`load_entry_point` is the one place an entry point is imported (a failure is a
:class:`~einnas.errors.PluginError` naming it). A :class:`Registry` is the table of one
extension point: built-in names first (a plugin cannot take a built-in's name), then the
entry points of its group, which are listed without being imported and loaded when used.

Standard library only, so the command line can list names without start-up cost.
"""

from __future__ import annotations

import importlib
from typing import Iterator

from einnas.errors import EinnasError, PluginError, UsageError


def entry_points(group: str) -> list:
    """The installed entry points of ``group``, sorted by name (read afresh: cheap, and a
    package installed meanwhile shows up)."""
    from importlib import metadata

    return sorted(metadata.entry_points(group=group), key=lambda entry: entry.name)


def load_entry_point(entry):
    """Import ``entry`` and return its object; any failure of the foreign code is one line."""
    try:
        return entry.load()
    except EinnasError:  # e.g. a register_op refusing a name: already one clear line
        raise
    except Exception as error:  # a plugin is foreign code: report it, never a traceback
        raise PluginError(f"plugin entry point {entry.name} = {entry.value} failed: {error}") from None


def _resolve(ref):
    """A table value: the object itself, or ``"module:attr"`` imported on first use (so a
    table may name classes of modules that import this one)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """The named implementations of one extension point (``kind``: strategy, evaluator).

    Built-ins are given as objects or ``"module:attr"`` strings; installed packages add
    more through the entry point ``group``. Mapping-like: ``name in registry``,
    ``registry[name]`` (the class), ``list(registry)`` (the names), ``registry[name] = cls``.
    """

    def __init__(self, kind: str, group: str, option: str, base: str, builtins: dict | None = None):
        self.kind, self.group, self.option, self.base = kind, group, option, base
        self._builtins: dict[str, object] = dict(builtins or {})
        self._loaded: dict[str, object] = {}

    def __setitem__(self, name: str, ref) -> None:
        self._builtins[name] = ref
        self._loaded.pop(name, None)

    def register(self, name: str):
        """Decorator: ``@STRATEGIES.register("anneal")`` above a class defined in-process."""

        def add(cls):
            self[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        """Built-in names in table order, then the entry points' names (nothing imported)."""
        out = list(self._builtins)
        out += [entry.name for entry in entry_points(self.group) if entry.name not in self._builtins]
        return list(dict.fromkeys(out))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name) -> bool:
        return name in self.names()

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str):
        return self.get(name)

    def get(self, name: str):
        """The class registered as ``name``; :class:`UsageError` naming the choices when none is."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtins:
            obj = _resolve(self._builtins[name])
        else:
            entry = next((e for e in entry_points(self.group) if e.name == name), None)
            if entry is None:
                raise UsageError(f"{self.option} {name!r}: expected {_choices(self.names())}")
            obj = load_entry_point(entry)
            base = _resolve(self.base)
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise PluginError(f"plugin entry point {entry.name} = {entry.value}: not a subclass of "
                                  f"{base.__module__}.{base.__qualname__} (the {self.kind} interface)")
        self._loaded[name] = obj
        return obj


def _choices(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
