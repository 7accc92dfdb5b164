"""PSNR / SSIM and the privacy.score mappings respond to their inputs."""

from __future__ import annotations

import torch

from privbench.metrics import image_grid_png, psnr_per_image, ssim_per_image
from privbench.scoring import GroundTruth, inference_metrics, reconstruction_metrics


def images(seed=0, n=20, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_psnr_matches_its_definition():
    original = torch.full((1, 1, 8, 8), 0.5)
    noisy = original + 0.1  # MSE 0.01 -> 20 dB at peak 1
    assert abs(float(psnr_per_image(noisy, original)) - 20.0) < 1e-3


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = images()
    assert torch.allclose(ssim_per_image(x, x), torch.ones(len(x)), atol=1e-5)
    slightly = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    badly = (x + 0.5 * torch.randn_like(x)).clamp(0, 1)
    assert ssim_per_image(slightly, x).mean() > ssim_per_image(badly, x).mean()


def truth_of(originals, guess):
    """The ground truth of a reconstruction cell: originals and the uninformed guess."""
    labels = torch.arange(len(originals)) % 10
    return GroundTruth(originals=originals, labels={"digit": labels}, target_task="digit",
                       private_task="digit", classes=10, aux_mean=guess, aux_majority={"digit": 0})


def test_privacy_score_is_zero_for_perfect_and_one_for_uninformed_reconstruction():
    x = images()
    guess = x.mean(0, keepdim=True)
    assert reconstruction_metrics(x, truth_of(x, guess))["privacy.score"] < 1e-4
    assert reconstruction_metrics(guess.expand_as(x), truth_of(x, guess))["privacy.score"] == 1.0


def test_inference_metrics_map_chance_to_one_and_perfect_to_zero():
    labels = torch.tensor([0] * 60 + [1] * 40)
    perfect = inference_metrics(labels, labels, majority=0)
    assert perfect["attack.accuracy"] == 1.0 and perfect["privacy.score"] == 0.0
    assert perfect["attack.p_value"] < 1e-10
    at_chance = inference_metrics(torch.zeros(100, dtype=torch.long), labels, majority=0)
    assert at_chance["attack.chance"] == 0.6 and at_chance["privacy.score"] == 1.0
    assert at_chance["attack.p_value"] > 0.4


def test_grid_png_has_one_row_per_tensor():
    from io import BytesIO

    from PIL import Image
    png = image_grid_png([images(0, 10), images(1, 10)], columns=10, scale=1)
    image = Image.open(BytesIO(png))
    assert image.height == 2 * 9 + 1 and image.width == 10 * 9 + 1
