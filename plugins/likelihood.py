"""Attack ``likelihood``: likelihood maximisation with a deep image prior, the "LM" attack of DISCO
(Singh, Chopra, Garza, Zhang, Vepakomma, Sharma, Raskar, CVPR 2021), as InferenceBenchmark's
``input_model_optimization`` and GLASS (Li et al., NeurIPS 2023, "LM [DISCO]") run it.

Threat model: white-box. The attacker holds the client's weights (the defense's obfuscating module
included) and observes z = f1(x0) of a victim image; it has no data and no queries. Instead of the
image's pixels (He et al.'s rMLE, ``rmle``) it optimises the weights phi of a generator G_phi, a
deep-image-prior ``skip`` U-Net fed a fixed noise image u, with the client frozen and its gradients
flowing back to phi:

    phi* = argmin_phi  || f1(G_phi(u + sigma_t N_t)) - z ||^2 / n,      x* = G_phi*(u)

(mean squared feature error; N_t fresh standard normal noise, sigma_t the authors' schedule). The
generator's architecture is the image prior: no total-variation term and no weight to tune.

The authors' settings: Adam at lr 0.01, 25,000 iterations, u ~ U[0, 1] with 3 channels, input noise
sigma = 10 before iteration 10k, 2 before 15k, 0.5 before 20k, then none. privbench writes the
schedule as fractions of ``iterations`` (40 %, 60 %, 80 %), so a shorter run keeps its shape. The
generator is the authors' skip network (widths and kernels by the side of each level, 4 skip
channels, sigmoid output) with its depth derived from the image: the deepest level of both the
authors' configurations works on a 2 x 2 map (6 levels at 128 px, GLASS's 5 at 64 px), and an 8 x 8
digit can be halved only twice to get there, so it gets 2 levels (``levels`` 0; the reasons and the
rule are in ``privbench.image_prior``). The authors' widths reach 128 channels at 8 x 8 (``width``
0), which costs 7 times as much per step as 16 channels on 8 x 8 digits (measured, 10 targets side
by side: 0.15 s against 0.02 s per step); the default ``width`` 16 with ``iterations`` 100 keeps
a cell of 10 images near the default matrix's budget of ~2 s. The reproduction configs set the
authors' ``iterations=25000,width=0``.

What privbench does not copy: IB returns the iterate with the best SSIM against the ground truth,
an oracle; here the output is always the generator's last image of the clean u, clipped to
[0, 1]. IB fits one generator to a whole batch of observations; here every target has its own
freshly initialised generator, input and noise stream (seeds drawn from the attacker's stream), and
the targets run side by side as exact copies of one-at-a-time runs. IB's weight-noise loop does
nothing (it rebinds a local variable) and is left out.

Random perturbations (``through``), as ``rmle``: against an encoder that perturbs its output afresh
on every call (feature noise or dropout, input noise), ``clean`` (default) inverts the encoder with
the perturbation removed against the perturbed observation, as a white-box attacker who knows the
mechanism would (He et al.'s defense evaluation does the same); ``perturbed`` optimises through the
perturbed encoder, a fresh draw at every step.

``images`` test images are attacked, every class first (10: one per class on digits, as ``unsplit``
and He et al.'s evaluations). The harness scores the reconstructions like every reconstruction
(``attack.ssim``, ``attack.psnr``, privacy.score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench.api import (
    Attack,
    AttackOutput,
    deepest_side,
    hookimpl,
    likelihood_maximisation,
    param,
    prior_levels,
    without_random_layers,
)

SEED_RANGE = 2 ** 62


@dataclass
class Likelihood(Attack):
    """Fit a fresh deep-image-prior generator per target until the client maps its image onto z."""

    name: ClassVar[str] = "likelihood"
    summary: ClassVar[str] = ("white-box: fit a deep-image-prior generator so that encoder(G(u)) "
                              "matches z (DISCO's likelihood maximisation, as IB and GLASS run it)")
    threat_model: ClassVar[str] = "white-box"
    requires: ClassVar[frozenset[str]] = frozenset({"white-box"})
    cost_hint: ClassVar[float] = 3  # relative run time, for parallel scheduling (as rmle)

    iterations: int = param(100, "Adam steps on the generator's weights (authors: 25000); the input "
                                 "noise schedule is 10 / 2 / 0.5 / 0 before 40 / 60 / 80 / 100 % of "
                                 "them", minimum=1)
    lr: float = param(0.01, "Adam learning rate (authors: 0.01)", minimum=0.0)
    width: int = param(16, "channels at every level of the generator (0: the authors' "
                           "min(128, 2048 / side) per level)", minimum=0)
    levels: int = param(0, "levels of the U-Net (0: halve the image down to 2 x 2, the authors' "
                           "depth at 128 and 64 px; 2 on 8 x 8 digits)", minimum=0)
    images: int = param(10, "test images to attack, every class first (0: all)", minimum=0)
    through: str = param("clean", "against a randomly perturbing encoder: clean inverts it without "
                                  "the perturbation; perturbed optimises through fresh noise",
                         choices=("clean", "perturbed"))

    def victims(self) -> int:
        return self.images

    def unsupported(self, facts) -> str | None:
        side = min(facts.image_shape[-2:])
        if self.levels and deepest_side(side, self.levels) < 2:
            return (f"likelihood: {self.levels} levels would halve a {side}-pixel side below 2; "
                    f"at most {prior_levels(side)} here")
        return None

    def run(self, view) -> AttackOutput:
        encoder = view.encoder if self.through == "perturbed" else without_random_layers(view.encoder)
        seeds = target_seeds(view.generator, len(view.observed))
        reconstructed = likelihood_maximisation(
            encoder, view.observed, tuple(view.image_shape), view, seeds=seeds,
            iterations=self.iterations, lr=self.lr, levels=self.levels, width=self.width,
            description=f"likelihood: {len(seeds)} generators x {self.iterations} steps")
        return AttackOutput(reconstruction=reconstructed)


def target_seeds(generator, count: int) -> list[int]:
    """One seed per target, drawn from the attacker's stream: each target's generator weights,
    input u and input noise come from its own seed."""
    return [int(s) for s in torch.randint(SEED_RANGE, (count,), generator=generator)]


@hookimpl
def register_attacks(register):
    register(Likelihood)
