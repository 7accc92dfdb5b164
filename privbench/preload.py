"""Importing this module imports what every worker needs (``privbench.forkserver.preload_modules``):
torch, the modules a first job imports, privbench's harness and every plugin module.

``--executor process``'s fork server imports it before it forks any worker (``privbench.forkserver``),
and so can any clean process that forks workers. Each module is imported on its own and any that
fails is left out, whatever it raised (an exception, SystemExit, KeyboardInterrupt): a plugin that
fails to import must not take the process down. A worker imports such a plugin again in its own
``load_registry()``, which records it as broken, as the local executor does.

``FAILED`` says which modules were left out and why (module -> exception line).
"""

from __future__ import annotations

import importlib


def preload(modules: list[str]) -> dict[str, str]:
    """Import each of ``modules``; the ones that failed, with a one-line reason."""
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as error:  # noqa: BLE001 - a broken plugin must not stop the importer
            line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            failed[name] = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return failed


def _preload_all() -> dict[str, str]:
    try:
        from privbench.forkserver import preload_modules
        modules = preload_modules()
    except BaseException as error:  # noqa: BLE001 - e.g. unreadable package metadata: preload nothing
        return {"(privbench.forkserver.preload_modules)": f"{type(error).__name__}: {error}"}
    return preload(modules)


FAILED: dict[str, str] = _preload_all()
