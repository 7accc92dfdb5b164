"""Defense ``pixelation``: differentially private pixelization (Fan, DBSec 2018).

L. Fan, "Image pixelization with differential privacy", DBSec 2018, pp. 148-162 (the baseline that
Disguised-Nets cites and criticises). The image is cut into a grid of b x b cells; every cell is
replaced by its mean pixel value plus Laplace noise, and the noisy mean fills the whole cell:

    P(X)_c = mean(X_c) + Lap(255 m / (b^2 epsilon))   (0-255 pixel units)

Two images are neighbours when they differ in at most m pixels; a change of m pixels moves the vector
of cell means by at most 255 m / b^2 in L1 norm, so Laplace noise of scale 255 m / (b^2 epsilon) per
cell makes the release epsilon-differentially private. Images here are in [0, 1], so the scale is
m / (b^2 epsilon). Noise is drawn afresh for every image and every query.

Parameters and the paper's symbols: ``b`` (cell side), ``m`` (neighbourhood: how many pixels may
differ between neighbouring images), ``epsilon`` (privacy budget). Fan used b = 16, m = 16,
epsilon = 0.5 on large images (m / b^2 = 1/16); 16 x 16 cells would turn an 8 x 8 digit into one
flat cell, so the defaults are b = 2 (a 4 x 4 grid on digits), m = 1 (the smallest neighbourhood: one
pixel) and Fan's epsilon = 0.5, i.e. Laplace scale 0.5 on [0, 1] images.

Choices the paper leaves open (documented here):
- sizes that are not a multiple of b: the last row / column of cells is clipped to the image and
  averages only its n_c < b^2 pixels, with Laplace scale m / (n_c epsilon). Each pixel then moves
  the privacy loss by at most epsilon / m, exactly as in a full cell, so the release stays
  epsilon-DP; full cells get Fan's scale m / (b^2 epsilon).
- the output is the pixelated image at the original size (each cell's value repeated over its
  pixels), not clipped to [0, 1]: clipping is harmless post-processing for DP but biases the cell
  means, and the server is trained on exactly what the mechanism releases.

Server: a fresh classifier of the scenario's architecture trained for ``target_epochs`` epochs on
pixelated owner images, the noise redrawn every batch. Threat model: every access fact holds
(white-box, black-box, query-free): the mechanism is public, has no secret and is differentiable
(cell averaging is linear, the noise does not depend on the image); its protection rests on the noise and the cell size.
Emits ``defense.laplace_scale``: the Laplace scale of a full cell, m / (b^2 epsilon), [0, 1] units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from privbench.api import (
    Defense,
    Protection,
    hookimpl,
    param,
    train_server_on_encoded,
)


def laplace_like(like: torch.Tensor) -> torch.Tensor:
    """Standard Laplace noise (scale 1) by inverse CDF: -sign(u) log(1 - 2|u|), u ~ U(-1/2, 1/2)."""
    uniform = torch.rand_like(like).clamp(1e-7, 1 - 1e-7) - 0.5
    return -uniform.sign() * torch.log1p(-2 * uniform.abs())


class PixelationEncoder(nn.Module):
    """X -> cell means of b x b cells + Lap(m / (n_c epsilon)), repeated back to the image size."""

    def __init__(self, b: int = 2, m: int = 1, epsilon: float = 0.5) -> None:
        super().__init__()
        self.b = b
        self.m = m
        self.epsilon = epsilon

    @property
    def laplace_scale(self) -> float:
        """Fan's scale of a full cell, m / (b^2 epsilon), for images in [0, 1]."""
        return 0.0 if math.isinf(self.epsilon) else self.m / (self.b ** 2 * self.epsilon)

    def cell_means(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free pixelization: the mean of each b x b grid cell (edge cells clipped)."""
        return F.avg_pool2d(x, self.b, ceil_mode=True)

    def cell_sizes(self, x: torch.Tensor) -> torch.Tensor:
        """n_c, the number of image pixels in each cell (b^2 except for clipped edge cells)."""
        ones = torch.ones((1, 1, *x.shape[-2:]), device=x.device, dtype=x.dtype)
        return F.avg_pool2d(ones, self.b, ceil_mode=True, divisor_override=1)

    def noisy_cell_means(self, x: torch.Tensor) -> torch.Tensor:
        """mean(X_c) + Lap(m / (n_c epsilon)): Fan's Laplace mechanism on each cell mean."""
        means = self.cell_means(x)
        if self.laplace_scale == 0:
            return means
        scale = self.m / (self.cell_sizes(x) * self.epsilon)
        return means + scale * laplace_like(means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = self.noisy_cell_means(x)
        repeated = cells.repeat_interleave(self.b, dim=-2).repeat_interleave(self.b, dim=-1)
        return repeated[..., : x.shape[-2], : x.shape[-1]]


@dataclass
class Pixelation(Defense):
    """Differentially private pixelization; the server trained on pixelated owner data."""

    name: ClassVar[str] = "pixelation"
    summary: ClassVar[str] = "b x b cell means + Laplace noise 255m/(b^2 eps), epsilon-DP (Fan 2018)"
    needs_target_model: ClassVar[bool] = False  # its server trains on pixelated data from scratch
    claims: ClassVar[frozenset[str]] = Defense.claims  # all: epsilon-DP holds whatever the attacker knows (Fan)

    b: int = param(2, "b: side of the pixelization cells (Fan: 16 on large images)", minimum=1)
    m: int = param(1, "m: neighbourhood, how many pixels may differ between neighbouring images "
                      "(Fan: 16)", minimum=1)
    epsilon: float = param(0.5, "epsilon: differential privacy budget (Fan: 0.5); inf for no noise",
                           minimum=1e-6, infinite=True)

    def build(self, facts) -> Protection:
        return Protection(encoder=PixelationEncoder(self.b, self.m, self.epsilon),
                          server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        encoder = PixelationEncoder(self.b, self.m, self.epsilon)
        server = train_server_on_encoded(owner, encoder,
                                         description=f"pixelation: server on pixelated data (b={self.b}, "
                                                     f"m={self.m}, eps={self.epsilon:g})")
        return Protection(encoder=encoder, server=server)

    def evaluate(self, protection, data) -> dict[str, float]:
        return {"defense.laplace_scale": protection.encoder.laplace_scale}


@hookimpl
def register_defenses(register):
    register(Pixelation)
