"""Attack ``inverse-network``: black-box model inversion by a learned decoder (He et al., ACSAC 2019).

Threat model: black-box. The attacker queries the encoder with its own auxiliary images (``data``
= ``aux``, the "same distribution" setting: disjoint from the owner's data, drawn from the same
distribution; or ``random``: Gaussian noise images, He et al.'s "random images" setting),
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
from privbench.core import Attack, AttackResult
from privbench.models import Decoder
from privbench.params import param
from privbench.reconstruction import reconstruction_result
from privbench.training import apply, fit, seed_everything


@dataclass
class InverseNetwork(Attack):
    """Train a decoder on (encoder(aux), aux) and reconstruct the protected test images."""

    name: ClassVar[str] = "inverse-network"
    summary: ClassVar[str] = "black-box: learn a decoder from queried (encoder(x), x) pairs (He et al.)"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)"
    cost_hint: ClassVar[float] = 10  # relative run time, for parallel scheduling

    epochs: int = param(50, "decoder training epochs (authors' code: 50)", minimum=1)
    lr: float = param(1e-3, "Adam learning rate", minimum=0.0)
    batch_size: int = param(32, "decoder batch size", minimum=1)
    data: str = param("aux", "attacker's query images: aux (same distribution) or random (Gaussian)",
                      choices=("aux", "random"))

    def run(self, scenario, protection, ctx) -> AttackResult:
        seed_everything(ctx.seed)
        aux = self._query_images(scenario, ctx)
        queried = apply(protection.encoder, aux, ctx)
        decoder = Decoder(tuple(queried.shape[1:]), scenario.image_shape)
        fit(decoder, queried, aux, nn.functional.mse_loss, ctx, epochs=self.epochs, lr=self.lr,
            batch_size=self.batch_size, description="inverse-network: decoder")
        test = scenario.images("test")
        protected = apply(protection.encoder, test, ctx)
        reconstructed = apply(decoder, protected, ctx)
        return reconstruction_result(scenario, test, protected, reconstructed)

    def _query_images(self, scenario, ctx):
        """The attacker's images: its aux split, or as many random Gaussian images whose pixels
        have the aux images' mean and standard deviation, clipped to [0, 1] (He et al.'s
        "random images" setting: the attacker knows nothing of the data distribution)."""
        aux = scenario.images("aux")
        if self.data == "aux":
            return aux
        generator = torch.Generator().manual_seed(ctx.seed)
        noise = torch.randn(aux.shape, generator=generator)
        return (aux.mean() + aux.std() * noise).clamp(0, 1)


@hookimpl
def register_attacks(register):
    register(InverseNetwork)
