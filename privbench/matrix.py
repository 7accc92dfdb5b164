"""The matrix: expand a config into cells, run each through its defense and attack, store it.

A cell is (dataset + scenario options, defense + params, attack + params, seed). Cells are committed
to the store one by one as they finish; a rerun skips every finished cell; a cell that raises is
stored as ``failed`` with its traceback and the run goes on; a cell whose attack needs access the
defense cannot give is stored as ``not-applicable`` with the reason.
"""

from __future__ import annotations

import itertools
import platform
import sys
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privbench.context import RunContext, config_key
from privbench.errors import PrivbenchError
from privbench.params import format_spec, parse_spec
from privbench.plugins import Registry
from privbench.store import CellOutcome, Store

DEFAULT_DATASET = "digits"
CONFIG_KEYS = {"datasets", "dataset", "defenses", "defense", "attacks", "attack", "seeds", "device",
               "db", "cache_dir", "data_dir", "download", "executor", "workers", "threads",
               "ray_address", "leaderboard"}


@dataclass(frozen=True)
class PluginCall:
    """A plugin with validated parameters: the thing a cell runs."""

    kind: str
    name: str
    params: dict[str, Any]
    spec: str  # name plus the parameters that differ from their defaults: the label in tables
    instance: Any = field(compare=False, hash=False)


@dataclass(frozen=True)
class CellPlan:
    dataset: PluginCall
    defense: PluginCall
    attack: PluginCall
    seed: int

    @property
    def key(self) -> str:
        return config_key({"dataset": [self.dataset.name, self.dataset.params],
                           "defense": [self.defense.name, self.defense.params],
                           "attack": [self.attack.name, self.attack.params], "seed": self.seed})

    @property
    def label(self) -> str:
        return f"{self.dataset.spec} · {self.defense.spec} · {self.attack.spec} · seed {self.seed}"


@dataclass
class MatrixConfig:
    """What to run: plugin entries as (name, raw params; a list value is a sweep) and seeds."""

    datasets: list[tuple[str, dict]] = field(default_factory=list)
    defenses: list[tuple[str, dict]] = field(default_factory=list)
    attacks: list[tuple[str, dict]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])

    def as_dict(self) -> dict[str, Any]:
        return {"datasets": self.datasets, "defenses": self.defenses, "attacks": self.attacks,
                "seeds": self.seeds}


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


def expand(registry: Registry, kind: str, entries: list[tuple[str, dict]]) -> list[PluginCall]:
    """Validate each entry and expand list values into one call per combination (a sweep)."""
    calls: list[PluginCall] = []
    for name, raw in entries:
        cls = registry.get(kind, name).cls
        sweep_keys = [k for k, v in raw.items() if isinstance(v, list)]
        for combo in itertools.product(*(raw[k] for k in sweep_keys)):
            instance = cls.from_params({**raw, **dict(zip(sweep_keys, combo, strict=True))})
            params = instance.params()
            defaults = {p.name: p.default for p in cls.parameters()}
            changed = {k: v for k, v in params.items() if defaults.get(k) != v}
            call = PluginCall(kind, name, params, format_spec(name, changed), instance)
            if call not in calls:
                calls.append(call)
    return calls


def plan(registry: Registry, config: MatrixConfig) -> list[CellPlan]:
    """Every cell of the config, in run order (dataset, seed, defense, attack).

    With nothing given: every registered defense x every registered attack on digits."""
    datasets = expand(registry, "dataset", config.datasets or [(DEFAULT_DATASET, {})])
    defenses = expand(registry, "defense",
                      config.defenses or [(n, {}) for n in registry.names("defense")])
    attacks = expand(registry, "attack", config.attacks or [(n, {}) for n in registry.names("attack")])
    return [CellPlan(d, f, a, s) for d in datasets for s in config.seeds for f in defenses
            for a in attacks]


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


@dataclass
class RunReport:
    run_id: int
    planned: int
    skipped: int
    outcomes: list[CellOutcome] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    wall_s: float = 0.0

    @property
    def failures(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class MatrixRunner:
    """Plans the cells, hands them to an executor stage by stage and stores each one as it finishes.

    The store has one writer, this object, whatever executor runs the jobs (privbench.executors).
    """

    def __init__(self, registry: Registry, store: Store, ctx: RunContext, *, executor: str = "local",
                 workers: int | None = None, threads: int | None = None,
                 ray_address: str | None = None) -> None:
        self.registry = registry
        self.store = store
        self.ctx = ctx
        self.executor_options = {"name": executor, "workers": workers, "threads": threads,
                                 "ray_address": ray_address}

    def run(self, config: MatrixConfig) -> RunReport:
        from privbench.executors import make_executor
        from privbench.worker import CellWorker
        started = time.perf_counter()
        cells = plan(self.registry, config)
        finished = self.store.finished_keys()
        pending = [cell for cell in cells if cell.key not in finished]
        options = self.executor_options if pending else {**self.executor_options, "name": "local"}
        executor = make_executor(worker=CellWorker(self.ctx), **options)  # nothing to run: no pool
        run_id = self.store.start_run({"matrix": config.as_dict(), "argv": sys.argv,
                                       "executor": executor.name, "workers": executor.workers},
                                      versions(self.registry), platform.node())
        report = RunReport(run_id, len(cells), len(cells) - len(pending),
                           keys={cell.key for cell in cells})
        overall = self.ctx.progress.add(self._description(report, executor), total=len(cells))
        self.ctx.progress.update(overall, completed=report.skipped)
        executor.on_change = lambda: self.ctx.progress.update(
            overall, description=self._description(report, executor))
        status = "interrupted"
        try:
            for result in executor.run(first_jobs(pending), next_jobs):
                for outcome in result.settled:
                    self._record(outcome, report)
                self.ctx.progress.update(overall, completed=report.skipped + len(report.outcomes),
                                         description=self._description(report, executor))
            status = "finished" if not report.failures else "finished-with-failures"
        finally:
            executor.close()
            self.store.finish_run(run_id, status)
            report.wall_s = time.perf_counter() - started
        return report

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
        if outcome.status != "done":
            label = (f"{outcome.dataset_spec} · {outcome.defense_spec} · {outcome.attack_spec} · "
                     f"seed {outcome.seed}")
            self.ctx.progress.log(f"{outcome.status}: {label}: {outcome.reason}")


def first_jobs(cells: list[CellPlan]) -> list:
    """Per (dataset, seed), in plan order: a job that trains the target model, then one job per
    defense. A defense job does not wait for the target model job: a defense that trains its own
    server fits meanwhile, and one that needs the target model loads it (or waits on the cache's
    lock while another worker trains it)."""
    from privbench.worker import Job
    scenarios: dict[tuple[str, int], dict[str, list[CellPlan]]] = {}
    for cell in cells:
        defenses = scenarios.setdefault((cell.dataset.spec, cell.seed), {})
        defenses.setdefault(cell.defense.spec, []).append(cell)
    jobs = []
    for defenses in scenarios.values():
        jobs.append(Job("scenario", tuple(c for group in defenses.values() for c in group)))
        jobs += [Job("defense", tuple(group)) for group in defenses.values()]
    return jobs


def next_jobs(result) -> list:
    """The jobs a finished job lets go on: a fitted defense -> one job per applicable cell."""
    from privbench.worker import Job
    if result.job.stage == "defense":
        return [Job("cell", (cell,)) for cell in result.ready]
    return []
