"""Behaviour of the ``dapter`` defense: a same-size U-Net, pixel entropy, the lambda trade-off."""

from __future__ import annotations

import io
import math

import pytest
import torch
from conftest import FAST_DIGITS

from privbench.context import RunContext
from privbench.datasets import make_scenario
from privbench.training import accuracy, apply
from privbench_plugins.dapter import MID_GRAY, Dapter, build_unet, levels_for, pixel_entropy

LAMBDAS = (0.5, 0.9, 0.99)
FAST_TRAINING = {"epochs": 6, "lr": 1e-2}  # a short, hotter run: the lambda trend in seconds


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


@pytest.fixture(scope="module")
def digits_scenario(registry):
    name, options = FAST_DIGITS
    source = registry.get("dataset", name).cls.from_params(options)
    return make_scenario(source, source.load(RunContext()), seed=0)


@pytest.fixture(scope="module")
def lambda_sweep(digits_scenario, shared_cache):
    """DAPter fitted at lambda 0.5 / 0.9 / 0.99, with the target model's state before fitting."""
    ctx = RunContext(cache=shared_cache)
    target = ctx.target_model(digits_scenario)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    grads_before = [p.requires_grad for p in target.parameters()]
    fitted = {lam: Dapter(lam=lam, **FAST_TRAINING).fit(digits_scenario, ctx) for lam in LAMBDAS}
    return ctx, target, before, grads_before, fitted


def converted_test_images(lambda_sweep, digits_scenario, lam):
    ctx, fitted = lambda_sweep[0], lambda_sweep[4]
    return apply(fitted[lam].encoder, digits_scenario.images("test"), ctx)


def test_entropy_falls_as_lambda_grows(lambda_sweep):
    entropies = [lambda_sweep[4][lam].metrics["defense.entropy"] for lam in LAMBDAS]
    assert entropies[0] > entropies[1] > entropies[2]
    original = lambda_sweep[4][0.9].metrics["defense.entropy_original"]
    assert 2 < original < 4.1  # digits: 17 grey levels, log2(17) = 4.09 at most
    assert entropies[2] < original


def test_converted_images_move_towards_mid_gray_as_lambda_grows(lambda_sweep, digits_scenario):
    distances = [float((converted_test_images(lambda_sweep, digits_scenario, lam) - MID_GRAY)
                       .abs().mean()) for lam in LAMBDAS]
    original = float((digits_scenario.images("test") - MID_GRAY).abs().mean())
    assert original > distances[0] > distances[1] > distances[2]


def test_small_lambda_keeps_the_service_accuracy(lambda_sweep, digits_scenario):
    ctx, target, fitted = lambda_sweep[0], lambda_sweep[1], lambda_sweep[4]
    test, labels = digits_scenario.images("test"), digits_scenario.labels("test")
    baseline = accuracy(apply(target, test, ctx), labels)
    kept = accuracy(apply(fitted[0.5].server, converted_test_images(lambda_sweep, digits_scenario,
                                                                    0.5), ctx), labels)
    gray = accuracy(apply(fitted[0.99].server, converted_test_images(lambda_sweep, digits_scenario,
                                                                     0.99), ctx), labels)
    assert baseline > 0.9
    assert kept > baseline - 0.05
    assert gray < kept - 0.2  # nearly all-gray images lose the task


def test_target_model_is_frozen_and_served_unchanged(lambda_sweep):
    _, target, before, grads_before, fitted = lambda_sweep
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in target.parameters()] == grads_before  # shared model untouched
    server = fitted[0.9].server.state_dict()
    assert all(torch.equal(before[k], server[k].cpu()) for k in before)


def test_protection_pickles_and_gives_every_access_fact(lambda_sweep, digits_scenario):
    protection = lambda_sweep[4][0.9]
    buffer = io.BytesIO()
    torch.save(protection, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    test = digits_scenario.images("test")[:16]
    with torch.no_grad():
        assert torch.equal(loaded.encoder.eval()(test), protection.encoder.eval()(test))
        fresh = loaded.build_encoder()
        assert fresh(test).shape == test.shape
    assert Dapter().access() == {"query", "white-box", "architecture", "server", "image-like"}
