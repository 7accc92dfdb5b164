"""A party's one way out: calls to the harness, and its progress lines.

In a party's process the channel is its socket to the harness (``PipeChannel``): a call sends the
method's name and plain arguments and waits for the answer; the harness decides, from the cell's
grants, whether to answer. With ``--trust-plugins`` the same role code runs in the harness's own
process with a ``LocalChannel`` that calls the harness's handlers directly.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from multiprocessing import connection
from typing import Any

from privbench.errors import PrivbenchError
from privbench.parties.messages import from_harness, to_harness


class HarnessRefused(PrivbenchError):
    """The harness refused a party's call (e.g. an access the cell does not grant)."""


class PipeChannel:
    """The child's end of its socket pair."""

    def __init__(self, conn: connection.Connection, relay_progress: bool = True) -> None:
        self._conn = conn
        self.progress = RelayProgress(self._notify) if relay_progress else _Quiet()

    def call(self, method: str, *args: Any) -> Any:
        self._conn.send_bytes(to_harness(("call", method, args)))
        kind, value = from_harness(self._conn.recv_bytes())
        if kind != "ok":
            raise HarnessRefused(str(value))
        return value

    def receive(self) -> Any:
        """The harness's next message (an encoding session's next batch)."""
        return from_harness(self._conn.recv_bytes())

    def reply(self, value: Any) -> None:
        self._conn.send_bytes(to_harness(("result", value)))

    def _notify(self, *message: Any) -> None:
        self._conn.send_bytes(to_harness(("progress", *message)))


class LocalChannel:
    """``--trust-plugins``: the harness's handlers, called in its own process."""

    def __init__(self, handlers: dict[str, Callable[..., Any]] | None, progress) -> None:
        self._handlers = handlers or {}
        self.progress = progress

    def call(self, method: str, *args: Any) -> Any:
        if method not in self._handlers:
            raise HarnessRefused(f"the harness offers no '{method}' to this party")
        return self._handlers[method](*args)


class RelayProgress:
    """The progress interface of privbench's training loops, sent to the harness as lines. Steps
    are counted here and sent at most every ``EVERY_S`` seconds: a loop of 500 small steps costs
    a handful of messages, not 500."""

    EVERY_S = 0.25

    def __init__(self, notify: Callable[..., None]) -> None:
        self._notify = notify
        self._ids = itertools.count()

    def log(self, message: str) -> None:
        self._notify("log", str(message))

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        task_id = next(self._ids)
        self._notify("start", task_id, str(description), int(total))
        pending, sent = [0], [time.monotonic()]

        def advance() -> None:
            pending[0] += 1
            if time.monotonic() - sent[0] >= self.EVERY_S:
                self._notify("advance", task_id, pending[0])
                pending[0], sent[0] = 0, time.monotonic()

        try:
            yield advance
        finally:
            if pending[0]:
                self._notify("advance", task_id, pending[0])
            self._notify("end", task_id)


class _Quiet:
    def log(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        yield lambda: None
