"""Behaviour of ``attribute-inference``: standardised features, and a classifier that fits the shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from privbench.api import Defense, Protection, param, split_model
from privbench.testing import harness, run_cell
from privbench_plugins.attribute_inference import (
    AttributeInference,
    attacker_classifier,
    feature_statistics,
    standardised,
)

# Every digit; digits' default tasks are the public ``parity`` and the private ``digit`` (10 classes).
DIGITS = {"limit": 0, "target_epochs": 15}
ATTACK = {"epochs": 10}


class Gain(nn.Module):
    """Multiply by a constant: the same features in other units."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


@dataclass
class ScaledSplit(Defense):
    """Split inference whose client sends its features multiplied by ``gain`` (a test defense)."""

    name: ClassVar[str] = "scaled-split"
    summary: ClassVar[str] = "the target model's first half up to fc1, features times gain"
    gives: ClassVar[frozenset[str]] = frozenset({"query", "architecture"})

    gain: float = param(1.0, "factor on the features", minimum=1e-6)

    def protection(self, model: nn.Module, arch: str) -> Protection:
        client, server = split_model(model, "fc1", arch)
        return Protection(encoder=nn.Sequential(client, Gain(self.gain)),
                          server=nn.Sequential(Gain(1 / self.gain), server))

    def build(self, facts) -> Protection:
        return self.protection(facts.service_classifier(), facts.arch)

    def fit(self, owner) -> Protection:
        return self.protection(owner.target_model(), owner.facts.arch)


@pytest.fixture(scope="module")
def runner(shared_cache):
    return harness(shared_cache)


def attack(runner, gain: float, standardise: bool) -> dict[str, float]:
    """The metrics of attribute-inference on split features multiplied by ``gain``."""
    return run_cell(ScaledSplit, AttributeInference, defense_params={"gain": gain},
                    attack_params={**ATTACK, "standardise": standardise}, dataset_params=DIGITS,
                    runner=runner)


@pytest.mark.slow
def test_standardised_attacker_is_blind_to_the_feature_units_and_the_raw_one_is_not(runner):
    """Features in units a thousand times too small (privacy fine-tuning's center loss squeezes
    them towards their centers the same way) hide the digit from the raw attacker only."""
    plain = attack(runner, 1.0, True)
    tiny = attack(runner, 1e-3, True)
    raw = attack(runner, 1e-3, False)
    assert plain["utility.accuracy"] > 0.9  # the service still works through the scaled split
    # observed (seed 0, 10 epochs): standardised 0.936 at gains 1, 1e-3 and 1e4; raw 0.114 at gain
    # 1e-3 (chance 0.097), 0.75 at gain 1, 0.80 at 1e4
    assert tiny["attack.accuracy"] == pytest.approx(plain["attack.accuracy"], abs=0.02)
    assert tiny["attack.accuracy"] > tiny["attack.chance"] + 0.5
    assert tiny["attack.accuracy"] > raw["attack.accuracy"] + 0.5, (tiny, raw)


def test_features_are_standardised_with_the_aux_statistics():
    torch.manual_seed(0)
    aux = torch.randn(200, 3) * torch.tensor([1e4, 1e-3, 0.0]) + torch.tensor([5.0, -2.0, 7.0])
    mean, std = feature_statistics(aux)
    unit = standardised(aux, mean, std)
    assert torch.allclose(unit[:, :2].mean(0), torch.zeros(2), atol=1e-3)  # float32 rounding
    assert torch.allclose(unit[:, :2].std(0), torch.ones(2), atol=1e-3)
    assert (unit[:, 2] == 0).all()  # a constant feature carries nothing
    one_std_above = aux.mean(0) + aux.std(0)  # an observation the aux statistics place exactly
    assert standardised(one_std_above.unsqueeze(0), mean, std)[0, :2].tolist() == pytest.approx([1, 1])


def test_the_cnn_only_sees_image_shaped_observations():
    def convolutional(model: nn.Module) -> bool:
        return any(isinstance(module, nn.Conv2d) for module in model.modules())

    assert convolutional(attacker_classifier((1, 8, 8), (1, 8, 8), 10))
    assert not convolutional(attacker_classifier((16, 4, 4), (1, 8, 8), 10))  # a feature map
    assert not convolutional(attacker_classifier((8, 8, 8), (1, 8, 8), 10))  # same size, 8 channels
    assert not convolutional(attacker_classifier((120,), (1, 8, 8), 10))
    assert attacker_classifier((16, 4, 4), (1, 8, 8), 10)(torch.rand(2, 16, 4, 4)).shape == (2, 10)
