"""What every reconstruction attack shares: the same metrics and the same PNG grid.

An attack that reconstructs images calls ``reconstruction_result``: it reports ``attack.psnr`` and
``attack.ssim`` (privbench.metrics, identical for every attack) against the uninformed guess of the
attacker's mean aux image, and saves ``reconstruction.png``: originals | protected (when the
protected data is image-shaped) | reconstructions, one test image per class (as He et al. show).
"""

from __future__ import annotations

import torch

from privbench.core import Artifact, AttackResult
from privbench.metrics import image_grid_png, reconstruction_metrics


def one_per_class(labels: torch.Tensor, count: int = 10) -> torch.Tensor:
    """Indices of the first image of each class, topped up to ``count`` with the next images."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique()[:count]]
    extra = [i for i in range(len(labels)) if i not in firsts][: max(0, count - len(firsts))]
    return torch.tensor(firsts + extra)


def reconstruction_grid(labels: torch.Tensor, originals: torch.Tensor, protected: torch.Tensor | None,
                        reconstructed: torch.Tensor) -> Artifact:
    """The PNG grid: originals | protected (if image-shaped) | reconstructions."""
    index = one_per_class(labels)
    rows = [originals[index]]
    if protected is not None and protected.shape[1:] == originals.shape[1:]:
        rows.append(protected[index])
    rows.append(reconstructed[index])
    return Artifact("reconstruction.png", "image/png", image_grid_png(rows, columns=len(index)))


def test_subset(scenario, count: int) -> torch.Tensor:
    """Indices of ``count`` test images covering every class first (all of them when count <= 0)."""
    labels = scenario.labels("test")
    if count <= 0 or count >= len(labels):
        return torch.arange(len(labels))
    return one_per_class(labels, count)


def reconstruction_result(scenario, originals: torch.Tensor, protected: torch.Tensor | None,
                          reconstructed: torch.Tensor, extra: dict[str, float] | None = None,
                          labels: torch.Tensor | None = None) -> AttackResult:
    """Metrics and grid of a reconstruction of test images ``originals`` (all test images unless
    ``labels`` gives the labels of the subset that was attacked)."""
    guess = scenario.images("aux").mean(0, keepdim=True)
    reconstructed = reconstructed.detach().cpu()
    metrics = {**reconstruction_metrics(reconstructed, originals, guess), **(extra or {})}
    labels = scenario.labels("test") if labels is None else labels
    grid = reconstruction_grid(labels, originals, None if protected is None else protected.cpu(),
                               reconstructed)
    return AttackResult(metrics, [grid])
