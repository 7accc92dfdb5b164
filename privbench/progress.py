"""Progress reporting: rich bars for the run and for each long training loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class RichProgress:
    """One rich Progress for the run; training loops add a bar that disappears when done."""

    def __init__(self, console: Console | None = None, disable: bool = False) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=console, disable=disable, transient=False)

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def log(self, message: str) -> None:
        self.progress.console.print(message)

    def add(self, description: str, total: int):
        return self.progress.add_task(description, total=total)

    def update(self, task_id, **fields) -> None:
        self.progress.update(task_id, **fields)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        task_id = self.progress.add_task(f"  {description}", total=total)
        try:
            yield lambda: self.progress.advance(task_id)
        finally:
            self.progress.remove_task(task_id)


class SilentProgress:
    """A progress handle that shows nothing (library use and tests)."""

    def log(self, message: str) -> None:
        pass

    def add(self, description: str, total: int):
        return None

    def update(self, task_id, **fields) -> None:
        pass

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        yield lambda: None
