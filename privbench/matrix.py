"""The matrix: expand a config into cells, run each through its defense and attack, store it.

A cell is (dataset + scenario options, defense + params, attack + params, seed). Cells are committed
to the store one by one as they finish; a rerun skips every finished cell; a cell that raises is
stored as ``failed`` with its traceback and the run goes on; a cell whose attack needs access the
defense cannot give is stored as ``not-applicable`` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privbench.context import RunContext
from privbench.dryrun import RunPace, estimates
from privbench.errors import PrivbenchError
from privbench.params import parse_spec
from privbench.plugins import Registry
from privbench.schedule import MatrixConfig, first_jobs, next_jobs, plan
from privbench.store import CellOutcome, Store

CONFIG_KEYS = {"datasets", "dataset", "defenses", "defense", "attacks", "attack", "seeds", "device",
               "db", "cache_dir", "data_dir", "download", "executor", "workers", "threads",
               "ray_address", "leaderboard", "cell_timeout", "trust_plugins"}
FAILED = ("failed", "timed-out")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML matrix config; a missing or malformed file is a one-line error."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise PrivbenchError(f"cannot read config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise PrivbenchError(f"config {path} is not valid TOML: {error}") from None
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise PrivbenchError(f"config {path}: unknown key '{sorted(unknown)[0]}'; accepted: "
                             + ", ".join(sorted(CONFIG_KEYS)))
    return data


def entries_from_config(data: dict[str, Any], kind: str) -> list[tuple[str, dict]]:
    """Plugin entries of one kind from a config: ``defenses = ["noise:scale=0.5"]`` strings or
    ``[[defense]]`` tables with ``name`` and parameters (a list value is a sweep)."""
    entries = [parse_spec(text) for text in _as_list(data.get(kind + "s", []), kind + "s")]
    for table in _as_list(data.get(kind, []), kind):
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            raise PrivbenchError(f"config: each [[{kind}]] table needs a name = \"...\" string")
        params = {k: v for k, v in table.items() if k != "name"}
        entries.append((table["name"], params))
    return entries


def _as_list(value: Any, key: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str | dict):
        return [value]
    raise PrivbenchError(f"config: '{key}' must be a list; got {value!r}")


def parse_seeds(value: str | Iterable[int]) -> list[int]:
    """``"0,1,2"`` or a list of integers."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        seeds = [int(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise PrivbenchError(f"bad seeds {value!r}; accepted: integers separated by commas, "
                             "e.g. 0,1,2") from None
    if not seeds:
        raise PrivbenchError("no seeds given; accepted: integers separated by commas, e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def versions(registry: Registry) -> dict[str, str]:
    """Versions of privbench, Python, torch and every plugin package, for the run record."""
    import torch

    import privbench
    found = {"privbench": privbench.__version__, "python": platform.python_version(),
             "torch": torch.__version__}
    for kind in registry.items:
        for item in registry.all(kind):
            found.setdefault(item.package, item.version)
    return found


class FailFast(Exception):
    """Raised by a ``fail_fast`` run at its first failed cell (already stored)."""

    def __init__(self, outcome: CellOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class RunReport:
    run_id: int
    planned: int
    skipped: int
    outcomes: list[CellOutcome] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    wall_s: float = 0.0
    interrupted: list[CellOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[CellOutcome]:
        """The cells that failed or ran past their limit: the run's exit status is 1 then."""
        return [o for o in self.outcomes if o.status in FAILED]


class Timeline:
    """``--timeline FILE``: one JSON line per finished job (stage, label, process, start and end in
    seconds since the epoch, CPU seconds, seconds waiting for another process's artifact), between
    a line that opens the run and one that closes it. ``benchmarks/run.py`` reads it to find where a
    parallel run leaves a worker idle."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.write_text("")

    def write(self, **fields: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(fields) + "\n")

    def job(self, result) -> None:
        timing = result.timing
        self.write(stage=result.job.stage, label=result.job.label,
                   statuses=[o.status for o in result.settled],
                   **(dataclasses.asdict(timing) if timing else {}))


class MatrixRunner:
    """Plans the cells, hands them to an executor stage by stage and stores each one as it finishes.

    The store has one writer, this object, whatever executor runs the jobs (privbench.executors).
    """

    def __init__(self, registry: Registry, store: Store, ctx: RunContext, *, executor: str = "local",
                 workers: int | None = None, threads: int | None = None,
                 ray_address: str | None = None, fail_fast: bool = False,
                 datasets: dict | None = None, timeline: str | Path | None = None) -> None:
        self.registry = registry
        self.timeline = Timeline(timeline) if timeline else None
        self.datasets = datasets or {}  # already loaded (e.g. by the preflight), by load key
        self.interrupted: list[CellOutcome] = []  # cells recorded as interrupted by Ctrl-C / SIGTERM
        self.store = store
        # The run secret: drawn once per store, mixed into every stream but the attacker's.
        self.ctx = ctx if ctx.secret is not None else dataclasses.replace(ctx, secret=store.run_secret())
        self.executor_options = {"name": executor, "workers": workers, "threads": threads,
                                 "ray_address": ray_address}
        self.fail_fast = fail_fast

    def run(self, config: MatrixConfig) -> RunReport:
        from privbench.executors import make_executor
        from privbench.harness import Harness
        started = time.perf_counter()
        cells = plan(self.registry, config)
        finished = self.store.finished_keys()
        pending = [cell for cell in cells if cell.key not in finished]
        options = self.executor_options if pending else {**self.executor_options, "name": "local"}
        if not self.ctx.trust_plugins:
            from privbench.parties.sandbox import make_non_dumpable
            make_non_dumpable()  # no same-user process reads this one's memory through /proc
        harness = Harness(self.ctx)
        harness.datasets.update(self.datasets)
        executor = make_executor(worker=harness, **options)  # nothing to run: no pool
        isolation = "trusted (--trust-plugins)" if self.ctx.trust_plugins else "process"
        run_id = self.store.start_run({"matrix": config.as_dict(), "argv": sys.argv,
                                       "executor": executor.name, "workers": executor.workers,
                                       "torch_threads": executor.threads, "isolation": isolation,
                                       "cell_timeout": self.ctx.cell_timeout},
                                      versions(self.registry), platform.node())
        if self.timeline:
            self.timeline.write(run=run_id, executor=executor.name, workers=executor.workers,
                                started=time.time() - (time.perf_counter() - started))
        report = RunReport(run_id, len(cells), len(cells) - len(pending),
                           keys={cell.key for cell in cells})
        pace = RunPace(estimates(pending, self.store.cells())[0])
        overall = self.ctx.progress.add(self._description(report, executor), total=len(cells))
        self.ctx.progress.update(overall, completed=report.skipped)
        executor.on_change = lambda: self.ctx.progress.update(
            overall, description=self._description(report, executor))
        status = "interrupted"
        try:
            for result in executor.run(first_jobs(pending), next_jobs):
                if self.timeline:
                    self.timeline.job(result)
                for outcome in result.settled:
                    self._record(outcome, report)
                failed = [o for o in result.settled if o.status in FAILED]
                if self.fail_fast and failed:
                    status = "stopped-at-failure"
                    raise FailFast(failed[0])
                for outcome in result.settled:
                    pace.finish(outcome.key)
                self.ctx.progress.update(overall, completed=report.skipped + len(report.outcomes),
                                         description=self._description(report, executor),
                                         left=pace.describe(time.perf_counter() - started))
            status = "finished" if not report.failures else "finished-with-failures"
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one by the command line
            self._record_interrupted(executor.running_jobs(), report)
            raise
        finally:
            executor.close(abort=status == "interrupted")
            self.store.finish_run(run_id, status)
            report.wall_s = time.perf_counter() - started
            if self.timeline:
                self.timeline.write(finished=time.time(), status=status)
        return report

    def _record_interrupted(self, jobs, report: RunReport) -> None:
        """Store the cells that were running as ``interrupted`` (a rerun runs them again)."""
        from privbench.harness import outcome
        for job in jobs:
            if job.stage != "cell":
                continue
            for cell in job.cells:
                self._record(outcome(cell, "interrupted", str(self.ctx.device),
                                     reason="interrupted (Ctrl-C or SIGTERM) while running"), report)
        report.interrupted = [o for o in report.outcomes if o.status == "interrupted"]
        self.interrupted = report.interrupted

    def _description(self, report: RunReport, executor) -> str:
        """Cells done / running / failed, and the shared training under way (parallel executors)."""
        done = sum(o.status != "failed" for o in report.outcomes)
        running = executor.running()
        preparing = running.get("scenario", 0) + running.get("defense", 0)
        training = f" · training {preparing} shared model(s)" if preparing else ""
        return (f"matrix ({executor.name}): {report.planned} cells, {report.skipped} already "
                f"finished · {done} done · {running.get('cell', 0)} running · "
                f"{len(report.failures)} failed{training}")

    def _record(self, outcome: CellOutcome, report: RunReport) -> None:
        self.store.save_cell(report.run_id, outcome)
        report.outcomes.append(outcome)
        self.ctx.progress.cell(outcome)
