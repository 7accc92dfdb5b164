"""The matrix: expand a config into cells, run each through its defense and attack, store it.

A cell is (dataset + scenario options, defense + params, attack + params, seed). Cells are committed
to the store one by one as they finish; a rerun skips every finished cell; a cell that raises is
stored as ``failed`` with its traceback and the run goes on; a cell whose attack needs access the
defense cannot give is stored as ``not-applicable`` with the reason.
"""

from __future__ import annotations

import functools
import itertools
import platform
import sys
import time
import tomllib
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privbench.context import RunContext, config_key
from privbench.errors import NotApplicable, PrivbenchError
from privbench.params import format_spec, parse_spec
from privbench.plugins import Registry
from privbench.store import CellOutcome, Store, utcnow

DEFAULT_DATASET = "digits"
CONFIG_KEYS = {"datasets", "dataset", "defenses", "defense", "attacks", "attack", "seeds", "device",
               "db", "cache_dir", "data_dir", "download"}


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
    """Runs planned cells, sharing scenarios and fitted defenses between the cells that use them."""

    def __init__(self, registry: Registry, store: Store, ctx: RunContext) -> None:
        self.registry = registry
        self.store = store
        self.ctx = ctx
        self.datasets: dict[str, Any] = {}

    def run(self, config: MatrixConfig) -> RunReport:
        started = time.perf_counter()
        cells = plan(self.registry, config)
        finished = self.store.finished_keys()
        pending = [cell for cell in cells if cell.key not in finished]
        run_id = self.store.start_run({"matrix": config.as_dict(), "argv": sys.argv},
                                      versions(self.registry), platform.node())
        report = RunReport(run_id, len(cells), len(cells) - len(pending),
                           keys={cell.key for cell in cells})
        progress = self.ctx.progress
        overall = progress.add(f"matrix: {len(cells)} cells, {report.skipped} already finished",
                               total=len(cells))
        progress.update(overall, completed=report.skipped)
        status = "interrupted"
        try:
            for (dataset, seed), group in itertools.groupby(pending, lambda c: (c.dataset, c.seed)):
                self._run_scenario(dataset, seed, list(group), report, overall)
            status = "finished" if not report.failures else "finished-with-failures"
        finally:
            self.store.finish_run(run_id, status)
            report.wall_s = time.perf_counter() - started
        return report

    def _run_scenario(self, dataset: PluginCall, seed: int, cells: list[CellPlan],
                      report: RunReport, overall) -> None:
        self.ctx.seed = seed
        try:
            scenario = self._scenario(dataset, seed)
        except Exception as error:  # the dataset could not be loaded: every cell fails, run goes on
            for cell in cells:
                self._record(cell, report, overall, *_failure(error))
            return
        for defense, group in itertools.groupby(cells, lambda c: c.defense):
            self._run_defense(scenario, defense, list(group), report, overall)

    def _scenario(self, dataset: PluginCall, seed: int):
        from privbench.datasets import make_scenario
        source = dataset.instance
        load_key = config_key(source.load_config())
        if load_key not in self.datasets:
            self.datasets[load_key] = source.load(self.ctx)
        return make_scenario(source, self.datasets[load_key], seed)

    def _run_defense(self, scenario, defense: PluginCall, cells: list[CellPlan],
                     report: RunReport, overall) -> None:
        fitted = None  # (protection, utility metrics) or the failure, computed at most once
        for cell in cells:
            attack = cell.attack.instance
            reason = attack.missing_access(defense.instance) or attack.unsupported(scenario)
            if reason:
                self._record(cell, report, overall, "not-applicable", reason, None, {}, [])
                continue
            started = utcnow()
            try:
                if fitted is None:
                    fitted = self._fit(scenario, defense)
                if isinstance(fitted, BaseException):
                    raise fitted
                protection, utility = fitted
                metrics, artifacts = self._attack(scenario, protection, cell)
                self._record(cell, report, overall, "done", None, None, {**utility, **metrics},
                             artifacts, started)
            except NotApplicable as reason_found_late:
                self._record(cell, report, overall, "not-applicable", str(reason_found_late), None,
                             {}, [], started)
            except Exception as error:
                if fitted is None:
                    fitted = error
                self._record(cell, report, overall, *_failure(error), started=started)

    def _fit(self, scenario, defense: PluginCall):
        """Fit the defense (a cached shared artifact) and measure its utility and encode cost."""
        from privbench.training import accuracy, apply, seed_everything
        protection = self._protection(scenario, defense)
        test, labels = scenario.images("test"), scenario.labels("test")
        baseline = accuracy(apply(self.ctx.target_model(scenario), test, self.ctx), labels)
        seed_everything(scenario.seed)
        started = time.perf_counter()
        encoded = apply(protection.encoder, test, self.ctx)
        encode_ms = 1000 * (time.perf_counter() - started) / len(test)
        utility = accuracy(apply(protection.server, encoded, self.ctx), labels)
        return protection, {
            "utility.accuracy": utility, "utility.baseline_accuracy": baseline,
            "utility.drop": baseline - utility, "cost.fit_s": protection.fit_s,
            "cost.encode_ms_per_image": encode_ms, **protection.metrics}

    def _protection(self, scenario, defense: PluginCall):
        """The defense fitted on ``scenario`` (or a variant of it), trained once and cached."""
        from privbench.training import seed_everything

        def build():
            seed_everything(scenario.seed)
            held_out = f", classes {list(scenario.held_out)} held out" if scenario.held_out else ""
            self.ctx.progress.log(f"fitting {defense.spec} on {scenario.source.name} "
                                  f"(seed {scenario.seed}{held_out})")
            return defense.instance.fit(scenario, self.ctx)

        protection, fit_s = self.ctx.cache.get_or_build("protection", {
            **scenario.cache_config(), "scenario": scenario.source.params(),
            "defense": defense.name, "params": defense.params}, build)
        protection.fit_s = fit_s
        return protection.to(self.ctx.device)

    def _attack(self, scenario, protection, cell: CellPlan):
        from privbench.training import seed_everything
        seed_everything(scenario.seed)
        self.ctx.fit_defense = functools.partial(self._protection, defense=cell.defense)
        started = time.perf_counter()
        try:
            result = cell.attack.instance.run(scenario, protection, self.ctx)
        finally:
            self.ctx.fit_defense = None
        metrics = {**result.metrics, "cost.attack_s": time.perf_counter() - started}
        return metrics, result.artifacts

    def _record(self, cell: CellPlan, report: RunReport, overall, status: str, reason, error,
                metrics: dict, artifacts: list, started=None) -> None:
        outcome = CellOutcome(
            key=cell.key, dataset=cell.dataset.name, dataset_spec=cell.dataset.spec,
            dataset_params=cell.dataset.params, defense=cell.defense.name,
            defense_spec=cell.defense.spec, defense_params=cell.defense.params,
            attack=cell.attack.name, attack_spec=cell.attack.spec, attack_params=cell.attack.params,
            seed=cell.seed, threat_model=cell.attack.instance.threat_model, status=status,
            started_at=started or utcnow(), finished_at=utcnow(), device=str(self.ctx.device),
            reason=reason, error=error, metrics=metrics, artifacts=artifacts)
        self.store.save_cell(report.run_id, outcome)
        report.outcomes.append(outcome)
        self.ctx.progress.update(overall, advance=1)
        if status != "done":
            self.ctx.progress.log(f"{status}: {cell.label}: {reason}")


def _failure(error: BaseException) -> tuple[str, str, str, dict, list]:
    """(status, one-line reason, traceback, metrics, artifacts) of a failed cell."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = f"{type(error).__name__}: {line}" if line else type(error).__name__
    trace = "".join(traceback.format_exception(error))
    return "failed", reason, trace, {}, []
