"""Attack algorithms several plugins share: inversion by optimisation with a total-variation prior
(He et al.'s rMLE, also the last step of their query-free shadow attack) and decoder training (their
inverse network).

``invert`` solves x* = argmin_x ||f(x) - z||^2 / n + lambda_TV * TV_beta(x) with Adam from a
constant gray start, clipping x to [0, 1] after every step (He et al., ACSAC 2019, Sec. 4, eq. 3,
with Mahendran & Vedaldi's TV prior). ``train_decoder`` fits g(z) ~ x on (z, x) pairs with a pixel
L2 loss (He et al., Sec. 5).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from privbench.training import fit

GRAY = 0.5


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """TV_beta(x): mean of ((dx)^2 + (dy)^2)^(beta/2) over pixels (last row/column dropped)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    squared = dx.pow(2) + dy.pow(2)
    if beta == 2:
        return squared.mean()
    return (squared + 1e-8).pow(beta / 2).mean()


def invert(encoder: nn.Module, targets: torch.Tensor, image_shape: tuple[int, ...], ctx, *,
           iterations: int, lr: float, tv_weight: float, beta: float, description: str) -> torch.Tensor:
    """x* = argmin ||encoder(x) - targets||^2 / n + tv_weight * TV_beta(x), from a gray start."""
    encoder = copy.deepcopy(encoder).to(ctx.device).eval()  # the caller's module stays as it was
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    targets = targets.to(ctx.device)
    x = torch.full((len(targets), *image_shape), GRAY, device=ctx.device, requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=lr)
    with ctx.progress.task(description, total=iterations) as advance:
        for _ in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            mismatch = (encoder(x) - targets).pow(2).mean()
            loss = mismatch + tv_weight * total_variation(x, beta) if tv_weight else mismatch
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            advance()
    return x.detach().cpu()


def train_decoder(decoder: nn.Module, protected: torch.Tensor, images: torch.Tensor, ctx, *,
                  epochs: int, lr: float, batch_size: int, description: str) -> nn.Module:
    """g = argmin_g sum ||g(z) - x||^2 over the (z, x) pairs: He et al.'s inverse network."""
    return fit(decoder, protected, images, nn.functional.mse_loss, ctx, epochs=epochs, lr=lr,
               batch_size=batch_size, description=description)
