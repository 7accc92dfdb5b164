"""The attacker's view: an attack sees exactly what its threat model grants, and the harness scores it.

Every built-in attack is checked fact by fact: each access it does not declare is absent from its
view. Deliberately cheating attacks fail with a clear error naming the missing access, and what an
attack does to its copies never reaches another cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from privbench.api import Attack, AttackOutput
from privbench.core import ACCESS
from privbench.plugins import load_registry
from privbench.schedule import CellPlan
from privbench.testing import attack_view, call_of, dataset_call, harness, run_cell
from privbench.view import AccessDenied, AttackView

pytestmark = pytest.mark.slow

ACCESSORS = {
    "query": lambda view: view.query(view.aux_images[:2]),
    "white-box": lambda view: view.encoder,
    "server": lambda view: view.server,
    "architecture": lambda view: view.build_encoder(),
    "known-pairs": lambda view: view.known_pairs(2),
    "owner-data": lambda view: view.owner_data(),
}


@pytest.fixture(scope="module")
def runner():
    return harness(trust_plugins=True)


def view_of(runner, attack_cls, params=None, defense="identity") -> AttackView:
    """The view the harness builds for one cell, without running the attack."""
    registry = load_registry()
    cell = CellPlan(dataset_call("digits"), call_of(registry.get("defense", defense).cls),
                    call_of(attack_cls, params), 0)
    return attack_view(runner, cell)


@pytest.mark.parametrize("attack_name", sorted(load_registry().names("attack")))
def test_every_undeclared_access_is_absent_from_a_built_in_attacks_view(runner, attack_name):
    attack_cls = load_registry().get("attack", attack_name).cls
    view = view_of(runner, attack_cls)
    declared = attack_cls.from_params({}).granted_needs()
    for fact, read in ACCESSORS.items():
        if fact in declared:
            read(view)  # granted: it works
        else:
            with pytest.raises(AccessDenied, match=f"needs '{fact}' access"):
                read(view)
    assert set(ACCESSORS) | {"image-like"} == set(ACCESS)  # every capability fact is checked


@pytest.mark.parametrize("forbidden", ["test_images", "test_labels", "owner_images", "key",
                                       "scenario", "protection"])
def test_the_view_never_holds_the_ground_truth_or_the_key(runner, forbidden):
    view = view_of(runner, load_registry().get("attack", "rmle").cls)
    with pytest.raises(AccessDenied, match="never holds"):
        getattr(view, forbidden)


def test_the_view_is_read_only(runner):
    view = view_of(runner, load_registry().get("attack", "inverse-network").cls)
    with pytest.raises(AttributeError, match="read-only"):
        view.observed = torch.zeros(1)


def test_aux_labels_only_for_the_tasks_the_attacker_knows(runner):
    view = view_of(runner, load_registry().get("attack", "inverse-network").cls)
    assert len(view.aux_labels("digit")) == len(view.aux_images)
    with pytest.raises(AccessDenied, match="magnitude"):
        view.aux_labels("magnitude")  # digits' third task: neither the target nor the private one


@dataclass
class ReadsTestImages(Attack):
    name: ClassVar[str] = "reads-test-images"
    summary: ClassVar[str] = "cheats: returns the clean test images"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        return AttackOutput(reconstruction=view.test_images)


@dataclass
class ReadsTheKey(Attack):
    name: ClassVar[str] = "reads-the-key"
    summary: ClassVar[str] = "cheats: a black-box attack that takes the encoder's buffers"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        key = view.encoder.matrices  # the encoder needs white-box access, which it did not declare
        return AttackOutput(reconstruction=key)


@dataclass
class ReadsTestLabels(Attack):
    name: ClassVar[str] = "reads-test-labels"
    summary: ClassVar[str] = "cheats: predicts with the test labels"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    produces: ClassVar[str] = "labels"

    def run(self, view) -> AttackOutput:
        return AttackOutput(predictions={view.private_task: view.test_labels})


@pytest.mark.parametrize("cheat, message", [
    (ReadsTestImages, "never holds the clean test images"),
    (ReadsTheKey, "needs 'white-box' access"),
    (ReadsTestLabels, "never holds the test labels"),
])
def test_a_cheating_attack_fails_with_a_clear_error(cheat, message):
    with pytest.raises(AssertionError, match=message):
        run_cell("disguised-nets", cheat, defense_params={"noise": 0.0})


@dataclass
class ZeroesItsEncoder(Attack):
    name: ClassVar[str] = "zeroes-its-encoder"
    summary: ClassVar[str] = "vandal: zeroes the white-box encoder it was given"
    threat_model: ClassVar[str] = "white-box"
    requires: ClassVar[frozenset[str]] = frozenset({"white-box", "query"})

    def run(self, view) -> AttackOutput:
        with torch.no_grad():
            for parameter in view.encoder.parameters():
                parameter.zero_()
        return AttackOutput(reconstruction=view.aux_images[: len(view.observed)])


@dataclass
class Decodes(Attack):
    name: ClassVar[str] = "decodes"
    summary: ClassVar[str] = "least squares from queried features back to pixels"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        z = view.query(view.aux_images).flatten(1).double()
        weights = torch.linalg.lstsq(z, view.aux_images.flatten(1).double()).solution
        reconstructed = (view.observed.flatten(1).double() @ weights).float()
        return AttackOutput(reconstruction=reconstructed.reshape(-1, *view.image_shape))


def test_what_an_attack_does_to_its_copy_never_reaches_the_next_cell():
    runner = harness()
    before = run_cell("split", Decodes, defense_params={"layer": "conv1"}, runner=runner)
    run_cell("split", ZeroesItsEncoder, defense_params={"layer": "conv1"}, runner=runner)
    after = run_cell("split", Decodes, defense_params={"layer": "conv1"}, runner=runner)
    assert after["attack.ssim"] == pytest.approx(before["attack.ssim"], abs=1e-6)
    assert after["utility.accuracy"] == before["utility.accuracy"]


@dataclass
class ReturnsNaN(Attack):
    name: ClassVar[str] = "returns-nan"
    summary: ClassVar[str] = "returns NaN pixels"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        return AttackOutput(reconstruction=torch.full((len(view.observed), *view.image_shape), float("nan")))


@dataclass
class ReturnsADict(Attack):
    name: ClassVar[str] = "returns-a-dict"
    summary: ClassVar[str] = "returns metrics instead of an output"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view):
        return {"privacy.score": 1.0}


@dataclass
class UnregisteredDiagnostic(Attack):
    name: ClassVar[str] = "unregistered-diagnostic"
    summary: ClassVar[str] = "reports a metric nobody declared"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    def run(self, view) -> AttackOutput:
        return AttackOutput(reconstruction=view.aux_images[: len(view.observed)],
                            diagnostics={"attack.made_up": 1.0})


@pytest.mark.parametrize("attack, message", [
    (ReturnsNaN, "NaN or infinite pixels"),
    (ReturnsADict, "returned dict; run\\(\\) must return a privbench.api.AttackOutput"),
    (UnregisteredDiagnostic, "'attack.made_up', which is no registered metric"),
])
def test_a_bad_output_fails_its_cell_with_a_clear_reason(attack, message):
    with pytest.raises(AssertionError, match=message):
        run_cell("identity", attack)


def test_the_harness_counts_queries_and_scores_against_the_truth():
    metrics = run_cell("identity", Decodes)
    assert metrics["attack.ssim"] > 0.99  # the unprotected baseline is fully broken
    assert metrics["privacy.score"] < 0.02
    aux_count = metrics["attack.queries"]
    assert aux_count > 0 and aux_count == int(aux_count)


def test_victims_are_chosen_by_the_harness_one_per_class_first():
    from privbench.harness import victim_index
    labels = torch.tensor([3, 3, 1, 0, 2, 1, 0, 3, 2, 2])
    chosen = victim_index(labels, 4)
    assert sorted(labels[chosen].tolist()) == [0, 1, 2, 3]
    assert victim_index(labels, 0).tolist() == list(range(10))


def test_the_servers_batch_norm_statistics_survive_training_through_it():
    from privbench.models import classifier
    from privbench.view import frozen_copy
    server = classifier("resnet18", (1, 8, 8), 2)
    frozen = frozen_copy(server)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    shadow = torch.nn.Conv2d(1, 1, 3, padding=1)
    model = torch.nn.Sequential(shadow, frozen).train()  # train() on the whole, as a trainer does
    loss = model(torch.rand(16, 1, 8, 8)).sum()
    loss.backward()
    assert not frozen.training and all(p.grad is None for p in frozen.parameters())
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert shadow.weight.grad is not None


def test_same_set_data_is_an_access_the_attack_must_declare():
    from privbench_plugins.inverse_network import InverseNetwork
    from privbench_plugins.shadow import Shadow
    assert "owner-data" in InverseNetwork.from_params({"data": "same-set"}).granted_needs()
    assert "owner-data" not in InverseNetwork.from_params({}).granted_needs()
    assert "owner-data" in Shadow.from_params({"data": "same-set"}).granted_needs()
    view = view_of(harness(trust_plugins=True), InverseNetwork, {"data": "same-set"})
    images, labels = view.owner_data()
    assert len(images) > len(view.aux_images) and set(labels) == {"parity", "digit"}


def test_a_defense_fits_on_the_owners_data_only():
    from privbench.testing import fresh_artifacts
    seen = {}
    scenario = harness().scenario(dataset_call("digits"), 0)
    defense = call_of(load_registry().get("defense", "identity").cls)
    original_fit = defense.instance.fit

    def spying_fit(owner):
        seen["images"] = owner.images
        with pytest.raises(AccessDenied, match="never holds the clean test images"):
            _ = owner.test_images
        return original_fit(owner)

    object.__setattr__(defense.instance, "fit", spying_fit)
    fresh_artifacts(trust_plugins=True).protection(scenario, defense)  # the spy runs in this process
    assert torch.equal(seen["images"], scenario.images("owner"))
