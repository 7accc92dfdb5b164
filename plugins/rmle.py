"""Attack ``rmle``: white-box regularized maximum-likelihood inversion (He, Zhang, Lee, ACSAC 2019,
Sec. 4).

Threat model: white-box. The attacker holds the encoder's parameters (or the protection's key) and
observes the protected data z = f1(x0) of a victim image. It searches for the image whose encoding
matches, from a constant gray start, with Adam:

    x* = argmin_x  ||f1(x) - z||^2 / n  +  lambda_TV * TV_beta(x),     x clipped to [0, 1]

with TV_beta(x) = mean over pixels of ((x[i,j+1] - x[i,j])^2 + (x[i+1,j] - x[i,j])^2)^(beta/2)
(Mahendran & Vedaldi's total-variation prior). The squared distance is averaged over the n feature
entries and TV over pixels, so lambda_TV does not depend on the image or feature size.

Parameters and their sources: ``iterations`` 500 and ``lr`` 1e-2 are the paper's setting for
shallow splits (deep ones: lr 1e-3, 5000 iterations); ``beta`` 2 is the authors' code (squared
differences; the paper writes beta = 1); ``tv_weight`` = lambda_TV (the code uses 0 at conv11, 10
at ReLU22, 1e3 at ReLU32, 1 at MNIST ReLU2 with summed, not averaged, terms; our default 1e-3
suits the averaged loss). ``images`` test images are inverted (He et al. report 10, one per
class; 0 means all).

Returns the reconstructions; the harness scores them like every reconstruction (``attack.psnr``,
``attack.ssim``, privacy.score = clip((1 - SSIM) / (1 - SSIM of the mean aux image), 0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench.api import (
    Attack,
    AttackOutput,
    hookimpl,
    invert,
    param,
)


@dataclass
class RegularizedMLE(Attack):
    """Optimise an image until the encoder maps it onto the observed protected data."""

    name: ClassVar[str] = "rmle"
    summary: ClassVar[str] = ("white-box: optimise x so encoder(x) matches z, with a total-variation "
                              "prior (He et al. rMLE)")
    threat_model: ClassVar[str] = "white-box"
    requires: ClassVar[frozenset[str]] = frozenset({"white-box"})
    cost_hint: ClassVar[float] = 3  # relative run time, for parallel scheduling

    iterations: int = param(500, "Adam iterations (paper: 500 shallow, 5000 deep)", minimum=1)
    lr: float = param(1e-2, "Adam learning rate (paper: 1e-2 shallow, 1e-3 deep)", minimum=0.0)
    tv_weight: float = param(1e-3, "lambda_TV, weight of the total-variation prior", minimum=0.0)
    beta: float = param(2.0, "TV exponent beta (code: 2, paper: 1)", minimum=0.5)
    images: int = param(100, "test images to invert, every class first (0: all)", minimum=0)

    def victims(self) -> int:
        return self.images

    def run(self, view) -> AttackOutput:
        reconstructed = invert(view.encoder, view.observed, view.image_shape, view,
                               iterations=self.iterations, lr=self.lr, tv_weight=self.tv_weight,
                               beta=self.beta, description="rmle: inverting")
        return AttackOutput(reconstruction=reconstructed)


@hookimpl
def register_attacks(register):
    register(RegularizedMLE)
