"""Attack ``inverse-network``: black-box model inversion by a learned decoder (He et al., ACSAC 2019,
Sec. 5).

Threat model: black-box. The attacker queries the encoder with images of its choice, trains a
decoder g on the pairs (encoder(x), x) with a pixel-wise L2 loss, and reconstructs each observed
protected test image as g(z). Which images it queries is He et al.'s "attacker data" (``data``):

- ``aux`` (default): "same distribution": the attacker's own images, disjoint from the owner's;
- ``same-set``: "same set": the owner's own training images (their released decoder script trains
  on the target's training set); this needs ``owner-data`` access, a stronger assumption the cell
  records in its attack spec;
- ``random``: "random images": "pure noise sampled from the standard Gaussian distribution (zero
  mean, unit variance)" in the network's normalised input (He et al., Sec. 5), which is
  x = 0.5 + 0.5 N(0, 1) in [0, 1] pixels, not clipped; the attacker knows nothing of the data, so
  nothing is drawn from the aux images but their count (every setting makes as many queries).

``decoder``: ``mirror`` (default) is He et al.'s shape: transposed convolutions mirroring the client
part, sized from the protected data's shape to the image's (``privbench.inversion.MirroredDecoder``:
on 28 x 28 MNIST, 201 parameters at conv1 and 3,409 at ReLU2, as theirs), so its cost scales with
what the client computed; ``wide`` is privbench's 64-channel convolutional decoder
(``privbench.models.Decoder``, about 108,000 parameters at MNIST conv1), which on 8 x 8 digits with a
few hundred aux images recovers more than the mirrored one (measured on the full digits set, 50
epochs: identity SSIM 0.92 mirror against 0.99 wide; split relu2 0.62 against 0.91).
Training follows the authors' code: Adam with amsgrad (eps 1e-3), batch 32, 50 epochs, the learning
rate halved every 10 epochs (``halve_lr_every``). Learning rate: ``lr=0`` (auto) is 1e-2 for the
mirrored decoder and the authors' 1e-3 for the wide one. The mirrored conv1 decoder is one linear
layer, and with Adam's eps of 1e-3 its small gradients barely move it at 1e-3: on real MNIST (8,000
same-set images, split at conv1, 50 epochs) it reached 26.8 dB / SSIM 0.716 at 1e-3 against 37.5 dB /
0.967 at 1e-2, where the authors report 40.5 / 0.983 (their SSIM is scikit-image's).

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
    MirroredDecoder,
    apply,
    from_normalised,
    hookimpl,
    param,
    train_decoder,
)

DATA = ("aux", "same-set", "random")
MIRROR_LR = 1e-2  # lr=0 (auto) for the mirrored decoder; see the module docstring
WIDE_LR = 1e-3  # the authors' rate, for the wide decoder


@dataclass
class InverseNetwork(Attack):
    """Train a decoder on queried (encoder(x), x) pairs and reconstruct the protected test images."""

    name: ClassVar[str] = "inverse-network"
    summary: ClassVar[str] = "black-box: learn a decoder from queried (encoder(x), x) pairs (He et al.)"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    cost_hint: ClassVar[float] = 10  # relative run time, for parallel scheduling

    epochs: int = param(50, "decoder training epochs (authors' code: 50)", minimum=1)
    lr: float = param(0.0, "Adam learning rate (0: auto, 1e-2 for the mirrored decoder, the "
                           "authors' 1e-3 for the wide one)", minimum=0.0)
    halve_lr_every: int = param(10, "halve the learning rate every this many epochs (authors: 10; "
                                    "0: never)", minimum=0)
    batch_size: int = param(32, "decoder batch size (authors: 32)", minimum=1)
    data: str = param("aux", "attacker's query images: aux (He et al.'s same distribution), "
                             "same-set (the owner's training images; needs owner-data access) or "
                             "random (Gaussian)", choices=DATA)
    decoder: str = param("mirror", "mirror: He et al.'s transposed convolutions mirroring the "
                                   "client part; wide: a 64-channel convolutional decoder",
                         choices=("mirror", "wide"))

    def granted_needs(self) -> frozenset[str]:
        return self.requires | {"owner-data"} if self.data == "same-set" else self.requires

    def run(self, view) -> AttackOutput:
        images = self._query_images(view)
        queried = view.query(images)
        z_shape = tuple(queried.shape[1:])
        decoder = (MirroredDecoder(z_shape, view.image_shape) if self.decoder == "mirror"
                   else Decoder(z_shape, view.image_shape))
        train_decoder(decoder, queried, images, view, epochs=self.epochs, lr=self.learning_rate(),
                      batch_size=self.batch_size, halve_lr_every=self.halve_lr_every,
                      description=f"inverse-network: {self.decoder} decoder on {self.data} data")
        return AttackOutput(reconstruction=apply(decoder, view.observed, view).clamp(0, 1))

    def learning_rate(self) -> float:
        """``lr``, or with lr=0 the rate that trains this decoder well (see the module docstring)."""
        if self.lr:
            return self.lr
        return MIRROR_LR if self.decoder == "mirror" else WIDE_LR

    def _query_images(self, view) -> torch.Tensor:
        """The images the attacker queries (He et al.'s three attacker-data settings)."""
        aux = view.aux_images
        if self.data == "aux":
            return aux
        if self.data == "same-set":
            return view.owner_data()[0]
        return random_images(len(aux), tuple(view.image_shape), view.generator)


def random_images(count: int, image_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """He et al.'s random attacker images: u ~ N(0, 1) in the normalised input, x = 0.5 + 0.5 u."""
    return from_normalised(torch.randn((count, *image_shape), generator=generator))


@hookimpl
def register_attacks(register):
    register(InverseNetwork)
