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


def starting_images(count: int, image_shape: tuple[int, ...], start: str,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """rMLE's starting point: a constant gray image (He et al.'s code) or uniform noise in [0, 1]
    (the paper's random start), drawn from ``generator``."""
    if start == "gray":
        return torch.full((count, *image_shape), GRAY)
    if start == "random":
        return torch.rand((count, *image_shape), generator=generator)
    raise ValueError(f"unknown start {start!r}; accepted: gray, random")


def invert(encoder: nn.Module, targets: torch.Tensor, image_shape: tuple[int, ...], ctx, *,
           iterations: int, lr: float, tv_weight: float, beta: float, description: str,
           start: str = "gray", generator: torch.Generator | None = None) -> torch.Tensor:
    """x* = argmin ||encoder(x) - targets||^2 / n + tv_weight * TV_beta(x) (He et al., eq. 3),
    from a gray or random start, with Adam; x is clipped to [0, 1] after every step."""
    encoder = copy.deepcopy(encoder).to(ctx.device).eval()  # the caller's module stays as it was
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    targets = targets.to(ctx.device)
    x = starting_images(len(targets), image_shape, start, generator).to(ctx.device).requires_grad_(True)
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
                  epochs: int, lr: float, batch_size: int, description: str,
                  halve_lr_every: int = 0) -> nn.Module:
    """g = argmin_g sum ||g(z) - x||^2 over the (z, x) pairs: He et al.'s inverse network (Adam with
    amsgrad; their code halves the learning rate every 10 epochs)."""
    return fit(decoder, protected, images, nn.functional.mse_loss, ctx, epochs=epochs, lr=lr,
               batch_size=batch_size, description=description, halve_lr_every=halve_lr_every)


class MirroredDecoder(nn.Module):
    """An inverse network shaped like He et al.'s: transposed convolutions that mirror the client
    part, from the protected data's shape back to the image's, so its size and cost scale with
    what the client computed.

    He et al.'s MNIST decoders are one 5 x 5 layer for the conv1 split (8 -> 1 channels, 201
    parameters) and two transposed convolutions for ReLU2 (16 -> 8 -> 1, 3,409 parameters). Here,
    from z of c x h x w: while doubling the sides still leaves room for a last 5 x 5 layer, a
    stride-2 transposed convolution halves the channels (undoing the client's pooling); then one
    transposed convolution reaches the image's sides exactly and its channels (kernel d + 1 for a
    side short by d >= 4, else a 5 x 5-like kernel with padding). On 28 x 28 MNIST this gives He et
    al.'s parameter counts: 201 at conv1, 3,409 at ReLU2. ReLU between layers; no squashing at the
    end (the scorer clamps to [0, 1]). A vector z first goes through a linear layer onto a coarse
    map of a quarter of the image's side."""

    def __init__(self, z_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        if len(z_shape) == 3:
            c, h, w = z_shape
        else:
            size = 1
            for dim in z_shape:
                size *= dim
            c, h, w = max(channels, 16), max(1, height // 4), max(1, width // 4)
            layers += [nn.Flatten(), nn.Linear(size, c * h * w), nn.ReLU(), nn.Unflatten(1, (c, h, w))]
        while 2 * h <= height - 4 and 2 * w <= width - 4:
            out = max(channels, c // 2)
            layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
            c, h, w = out, 2 * h, 2 * w
        (kh, ph), (kw, pw) = last_kernel(height - h), last_kernel(width - w)
        layers.append(nn.ConvTranspose2d(c, channels, (kh, kw), padding=(ph, pw)))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def last_kernel(short_by: int) -> tuple[int, int]:
    """(kernel, padding) of a stride-1 transposed convolution that grows a side by ``short_by``
    (shrinks it when negative): output = input + kernel - 1 - 2 * padding."""
    padding = max(0, (5 - short_by) // 2)
    return short_by + 1 + 2 * padding, padding
