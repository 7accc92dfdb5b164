"""Importing this module imports what every worker needs (``privbench.forkserver.preload_modules``):
torch, the modules a first job imports, privbench's harness and every plugin module.

``--executor process``'s fork server imports it before it forks any worker (``privbench.forkserver``),
and so can any clean process that forks workers. Each module is imported on its own and any that
fails is left out, whatever it raised (an exception, SystemExit, KeyboardInterrupt): a plugin that
fails to import must not take the process down. A worker imports such a plugin again in its own
``load_registry()``, which records it as broken, as the local executor does.

``FAILED`` says which modules were left out and why (module -> exception line).

In the fork server itself, importing this module also makes the server's exit skip the
interpreter's teardown (``exit_fast_in_fork_server``).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys


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


def exit_fast_in_fork_server() -> bool:
    """Where the caller is multiprocessing's fork server (its ``main`` imports this module), end
    that process with ``os._exit(0)`` at exit instead of tearing the interpreter down: with torch
    imported the teardown took 1.3 s, which a run then waited for at its own exit
    (``privbench.forkserver.stop_fork_server``) and a log pipe the server holds stayed open as long.
    Called before the preload, so the exit handlers of the modules it imports (registered later)
    run first; multiprocessing's own, registered before, is skipped (the server starts no
    ``multiprocessing.Process`` of its own: it forks with ``os.fork``). The
    server holds no file or buffer to flush; the processes it forks end with ``os._exit`` already.
    Returns whether it did."""
    suffix = os.path.join("multiprocessing", "forkserver.py")
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_code.co_filename.endswith(suffix):
            atexit.register(os._exit, 0)
            return True
        frame = frame.f_back
    return False


exit_fast_in_fork_server()
FAILED: dict[str, str] = _preload_all()
