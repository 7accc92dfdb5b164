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

``prior``: ``none`` (default) is He et al.'s attack above. ``adversarial`` adds a realism prior,
InferenceBenchmark's discriminator attack (IB ``src/algos/discriminator_attacker.py``) done as a
conditional decoder: a WGAN-GP critic D (Gulrajani et al., "Improved Training of Wasserstein GANs",
NeurIPS 2017) learns to tell the attacker's aux images from the decoded observations g(z_o), and
the decoder minimises, per batch of queried pairs (z, x) and of observations z_o,

    L_g = ||g(z) - x||^2 / n  -  prior_weight * E[D(g(z_o))],
    L_D = E[D(g(z_o))] - E[D(x_aux)] + gp_weight * E[(||grad D(x_hat)||_2 - 1)^2],
          x_hat = eps * x_aux + (1 - eps) * g(z_o),  eps ~ U[0, 1] per sample,

with ``critic_steps`` critic steps before each decoder step (``privbench.inversion.
train_decoder_with_critic``). IB's version differs in three ways, each a defect this one avoids: its
generator decodes ``torch.rand`` noise instead of the observed z (an unconditional generator whose
SSIM against the paired images is only logged), its penalty's gradient norm runs over the channel
dimension only, and it interpolates with the unpermuted images while the critic's real batch is
permuted. Here the critic's real and fake rows are drawn independently (an unpaired realism
prior) and each interpolation mixes the two rows it scores; the norm runs over C x H x W.
The real images are always the attacker's aux images, whatever ``data`` says: with
``data=random`` the attacker then also knows the data distribution (unpaired), which plain
``random`` does not assume. Settings, where the paper has none for 8 x 8 digits (measured on the
full digits set, 540 aux images, 457 observed, a LeNet trained 10 epochs, 50 decoder epochs, in the
order none -> prior): the paper's gp_weight 10 and Adam betas (0, 0.9) for the critic;
``critic_steps`` 1 per decoder step (the paper 5, IB 4; behind ReLU2 with random queries 4 steps
gave SSIM 0.671 against 0.680 for 1, at four times the critic's cost); ``critic_lr`` 1e-3 (the
paper's 1e-4 barely moves the critic in the ~850 steps of 50 epochs: SSIM 0.463 against 0.680);
``prior_weight`` 0.03: the critic's gradient per image has a norm near 1 (the penalty's target),
far above the L2 term's, so a small weight suffices. Random queries behind ReLU2: SSIM 0.417 ->
0.683 / 0.680 / 0.636 / 0.567 at weights 0.03 / 0.1 / 0.3 / 1 (a fresh critic's Wasserstein
estimate between aux and decoded observations 2.70 -> 1.51 / 1.50 / 1.43 / 1.51); aux queries,
where the L2 decoder already fits, 0.03 leaves it nearly as it was and 0.1 costs fidelity:
identity 0.995 -> 0.995 / 0.982 (30.0 -> 29.8 / 25.1 dB), ReLU2 0.804 -> 0.798 / 0.755. The
critic (``privbench.inversion.Critic``) is a small convolutional network without batch
normalisation (the penalty is per sample); its double backward makes the prior the costly part
of the attack: on digits, 50 epochs, 11 to 24 s of decoder training per cell against 0.6 to 1.9 s
without the prior (measured on a shared, loaded 2-core CPU), so the default matrix keeps
``prior=none``.

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
    train_decoder_with_critic,
)

DATA = ("aux", "same-set", "random")
PRIORS = ("none", "adversarial")
PRIOR_WEIGHT = 0.03  # prior=adversarial's settings; see the module docstring
CRITIC_STEPS = 1
CRITIC_LR = 1e-3
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
    prior: str = param("none", "none: He et al.'s L2 decoder; adversarial: add a WGAN-GP realism "
                               "prior, a critic telling the attacker's aux images from the decoded "
                               "observations", choices=PRIORS)
    prior_weight: float = param(PRIOR_WEIGHT, "weight of the adversarial term in the decoder's loss "
                                              "(prior=adversarial)", minimum=0.0)
    critic_steps: int = param(CRITIC_STEPS, "critic steps before each decoder step "
                                            "(prior=adversarial; WGAN-GP: 5, InferenceBenchmark: 4)",
                              minimum=1)
    critic_lr: float = param(CRITIC_LR, "the critic's Adam learning rate, betas (0, 0.9) "
                                        "(prior=adversarial; WGAN-GP: 1e-4)", minimum=1e-8)
    gp_weight: float = param(10.0, "gradient-penalty weight lambda (prior=adversarial; WGAN-GP: 10)",
                             minimum=0.0)

    def granted_needs(self) -> frozenset[str]:
        return self.requires | {"owner-data"} if self.data == "same-set" else self.requires

    def run(self, view) -> AttackOutput:
        images = self._query_images(view)
        queried = view.query(images)
        z_shape = tuple(queried.shape[1:])
        decoder = (MirroredDecoder(z_shape, view.image_shape) if self.decoder == "mirror"
                   else Decoder(z_shape, view.image_shape))
        description = f"inverse-network: {self.decoder} decoder on {self.data} data"
        if self.prior == "none":
            train_decoder(decoder, queried, images, view, epochs=self.epochs, lr=self.learning_rate(),
                          batch_size=self.batch_size, halve_lr_every=self.halve_lr_every,
                          description=description)
        else:
            train_decoder_with_critic(
                decoder, queried, images, view.observed, view.aux_images, view, epochs=self.epochs,
                lr=self.learning_rate(), batch_size=self.batch_size,
                halve_lr_every=self.halve_lr_every, prior_weight=self.prior_weight,
                critic_steps=self.critic_steps, critic_lr=self.critic_lr, gp_weight=self.gp_weight,
                generator=view.generator, description=description + ", adversarial prior")
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
