"""Loading user plugins that register operations.

A plugin is a Python file (``my_ops.py``) or an importable module name
(``mypackage.ops``) whose import calls :func:`einnas.grammar.register_op`.
Installed packages can also declare an ``einnas.ops`` entry point; those are loaded
with the first grammar. Each plugin is imported once per process.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from einnas.errors import EinnasError, PluginError
from einnas.grammar import registry

_LOADED: set[str] = set()
_ENTRY_POINTS_DONE = [False]


def load_plugins(plugins=()) -> None:
    """Import each plugin (file path or module name) that is not loaded yet."""
    import einnas.grammar.ops  # noqa: F401  (built-ins first, so a plugin cannot take their names)
    import einnas.grammar.ops_extra  # noqa: F401  (LRN, global pooling, dropout, sum, flatten)

    if not _ENTRY_POINTS_DONE[0]:
        _ENTRY_POINTS_DONE[0] = True
        _load_entry_points()
    for plugin in plugins:
        key = str(Path(plugin).resolve()) if _is_file(plugin) else str(plugin)
        if key in _LOADED:
            continue
        _import(str(plugin), key)
        _LOADED.add(key)


def _is_file(plugin) -> bool:
    text = str(plugin)
    return text.endswith(".py") or "/" in text or Path(text).is_file()


def _import(plugin: str, key: str) -> None:
    registry._CURRENT_SOURCE.append(f"plugin {plugin}")
    try:
        if _is_file(plugin):
            path = Path(plugin)
            if not path.is_file():
                raise PluginError(f"plugin {plugin}: file not found")
            name = "einnas_plugin_" + path.stem.replace("-", "_")
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(plugin)
    except EinnasError:
        raise
    except SystemExit as error:  # sys.exit() in a plugin would end einnas with no word why
        raise PluginError(f"plugin {plugin} called sys.exit({error.code!r}) while being imported") from None
    except Exception as error:  # a plugin is foreign code: any failure is reported as one line
        where = ""
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith(Path(plugin).name):
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        raise PluginError(f"plugin {plugin} failed to import{where}: {type(error).__name__}: {error}") from None
    finally:
        registry._CURRENT_SOURCE.pop()


def _load_entry_points() -> None:
    from einnas._registry import entry_points, load_entry_point

    for entry in entry_points("einnas.ops"):
        registry._CURRENT_SOURCE.append(f"entry point {entry.value}")
        try:
            load_entry_point(entry)
        finally:
            registry._CURRENT_SOURCE.pop()
