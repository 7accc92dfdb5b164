"""Defense ``noise``: random noise on the input, ``v = f(x + eps)`` (He et al., ACSAC 2019, Sec. 7.4).

He et al. propose adding noise to the inference input as a (differentially private style) defense
against model inversion; their journal follow-up measures Gaussian noise of standard deviation sigma
and Laplace noise of scale b. Here the data owner sends ``x + eps`` with eps drawn afresh for every
image and every query. ``server``: ``retrain`` (default) trains the server's classifier on noisy owner
data (a fresh model of the scenario's architecture, ``target_epochs`` epochs, noise redrawn every
batch), so the service adapts to the noise level; ``unchanged`` keeps the owner's target model as
the server, as the authors' defense evaluation does (their ``inverse_whitebox_MNIST_defense.py``
adds the noise at inference to a model trained on clean images), so utility measures what the noise
costs a service that did not adapt.

Units: the authors' noise is in their normalised input units (mean 0.5, std 0.5), where sigma is
twice ``scale`` here: their sigma = 0.8 is ``scale`` = 0.4.

Parameters: ``distribution`` (gaussian: eps ~ N(0, sigma^2); laplace: eps ~ Laplace(0, b)) and
``scale`` (sigma or b) in pixel units of images in [0, 1]. The noisy image is not clipped.
Threat model: every access fact holds (the noise mechanism is public; it is differentiable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    Defense,
    Protection,
    hookimpl,
    param,
    train_server_on_encoded,
)


class NoisyInput(nn.Module):
    """x -> x + eps, eps i.i.d. per pixel, Gaussian (std ``scale``) or Laplace (scale ``scale``)."""

    random_perturbation = True  # a white-box attacker may invert the noiseless encoder

    def __init__(self, distribution: str, scale: float) -> None:
        super().__init__()
        self.distribution = distribution
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 0:
            return x
        if self.distribution == "gaussian":
            return x + self.scale * torch.randn_like(x)
        uniform = torch.rand_like(x).clamp(1e-7, 1 - 1e-7) - 0.5  # inverse-CDF Laplace draw
        return x - self.scale * uniform.sign() * torch.log1p(-2 * uniform.abs())


@dataclass
class Noise(Defense):
    """Gaussian or Laplace noise on the input image; the server trained on noisy owner data."""

    name: ClassVar[str] = "noise"
    summary: ClassVar[str] = "Gaussian (sigma) or Laplace (b) noise on the input, f(x+eps) (He et al.)"
    claims: ClassVar[frozenset[str]] = frozenset({"white-box", "black-box", "query-free"})  # He et al., Sec. 7.4

    distribution: str = param("gaussian", "noise distribution", choices=("gaussian", "laplace"))
    scale: float = param(0.3, "sigma (Gaussian std) or b (Laplace scale), pixels in [0, 1]",
                         minimum=0.0)
    server: str = param("retrain", "retrain: the server trained on noisy data; unchanged: the "
                                   "owner's target model (the authors' evaluation)",
                        choices=("retrain", "unchanged"))

    @property
    def needs_target_model(self) -> bool:  # type: ignore[override]
        """Only the unchanged server uses the owner's target model."""
        return self.server == "unchanged"

    def build(self, facts) -> Protection:
        return Protection(encoder=NoisyInput(self.distribution, self.scale),
                          server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        encoder = NoisyInput(self.distribution, self.scale)
        if self.server == "unchanged":
            return Protection(encoder=encoder, server=owner.target_model().eval().cpu())
        server = train_server_on_encoded(owner, encoder,
                                         description=f"noise: server on noisy data ({self.scale})")
        return Protection(encoder=encoder, server=server)


@hookimpl
def register_defenses(register):
    register(Noise)
