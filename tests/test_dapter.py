"""Behaviour of the ``dapter`` defense: a same-size U-Net, pixel entropy, the lambda trade-off, the
service's Grad-CAM attention on converted images."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from privbench.api import ACCESS, EvaluationData, OwnerData, Protection
from privbench.artifacts import cpu_state
from privbench.progress import SilentProgress
from privbench.testing import FittedDefenses, call_of, check_defense, dataset_call, fresh_artifacts, harness
from privbench.training import apply
from privbench_plugins.dapter import MID_GRAY, Dapter, build_unet, levels_for, pixel_entropy

LAMBDAS = (0.5, 0.9, 0.99)
FAST_TRAINING = {"epochs": 6, "lr": 1e-2}  # a short, hotter run: the lambda trend in seconds
DIGITS = {"limit": 0, "target_epochs": 15}  # every digit: the target model reaches ~0.98 parity


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 25, 25), (3, 32, 32), (1, 4, 4), (3, 5, 7)])
def test_unet_output_is_an_image_of_the_input_size(shape):
    torch.manual_seed(0)
    unet = build_unet(shape, depth=3, width=4).eval()
    images = torch.rand(2, *shape)
    with torch.no_grad():
        converted = unet(images)
    assert converted.shape == images.shape
    assert converted.min() >= 0 and converted.max() <= 1
    assert not torch.allclose(converted[0], converted[1])  # depends on the input


def test_depth_adapts_to_the_image_size():
    assert levels_for(8, 8, 3) == 2  # 8 -> 4 -> 2
    assert levels_for(25, 25, 3) == 3  # 25 -> 12 -> 6 -> 3
    assert levels_for(32, 32, 3) == 3 and levels_for(32, 32, 5) == 4
    assert levels_for(4, 4, 3) == 1
    assert levels_for(3, 3, 3) == 0


def test_pixel_entropy_of_constant_and_uniform_level_images():
    constant = torch.full((1, 1, 8, 8), 0.3)
    assert pixel_entropy(constant).tolist() == [0.0]
    for k in (2, 4, 16):
        levels = torch.arange(64) % k * 7 / 255  # k levels, each 64 / k times
        image = levels.view(1, 1, 8, 8)
        assert pixel_entropy(image).item() == pytest.approx(math.log2(k), abs=1e-5)
    colour = torch.stack([torch.full((4, 4), v / 255) for v in (10, 20, 30, 40)]).unsqueeze(0)
    assert pixel_entropy(colour).item() == pytest.approx(2.0, abs=1e-5)  # channels pooled
    batch = torch.cat([constant, torch.arange(64).view(1, 1, 8, 8) % 2 / 255])
    assert pixel_entropy(batch).tolist() == pytest.approx([0.0, 1.0])  # one value per image


def test_dapter_keeps_the_defense_contract():
    check_defense(Dapter, {"epochs": 1, "width": 4})


@pytest.fixture(scope="module")
def runner(shared_cache):
    return harness(shared_cache)


@pytest.fixture(scope="module")
def digits_scenario(runner):
    return runner.scenario(dataset_call("digits", DIGITS), 0)


@pytest.fixture(scope="module")
def lambda_sweep(runner, digits_scenario):
    """lambda -> (DAPter fitted through the harness, the harness's utility and defense metrics)."""
    sweep = {}
    for lam in LAMBDAS:
        call = call_of(Dapter, {"lam": lam, **FAST_TRAINING})
        sweep[lam] = (FittedDefenses(runner).protection(digits_scenario, call)[0],
                      runner.utility(digits_scenario, call))
    return sweep


def converted_test_images(runner, lambda_sweep, digits_scenario, lam):
    return apply(lambda_sweep[lam][0].encoder, digits_scenario.images("test"), runner.training(0))


@pytest.mark.slow
def test_entropy_falls_as_lambda_grows(lambda_sweep):
    entropies = [lambda_sweep[lam][1]["defense.entropy"] for lam in LAMBDAS]
    assert entropies[0] > entropies[1] > entropies[2]
    original = lambda_sweep[0.9][1]["defense.entropy_original"]
    assert 2 < original < 4.1  # digits: 17 grey levels, log2(17) = 4.09 at most
    assert entropies[2] < original


@pytest.mark.slow
def test_converted_images_move_towards_mid_gray_as_lambda_grows(runner, lambda_sweep, digits_scenario):
    distances = [float((converted_test_images(runner, lambda_sweep, digits_scenario, lam) - MID_GRAY)
                       .abs().mean()) for lam in LAMBDAS]
    original = float((digits_scenario.images("test") - MID_GRAY).abs().mean())
    assert original > distances[0] > distances[1] > distances[2]


@pytest.mark.slow
def test_small_lambda_keeps_the_service_accuracy(lambda_sweep):
    baseline = lambda_sweep[0.5][1]["utility.baseline_accuracy"]
    kept = lambda_sweep[0.5][1]["utility.accuracy"]
    gray = lambda_sweep[0.99][1]["utility.accuracy"]
    assert baseline > 0.9
    assert kept > baseline - 0.05
    assert gray < kept - 0.2  # nearly all-gray images lose the task


@pytest.mark.slow
def test_target_model_is_frozen_and_served_unchanged(runner, digits_scenario, lambda_sweep):
    target = runner.artifacts.target_model(digits_scenario)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    grads_before = [p.requires_grad for p in target.parameters()]
    owner = OwnerData(digits_scenario.facts(), digits_scenario.images("owner"),
                      {task: digits_scenario.labels("owner", task)
                       for task in digits_scenario.dataset.tasks},
                      device=torch.device("cpu"), progress=SilentProgress(),
                      seed=digits_scenario.streams.defender, target_model=lambda: target)
    protection = Dapter(lam=0.9, epochs=1).fit(owner)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the U-Net trained, not the model
    assert [p.requires_grad for p in target.parameters()] == grads_before
    served = protection.server.state_dict()
    assert all(torch.equal(before[k], served[k].cpu()) for k in before)
    # through the harness and its cache too: the server is the service's target model as it is
    cached = lambda_sweep[0.9][0].server.state_dict()
    assert all(torch.equal(before[k], cached[k].cpu()) for k in before)


@pytest.mark.slow
def test_protection_rebuilds_from_its_state_and_gives_every_access_fact(lambda_sweep,
                                                                        digits_scenario):
    protection = lambda_sweep[0.9][0]
    call = call_of(Dapter, {"lam": 0.9, **FAST_TRAINING})
    state = {"encoder": cpu_state(protection.encoder), "server": cpu_state(protection.server)}
    rebuilt = fresh_artifacts().rebuild(digits_scenario, call, state)
    test = digits_scenario.images("test")[:16]
    with torch.no_grad():
        assert torch.equal(rebuilt.encoder.eval()(test), protection.encoder.eval()(test))
        fresh = call.instance.build(digits_scenario.facts()).encoder.eval()  # architecture access
        assert fresh(test).shape == test.shape
        assert not torch.allclose(fresh(test), protection.encoder(test))  # untrained, not a copy
    assert Dapter().access() == frozenset(ACCESS)  # the U-Net runs on the user's device
    assert {"query", "white-box", "architecture", "server", "image-like"} <= Dapter().access()


class Replace(nn.Module):
    """A conversion that throws the image away: uniform noise from a fixed seed, or one gray value."""

    def __init__(self, gray: float | None = None) -> None:
        super().__init__()
        self.gray = gray

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gray is not None:
            return torch.full_like(x, self.gray)
        return torch.rand(x.shape, generator=torch.Generator().manual_seed(0))


def gradcam_iou_of(conversion: nn.Module, runner, scenario) -> float:
    """Dapter.evaluate's defense.gradcam_iou for ``conversion`` in front of the service's model."""
    data = EvaluationData(scenario.facts(), scenario.images("test"),
                          {task: scenario.labels("test", task) for task in scenario.dataset.tasks},
                          device=torch.device("cpu"), progress=SilentProgress(),
                          seed=scenario.streams.evaluation)
    protection = Protection(encoder=conversion, server=runner.artifacts.target_model(scenario))
    return Dapter().evaluate(protection, data)["defense.gradcam_iou"]


@pytest.mark.slow
def test_service_attention_survives_the_identity_and_not_a_destroyed_image(runner, digits_scenario):
    assert gradcam_iou_of(nn.Identity(), runner, digits_scenario) == pytest.approx(1.0)
    # observed (seed 0): uniform noise 0.13, mid-gray 0.25; two random 13-of-64 pixel sets: ~0.11
    assert gradcam_iou_of(Replace(), runner, digits_scenario) < 0.4
    assert gradcam_iou_of(Replace(gray=MID_GRAY), runner, digits_scenario) < 0.5


@pytest.mark.slow
def test_nearly_gray_dapter_images_lose_the_service_attention(lambda_sweep):
    overlaps = {lam: lambda_sweep[lam][1]["defense.gradcam_iou"] for lam in LAMBDAS}
    # observed (seed 0): 0.31 at lambda 0.5, 0.31 at 0.9, 0.26 at 0.99 (a mid-gray image: 0.25)
    assert overlaps[0.99] < 0.5, overlaps
