"""The harness: runs the jobs of a matrix, builds each party's view, scores each attack.

For one cell the harness
1. splits the dataset with the seed's ``split`` stream (``privbench.datasets.make_scenario``);
2. fits the defense on the owner's data only (``OwnerData``), seeded from the ``defender`` stream,
   through the artifact cache (``privbench.artifacts``);
3. measures utility: the server on the protected test images, beside the unprotected target model;
4. picks the test images to attack and encodes them with the ``evaluation`` stream: what the
   attacker observed;
5. builds the attacker's view (``privbench.view.AttackView``) from the attack's ``requires`` and the
   defense's ``gives``, seeds the ``attacker`` stream and runs the attack on that view alone;
6. scores the attack's output against the ground truth it never saw (``privbench.scoring``).

``Harness`` runs jobs in one process and keeps datasets, scenarios and fitted defenses between
them; executors decide in which process each job runs.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from privbench.artifacts import LOCK_WAIT_S, ArtifactCache, SharedArtifacts, TrainingContext, config_key
from privbench.context import RunContext, privbench_home
from privbench.datasets import conformed
from privbench.errors import NotApplicable, PrivbenchError
from privbench.metrics import check_values
from privbench.progress import PlainProgress, SilentProgress
from privbench.schedule import CellPlan, Job, JobResult, JobTiming, PluginCall, dataset_load_key
from privbench.scoring import GroundTruth, one_per_class, score
from privbench.store import CellOutcome, utcnow
from privbench.streams import seed_globals
from privbench.view import AttackView, EvaluationData, QueryOracle, frozen_copy, white_box_copy


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


def victim_index(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The test images an attack is scored on: all, or ``count`` covering every class first."""
    if count <= 0 or count >= len(labels):
        return torch.arange(len(labels))
    return one_per_class(labels, count)


def sample_per_class(labels: torch.Tensor, classes: int, count: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """For every class that has images: the indices of up to ``count`` of them, drawn at random."""
    chosen = []
    for c in range(classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members):
            chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return chosen


class Harness:
    """Runs jobs in one process; datasets, scenarios and fitted defenses are kept between jobs."""

    def __init__(self, ctx: RunContext) -> None:
        # Flush subnormal floats to zero in this process. Adam's second moments and the updates of a
        # small, nearly converged model (e.g. He et al.'s 201-parameter conv1 decoder once its rate
        # has been halved a few times) fall below 1e-38, where CPU arithmetic on subnormals is tens
        # of times slower: such a cell ran 11 times longer than the same cell at a higher rate.
        torch.set_flush_denormal(True)
        self.ctx = ctx
        self.artifacts = SharedArtifacts(ctx.cache, ctx.device, ctx.progress)
        self.datasets: dict[str, Any] = {}
        self.scenarios: dict[tuple[str, int], Any] = {}  # (data key, seed) -> Scenario
        self.protections: dict[str, tuple[Any, float]] = {}  # protection key -> (Protection, fit_s)
        self.utilities: dict[str, dict[str, float]] = {}  # protection key -> utility and costs

    @property
    def device(self) -> str:
        return str(self.ctx.device)

    def do(self, job: Job) -> JobResult:
        """Run ``job`` and record its timing (``JobTiming``)."""
        stage = {"scenario": self.prepare_scenario, "defense": self.prepare_defense,
                 "cell": self.run_cell}[job.stage]
        started, cpu, waited = time.time(), time.process_time(), LOCK_WAIT_S[0]
        result = stage(job)
        result.timing = JobTiming(started, time.time(), time.process_time() - cpu,
                                  LOCK_WAIT_S[0] - waited, os.getpid())
        return result

    # -- stages -------------------------------------------------------------------------------------

    def prepare_scenario(self, job: Job) -> JobResult:
        """Load and split the data and train the target model, the shared artifact of every defense.

        Settles nothing: on a failure (e.g. a dataset not on disk) each defense job meets the same
        error and records it for its cells."""
        first = job.cells[0]
        try:
            self.artifacts.target_model(self.scenario(first.dataset, first.seed))
        except Exception:
            pass
        return JobResult(job)

    def prepare_defense(self, job: Job) -> JobResult:
        """Settle the not-applicable cells, fit the defense once for the others."""
        first = job.cells[0]
        result = JobResult(job)
        try:
            scenario = self.scenario(first.dataset, first.seed)
        except Exception as error:
            return failed_job(job, error, self.device)
        facts = scenario.facts()
        refused = first.defense.instance.check_data(facts)
        if refused:  # before any training: the defense's parameters do not fit these images
            error = PrivbenchError(refused)
            return JobResult(job, [outcome(c, "failed", self.device, **failure_fields(error))
                                   for c in job.cells])
        for cell in job.cells:
            attack = cell.attack.instance
            reason = attack.missing_access(cell.defense.instance) or attack.unsupported(facts)
            if reason:
                result.settled.append(outcome(cell, "not-applicable", self.device, reason=reason))
            else:
                result.ready.append(cell)
        if result.ready:
            try:
                self.protection(scenario, first.defense)
            except Exception as error:
                result.settled += [outcome(c, "failed", self.device, **failure_fields(error))
                                   for c in result.ready]
                result.ready = []
        return result

    def run_cell(self, job: Job) -> JobResult:
        """Run one attack on its view and score it."""
        (cell,) = job.cells
        started = utcnow()
        try:
            scenario = self.scenario(cell.dataset, cell.seed)
            utility = self.utility(scenario, cell.defense)
            metrics, artifacts = self.attack(scenario, cell)
        except NotApplicable as found_late:
            return JobResult(job, [outcome(cell, "not-applicable", self.device,
                                           reason=str(found_late), started=started)])
        except Exception as error:
            return JobResult(job, [outcome(cell, "failed", self.device, started=started,
                                           **failure_fields(error))])
        try:  # every stored number has a registered spec and lies in its range
            checked = check_values({**utility, **metrics}, f"cell {cell.label}")
        except PrivbenchError as error:
            return JobResult(job, [outcome(cell, "failed", self.device, started=started,
                                           **failure_fields(error))])
        return JobResult(job, [outcome(cell, "done", self.device, metrics=checked,
                                       artifacts=artifacts, started=started)])

    # -- the data and the defense --------------------------------------------------------------------

    def scenario(self, dataset: PluginCall, seed: int):
        """The (dataset, seed) split into owner / aux / test; the data is loaded once per process."""
        from privbench.datasets import make_scenario
        load_key = dataset_load_key(dataset)
        if (load_key, seed) not in self.scenarios:
            self.scenarios[(load_key, seed)] = make_scenario(
                dataset.instance, self.dataset(dataset), seed, version=dataset.version)
        return self.scenarios[(load_key, seed)]

    def dataset(self, dataset: PluginCall):
        """The loaded images and labels of ``dataset``, once per process."""
        load_key = dataset_load_key(dataset)
        if load_key not in self.datasets:
            self.datasets[load_key] = dataset.instance.load(self.ctx)
        return self.datasets[load_key]

    def protection(self, scenario, defense: PluginCall):
        """The fitted defense and its fit time, loaded (or fitted) once per process."""
        key = config_key(self.artifacts.protection_config(scenario, defense))
        if key not in self.protections:
            self.protections[key] = self.artifacts.protection(scenario, defense)
        return self.protections[key]

    def training(self, seed: int) -> TrainingContext:
        return TrainingContext(self.ctx.device, self.ctx.progress, seed)

    def utility(self, scenario, defense: PluginCall) -> dict[str, float]:
        """The service's accuracy through the protection, its drop from the baseline, the costs and
        the defense's own metrics on the test split; once per process and fitted defense."""
        from privbench.training import accuracy, apply
        key = config_key(self.artifacts.protection_config(scenario, defense))
        if key in self.utilities:
            return self.utilities[key]
        protection, fit_s = self.protection(scenario, defense)
        test, labels = scenario.images("test"), scenario.labels("test")
        evaluation = self.training(scenario.streams.evaluation)
        baseline = accuracy(apply(self.artifacts.target_model(scenario), test, evaluation), labels)
        seed_globals(scenario.streams.evaluation)
        started = time.perf_counter()
        encoded = apply(protection.encoder, test, evaluation)
        encode_ms = 1000 * (time.perf_counter() - started) / len(test)
        utility = accuracy(apply(protection.server, encoded, evaluation), labels)
        metrics = {"utility.accuracy": utility, "utility.baseline_accuracy": baseline,
                   "utility.drop": baseline - utility, "cost.fit_s": fit_s,
                   "cost.encode_ms_per_image": encode_ms, **self.defense_metrics(scenario, defense)}
        self.utilities[key] = metrics
        return metrics

    def defense_metrics(self, scenario, defense: PluginCall) -> dict[str, float]:
        """The defense's ``evaluate`` metrics on the test split (they must be ``defense.*``)."""
        protection, _ = self.artifacts.protection(scenario, defense)  # a copy it cannot spoil
        data = EvaluationData(scenario.facts(), scenario.images("test"),
                              {task: scenario.labels("test", task) for task in scenario.dataset.tasks},
                              device=self.ctx.device, progress=self.ctx.progress,
                              seed=scenario.streams.evaluation)
        seed_globals(scenario.streams.evaluation)
        metrics = defense.instance.evaluate(protection, data) or {}
        wrong = [name for name in metrics if not name.startswith("defense.")]
        if wrong:
            raise PrivbenchError(f"defense '{defense.name}': evaluate() returned '{wrong[0]}'; a "
                                 "defense reports defense.* metrics only")
        return check_values(metrics, f"defense '{defense.name}'")

    # -- the attack ------------------------------------------------------------------------------------

    def held_out_variant(self, scenario, cell: CellPlan):
        """The scenario the attack runs against: the same one, or (for class-membership without a
        probe dataset) one whose owner split lacks target-task classes chosen by the evaluation
        stream."""
        count = cell.attack.instance.held_out_classes()
        if not count or cell.probes is not None:
            return scenario
        order = torch.randperm(scenario.classes(), generator=scenario.streams.generator("evaluation"))
        return scenario.with_held_out(tuple(sorted(order[:count].tolist())))

    def attack(self, scenario, cell: CellPlan) -> tuple[dict[str, float], list]:
        """Run the attack on its view (seeded from the attacker's stream) and score its output."""
        from privbench.training import apply
        attack = cell.attack.instance
        variant = self.held_out_variant(scenario, cell)
        protection, _ = self.protection(variant, cell.defense)
        index = victim_index(scenario.labels("test"), attack.victims())
        seed_globals(scenario.streams.evaluation)
        observed = apply(protection.encoder, scenario.images("test")[index],
                         self.training(scenario.streams.evaluation))
        probes, out_ids = self.probes(scenario, variant, cell)
        view = self.attack_view(variant, scenario, cell, protection, observed, probes)
        seed_globals(scenario.streams.attacker)
        started = time.perf_counter()
        output = attack.run(view)
        attack_s = time.perf_counter() - started
        truth = self.ground_truth(scenario, index, out_ids)
        metrics, artifacts = score(output, truth, cell.attack.name, attack.produces, observed)
        metrics["cost.attack_s"] = attack_s
        if "query" in view.granted:
            metrics["attack.queries"] = float(view.queries)
        return metrics, artifacts

    def probes(self, scenario, variant, cell: CellPlan):
        """A class-statistic attack's probe images with their probe-class ids, and the ids of the
        classes that were out of the owner's training data (both None for other attacks).

        Held-out classes (Sharma & Chen's within-dataset reading): the attacker's aux images, ids =
        their target-task labels, out = the classes the variant's owner split lacks. A probe
        dataset (the paper's MNIST vs Fashion-MNIST): the aux images plus as many images per class
        of the probe dataset's finest task, conformed to the scenario's image shape; the ids of
        all classes are shuffled by the evaluation stream, so an id tells nothing of membership."""
        if cell.attack.instance.produces != "class-statistic":
            return None, None
        aux, labels = scenario.images("aux"), scenario.labels("aux")
        if cell.probes is None:
            return (aux, labels), variant.held_out
        foreign = self.dataset(cell.probes)
        task = max(foreign.tasks.values(), key=lambda t: t.classes)
        generator = scenario.streams.generator("evaluation")
        per_class = max(1, round(len(aux) / scenario.classes()))
        chosen = sample_per_class(foreign.labels[task.name], task.classes, per_class, generator)
        ids = torch.randperm(scenario.classes() + len(chosen), generator=generator)
        images = torch.cat([aux] + [conformed(foreign.images[i], scenario.image_shape) for i in chosen])
        probe_ids = torch.cat([ids[labels]] + [torch.full((len(i),), int(ids[scenario.classes() + j]))
                                                for j, i in enumerate(chosen)])
        return (images, probe_ids), tuple(sorted(ids[scenario.classes():].tolist()))

    @staticmethod
    def ground_truth(scenario, index: torch.Tensor, out_ids=None) -> GroundTruth:
        """What the harness scores against: the attacked originals and their labels, the probe
        classes that were out of training, and the attacker's uninformed guesses from its own aux
        data."""
        tasks = {scenario.target_task, scenario.private_task}
        aux_labels = {task: scenario.labels("aux", task) for task in tasks}
        return GroundTruth(
            originals=scenario.images("test")[index],
            labels={task: scenario.labels("test", task)[index] for task in tasks},
            target_task=scenario.target_task, private_task=scenario.private_task,
            classes=scenario.classes(), aux_mean=scenario.images("aux").mean(0, keepdim=True),
            aux_majority={task: int(labels.bincount().argmax()) for task, labels in aux_labels.items()},
            held_out=tuple(out_ids or ()))

    def attack_view(self, variant, scenario, cell: CellPlan, protection, observed,
                    probes=None) -> AttackView:
        """The attacker's view: what its threat model grants, and nothing else."""
        from privbench.training import apply
        granted = cell.attack.instance.granted_needs()
        tasks = {scenario.target_task, scenario.private_task}
        attacker = self.training(scenario.streams.attacker)

        def encode(images):
            return apply(protection.encoder, images, attacker)

        def build_encoder(generator: torch.Generator):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return cell.defense.instance.build(scenario.facts()).encoder

        def known_pairs(k: int, generator: torch.Generator):
            owner = variant.images("owner")
            chosen = owner[torch.randperm(len(owner), generator=generator)[:k]]
            return chosen.clone(), encode(chosen)

        return AttackView(
            attack=cell.attack.name, granted=granted, facts=scenario.facts(), observed=observed,
            aux_images=scenario.images("aux"),
            aux_labels={task: scenario.labels("aux", task) for task in tasks},
            device=self.ctx.device, progress=self.ctx.progress, seed=scenario.streams.attacker,
            oracle=QueryOracle(encode) if "query" in granted else None,
            encoder=white_box_copy(protection.encoder) if "white-box" in granted else None,
            server=frozen_copy(protection.server) if "server" in granted else None,
            build_encoder=build_encoder if "architecture" in granted else None,
            known_pairs=known_pairs if "known-pairs" in granted else None,
            owner_data=(lambda: (variant.images("owner"),
                                 {task: variant.labels("owner", task) for task in tasks}))
            if "owner-data" in granted else None,
            raw_classifier=lambda task, epochs: self.artifacts.raw_classifier(scenario, task, epochs),
            probes=probes)


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker process builds its RunContext (picklable: sent to every worker)."""

    device: str = "cpu"
    cache_dir: str | None = None
    data_dir: str | None = None
    download: bool = False
    threads: int | None = None  # torch intra-op threads in each worker; None keeps torch's default
    log_since: float | None = None  # the run prints plain log lines (no TTY): its time.monotonic() start

    def context(self) -> RunContext:
        from pathlib import Path
        if self.threads:
            torch.set_num_threads(self.threads)
        progress = (PlainProgress.for_worker(self.log_since) if self.log_since is not None
                    else SilentProgress())
        return RunContext(device=torch.device(self.device), cache=ArtifactCache(self.cache_dir),
                          data_dir=Path(self.data_dir) if self.data_dir else privbench_home() / "data",
                          download=self.download, progress=progress)

    @classmethod
    def of(cls, ctx: RunContext, threads: int | None) -> WorkerSettings:
        root = ctx.cache.root
        log_since = ctx.progress.started if isinstance(ctx.progress, PlainProgress) else None
        return cls(device=str(ctx.device), cache_dir=str(root) if root else None,
                   data_dir=str(ctx.data_dir), download=ctx.download, threads=threads,
                   log_since=log_since)


_PROCESS_HARNESS: dict[WorkerSettings, Harness] = {}


def harness_for(settings: WorkerSettings) -> Harness:
    """This process's Harness for ``settings`` (created once, then reused by every job)."""
    if settings not in _PROCESS_HARNESS:
        _PROCESS_HARNESS[settings] = Harness(settings.context())
    return _PROCESS_HARNESS[settings]


def warm_up(settings: WorkerSettings) -> None:
    """Import torch and every plugin module before the first job arrives (pool initializer)."""
    from privbench.plugins import load_registry
    load_registry()
    harness_for(settings)


def run_job_in_this_process(settings: WorkerSettings, job: Job) -> JobResult:
    """Entry point of a worker process (pool or Ray task)."""
    return harness_for(settings).do(job)
