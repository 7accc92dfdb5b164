"""Every built-in plugin keeps the contracts of privbench.testing, the kit plugin authors use."""

from __future__ import annotations

import pytest

from privbench.plugins import load_registry
from privbench.testing import check_attack, check_params, check_registers

pytestmark = pytest.mark.slow

FAST = {  # each attack at a size that runs in seconds; the kit runs it twice
    "inverse-network": {"epochs": 2},
    "attribute-inference": {"epochs": 2},
    "examiner": {"epochs": 2},
    "class-membership": {},
    "rmle": {"iterations": 20, "images": 10},
    "shadow": {"epochs": 2, "iterations": 20, "images": 10},
    "known-plaintext": {"pairs": 50},
    "unsplit": {"iterations": 1, "input_steps": 5, "model_steps": 5, "images": 4},
    "likelihood": {"iterations": 20, "width": 4, "images": 4},
    "fora": {"iterations": 10, "batch_size": 16, "width": 8, "decoder_width": 8},
}
DATASETS = {"class-membership": {"target": "digit"}}  # needs >= 4 target classes


def test_every_built_in_attack_is_covered():
    builtin = {item.name for item in load_registry().all("attack") if item.package == "privbench"}
    assert builtin == set(FAST)


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_built_in_attack_keeps_the_attack_contract(name):
    cls = load_registry().get("attack", name).cls
    metrics = check_attack(cls, FAST[name], defense="identity", dataset_params=DATASETS.get(name))
    assert 0.0 <= metrics["privacy.score"] <= 1.0


@pytest.mark.parametrize("name", ["digits", "lfw-subset", "mnist", "fashion-mnist", "cifar10", "celeba"])
def test_each_built_in_dataset_registers_and_validates_its_parameters(name):
    cls = load_registry().get("dataset", name).cls
    check_registers(cls)
    check_params(cls)
