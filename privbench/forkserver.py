"""Worker processes of ``--executor process`` start from a fork server.

A spawned worker is a fresh interpreter: before its first job it imports torch and every plugin,
and its first job imports ``torch._dynamo`` (the first torch optimizer does) and scikit-learn's
datasets, about 4 s of CPU in all on this project's 2-core machine. A fork server imports them once,
and every worker is a fork of it, ready at once and sharing the server's pages of those libraries.
``privbench matrix --executor process`` starts the server before it imports torch itself, so the
two imports run side by side.

The server preloads one module, ``privbench.preload``, which imports each of ``preload_modules()``
on its own and leaves out any that fails: the stdlib's server preloads its modules itself but
forgives only an ImportError, and a plugin module that raised anything else (or called sys.exit)
would kill it and with it the run. A plugin left out is imported again by each worker's own
``load_registry()``, which records it as broken, as in this process: it fails no run that does not
use it.

The server only imports modules: it runs no torch operation and never touches a GPU. Workers for a
CUDA device are spawned all the same (``process_context``): a process forked after anything may have
initialised the CUDA driver cannot use CUDA, and a spawned worker is safe whatever a plugin module
does when it is imported. Where there is no fork server (Windows) workers are spawned too.
"""

from __future__ import annotations

import multiprocessing

# The module the fork server imports: importing it imports preload_modules(), each on its own.
PRELOAD = "privbench.preload"

# Imported lazily by every worker's first job and, since every party process is a fresh fork, by
# every party that needs them: torch._dynamo by the first torch optimizer (about 1.7 s),
# sklearn.datasets by the offline datasets (about 0.8 s), torchvision's models by every split of a
# model (0.55 s in each party before it was preloaded), scipy's by the attacks that use it.
LAZY_IMPORTS = ("torch._dynamo", "sklearn.datasets", "torchvision.models", "scipy.optimize",
                "scipy.stats")

# privbench's own modules a worker and a party process need, beside the plugins.
HARNESS_MODULES = ("privbench.harness", "privbench.plugins", "privbench.parties.host",
                   "privbench.parties.child", "privbench.parties.roles", "privbench.parties.sandbox")


def preload_modules() -> list[str]:
    """What every worker imports, in order: torch, the modules its first job would import,
    privbench's harness-side modules, and each plugin module (the ``privbench`` entry points).
    Read without importing any of them (``privbench.preload`` imports them)."""
    import importlib.util
    from importlib.metadata import entry_points

    def exists(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    plugins = sorted({point.module for point in entry_points(group="privbench")})
    return ["torch", *LAZY_IMPORTS, *(name for name in HARNESS_MODULES if exists(name)), *plugins]




def is_cuda(device: str) -> bool:
    """Whether a ``--device`` text names a CUDA device (``cuda``, ``cuda:N``), read without torch."""
    return str(device).split(":", 1)[0] == "cuda"


def process_context(device: str = "cpu") -> multiprocessing.context.BaseContext:
    """The multiprocessing context of a worker pool: a preloading fork server for CPU workers where
    the platform has one, else spawn."""
    if is_cuda(device) or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD])
    return context


def start_fork_server() -> None:
    """Start the fork server now: it imports torch and the plugins while the caller goes on."""
    context = process_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()


STOP_WAIT_S = 10.0  # at most this long, at exit, for the fork server to stop


def stop_fork_server() -> None:
    """Ask the fork server to exit now, in the background, once the run has no more workers to
    start. Left alone it exits only when this process does, and tears torch down after it: a log
    pipe shared with it (CI, ``| tee``) stayed open 1.7 s past this process's exit."""
    import atexit
    import sys
    import threading
    from multiprocessing import forkserver
    host = sys.modules.get("privbench.parties.host")
    if host is not None:  # the parties' zygote is a child of the fork server: it goes first
        host.stop_zygote()
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)  # the stdlib's own way to stop it (used by its tests)
    if stop is not None and getattr(server, "_forkserver_pid", None) is not None:
        stopping = threading.Thread(target=_quietly, args=(stop,), daemon=True,
                                    name="privbench-stop-forkserver")
        stopping.start()
        # At exit, let the stop finish before multiprocessing's own exit handler (registered
        # earlier, so run later) removes its temporary folder: the stop unlinks the listener in that
        # folder, and the two racing printed a FileNotFoundError traceback after the run's output.
        atexit.register(stopping.join, STOP_WAIT_S)


def _quietly(stop) -> None:
    """Run the fork server's stop; at interpreter exit multiprocessing may already have removed its
    temporary folder, and the listener's unlink then finds nothing: that is a stopped server too."""
    try:
        stop()
    except FileNotFoundError:
        pass
