"""A party's process, from the fork of the zygote to its exit.

``main(fd)`` runs in the fresh fork: it leaves the harness's process group, reads its request,
narrows what it can reach (``privbench.parties.sandbox``: an empty working directory, a bare
environment, no standard input, non-dumpable, Landlock where the kernel has it), sets torch's threads
and device, runs its role (``privbench.parties.roles``) and sends the result back. Whatever the
plugin raises, ``SystemExit`` and ``KeyboardInterrupt`` included, becomes a one-line reason for
that cell; the process then exits without running anything the zygote registered at exit.
"""

from __future__ import annotations

import os
import sys
import traceback
from multiprocessing import connection

from privbench.parties.messages import Setup, from_harness, to_harness


def prepare_zygote() -> None:
    """What every child would otherwise do first: import the roles (and through them torch's
    optimisers and the plugin registry), so a fork starts ready."""
    from privbench.parties import roles, sandbox
    roles.warm()
    sandbox.remember_readable_roots()


def main(fd: int) -> int:
    """The child's whole life; returns its exit status."""
    os.setsid()
    conn = connection.Connection(fd)
    try:
        setup, workdir, path = from_harness(conn.recv_bytes())
        sys.path[:] = path
    except BaseException:  # noqa: BLE001 - the harness went away: nothing to answer
        return 1
    try:
        request = _request(conn)
        _prepare(setup, workdir)
        result = _run(setup, request, conn)
        message = ("result", result)
    except BaseException as error:  # noqa: BLE001 - any failure of plugin code fails this cell only
        message = ("failed", one_line(error), "".join(traceback.format_exception(error)))
    try:
        conn.send_bytes(to_harness(message))
    except BaseException as error:  # noqa: BLE001 - e.g. a result torch.save cannot write
        try:
            conn.send_bytes(to_harness(("failed", f"the result could not be sent back: {one_line(error)}")))
        except BaseException:  # noqa: BLE001
            return 1
    return 0


def _request(conn: connection.Connection):
    """The request, whose plugin classes are imported by name here; a class that cannot be
    imported in a party's process (e.g. defined in a script's ``__main__``) fails with why."""
    try:
        return from_harness(conn.recv_bytes())
    except Exception as error:
        raise RuntimeError(f"the party process could not load the plugin's class: {one_line(error)}; "
                           "a plugin class must be importable by its module's name") from error


def one_line(error: BaseException) -> str:
    """``Type: first line`` of an exception, as a cell's reason."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if isinstance(error, SystemExit):
        return f"SystemExit: plugin code called sys.exit({error.code!r})"
    if isinstance(error, KeyboardInterrupt):
        return "KeyboardInterrupt raised by plugin code (not a Ctrl-C of the run)"
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _prepare(setup: Setup, workdir: str) -> None:
    import torch

    from privbench.parties.sandbox import enter_sandbox
    enter_sandbox(workdir, exclude=setup.exclude)
    if setup.threads:
        torch.set_num_threads(setup.threads)
    torch.set_flush_denormal(True)


def _run(setup: Setup, request, conn: connection.Connection):
    from privbench.parties import roles
    from privbench.parties.channel import PipeChannel
    channel = PipeChannel(conn, relay_progress=setup.relay_progress)
    return roles.run(setup.role, request, channel, setup.device)
