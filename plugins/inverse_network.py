"""Attack ``inverse-network``: black-box model inversion by a learned decoder (He et al., ACSAC 2019).

Threat model: black-box. The attacker queries the encoder with its own auxiliary images (the
"same distribution" setting: disjoint from the owner's data, drawn from the same distribution),
trains a decoder g on the pairs (encoder(x), x) with a pixel-wise L2 loss, and reconstructs each
protected test image as g(z). Defaults follow the authors' code: Adam, lr 1e-3, batch 32, 50 epochs.
The decoder is privbench's ``Decoder`` (convolutions and stride-2 transposed convolutions sized to
the protected data), standing in for the paper's 1-3 transposed-convolution layers.

Reports ``attack.psnr`` and ``attack.ssim`` (mean over all test images) and their uninformed
baselines; privacy.score = clip((1 - SSIM) / (1 - SSIM of the mean aux image), 0, 1). Saves a PNG
grid: originals | protected (when image-like) | reconstructions, one test image per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench import hookimpl
from privbench.core import Artifact, Attack, AttackResult
from privbench.metrics import image_grid_png, reconstruction_metrics
from privbench.models import Decoder
from privbench.params import param
from privbench.training import apply, fit, seed_everything


def one_per_class(labels: torch.Tensor, count: int = 10) -> torch.Tensor:
    """Indices of the first test image of each class (He et al. show one image per class)."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique()[:count]]
    extra = [i for i in range(len(labels)) if i not in firsts][: max(0, count - len(firsts))]
    return torch.tensor(firsts + extra)


def reconstruction_grid(scenario, originals, protected, reconstructed) -> Artifact:
    """The PNG grid: originals | protected (if image-shaped) | reconstructions."""
    index = one_per_class(scenario.labels("test"))
    rows = [originals[index]]
    if protected.shape[1:] == originals.shape[1:]:
        rows.append(protected[index])
    rows.append(reconstructed[index])
    return Artifact("reconstruction.png", "image/png", image_grid_png(rows, columns=len(index)))


@dataclass
class InverseNetwork(Attack):
    """Train a decoder on (encoder(aux), aux) and reconstruct the protected test images."""

    name: ClassVar[str] = "inverse-network"
    summary: ClassVar[str] = "black-box: learn a decoder from queried (encoder(x), x) pairs (He et al.)"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)"

    epochs: int = param(50, "decoder training epochs (authors' code: 50)", minimum=1)
    lr: float = param(1e-3, "Adam learning rate", minimum=0.0)
    batch_size: int = param(32, "decoder batch size", minimum=1)

    def run(self, scenario, protection, ctx) -> AttackResult:
        seed_everything(ctx.seed)
        aux = scenario.images("aux")
        queried = apply(protection.encoder, aux, ctx)
        decoder = Decoder(tuple(queried.shape[1:]), scenario.image_shape)
        fit(decoder, queried, aux, nn.functional.mse_loss, ctx, epochs=self.epochs, lr=self.lr,
            batch_size=self.batch_size, description="inverse-network: decoder")
        test = scenario.images("test")
        protected = apply(protection.encoder, test, ctx)
        reconstructed = apply(decoder, protected, ctx)
        metrics = reconstruction_metrics(reconstructed, test, aux.mean(0, keepdim=True))
        return AttackResult(metrics, [reconstruction_grid(scenario, test, protected, reconstructed)])


@hookimpl
def register_attacks(register):
    register(InverseNetwork)
