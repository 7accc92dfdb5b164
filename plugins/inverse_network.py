"""Attack ``inverse-network``: black-box model inversion by a learned decoder (He et al., ACSAC 2019).

Threat model: black-box. The attacker queries the encoder with its own auxiliary images (``data``
= ``aux``, the "same distribution" setting: disjoint from the owner's data, drawn from the same
distribution; or ``random``: Gaussian noise images, He et al.'s "random images" setting),
trains a decoder g on the pairs (encoder(x), x) with a pixel-wise L2 loss, and reconstructs each
protected test image as g(z). Defaults follow the authors' code: Adam, lr 1e-3, batch 32, 50 epochs.
The decoder is privbench's ``Decoder`` (convolutions and stride-2 transposed convolutions sized to
the protected data), standing in for the paper's 1-3 transposed-convolution layers.

Returns g(z) for every observed protected test image; the harness scores them (``attack.psnr``,
``attack.ssim`` and their uninformed baselines; privacy.score = clip((1 - SSIM) / (1 - SSIM of the
mean aux image), 0, 1)) and saves the PNG grid: originals | protected (when image-like) |
reconstructions, one test image per class. The queries are counted (``attack.queries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench.api import (
    Attack,
    AttackOutput,
    Decoder,
    apply,
    hookimpl,
    param,
    train_decoder,
)


@dataclass
class InverseNetwork(Attack):
    """Train a decoder on (encoder(aux), aux) and reconstruct the protected test images."""

    name: ClassVar[str] = "inverse-network"
    summary: ClassVar[str] = "black-box: learn a decoder from queried (encoder(x), x) pairs (He et al.)"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    cost_hint: ClassVar[float] = 10  # relative run time, for parallel scheduling

    epochs: int = param(50, "decoder training epochs (authors' code: 50)", minimum=1)
    lr: float = param(1e-3, "Adam learning rate", minimum=0.0)
    batch_size: int = param(32, "decoder batch size", minimum=1)
    data: str = param("aux", "attacker's query images: aux (same distribution) or random (Gaussian)",
                      choices=("aux", "random"))

    def run(self, view) -> AttackOutput:
        images = self._query_images(view)
        queried = view.query(images)
        decoder = Decoder(tuple(queried.shape[1:]), view.image_shape)
        train_decoder(decoder, queried, images, view, epochs=self.epochs, lr=self.lr,
                      batch_size=self.batch_size, description="inverse-network: decoder")
        return AttackOutput(reconstruction=apply(decoder, view.observed, view))

    def _query_images(self, view):
        """The attacker's images: its aux split, or as many random Gaussian images whose pixels
        have the aux images' mean and standard deviation, clipped to [0, 1] (He et al.'s
        "random images" setting: the attacker knows nothing of the data distribution)."""
        aux = view.aux_images
        if self.data == "aux":
            return aux
        noise = torch.randn(aux.shape, generator=view.generator)
        return (aux.mean() + aux.std() * noise).clamp(0, 1)


@hookimpl
def register_attacks(register):
    register(InverseNetwork)
