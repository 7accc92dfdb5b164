"""The harness: runs the jobs of a matrix, hands each party what it may have, scores each attack.

The harness process alone holds the scenario, the ground truth, the run secret and the scores. The
plugins' code runs in party processes (``privbench.parties``), each forked from a clean zygote and
given plain tensors: the harness runs no defense or attack code of a cell itself.

For one cell the harness
1. splits the dataset with the ``split`` stream (``privbench.datasets.make_scenario``);
2. has the defender's process check the defense against the public facts and fit it on the owner's
   data only, seeded from the ``defender`` stream; the fitted states go to the artifact cache
   (``privbench.artifacts``);
3. has a fresh defender's process encode the test images once (the ``evaluation`` stream), and
   measures utility on exactly that tensor: the service's process gets the encodings alone and
   returns logits, the harness compares them with the labels; the unprotected target model beside
   it;
4. gives the attacker's process the encodings of the test images it attacks (``observed``), its
   own aux data, its own seed (``attacker``, derived from the public seed alone) and what its threat
   model grants; queries and known pairs are answered by another fresh defender's process, through
   the same code path as the owner's own images (the ``query`` stream);
5. scores the attack's output against the ground truth it never saw (``privbench.scoring``).

Every party process has a wall-time limit (``--cell-timeout``): past it, the process is killed and
the cell stored ``timed-out``; whatever a party raises or exits with fails its cell alone.

``Harness`` runs jobs in one process and keeps datasets, scenarios and fitted states between them;
executors decide in which process each job runs.
"""

from __future__ import annotations

import dataclasses
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
from privbench.parties.guard import TorchSwitches, check_unchanged
from privbench.parties.launcher import PartyFailed, PartyTimedOut
from privbench.parties.messages import (
    AttackRequest,
    DeclareRequest,
    EncodeRequest,
    EvaluateRequest,
    FitRequest,
    ServeRequest,
    StolenClientsRequest,
    output_from_plain,
)
from privbench.progress import PlainProgress, SilentProgress
from privbench.schedule import CellPlan, Job, JobResult, JobTiming, PluginCall, dataset_load_key
from privbench.scoring import GroundTruth, one_per_class, score
from privbench.store import CellOutcome, utcnow

# A party's default wall-time limit: this many seconds per unit of cost hint (the attack's times
# the defense's, or the defense's alone for its fit), never less than MIN_LIMIT_S. Generous on
# purpose: it stops a stalled plugin, not a slow dataset.
LIMIT_S_PER_COST = 1800.0
MIN_LIMIT_S = 1800.0


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
    """The one-line reason and the traceback of a failed cell. A party's failure carries the line
    and the traceback its process sent (that is where the plugin's code ran)."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (PartyFailed, PartyTimedOut)):
        details = getattr(error, "details", "")
        return {"reason": line or type(error).__name__,
                "error": details or "".join(traceback.format_exception(error))}
    reason = f"{type(error).__name__}: {line}" if line else type(error).__name__
    return {"reason": reason, "error": "".join(traceback.format_exception(error))}


def failed_job(job: Job, error: BaseException, device: str) -> JobResult:
    """Every cell of ``job`` failed with ``error`` (e.g. its worker process died). A scenario job
    settles no cell: its defense jobs meet the failure themselves and record it."""
    if job.stage == "scenario":
        return JobResult(job)
    return settled(job, job.cells, error, device)


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
    """Runs jobs in one process; datasets, scenarios and fitted states are kept between jobs."""

    def __init__(self, ctx: RunContext, parties=None) -> None:
        # Flush subnormal floats to zero in this process. Adam's second moments and the updates of a
        # small, nearly converged model (e.g. He et al.'s 201-parameter conv1 decoder once its rate
        # has been halved a few times) fall below 1e-38, where CPU arithmetic on subnormals is tens
        # of times slower: such a cell ran 11 times longer than the same cell at a higher rate.
        torch.set_flush_denormal(True)
        self.ctx = ctx
        self.parties = parties or make_parties(ctx)
        self.switches = TorchSwitches.now()
        self.artifacts = SharedArtifacts(ctx.cache, ctx.device, ctx.progress)
        self.datasets: dict[str, Any] = {}
        self.scenarios: dict[tuple[str, int], Any] = {}  # (data key, seed) -> Scenario
        self.utilities: dict[str, dict[str, float]] = {}  # protection key -> utility and costs

    @property
    def device(self) -> str:
        return str(self.ctx.device)

    def do(self, job: Job) -> JobResult:
        """Run ``job`` and record its timing (``JobTiming``)."""
        stage = {"scenario": self.prepare_scenario, "defense": self.prepare_defense,
                 "cell": self.run_cell}[job.stage]
        started, cpu, waited = time.time(), time.process_time(), LOCK_WAIT_S[0]
        try:
            check_unchanged(self.switches, f"job {job.label}")
            result = stage(job)
        except PrivbenchError as error:
            result = failed_job(job, error, self.device)
        result.timing = JobTiming(started, time.time(), time.process_time() - cpu,
                                  LOCK_WAIT_S[0] - waited, os.getpid())
        return result

    def limit_s(self, cost: float) -> float | None:
        """A party's wall-time limit: ``--cell-timeout`` (0: none), else from the cost hint."""
        if self.ctx.cell_timeout is not None:
            return self.ctx.cell_timeout or None
        return max(MIN_LIMIT_S, LIMIT_S_PER_COST * cost)

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
            declared = self.declarations(scenario, job)
        except Exception as error:
            return settled(job, job.cells, error, self.device)
        if declared["check_data"]:  # before any training: the parameters do not fit these images
            return settled(job, job.cells, PrivbenchError(declared["check_data"]), self.device)
        for cell, unsupported in zip(job.cells, declared["unsupported"], strict=True):
            reason = cell.attack.instance.missing_access(cell.defense.instance) or unsupported
            if reason:
                result.settled.append(outcome(cell, "not-applicable", self.device, reason=reason))
            else:
                result.ready.append(cell)
        if result.ready:
            try:
                self.protection(scenario, first.defense)
            except Exception as error:
                result.settled += settled(job, result.ready, error, self.device).settled
                result.ready = []
        return result

    def declarations(self, scenario, job: Job) -> dict[str, Any]:
        """The defense's ``check_data`` and each attack's ``unsupported``, answered in a party's
        process from the public facts."""
        from privbench.core import Attack, Defense
        defense = job.cells[0].defense
        declaring = type(defense.instance).check_data is not Defense.check_data or any(
            type(c.attack.instance).unsupported is not Attack.unsupported for c in job.cells)
        if not declaring:  # the classes keep the defaults: nothing to ask a party
            return {"check_data": None, "unsupported": [None] * len(job.cells)}
        request = DeclareRequest(defense.instance, tuple(c.attack.instance for c in job.cells),
                                 scenario.facts())
        answer = self.parties.run("declare", request, label=f"defense '{defense.spec}' (declarations)",
                                  limit_s=self.limit_s(1.0))
        unsupported = answer.get("unsupported") if isinstance(answer, dict) else None
        if not isinstance(unsupported, list) or len(unsupported) != len(job.cells):
            raise PartyFailed(f"defense '{defense.spec}': its declarations came back malformed")
        return {"check_data": _text_or_none(answer.get("check_data")),
                "unsupported": [_text_or_none(reason) for reason in unsupported]}

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
            return JobResult(job, [outcome(cell, status_of(error), self.device, started=started,
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
                dataset.instance, self.dataset(dataset), seed, version=dataset.version,
                secret=self.ctx.secret)
        return self.scenarios[(load_key, seed)]

    def dataset(self, dataset: PluginCall):
        """The loaded images and labels of ``dataset``, once per process."""
        load_key = dataset_load_key(dataset)
        if load_key not in self.datasets:  # a dataset plugin never gets the run secret
            self.datasets[load_key] = dataset.instance.load(dataclasses.replace(self.ctx, secret=None))
        return self.datasets[load_key]

    def protection(self, scenario, defense: PluginCall) -> tuple[dict, float]:
        """The fitted defense's states (``encoder``, ``server``) and its fit time: fitted once, in
        the defender's process, and cached."""
        return self.artifacts.protection_state(scenario, defense, lambda: self.fit(scenario, defense))

    def fit(self, scenario, defense: PluginCall) -> dict:
        """``Defense.fit`` in the defender's process: the owner's data in, the fitted states out."""
        held_out = f", classes {list(scenario.held_out)} held out" if scenario.held_out else ""
        self.ctx.progress.log(f"fitting {defense.spec} on {scenario.label}{held_out}")
        request = FitRequest(defense.instance, scenario.facts(), scenario.images("owner"),
                             {task: scenario.labels("owner", task) for task in scenario.dataset.tasks},
                             scenario.streams.defender)
        handlers = {"target_model": lambda: self.artifacts.target_state(scenario)}
        states = self.parties.run("fit", request, label=f"defense '{defense.spec}' (fit)",
                                  limit_s=self.limit_s(defense.instance.cost_hint),
                                  handlers=handlers, progress=self.ctx.progress)
        return checked_states(states, defense.spec)

    def owner_encoding(self, scenario, defense: PluginCall) -> dict:
        """The test images as the data owner sends them: encoded once, in a fresh defender's
        process, with the evaluation stream; cached, so utility and every attack of every worker
        read the very same tensor."""
        state, _ = self.protection(scenario, defense)

        def encode() -> dict:
            request = EncodeRequest(defense.instance, scenario.facts(), state["encoder"],
                                    scenario.streams.evaluation)
            session = self.parties.encoder(request, label=f"defense '{defense.spec}' (encoder)",
                                           limit_s=self.limit_s(defense.instance.cost_hint))
            try:
                started = time.perf_counter()
                encoded = session.encode(self.owner_images(scenario))
                seconds = time.perf_counter() - started
            finally:
                session.close()
            return {"encoded": encoded, "encode_ms": 1000 * seconds / max(1, len(encoded))}

        config = {**self.artifacts.protection_config(scenario, defense), "stream": "evaluation",
                  "images": self.sent_images}
        state, _ = self.ctx.cache.get_or_build("owner-encoding", config, encode)
        return state

    # What the data owner sends: its test images (the conformance kit's decoy harness sends others).
    sent_images = "test"

    def owner_images(self, scenario) -> torch.Tensor:
        return scenario.images("test")

    def utility(self, scenario, defense: PluginCall) -> dict[str, float]:
        """The service's accuracy on the owner's encodings (the attacker observes the same tensor),
        its drop from the baseline, the costs and the defense's own metrics; once per process."""
        from privbench.training import accuracy, apply
        key = config_key(self.artifacts.protection_config(scenario, defense))
        if key in self.utilities:
            return self.utilities[key]
        state, fit_s = self.protection(scenario, defense)
        owner = self.owner_encoding(scenario, defense)
        labels = scenario.labels("test")
        request = ServeRequest(defense.instance, scenario.facts(), state["server"], owner["encoded"],
                               scenario.streams.evaluation)
        logits = self.parties.run("serve", request, label=f"defense '{defense.spec}' (service)",
                                  limit_s=self.limit_s(defense.instance.cost_hint))
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(labels), scenario.classes()):
            raise PartyFailed(f"defense '{defense.spec}': the service returned no logits per test image")
        evaluation = self.training(scenario.streams.evaluation)
        baseline = accuracy(apply(self.artifacts.target_model(scenario), scenario.images("test"),
                                  evaluation), labels)
        utility = accuracy(logits, labels)
        metrics = {"utility.accuracy": utility, "utility.baseline_accuracy": baseline,
                   "utility.drop": baseline - utility, "cost.fit_s": fit_s,
                   "cost.encode_ms_per_image": float(owner["encode_ms"]),
                   **self.defense_metrics(scenario, defense, state)}
        self.utilities[key] = metrics
        return metrics

    def training(self, seed: int) -> TrainingContext:
        return TrainingContext(self.ctx.device, self.ctx.progress, seed)

    def defense_metrics(self, scenario, defense: PluginCall, state: dict) -> dict[str, float]:
        """The defense's ``evaluate`` metrics on the test split (they must be ``defense.*``), in a
        defender's process of their own; none when the defense does not define ``evaluate``."""
        from privbench.core import Defense
        if type(defense.instance).evaluate is Defense.evaluate:
            return {}
        request = EvaluateRequest(defense.instance, scenario.facts(), state["encoder"], state["server"],
                                  scenario.images("test"),
                                  {task: scenario.labels("test", task) for task in scenario.dataset.tasks},
                                  scenario.streams.evaluation)
        metrics = self.parties.run("evaluate", request, label=f"defense '{defense.spec}' (evaluate)",
                                   limit_s=self.limit_s(defense.instance.cost_hint))
        if not isinstance(metrics, dict):
            raise PartyFailed(f"defense '{defense.spec}': evaluate() returned no metrics")
        wrong = [name for name in metrics if not str(name).startswith("defense.")]
        if wrong:
            raise PrivbenchError(f"defense '{defense.name}': evaluate() returned '{wrong[0]}'; a "
                                 "defense reports defense.* metrics only")
        return check_values({str(k): float(v) for k, v in metrics.items()}, f"defense '{defense.name}'")

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
        """Run the attack in the attacker's process and score its output."""
        attack = cell.attack.instance
        variant = self.held_out_variant(scenario, cell)
        state, _ = self.protection(variant, cell.defense)
        index = victim_index(scenario.labels("test"), attack.victims())
        observed = self.owner_encoding(variant, cell.defense)["encoded"][index]
        probes, out_ids = self.probes(scenario, variant, cell)
        request = self.attack_request(variant, scenario, cell, state, observed, probes)
        queries = QueryService(self, variant, cell)
        started = time.perf_counter()
        try:
            plain = self.parties.run("attack", request, label=f"attack '{cell.attack.spec}'",
                                     limit_s=self.limit_s(attack.cost_hint * cell.defense.instance.cost_hint),
                                     handlers=queries.handlers(request.granted), progress=self.ctx.progress)
        finally:
            queries.close()
        attack_s = time.perf_counter() - started
        if isinstance(plain, dict) and "not_applicable" in plain:
            raise NotApplicable(str(plain["not_applicable"]))
        metrics, artifacts = self.score(plain, scenario, cell, index, out_ids, observed)
        metrics["cost.attack_s"] = attack_s
        metrics.update(self.stolen_client_accuracy(plain, variant, cell, state))
        if "query" in request.granted:
            metrics["attack.queries"] = float(queries.count)
        return metrics, artifacts

    def stolen_client_accuracy(self, plain, scenario, cell: CellPlan, state: dict) -> dict[str, float]:
        """``attack.clone_accuracy``: the real server's accuracy on the test images through each
        client the attack stole, mean over the clones (UnSplit's model-stealing measure). Measured in
        a defender's process, and only where the defense gives the attacker the server (the attacker
        is the server); otherwise nothing."""
        from privbench.training import accuracy
        clones = plain.get("stolen_clients") if isinstance(plain, dict) else None
        if not clones or "server" not in cell.defense.instance.access():
            return {}
        labels = scenario.labels("test")
        request = StolenClientsRequest(cell.defense.instance, scenario.facts(), state["server"],
                                       list(clones), scenario.images("test"),
                                       scenario.streams.evaluation)
        logits = self.parties.run("stolen", request, label=f"defense '{cell.defense.spec}' (stolen "
                                  "clients)", limit_s=self.limit_s(cell.defense.instance.cost_hint))
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(clones), len(labels),
                                                                     scenario.classes()):
            raise PartyFailed(f"defense '{cell.defense.spec}': the server returned no logits per "
                              "test image for the stolen clients")
        return {"attack.clone_accuracy": sum(accuracy(each, labels) for each in logits) / len(logits)}

    def score(self, plain, scenario, cell: CellPlan, index: torch.Tensor, out_ids,
              observed: torch.Tensor) -> tuple[dict[str, float], list]:
        """The attack's output, rebuilt from its plain values, scored against the ground truth."""
        truth = self.ground_truth(scenario, index, out_ids)
        return score(output_from_plain(plain), truth, cell.attack.name, cell.attack.instance.produces,
                     observed)

    def attack_request(self, variant, scenario, cell: CellPlan, state: dict, observed: torch.Tensor,
                       probes) -> AttackRequest:
        """What the attacker's process receives: what its threat model grants, and nothing else."""
        granted = frozenset(cell.attack.instance.granted_needs())
        tasks = {scenario.target_task, scenario.private_task}
        owner = None
        if "owner-data" in granted:
            owner = (variant.images("owner"), {task: variant.labels("owner", task) for task in tasks})
        return AttackRequest(
            attack=cell.attack.instance, defense=cell.defense.instance, granted=granted,
            facts=scenario.facts(), observed=observed, aux_images=scenario.images("aux"),
            aux_labels={task: scenario.labels("aux", task) for task in tasks},
            seed=scenario.streams.attacker,
            encoder_state=state["encoder"] if "white-box" in granted else None,
            server_state=state["server"] if "server" in granted else None,
            owner=owner, probes=probes)

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


class QueryService:
    """The harness's answers to an attacker's calls, each only when the cell grants it: queries and
    known pairs go to a fresh defender's process (started at the first call, seeded with the
    secret ``query`` stream), the examiner comes from the shared artifacts."""

    def __init__(self, harness: Harness, scenario, cell: CellPlan) -> None:
        self.harness, self.scenario, self.cell = harness, scenario, cell
        self.session = None
        self.count = 0
        self.pairs = scenario.streams.generator("query")

    def handlers(self, granted: frozenset[str]) -> dict:
        handlers = {"raw_classifier": self.raw_classifier}
        if "query" in granted:
            handlers["query"] = self.query
        if "known-pairs" in granted:
            handlers["known_pairs"] = self.known_pairs
        return handlers

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            defense = self.cell.defense
            state, _ = self.harness.protection(self.scenario, defense)
            request = EncodeRequest(defense.instance, self.scenario.facts(), state["encoder"],
                                    self.scenario.streams.query)
            self.session = self.harness.parties.encoder(
                request, label=f"defense '{defense.spec}' (encoder)",
                limit_s=self.harness.limit_s(self.cell.attack.instance.cost_hint * defense.instance.cost_hint))
        return self.session.encode(images)

    def query(self, images) -> torch.Tensor:
        shape = tuple(self.scenario.image_shape)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(f"query() takes a batch of images N x {' x '.join(map(str, shape))}")
        images = images.to(torch.float32)
        self.count += len(images)
        return self._encode(images)

    def known_pairs(self, k) -> tuple[torch.Tensor, torch.Tensor]:
        owner = self.scenario.images("owner")
        if not isinstance(k, int) or not 0 < k <= len(owner):
            raise ValueError(f"known_pairs(k) takes 1 <= k <= {len(owner)}")
        chosen = owner[torch.randperm(len(owner), generator=self.pairs)[:k]].clone()
        return chosen, self._encode(chosen)

    def raw_classifier(self, task, epochs) -> dict:
        known = {self.scenario.target_task, self.scenario.private_task}
        if task not in known or not isinstance(epochs, int) or not 0 < epochs <= 1000:
            raise ValueError(f"raw_classifier(task, epochs) takes a task of {sorted(known)} and "
                             "1 <= epochs <= 1000")
        return self.harness.artifacts.raw_classifier_state(self.scenario, task, epochs)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def make_parties(ctx: RunContext):
    """Where this run's parties execute: their own processes, or (``--trust-plugins``) this one."""
    from privbench.parties.host import IsolatedParties, TrustedParties
    if ctx.trust_plugins:
        return TrustedParties(ctx.device, ctx.progress)
    private = [str(path) for path in (ctx.cache.root, ctx.data_dir) if path is not None]
    return IsolatedParties(ctx.device, exclude=tuple(private))


def checked_states(states: Any, spec: str) -> dict:
    """A fit's answer: the encoder's and the server's state dicts of tensors, or ``PartyFailed``."""
    if not isinstance(states, dict) or set(states) != {"encoder", "server"} or not all(
            isinstance(part, dict) and all(isinstance(v, torch.Tensor) for v in part.values())
            for part in states.values()):
        raise PartyFailed(f"defense '{spec}': the fit did not return the encoder's and the server's states")
    return states


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def status_of(error: BaseException) -> str:
    """How a cell that raised is stored: ``timed-out`` past its limit, else ``failed``."""
    return "timed-out" if isinstance(error, PartyTimedOut) else "failed"


def settled(job: Job, cells, error: BaseException, device: str) -> JobResult:
    """``cells`` of ``job`` settled by ``error`` (failed, or timed-out)."""
    return JobResult(job, [outcome(c, status_of(error), device, **failure_fields(error)) for c in cells])


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker process builds its RunContext (picklable: sent to every worker). The run secret
    is not part of it: it travels with each job, so a worker's zygote, forked before the first job,
    never holds it."""

    device: str = "cpu"
    cache_dir: str | None = None
    data_dir: str | None = None
    download: bool = False
    threads: int | None = None  # torch intra-op threads in each worker; None keeps torch's default
    log_since: float | None = None  # the run prints plain log lines (no TTY): its time.monotonic() start
    trust_plugins: bool = False
    cell_timeout: float | None = None

    def context(self, secret: int | None) -> RunContext:
        from pathlib import Path
        if self.threads:
            torch.set_num_threads(self.threads)
        progress = (PlainProgress.for_worker(self.log_since) if self.log_since is not None
                    else SilentProgress())
        return RunContext(device=torch.device(_WORKER_DEVICE or self.device), cache=ArtifactCache(self.cache_dir),
                          data_dir=Path(self.data_dir) if self.data_dir else privbench_home() / "data",
                          download=self.download, progress=progress, secret=secret,
                          trust_plugins=self.trust_plugins, cell_timeout=self.cell_timeout)

    @classmethod
    def of(cls, ctx: RunContext, threads: int | None) -> WorkerSettings:
        root = ctx.cache.root
        log_since = ctx.progress.started if isinstance(ctx.progress, PlainProgress) else None
        return cls(device=str(ctx.device), cache_dir=str(root) if root else None,
                   data_dir=str(ctx.data_dir), download=ctx.download, threads=threads,
                   log_since=log_since, trust_plugins=ctx.trust_plugins, cell_timeout=ctx.cell_timeout)


_PROCESS_HARNESS: dict[tuple[WorkerSettings, int | None], Harness] = {}

# This worker's own GPU where the run's ``cuda`` is shared over several (set by ``warm_up``).
_WORKER_DEVICE: str | None = None


def harness_for(settings: WorkerSettings, secret: int | None) -> Harness:
    """This process's Harness for ``settings`` (created once, then reused by every job)."""
    if (settings, secret) not in _PROCESS_HARNESS:
        from privbench.plugins import load_registry
        load_registry()  # the plugins' registered metrics, in a Ray worker too
        _PROCESS_HARNESS[(settings, secret)] = Harness(settings.context(secret))
    return _PROCESS_HARNESS[(settings, secret)]


def warm_up(settings: WorkerSettings, numbering=None, gpus: int = 0) -> None:
    """Pool initializer, before the first job: take this worker's number from the shared
    ``numbering`` counter and with it its GPU of ``gpus`` (``privbench.devices.worker_device``),
    fork this worker's zygote while the worker is still clean (torch and the plugins imported, no
    data, no secret, CUDA untouched), then load the registry."""
    global _WORKER_DEVICE
    if numbering is not None:
        with numbering.get_lock():
            number, numbering.value = numbering.value, numbering.value + 1
        from privbench.devices import worker_device
        _WORKER_DEVICE = worker_device(settings.device, number, gpus)
    if not settings.trust_plugins:
        from privbench.parties.host import start_zygote
        from privbench.parties.sandbox import make_non_dumpable
        start_zygote(fork_here=True)
        make_non_dumpable()  # a harness process: no same-user process reads its memory
    from privbench.plugins import load_registry
    load_registry()


def run_job_in_this_process(settings: WorkerSettings, job: Job, secret: int | None = None) -> JobResult:
    """Entry point of a worker process (pool or Ray task)."""
    return harness_for(settings, secret).do(job)
