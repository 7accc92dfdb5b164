"""Independent random streams: the split, the service, the defender, the attacker, the evaluation."""

from __future__ import annotations

import pytest
import torch

from privbench.plugins import load_registry
from privbench.schedule import CellPlan
from privbench.streams import PARTIES, Streams, seed_globals
from privbench.testing import call_of, dataset_call, harness, run_cell

pytestmark = pytest.mark.slow


def test_the_parties_get_different_documented_seeds():
    streams = Streams.from_seed(0)
    seeds = [getattr(streams, party) for party in PARTIES]
    assert len(set(seeds)) == len(PARTIES)
    assert Streams.from_seed(0) == streams and Streams.from_seed(1) != streams
    import numpy as np  # the documented derivation: SeedSequence(seed).spawn, 63 bits each
    child = np.random.SeedSequence(0).spawn(len(PARTIES))[PARTIES.index("attacker")]
    assert streams.attacker == int(child.generate_state(1, dtype=np.uint64)[0]) >> 1


def captured_shadow_start(defense: str, defense_params: dict | None = None):
    """The shadow attack's freshly built encoder and the harness's scenario, for one cell."""
    registry = load_registry()
    runner = harness()
    cell = CellPlan(dataset_call("digits"), call_of(registry.get("defense", defense).cls, defense_params),
                    call_of(registry.get("attack", "shadow").cls), 0)
    scenario = runner.scenario(cell.dataset, 0)
    protection, _ = runner.protection(scenario, cell.defense)
    view = runner.attack_view(scenario, scenario, cell, protection, protection.encoder(scenario.images("test")[:2]))
    seed_globals(scenario.streams.attacker)
    return view.build_encoder(), scenario, cell


def first_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters()).detach().flatten()


def test_the_shadow_encoder_does_not_start_from_the_target_models_weights():
    shadow, scenario, cell = captured_shadow_start("split", {"layer": "relu2"})
    seed_globals(scenario.streams.service)  # the target model's initial weights
    initial_target = cell.defense.instance.build(scenario.facts()).encoder
    assert not torch.equal(first_weight(shadow), first_weight(initial_target))
    assert first_weight(shadow).shape == first_weight(initial_target).shape  # same architecture


def test_the_shadow_encoder_does_not_start_from_dapters_u_net():
    shadow, scenario, cell = captured_shadow_start("dapter", {"epochs": 1})
    seed_globals(scenario.streams.defender)  # the U-Net's initial weights
    initial_unet = cell.defense.instance.build(scenario.facts()).encoder
    assert not torch.equal(first_weight(shadow), first_weight(initial_unet))


def test_the_attackers_key_is_not_the_defenders_key():
    shadow, scenario, cell = captured_shadow_start("disguised-nets")
    protection, _ = harness().protection(scenario, cell.defense)
    assert not torch.equal(shadow.matrices, protection.encoder.matrices)


def test_changing_only_the_attackers_stream_leaves_the_defense_bit_identical(monkeypatch):
    from privbench_plugins.inverse_network import InverseNetwork
    params = {"epochs": 3}
    original = Streams.from_seed

    def fit_and_attack(change_attacker: bool):
        def streams(seed):
            found = original(seed)
            return Streams(found.seed, found.split, found.service, found.defender,
                           found.attacker + 1 if change_attacker else found.attacker, found.evaluation)
        monkeypatch.setattr(Streams, "from_seed", staticmethod(streams))
        from privbench.artifacts import ArtifactCache
        runner = harness(ArtifactCache(None))
        metrics = run_cell("noise", InverseNetwork, attack_params=params, runner=runner)
        (protection, _), = runner.protections.values()
        return metrics, protection

    base_metrics, base = fit_and_attack(False)
    other_metrics, other = fit_and_attack(True)
    for name in ("encoder", "server"):
        first, second = getattr(base, name).state_dict(), getattr(other, name).state_dict()
        assert all(torch.equal(first[key], second[key]) for key in first)
    assert base_metrics["utility.accuracy"] == other_metrics["utility.accuracy"]
    assert base_metrics["attack.ssim"] != other_metrics["attack.ssim"]  # the attacker drew anew
