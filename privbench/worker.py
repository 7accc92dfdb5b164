"""What a worker does with the cells of a matrix: prepare scenarios, fit defenses, run attacks.

The matrix is cut into **jobs** of three stages. A ``scenario`` job loads a (dataset, seed), splits
it and trains the unprotected target model; a ``defense`` job decides which of one defense's cells
are not applicable and fits the defense once for the rest; a ``cell`` job runs one attack. Every
job returns the cells it settled (done, not-applicable or failed) and the cells that may go on to
the next stage (a fitted defense's cells). The shared artifacts a job trains (target model, fitted
defense, examiner) go to the on-disk cache, so a later job, in this process or another, only loads
them.

``CellWorker`` runs jobs in one process and remembers datasets, scenarios and fitted defenses
between them; the executors (``privbench.executors``) decide in which process each job runs.
"""

from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from privbench.context import RunContext, config_key
from privbench.errors import NotApplicable
from privbench.store import CellOutcome, utcnow

if TYPE_CHECKING:
    from privbench.matrix import CellPlan, PluginCall

STAGES = ("scenario", "defense", "cell")  # also the dispatch order of parallel executors


@dataclass(frozen=True)
class Job:
    """One unit of work: a stage and the cells it serves (all of a scenario, one defense's, one)."""

    stage: str
    cells: tuple[CellPlan, ...]

    @property
    def label(self) -> str:
        first = self.cells[0]
        if self.stage == "scenario":
            return f"{first.dataset.spec} · seed {first.seed}"
        if self.stage == "defense":
            return f"{first.dataset.spec} · {first.defense.spec} · seed {first.seed}"
        return first.label


@dataclass
class JobResult:
    """The cells a job settled (to store) and the cells ready for the next stage."""

    job: Job
    settled: list[CellOutcome] = field(default_factory=list)
    ready: list[CellPlan] = field(default_factory=list)


def outcome(cell: CellPlan, status: str, device: str, *, reason: str | None = None,
            error: str | None = None, metrics: dict | None = None, artifacts: list | None = None,
            started=None) -> CellOutcome:
    """The record of one finished cell, as the store keeps it."""
    return CellOutcome(
        key=cell.key, dataset=cell.dataset.name, dataset_spec=cell.dataset.spec,
        dataset_params=cell.dataset.params, defense=cell.defense.name,
        defense_spec=cell.defense.spec, defense_params=cell.defense.params,
        attack=cell.attack.name, attack_spec=cell.attack.spec, attack_params=cell.attack.params,
        seed=cell.seed, threat_model=cell.attack.instance.threat_model, status=status,
        started_at=started or utcnow(), finished_at=utcnow(), device=device, reason=reason,
        error=error, metrics=metrics or {}, artifacts=artifacts or [])


def failure_fields(error: BaseException) -> dict[str, str]:
    """The one-line reason and the traceback of a failed cell."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return {"reason": reason, "error": "".join(traceback.format_exception(error))}


def failed_job(job: Job, error: BaseException, device: str) -> JobResult:
    """Every cell of ``job`` failed with ``error`` (e.g. its worker process died). A scenario job
    settles no cell: its defense jobs meet the failure themselves and record it."""
    if job.stage == "scenario":
        return JobResult(job)
    return JobResult(job, [outcome(c, "failed", device, **failure_fields(error)) for c in job.cells])


def protection_config(scenario, defense: PluginCall) -> dict[str, Any]:
    """Everything that determines a fitted defense: its cache key."""
    return {**scenario.cache_config(), "scenario": scenario.source.params(),
            "defense": defense.name, "params": defense.params}


class CellWorker:
    """Runs jobs in one process; datasets, scenarios and fitted defenses are kept between jobs."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.datasets: dict[str, Any] = {}
        self.scenarios: dict[tuple[str, int], Any] = {}
        self.fitted: dict[str, Any] = {}  # protection key -> fitted Protection
        self.utilities: dict[str, dict[str, float]] = {}  # protection key -> utility and costs

    @property
    def device(self) -> str:
        return str(self.ctx.device)

    def do(self, job: Job) -> JobResult:
        self.ctx.seed = job.cells[0].seed
        stage = {"scenario": self.prepare_scenario, "defense": self.prepare_defense,
                 "cell": self.run_cell}[job.stage]
        return stage(job)

    # -- stages -------------------------------------------------------------------------------

    def prepare_scenario(self, job: Job) -> JobResult:
        """Load and split the data and train the target model, the shared artifact of every defense.

        Settles nothing: on a failure (e.g. a dataset not on disk) each defense job meets the same
        error and records it for its cells."""
        first = job.cells[0]
        try:
            self.ctx.target_model(self.scenario(first.dataset, first.seed))
        except Exception:
            pass
        return JobResult(job)

    def prepare_defense(self, job: Job) -> JobResult:
        """Settle the not-applicable cells, fit the defense once for the others.

        Only the fit: its utility needs the target model, which may still be training elsewhere, so
        each process measures it with its first cell of the defense (``protection``)."""
        first = job.cells[0]
        result = JobResult(job)
        try:
            scenario = self.scenario(first.dataset, first.seed)
        except Exception as error:
            return failed_job(job, error, self.device)
        for cell in job.cells:
            attack = cell.attack.instance
            reason = attack.missing_access(cell.defense.instance) or attack.unsupported(scenario)
            if reason:
                result.settled.append(outcome(cell, "not-applicable", self.device, reason=reason))
            else:
                result.ready.append(cell)
        if result.ready:
            try:
                self.fitted_defense(scenario, first.defense)
            except Exception as error:
                result.settled += [outcome(c, "failed", self.device, **failure_fields(error))
                                   for c in result.ready]
                result.ready = []
        return result

    def run_cell(self, job: Job) -> JobResult:
        """Run one attack against the fitted defense."""
        (cell,) = job.cells
        started = utcnow()
        try:
            scenario = self.scenario(cell.dataset, cell.seed)
            protection, utility = self.protection(scenario, cell.defense)
            metrics, artifacts = self.attack(scenario, protection, cell)
        except NotApplicable as found_late:
            return JobResult(job, [outcome(cell, "not-applicable", self.device,
                                           reason=str(found_late), started=started)])
        except Exception as error:
            return JobResult(job, [outcome(cell, "failed", self.device, started=started,
                                           **failure_fields(error))])
        return JobResult(job, [outcome(cell, "done", self.device, metrics={**utility, **metrics},
                                       artifacts=artifacts, started=started)])

    # -- shared pieces ------------------------------------------------------------------------

    def scenario(self, dataset: PluginCall, seed: int):
        """The (dataset, seed) split into owner / aux / test; the data is loaded once per process."""
        from privbench.datasets import make_scenario
        source = dataset.instance
        load_key = config_key(source.load_config())
        if (dataset.spec, seed) not in self.scenarios:
            if load_key not in self.datasets:
                self.datasets[load_key] = source.load(self.ctx)
            self.scenarios[(dataset.spec, seed)] = make_scenario(source, self.datasets[load_key], seed)
        return self.scenarios[(dataset.spec, seed)]

    def protection(self, scenario, defense: PluginCall) -> tuple[Any, dict[str, float]]:
        """The fitted defense and its utility and cost metrics, each computed once per process."""
        key = config_key(protection_config(scenario, defense))
        protection = self.fitted_defense(scenario, defense)
        if key not in self.utilities:
            self.utilities[key] = self.utility(scenario, protection)
        return protection, self.utilities[key]

    def fitted_defense(self, scenario, defense: PluginCall):
        """The fitted defense, loaded (or fitted) once per process."""
        key = config_key(protection_config(scenario, defense))
        if key not in self.fitted:
            self.fitted[key] = self.fit(scenario, defense)
        return self.fitted[key]

    def fit(self, scenario, defense: PluginCall):
        """The defense fitted on ``scenario`` (or a variant of it): a cached shared artifact."""
        from privbench.training import seed_everything

        def build():
            seed_everything(scenario.seed)
            held_out = f", classes {list(scenario.held_out)} held out" if scenario.held_out else ""
            self.ctx.progress.log(f"fitting {defense.spec} on {scenario.source.name} "
                                  f"(seed {scenario.seed}{held_out})")
            return defense.instance.fit(scenario, self.ctx)

        protection, fit_s = self.ctx.cache.get_or_build("protection",
                                                        protection_config(scenario, defense), build)
        protection.fit_s = fit_s
        return protection.to(self.ctx.device)

    def utility(self, scenario, protection) -> dict[str, float]:
        """The service's accuracy through the protection, its drop from the baseline, the costs."""
        from privbench.training import accuracy, apply, seed_everything
        test, labels = scenario.images("test"), scenario.labels("test")
        baseline = accuracy(apply(self.ctx.target_model(scenario), test, self.ctx), labels)
        seed_everything(scenario.seed)
        started = time.perf_counter()
        encoded = apply(protection.encoder, test, self.ctx)
        encode_ms = 1000 * (time.perf_counter() - started) / len(test)
        utility = accuracy(apply(protection.server, encoded, self.ctx), labels)
        return {"utility.accuracy": utility, "utility.baseline_accuracy": baseline,
                "utility.drop": baseline - utility, "cost.fit_s": protection.fit_s,
                "cost.encode_ms_per_image": encode_ms, **protection.metrics}

    def attack(self, scenario, protection, cell: CellPlan) -> tuple[dict[str, float], list]:
        from privbench.training import seed_everything
        seed_everything(scenario.seed)
        self.ctx.fit_defense = functools.partial(self.fit, defense=cell.defense)
        started = time.perf_counter()
        try:
            result = cell.attack.instance.run(scenario, protection, self.ctx)
        finally:
            self.ctx.fit_defense = None
        metrics = {**result.metrics, "cost.attack_s": time.perf_counter() - started}
        return metrics, result.artifacts


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker process builds its RunContext (picklable: sent to every worker)."""

    device: str = "cpu"
    cache_dir: str | None = None
    data_dir: str | None = None
    download: bool = False
    threads: int | None = None  # torch intra-op threads in each worker; None keeps torch's default

    def context(self) -> RunContext:
        from pathlib import Path

        import torch

        from privbench.context import ArtifactCache, privbench_home
        if self.threads:
            torch.set_num_threads(self.threads)
        return RunContext(device=torch.device(self.device), cache=ArtifactCache(self.cache_dir),
                          data_dir=Path(self.data_dir) if self.data_dir else privbench_home() / "data",
                          download=self.download)

    @classmethod
    def of(cls, ctx: RunContext, threads: int | None) -> WorkerSettings:
        root = ctx.cache.root
        return cls(device=str(ctx.device), cache_dir=str(root) if root else None,
                   data_dir=str(ctx.data_dir), download=ctx.download, threads=threads)


_PROCESS_WORKER: dict[WorkerSettings, CellWorker] = {}


def worker_for(settings: WorkerSettings) -> CellWorker:
    """This process's CellWorker for ``settings`` (created once, then reused by every job)."""
    if settings not in _PROCESS_WORKER:
        _PROCESS_WORKER[settings] = CellWorker(settings.context())
    return _PROCESS_WORKER[settings]


def warm_up(settings: WorkerSettings) -> None:
    """Import torch and every plugin module before the first job arrives (pool initializer)."""
    from privbench.plugins import load_registry
    load_registry()
    worker_for(settings)


def run_job_in_this_process(settings: WorkerSettings, job: Job) -> JobResult:
    """Entry point of a worker process (pool or Ray task)."""
    return worker_for(settings).do(job)
