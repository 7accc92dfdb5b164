"""The plan of a matrix: its cells, the stages a cell passes through, the jobs, their order.

A **cell** is (dataset + scenario options, defense + params, attack + params, seed). A cell passes
through three **stages**, each a **job** that serves one or more cells:

1. ``scenario``: per (dataset, seed), load and split the data and train the service's target model
   (a shared artifact; every defense that starts from it loads it);
2. ``defense``: per (dataset, seed, defense), settle the cells whose attack is not applicable and
   fit the defense once for the others (a shared artifact);
3. ``cell``: per cell, run the attack on its view and score it.

A job's result settles some cells (done, not-applicable, failed) and lets others go on
(``next_jobs``). A defense job does not wait for the scenario job: a defense that trains its own
server fits meanwhile, and one that needs the target model waits on the cache's lock while another
worker trains it. Parallel executors start the most urgent waiting job first (``priority``).
Executors (``privbench.executors``) only decide where and when a job runs; the harness
(``privbench.harness``) does the work.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from privbench.errors import PrivbenchError
from privbench.keys import config_key
from privbench.params import format_spec
from privbench.plugins import Registry
from privbench.store import CellOutcome

STAGES = ("scenario", "defense", "cell")  # also the dispatch order of parallel executors
DEFAULT_DATASET = "digits"


@dataclass(frozen=True)
class PluginCall:
    """A plugin with validated parameters: the thing a cell runs."""

    kind: str
    name: str
    params: dict[str, Any]
    spec: str  # name plus the parameters that differ from their defaults: the label in tables
    instance: Any = field(compare=False, hash=False)
    version: str = ""  # package, version and cache_version: part of every key built on the plugin


def dataset_load_key(dataset: PluginCall) -> str:
    """What determines a dataset's loaded images (its load config and plugin version): the key
    under which a process keeps them loaded."""
    return config_key({**dataset.instance.load_config(), "version": dataset.version})


@dataclass(frozen=True)
class CellPlan:
    dataset: PluginCall
    defense: PluginCall
    attack: PluginCall
    seed: int
    # A class-statistic attack's out-of-training probe dataset (Attack.probe_dataset), or None. It
    # follows from the dataset's name and the attack's parameters, so the key need not name it.
    probes: PluginCall | None = None

    @property
    def key(self) -> str:
        return config_key({"dataset": [self.dataset.name, self.dataset.params, self.dataset.version],
                           "defense": [self.defense.name, self.defense.params, self.defense.version],
                           "attack": [self.attack.name, self.attack.params, self.attack.version],
                           "seed": self.seed})

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


def expand(registry: Registry, kind: str, entries: list[tuple[str, dict]],
           problems: list[str] | None = None) -> list[PluginCall]:
    """Validate each entry and expand list values into one call per combination (a sweep). With
    ``problems``, a bad entry's one-line error is appended there and the others go on; without, the
    first one raises."""
    calls: list[PluginCall] = []
    for name, raw in entries:
        try:
            calls += [c for c in _expand_entry(registry, kind, name, raw) if c not in calls]
        except PrivbenchError as problem:
            if problems is None:
                raise
            problems.append(problem.format_message())
    return calls


def _expand_entry(registry: Registry, kind: str, name: str, raw: dict) -> list[PluginCall]:
    """One entry's calls, one per combination of its swept values."""
    calls: list[PluginCall] = []
    item = registry.get(kind, name)
    cls = item.cls
    sweep_keys = [k for k, v in raw.items() if isinstance(v, list)]
    defaults = {p.name: p.default for p in cls.parameters()}
    version = f"{item.package} {item.version} cache {cls.cache_version}"
    for combo in itertools.product(*(raw[k] for k in sweep_keys)):
        instance = cls.from_params({**raw, **dict(zip(sweep_keys, combo, strict=True))})
        params = instance.params()
        changed = {k: v for k, v in params.items() if defaults.get(k) != v}
        call = PluginCall(kind, name, params, format_spec(name, changed), instance, version)
        if call not in calls:
            calls.append(call)
    return calls


def plan(registry: Registry, config: MatrixConfig) -> list[CellPlan]:
    """Every cell of the config, in run order (dataset, seed, defense, attack).

    With nothing given: every registered defense x every registered attack on digits."""
    problems: list[str] = []  # every bad spec is reported at once, one line each
    datasets = expand(registry, "dataset", config.datasets or [(DEFAULT_DATASET, {})], problems)
    defenses = expand(registry, "defense",
                      config.defenses or [(n, {}) for n in registry.names("defense")], problems)
    attacks = expand(registry, "attack", config.attacks or [(n, {}) for n in registry.names("attack")],
                     problems)
    if not config.seeds:
        problems.append("no seeds given; accepted: integers separated by commas, e.g. 0,1,2")
    if problems:
        raise PrivbenchError("\n".join(problems))
    probes = {(d.spec, a.spec): probe_call(registry, d, a) for d in datasets for a in attacks}
    return [CellPlan(d, f, a, s, probes[(d.spec, a.spec)]) for d in datasets for s in config.seeds
            for f in defenses for a in attacks]


def probe_call(registry: Registry, dataset: PluginCall, attack: PluginCall) -> PluginCall | None:
    """The out-of-training probe dataset of a class-statistic attack on ``dataset`` (default
    parameters), or None; an unknown name fails here, before anything trains."""
    name = attack.instance.probe_dataset(dataset.name)
    if name is None:
        return None
    if name == dataset.name:
        raise PrivbenchError(f"attack '{attack.spec}': the out-of-training probe dataset must differ "
                             f"from the scenario's dataset '{dataset.name}'")
    return expand(registry, "dataset", [(name, {})])[0]


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


@dataclass(frozen=True)
class JobTiming:
    """When and where a job ran: wall-clock start and end (seconds since the epoch, comparable
    across the processes of one machine), the CPU seconds its process spent on it, the seconds it
    spent waiting for another process to finish a shared artifact (a file lock), and the pid."""

    started: float
    finished: float
    cpu_s: float
    lock_wait_s: float
    pid: int


@dataclass
class JobResult:
    """The cells a job settled (to store), the cells ready for the next stage, and its timing."""

    job: Job
    settled: list[CellOutcome] = field(default_factory=list)
    ready: list[CellPlan] = field(default_factory=list)
    timing: JobTiming | None = None


def first_jobs(cells: Iterable[CellPlan]) -> list[Job]:
    """Per (dataset, seed), in plan order: a job that trains the target model, then one job per
    defense."""
    scenarios: dict[tuple[str, int], dict[str, list[CellPlan]]] = {}
    for cell in cells:
        defenses = scenarios.setdefault((cell.dataset.spec, cell.seed), {})
        defenses.setdefault(cell.defense.spec, []).append(cell)
    jobs = []
    for defenses in scenarios.values():
        jobs.append(Job("scenario", tuple(c for group in defenses.values() for c in group)))
        jobs += [Job("defense", tuple(group)) for group in defenses.values()]
    return jobs


def next_jobs(result: JobResult) -> list[Job]:
    """The jobs a finished job lets go on: a fitted defense -> one job per applicable cell."""
    if result.job.stage == "defense":
        return [Job("cell", (cell,)) for cell in result.ready]
    return []


def attack_on_scenario(job: Job) -> tuple[str, int, str]:
    """(dataset, seed, attack) of a cell job: the cells that share the attack's own artifacts."""
    first = job.cells[0]
    return first.dataset.spec, first.seed, first.attack.spec


def priority(job: Job, opens_attack: bool = False) -> tuple[int, float, float]:
    """Which waiting job starts first: earlier stages (they unlock the most work); among defenses,
    those that do not wait for the target model, then the costliest fits; among cells, first the one
    that opens its attack on a (dataset, seed) (``opens_attack``: it builds the attack's shared
    artifacts, such as the examiner's raw-image classifiers, early, so that the attack's later cells
    load them instead of waiting for them at the end of the run), then the longest (attack's
    cost_hint times the defense's), so that no long cell is left for the end."""
    stage = STAGES.index(job.stage)
    defense = job.cells[0].defense.instance
    if job.stage == "defense":
        return stage, float(defense.needs_target_model), -defense.cost_hint
    if job.stage == "cell":
        return stage, float(not opens_attack), -job.cells[0].attack.instance.cost_hint * defense.cost_hint
    return stage, 0.0, 0.0
