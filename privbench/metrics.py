"""Reconstruction and inference metrics, and the mapping of raw metrics onto ``privacy.score``.

PSNR and SSIM come from torchmetrics on images in [0, 1] (peak 1), computed per image and averaged,
as He et al. report them. SSIM uses Wang et al.'s 11 x 11 Gaussian window (sigma 1.5), shrunk to
the largest odd size that fits images smaller than 11 pixels (7 x 7 on 8 x 8 digits).
"""

from __future__ import annotations

import io

import torch

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; cap it so means stay finite


def ssim_kernel(height: int, width: int) -> int:
    side = min(11, height, width)
    return side if side % 2 == 1 else side - 1


def psnr_per_image(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image (peak 1), capped at PSNR_CAP_DB."""
    from torchmetrics.functional.image import peak_signal_noise_ratio
    values = peak_signal_noise_ratio(reconstructed.clamp(0, 1), original, data_range=1.0,
                                     reduction="none", dim=(1, 2, 3))
    return values.clamp(max=PSNR_CAP_DB)


def ssim_per_image(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """SSIM of each image against its original (1 = identical)."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    kernel = ssim_kernel(*original.shape[-2:])
    return structural_similarity_index_measure(reconstructed.clamp(0, 1), original, data_range=1.0,
                                               kernel_size=kernel, reduction="none")


def reconstruction_metrics(reconstructed: torch.Tensor, original: torch.Tensor,
                           uninformed_guess: torch.Tensor) -> dict[str, float]:
    """``attack.psnr``, ``attack.ssim``, their uninformed baselines and ``privacy.score``.

    ``uninformed_guess`` is the best reconstruction an attacker can make without the protected data
    (the mean of its auxiliary images): ``attack.ssim_chance`` is its SSIM against the originals.
    privacy.score = clip((1 - ssim) / (1 - ssim_chance), 0, 1): 1 when the reconstruction is no
    closer than the uninformed guess, 0 when it is perfect.
    """
    guess = uninformed_guess.expand_as(original)
    ssim = float(ssim_per_image(reconstructed, original).mean())
    ssim_chance = float(ssim_per_image(guess, original).mean())
    return {
        "attack.psnr": float(psnr_per_image(reconstructed, original).mean()),
        "attack.ssim": ssim,
        "attack.psnr_chance": float(psnr_per_image(guess, original).mean()),
        "attack.ssim_chance": ssim_chance,
        "privacy.score": clip01((1.0 - ssim) / max(1e-6, 1.0 - ssim_chance)),
    }


def inference_metrics(predicted: torch.Tensor, labels: torch.Tensor,
                      majority_class: int) -> dict[str, float]:
    """``attack.accuracy``, ``attack.chance`` (majority class), a binomial p-value, privacy.score.

    ``attack.p_value`` is the one-sided binomial test that the accuracy exceeds chance.
    privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1): 1 at chance, 0 at perfect accuracy.
    """
    from scipy.stats import binomtest
    correct = int((predicted == labels).sum())
    total = int(labels.numel())
    acc = correct / total
    chance = int((labels == majority_class).sum()) / total
    p_value = binomtest(correct, total, min(max(chance, 1e-9), 1 - 1e-9), alternative="greater").pvalue
    return {
        "attack.accuracy": acc,
        "attack.chance": chance,
        "attack.p_value": float(p_value),
        "privacy.score": clip01((1.0 - acc) / max(1e-6, 1.0 - chance)),
    }


def clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def image_grid_png(rows: list[torch.Tensor], columns: int = 10, scale: int = 4) -> bytes:
    """A PNG with one row of ``columns`` images per tensor in ``rows`` (e.g. originals, recon)."""
    from PIL import Image
    from torchvision.utils import make_grid
    tiles = torch.cat([row[:columns].clamp(0, 1).cpu() for row in rows])
    if tiles.shape[1] not in (1, 3):  # non-image protected data: show the first channel
        tiles = tiles[:, :1]
    grid = make_grid(tiles, nrow=columns, padding=1, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    image = Image.fromarray(array)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
