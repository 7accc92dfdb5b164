"""Start a party's process and talk to it: the zygote, the pipe, the wall-time limit.

Every party process is a fork of a **zygote**: a process that imported torch, privbench and the
plugins and then did nothing else, so a fork of it holds no scenario, no ground truth, no run secret
and nothing a party before it left behind. Each harness process (the run's own, a worker of
``--executor process``, a Ray task's worker) has one zygote:

- a harness process that is itself still clean (a worker, from its pool initializer, before its
  first job) forks it directly;
- any other one starts it from multiprocessing's fork server (which only imports modules).

The harness asks the zygote for a child over a socket. The zygote keeps one child forked ahead, idle
and waiting on its end of a fresh socket pair, hands the other end to the harness (``SCM_RIGHTS``)
and forks the next spare while the harness talks to this one: the fork's cost is off the harness's
path. The spare is a fork of the same untouched zygote whenever it was made, and that socket pair
is all it holds: it inherits no executor queue, no store and no cache file. A child is never
reused: one request, one process.

``PartyProcess`` is the harness's end: it sends the request, answers the child's calls (queries,
known pairs, the examiner, the target model), relays its progress, and returns its result. A child
that runs past its limit is killed with its whole process group and raises ``PartyTimedOut``; one
that fails, exits or dies raises ``PartyFailed`` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from multiprocessing import connection, reduction
from typing import Any

from privbench.parties.messages import Setup, from_party, to_party

Handler = Callable[..., Any]


class PartyFailed(Exception):
    """A party's process raised, exited or sent something malformed: the cell fails with this line
    (and the party's own traceback as ``details`` when it sent one)."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason)
        self.details = details


class PartyTimedOut(Exception):
    """A party's process ran past its wall-time limit and was killed."""


class Zygote:
    """A clean process that forks one party child per request (see the module docstring)."""

    def __init__(self, fork_here: bool = False) -> None:
        ours, theirs = connection.Pipe(duplex=True)
        if fork_here:
            pid = os.fork()
            if pid == 0:  # the zygote
                ours.close()
                _serve_forever(theirs)
                os._exit(0)
            self.pid = pid
        else:
            from privbench.forkserver import process_context
            context = process_context()
            process = context.Process(target=_serve_forever, args=(theirs,), daemon=True,
                                      name="privbench-zygote")
            with _main_module_hidden():
                process.start()
            self.pid = process.pid
            self._process = process
        theirs.close()
        self.conn = ours
        self.lock = threading.Lock()

    def spawn(self) -> tuple[int, connection.Connection]:
        """A new child: its pid and the harness's end of its socket pair."""
        try:
            with self.lock:
                self.conn.send_bytes(b"spawn")
                fd = reduction.recv_handle(self.conn)
                pid = int(self.conn.recv_bytes().decode())
        except (OSError, EOFError, ValueError) as error:
            raise PartyFailed(f"could not start a party process: the zygote is gone ({error})") from None
        return pid, connection.Connection(fd)

    def alive(self) -> bool:
        if self.conn.closed:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def close(self) -> None:
        """Close the pipe: the zygote exits (its children go on to the end of their request)."""
        self.conn.close()


@contextlib.contextmanager
def _main_module_hidden():
    """While a process starts from the fork server, the caller's ``__main__`` is a bare module:
    multiprocessing would otherwise run the caller's script again in the zygote (and fail for a
    notebook or a script read from standard input). The zygote needs nothing of it."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def _serve_forever(conn: connection.Connection) -> None:
    """The zygote's loop: hand out the spare child per request, fork the next, until the harness
    closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    _die_with_parent()
    _release_fork_server()
    _close_inherited_descriptors(keep=conn.fileno())
    from privbench.parties import child
    child.prepare_zygote()
    gc.freeze()  # a fork's garbage collections leave the zygote's objects (and their pages) alone
    spare = _fork_spare(conn, child)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if request != b"spawn":
            continue
        pid, harness_end = spare
        try:
            reduction.send_handle(conn, harness_end, os.getppid())
            conn.send_bytes(str(pid).encode())
        except (EOFError, OSError):
            return
        finally:
            os.close(harness_end)  # the harness holds its own copy now
        spare = _fork_spare(conn, child)


def _fork_spare(conn: connection.Connection, child) -> tuple[int, int]:
    """Fork the next child, waiting on its end of a new socket pair; returns its pid and the
    harness's end (a descriptor of the zygote's until it is handed over)."""
    import socket
    harness_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        conn.close()
        harness_end.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent()
        os._exit(child.main(child_end.detach()))
    child_end.close()
    return pid, harness_end.detach()


def _release_fork_server() -> None:
    """Close the fork server's "alive" descriptor this process inherited: the fork server exits
    when the harness asks it to, not when the zygote does (a zygote never starts processes there)."""
    from multiprocessing import forkserver
    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def _close_inherited_descriptors(keep: int) -> None:
    """Close every descriptor the zygote inherited but its pipe to the harness and 0-2: a worker's
    executor queues, a store or cache file its harness had open. A party process, a fork of the
    zygote, then holds nothing but its own socket (Landlock does not reach descriptors already
    open)."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - not Linux: close a generous range instead
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent exits (a worker killed mid-job leaves nothing)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


class PartyProcess:
    """The harness's end of one party child: send its request, serve its calls, get its result."""

    def __init__(self, zygote: Zygote, setup: Setup, request: Any, *, limit_s: float | None,
                 label: str) -> None:
        self.label = label
        self.deadline = None if not limit_s else time.monotonic() + limit_s
        self.limit_s = limit_s
        self.workdir = tempfile.mkdtemp(prefix="privbench-party-")
        os.chmod(self.workdir, 0o700)
        self.pid, self.conn = zygote.spawn()
        self.closed = False
        try:
            # first where to import from (the harness's own sys.path, as multiprocessing's spawn
            # does), then the request, whose plugin classes the child imports by name
            self.conn.send_bytes(to_party((setup, self.workdir, list(sys.path))))
            self.conn.send_bytes(to_party(request))
        except OSError as error:
            self.kill()
            raise PartyFailed(f"{label}: could not send the request ({error})") from None

    # -- one message at a time ----------------------------------------------------------------------

    def send(self, message: Any) -> None:
        try:
            self.conn.send_bytes(to_party(message))
        except OSError:
            self.kill()
            raise PartyFailed(f"{self.label}: its process closed the pipe") from None

    def receive(self) -> tuple:
        """The next message of the child, read safely; within the deadline or ``PartyTimedOut``."""
        remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        try:
            ready = self.conn.poll(remaining)
        except (OSError, EOFError):
            ready = True
        if not ready:
            self.kill()
            raise PartyTimedOut(f"{self.label} ran past its limit of {self.limit_s:.0f} s and was killed")
        try:
            data = self.conn.recv_bytes()
        except (EOFError, OSError):
            self.kill()
            raise PartyFailed(f"{self.label}: its process exited before it returned a result") from None
        try:
            message = from_party(data)
        except Exception as error:
            self.kill()
            raise PartyFailed(f"{self.label}: its process sent a message that is not plain data "
                              f"({type(error).__name__})") from None
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            self.kill()
            raise PartyFailed(f"{self.label}: its process sent a malformed message")
        return message

    def result(self, handlers: dict[str, Handler] | None = None, progress=None) -> Any:
        """Serve the child's calls and progress until it returns its result (or fails)."""
        relay = ProgressRelay(progress)
        try:
            while True:
                kind, *rest = self.receive()
                if kind == "result":
                    return rest[0] if rest else None
                if kind == "failed":
                    reason = str(rest[0]) if rest else "failed"
                    details = str(rest[1]) if len(rest) > 1 else ""
                    raise PartyFailed(reason, details)
                if kind == "progress":
                    relay.apply(rest)
                elif kind == "call":
                    self._answer(handlers or {}, rest)
                else:
                    raise PartyFailed(f"{self.label}: its process sent an unknown message '{kind}'")
        finally:
            relay.close()

    def _answer(self, handlers: dict[str, Handler], call: list) -> None:
        method, args = (call + [None, ()])[:2]
        handler = handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            self.send(("error", f"the harness offers no '{method}' to this party"))
            return
        try:
            value = handler(*(args if isinstance(args, (tuple, list)) else ()))
        except (PartyFailed, PartyTimedOut):
            raise
        except Exception as error:  # the party asked for something it may not have: it hears why
            self.send(("error", f"{type(error).__name__}: {error}"))
            return
        self.send(("ok", value))

    # -- the end ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pipe and kill whatever is left of the child and its descendants."""
        self.kill()

    def kill(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.conn.close()
        finally:
            for target in (lambda: os.killpg(self.pid, signal.SIGKILL),
                           lambda: os.kill(self.pid, signal.SIGKILL)):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
            shutil.rmtree(self.workdir, ignore_errors=True)


class ProgressRelay:
    """Applies a child's progress messages to the harness's progress display."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[int, tuple[Any, Callable[[], None]]] = {}

    def apply(self, message: list) -> None:
        if self.progress is None or not message:
            return
        kind, *args = message
        try:
            if kind == "log":
                self.progress.log(str(args[0])[:500])
            elif kind == "start" and len(self.tasks) < 64:
                manager = self.progress.task(str(args[1])[:200], int(args[2]))
                self.tasks[int(args[0])] = (manager, manager.__enter__())
            elif kind == "advance" and int(args[0]) in self.tasks:
                for _ in range(min(int(args[1]), 1_000_000)):
                    self.tasks[int(args[0])][1]()
            elif kind == "end" and int(args[0]) in self.tasks:
                self.tasks.pop(int(args[0]))[0].__exit__(None, None, None)
        except (IndexError, TypeError, ValueError):
            pass  # a malformed progress line is dropped, never trusted

    def close(self) -> None:
        for manager, _ in self.tasks.values():
            manager.__exit__(None, None, None)
        self.tasks.clear()
