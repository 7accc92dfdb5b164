"""Progress reporting: rich bars for the run and for each long training loop on a terminal; plain,
timestamped lines when the output is a log (no TTY: CI, nohup, a pipe)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

LOG_WIDTH = 200  # columns of a table printed to a log (a pipe, a file): a row stays on one line


def output_console() -> Console:
    """The console a command prints its tables on: the terminal's width on a terminal; on a log,
    ``LOG_WIDTH`` columns (``COLUMNS`` when set) instead of rich's 80, which folded every cell of
    a results table into a column a few letters wide."""
    console = Console()
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=LOG_WIDTH)


class TimeLeftColumn(ProgressColumn):
    """The run's own estimate of its time left (``privbench.dryrun.RunPace``), when it has one;
    rich's remaining-time column would extrapolate from the count of cells, which the longest-first
    order of the cells skews."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("left", "")), style="progress.remaining")


class RichProgress:
    """One rich Progress for the run; training loops add a bar that disappears when done."""

    def __init__(self, console: Console | None = None, disable: bool = False) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeLeftColumn(),
                                 console=console, disable=disable, transient=False)

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stop(self) -> None:
        """Stop redrawing (before a final message)."""
        self.progress.stop()

    def log(self, message: str) -> None:
        self.progress.console.print(message)

    def add(self, description: str, total: int):
        return self.progress.add_task(description, total=total)

    def update(self, task_id, **fields) -> None:
        self.progress.update(task_id, **fields)

    def cell(self, outcome) -> None:
        """A finished cell: the bar shows it; only a cell that did not finish as done gets a line."""
        if outcome.status != "done":
            self.log(f"{outcome.status}: {outcome.dataset_spec} · {outcome.defense_spec} · "
                     f"{outcome.attack_spec} · seed {outcome.seed}: {outcome.reason}")

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        task_id = self.progress.add_task(f"  {description}", total=total)
        try:
            yield lambda: self.progress.advance(task_id)
        finally:
            self.progress.remove_task(task_id)


class PlainProgress:
    """Progress for a log: one line per event, nothing that redraws.

    Each training loop (the target model, a defense's fit, an attack's training) prints a line when
    it starts and one with its seconds when it ends; every finished cell prints its defense, attack,
    seed, status, seconds and privacy.score (``cell``); every ``heartbeat_s`` a line gives the cells
    done out of the total and an estimate of the time left. A worker process of a parallel executor
    prints its training lines through its own ``PlainProgress`` (``for_worker``): the same clock,
    each line naming the worker, each line one write, so lines of two processes never mix."""

    def __init__(self, stream=None, heartbeat_s: float = 30.0, started: float | None = None,
                 source: str = "") -> None:
        self.stream = stream or sys.stdout
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic() if started is None else started
        self.source = f"{source}: " if source else ""
        self.totals: dict[int, list[int]] = {}  # task id -> [completed, total]
        self.left: dict[int, str] = {}  # task id -> the run's own estimate of its time left
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_worker(cls, started: float) -> PlainProgress:
        """The progress of a worker process: training lines on this process's stdout (the run's),
        timed from the run's start (``time.monotonic`` is one clock for every process of a
        machine), no heartbeat."""
        return cls(started=started, source=f"worker {os.getpid()}")

    def __enter__(self) -> PlainProgress:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="privbench-heartbeat")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the heartbeat."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def log(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        line = f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {self.source}{message}\n"
        with self._lock:  # one write of the whole line: lines of several processes never interleave
            self.stream.write(line)
            self.stream.flush()

    def add(self, description: str, total: int):
        task_id = len(self.totals)
        self.totals[task_id] = [0, total]
        return task_id

    def update(self, task_id, completed: int | None = None, **fields) -> None:
        if task_id in self.totals and completed is not None:
            self.totals[task_id][0] = completed
        if task_id in self.totals and "left" in fields:
            self.left[task_id] = str(fields["left"])

    def cell(self, outcome) -> None:
        """One line for a finished cell."""
        seconds = (outcome.finished_at - outcome.started_at).total_seconds()
        score = outcome.metrics.get("privacy.score")
        headline = f", privacy.score {score:.3f}" if score is not None else ""
        reason = f": {outcome.reason}" if outcome.reason else ""
        self.log(f"cell {outcome.status} in {seconds:.1f} s: {outcome.dataset_spec} · "
                 f"{outcome.defense_spec} · {outcome.attack_spec} · seed {outcome.seed}{headline}"
                 f"{reason}")

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        started = time.monotonic()
        self.log(f"start: {description}")
        yield lambda: None
        self.log(f"end: {description} ({time.monotonic() - started:.1f} s)")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self.totals:
                done, total = self.totals[0]
                self.log(f"progress: {done}/{total} cells, {self._eta(done, total, self.left.get(0))}")

    def _eta(self, done: int, total: int, left: str | None = None) -> str:
        """Elapsed time and the time left: the run's own estimate when it gave one (weighted by
        each cell's expected cost), else the cells' count extrapolated."""
        elapsed = time.monotonic() - self.started
        if left:
            return f"{elapsed:.0f} s elapsed, {left}"
        if not done:
            return f"{elapsed:.0f} s elapsed, no estimate before the first cell"
        return f"{elapsed:.0f} s elapsed, about {elapsed / done * (total - done):.0f} s left"


class SilentProgress:
    """A progress handle that shows nothing (library use and tests)."""

    def log(self, message: str) -> None:
        pass

    def add(self, description: str, total: int):
        return None

    def update(self, task_id, **fields) -> None:
        pass

    def cell(self, outcome) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        yield lambda: None
