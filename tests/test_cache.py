"""The artifact cache: state dicts read with weights_only=True, keys that cover everything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from privbench.artifacts import ArtifactCache, SharedArtifacts, config_key
from privbench.datasets import Digits
from privbench.params import param
from privbench.schedule import PluginCall
from privbench.testing import FittedDefenses, call_of, dataset_call, harness

MARKER = "privbench-cache-exploit-ran"


class Exploit:
    """Unpickling this object would create a marker file: code execution from a cache file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_foreign_cache_file_is_rebuilt_never_executed(tmp_path):
    cache = ArtifactCache(tmp_path)
    config = {"what": "test"}
    path = cache.path("target-model", {**config, "recipe": 2})
    path.parent.mkdir(parents=True)
    marker = tmp_path / MARKER
    with open(path, "wb") as handle:  # a file in torch.save's format that runs code when unpickled
        torch.save({"state": Exploit(str(marker)), "build_s": 1.0, "config": "{}"}, handle)
    torch.load(path, weights_only=False)  # the file is dangerous: an unsafe load runs its code
    assert marker.exists()
    marker.unlink()
    state, _ = cache.get_or_build("target-model", config, lambda: {"weight": torch.ones(2)})
    assert not marker.exists()
    assert torch.equal(state["weight"], torch.ones(2))
    reread = ArtifactCache(tmp_path).get_or_build("target-model", config, lambda: pytest.fail("rebuilt"))
    assert torch.equal(reread[0]["weight"], torch.ones(2))  # the rebuilt file is a valid one


def test_a_corrupt_cache_file_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.path("protection", {"x": 1, "recipe": 2})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    state, _ = cache.get_or_build("protection", {"x": 1}, lambda: {"a": torch.zeros(1)})
    assert torch.equal(state["a"], torch.zeros(1))


def test_a_fitted_defense_round_trips_through_state_dicts(tmp_path):
    from privbench.plugins import load_registry
    scenario = harness().scenario(dataset_call("digits"), 0)
    defense = call_of(load_registry().get("defense", "disguised-nets").cls, {"noise": 0.0})
    fitted, _ = FittedDefenses(harness(ArtifactCache(tmp_path))).protection(scenario, defense)
    loaded, _ = FittedDefenses(harness(ArtifactCache(tmp_path))).protection(
        scenario, defense)  # a new process would read the file like this
    images = scenario.images("test")[:8]
    assert torch.equal(fitted.encoder(images), loaded.encoder(images))
    assert torch.equal(loaded.encoder.permutation, fitted.encoder.permutation)


def with_version(call: PluginCall, version: str) -> PluginCall:
    return PluginCall(call.kind, call.name, call.params, call.spec, call.instance, version)


def test_a_plugins_version_is_part_of_every_key():
    from privbench.plugins import load_registry
    from privbench.schedule import CellPlan
    scenario = harness().scenario(dataset_call("digits"), 0)
    defense = call_of(load_registry().get("defense", "noise").cls)
    old, new = with_version(defense, "pkg 1.0"), with_version(defense, "pkg 1.1")
    assert config_key(SharedArtifacts.protection_config(scenario, old)) != \
        config_key(SharedArtifacts.protection_config(scenario, new))
    attack = call_of(load_registry().get("attack", "rmle").cls)
    data = dataset_call("digits")
    assert CellPlan(data, old, attack, 0).key != CellPlan(data, new, attack, 0).key


@dataclass
class DigitsWithAKnob(Digits):
    name: ClassVar[str] = "digits-with-a-knob"
    knob: int = param(0, "a parameter a subclass adds")


def test_a_datasets_key_covers_every_parameter_by_default():
    assert DigitsWithAKnob(knob=1).load_config() != DigitsWithAKnob(knob=2).load_config()
    assert Digits.from_params({"target": "digit"}).load_config() != Digits().load_config()
