"""Attack ``rmle``: white-box regularized maximum-likelihood inversion (He, Zhang, Lee, ACSAC 2019,
Sec. 4).

Threat model: white-box. The attacker holds the encoder's parameters (or the protection's key) and
observes the protected data z = f1(x0) of a victim image. It searches for the image whose encoding
matches, from a constant gray (the authors' code) or random (the paper) start:

    x* = argmin_x  ||f1(x) - z||^2 / n  +  lambda_TV * TV_beta(x)                           (eq. 3)

with TV_beta(x) = mean over pixels of ((x[i,j+1] - x[i,j])^2 + (x[i+1,j] - x[i,j])^2)^(beta/2)
(Mahendran & Vedaldi's total-variation prior). Both terms are *means*, as in the authors' code.

Optimiser (``optimizer``, ``privbench.inversion``): ``authors`` (default) is their released code's
Adam (amsgrad, eps 1e-3) on the normalised image in [-1, 1] from 0, clipped only at the end;
``adam`` is torch's Adam on [0, 1] pixels clipped after every step, a stronger optimiser than
theirs (measured at MNIST conv1: 86 dB in 500 iterations, where theirs reaches 45 in 5,000).

Scale of lambda_TV. The authors compute both means on images normalised to [-1, 1]; privbench's
pixels are in [0, 1], where every difference is half as large, so their TV is 4 times ours (beta =
2) while the feature term is the same (the encoder normalises its input itself). Their lambda_TV =
1 is therefore ``tv_weight`` = 4 here. ``tv_weight=auto`` (default) follows the authors per split
depth, counted as the weight layers (convolutions, linear layers) the encoder runs:

    weight layers     lambda_TV (theirs -> ours)   lr     iterations   their split
    0-1 (or image-like output)  0 -> 0             1e-2   500          conv1 / conv11 (shallow)
    2-3               1 -> 4                       1e-3   5000         MNIST ReLU2
    4-5               10 -> 40                     1e-3   5000         CIFAR ReLU22
    6 and more        1e3 -> 4e3                   1e-3   5000         CIFAR ReLU32

and scales it to the image's size: the authors' values hold at 28 x 28 and 32 x 32; on a smaller
image of side s the same content has neighbour differences 28 / s times as large, so its TV is
(28 / s)^2 times larger, and ``auto`` multiplies lambda_TV by (s / 28)^2 (s < 28; 0.08 on 8 x 8
digits) so the prior weighs as much against the feature term as at 28 x 28.

Protections whose output is shaped like the image (noise, disguising, DAPter) get the shallow
setting: their output is the image's own pixels, transformed. ``iterations`` and ``lr`` of 0 follow
the table (the paper's Sec. 4.3 settings; the authors' released commands run 5,000 iterations at lr
1e-2 at every split, which the reproduction configs give explicitly); the defaults, 500 iterations
at lr 1e-2, are the paper's shallow setting, affordable in the default matrix. ``beta`` 2 is the
code's (squared differences; the paper writes beta = 1). ``images`` test images are inverted, every
class first (He et al. report 10, one per class; 0: all); the harness picks them.

Random perturbations (``through``). Against an encoder that perturbs its output afresh on every
call (feature noise or dropout, input noise), ``clean`` (default) inverts the encoder with the
perturbation removed against the perturbed observation, as the authors' defense evaluation does
(``inverse_whitebox_MNIST_defense.py``) and as a white-box attacker who knows the mechanism would;
``perturbed`` optimises through the perturbed encoder, a fresh draw at every step.

Returns the reconstructions; the harness scores them like every reconstruction (``attack.psnr``,
``attack.ssim``, privacy.score = clip((1 - SSIM) / (1 - SSIM of the mean aux image), 0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from privbench.api import (
    OPTIMIZERS,
    Attack,
    AttackOutput,
    checked_tv_weight,
    hookimpl,
    invert,
    param,
    tv_size_factor,
    without_random_layers,
)

# (least weight layers, lambda_TV in the authors' [-1, 1] scale, lr, iterations): He et al.'s
# settings by split depth (paper Sec. 4.3 and their released code).
DEPTH_SETTINGS = ((6, 1e3, 1e-3, 5000), (4, 10.0, 1e-3, 5000), (2, 1.0, 1e-3, 5000), (0, 0.0, 1e-2, 500))
PIXEL_SCALE = 4.0  # TV on [-1, 1] images is 4x TV on [0, 1] images (beta = 2)


def weight_layers(encoder: nn.Module) -> int:
    """How many convolutions and linear layers the encoder runs: its split depth."""
    return sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear) for m in encoder.modules())


def depth_setting(encoder: nn.Module, image_like: bool) -> tuple[float, float, int]:
    """(tv_weight in privbench's pixel scale at 28 x 28, lr, iterations) the authors use at this
    depth."""
    depth = 0 if image_like else weight_layers(encoder)
    for least, tv, lr, iterations in DEPTH_SETTINGS:
        if depth >= least:
            return PIXEL_SCALE * tv, lr, iterations
    raise AssertionError("DEPTH_SETTINGS covers every depth")


@dataclass
class RegularizedMLE(Attack):
    """Optimise an image until the encoder maps it onto the observed protected data."""

    name: ClassVar[str] = "rmle"
    summary: ClassVar[str] = ("white-box: optimise x so encoder(x) matches z, with a total-variation "
                              "prior (He et al. rMLE)")
    threat_model: ClassVar[str] = "white-box"
    requires: ClassVar[frozenset[str]] = frozenset({"white-box"})
    cost_hint: ClassVar[float] = 3  # relative run time, for parallel scheduling

    iterations: int = param(500, "Adam iterations (0: auto, the authors' 500 shallow / 5000 deep)",
                            minimum=0)
    lr: float = param(1e-2, "Adam learning rate (0: auto, the authors' 1e-2 shallow / 1e-3 deep)",
                      minimum=0.0)
    tv_weight: str = param("auto", "lambda_TV in privbench's [0, 1] pixel scale (4x the authors' "
                                   "[-1, 1] value), or auto: the authors' setting for the split "
                                   "depth, scaled to the image size")
    beta: float = param(2.0, "TV exponent beta (code: 2, paper: 1)", minimum=0.5)
    start: str = param("gray", "starting image: gray (authors' code) or random (paper)",
                       choices=("gray", "random"))
    images: int = param(100, "test images to invert, every class first (0: all)", minimum=0)
    optimizer: str = param("authors", "authors: Adam with amsgrad and eps 1e-3 on the normalised "
                                      "image, clipped at the end (their code); adam: torch's Adam "
                                      "on [0, 1] pixels, clipped every step", choices=OPTIMIZERS)
    through: str = param("clean", "against a randomly perturbing encoder: clean inverts it without "
                                  "the perturbation (the authors' defense evaluation); perturbed "
                                  "optimises through fresh noise", choices=("clean", "perturbed"))

    def __post_init__(self) -> None:
        checked_tv_weight(self.name, self.tv_weight)

    def victims(self) -> int:
        return self.images

    def settings(self, encoder: nn.Module, image_like: bool,
                 image_shape: tuple[int, ...]) -> tuple[float, float, int]:
        """(tv_weight, lr, iterations): the authors' for this depth and image size, unless given."""
        tv, lr, iterations = depth_setting(encoder, image_like)
        tv_weight = tv * tv_size_factor(image_shape) if self.tv_weight == "auto" else float(self.tv_weight)
        return tv_weight, self.lr or lr, self.iterations or iterations

    def run(self, view) -> AttackOutput:
        encoder = view.encoder if self.through == "perturbed" else without_random_layers(view.encoder)
        image_like = tuple(view.observed.shape[1:]) == tuple(view.image_shape)
        tv_weight, lr, iterations = self.settings(encoder, image_like, tuple(view.image_shape))
        reconstructed = invert(encoder, view.observed, view.image_shape, view, iterations=iterations,
                               lr=lr, tv_weight=tv_weight, beta=self.beta, start=self.start,
                               generator=view.generator, optimizer=self.optimizer,
                               description=f"rmle: inverting ({iterations} iterations, TV {tv_weight:g})")
        return AttackOutput(reconstruction=reconstructed)


@hookimpl
def register_attacks(register):
    register(RegularizedMLE)
