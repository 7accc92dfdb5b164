"""Attack ``known-plaintext``: least-squares key recovery from known (x, encoder(x)) pairs.

Generalises the Disguised-Nets authors' later attack on their own transform: with k known
(plain, disguised) pairs, estimate the secret matrix by least squares, R_hat = (X^T X)^-1 X^T Y,
and undo it. Their block-wise version needs the block positions; a secret permutation adds a
matching step; but the whole transform (block matrices, permutation, padding) is linear in the
image, so one global least-squares map from protected data to pixels inverts it when k exceeds the
number of protected values. Against any other defense the same fit measures how linear (and so how
invertible from a few pairs) the protection is.

Threat model: known-plaintext. The attacker holds k images the data owner really sent together
with their protected versions (``known-pairs`` access; which k, the attacker's stream decides). It
fits
X ~ [Z, 1] W (pixels X, protected data Z, an intercept) with numpy-style minimum-norm least squares
(torch.linalg.lstsq, gelsd) - exact when k > dim(Z) and the map is linear and noise-free, the
minimum-norm solution when k is smaller - then reconstructs the test images as [Z_test, 1] W.
Sweep ``pairs`` (the paper sweeps k in 1, 2, 3, 10, 25, 50, 100).

``mode``: ``global`` (default; any defense) or ``blockwise``: for an assumed block side ``block``,
the attacker recovers the secret permutation from the pairs alone (which observed block is a
linear function of which plaintext block: least-squares residuals and an optimal assignment) and
then fits one least-squares inverse per block. Each block row is a sample, so this needs far fewer
pairs than the global fit. Nothing of the key is read: only the k pairs and the observed data.

Returns the reconstructions, scored by the harness like every reconstruction, and ``attack.pairs``
(k actually used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench.api import (
    Attack,
    AttackOutput,
    NotApplicable,
    hookimpl,
    param,
)


def with_intercept(z: torch.Tensor) -> torch.Tensor:
    """[Z, 1]: flattened protected data with a constant column, in float64."""
    flat = z.flatten(1).double()
    return torch.cat([flat, torch.ones(len(flat), 1, dtype=flat.dtype)], 1)


def least_squares(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """W minimising ||inputs W - targets||^2 (minimum-norm when underdetermined)."""
    return torch.linalg.lstsq(inputs, targets, driver="gelsd").solution


def global_inverse(z_known, x_known, z_test) -> torch.Tensor:
    """Fit X ~ [Z, 1] W on the known pairs and apply it to the test data."""
    weights = least_squares(with_intercept(z_known), x_known.flatten(1).double())
    return (with_intercept(z_test) @ weights).float().reshape(len(z_test), *x_known.shape[1:])


def blocks_of(images: torch.Tensor, block: int) -> torch.Tensor:
    """N x C x H x W (H, W multiples of block) -> N x P x C*block x block, P block positions in
    row-major order; each block's rows stacked over channels."""
    n, c, h, w = images.shape
    grid = images.reshape(n, c, h // block, block, w // block, block)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // block) * (w // block), c * block, block)


def padded_to(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad images at the bottom and right to the protected data's height and width (a block
    transform pads the image up to a multiple of its block side)."""
    extra_h, extra_w = shape[-2] - x.shape[-2], shape[-1] - x.shape[-1]
    return torch.nn.functional.pad(x, (0, extra_w, 0, extra_h)) if extra_h or extra_w else x


def block_rows(blocks: torch.Tensor) -> torch.Tensor:
    """N x P x C*m x m -> P x N*C*m x m: every row of every block of one position, as samples."""
    n, positions, rows, side = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(positions, n * rows, side)


def match_blocks(x_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
    """For each observed block position p, the plaintext position i it came from.

    Under the transform every row of observed block p is a row of plaintext block pi(p) times one
    matrix R (plus noise): the least-squares fit z_p ~ [x_i, 1] W leaves a small residual only for
    the right i. The residuals of all (p, i) pairs form a cost matrix; the assignment of least
    total residual (scipy's linear_sum_assignment) is the recovered permutation."""
    from scipy.optimize import linear_sum_assignment
    positions = x_rows.shape[0]
    inputs = torch.cat([x_rows, torch.ones(*x_rows.shape[:2], 1, dtype=x_rows.dtype)], 2)
    cost = torch.empty(positions, positions, dtype=torch.float64)
    for p in range(positions):
        targets = z_rows[p].expand(positions, *z_rows[p].shape)
        fitted = inputs @ torch.linalg.lstsq(inputs, targets, driver="gelsd").solution
        cost[p] = (fitted - targets).pow(2).sum((1, 2))
    observed, source = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(source)[torch.argsort(torch.as_tensor(observed))]


def blockwise_inverse(block: int, z_known, x_known, z_test) -> torch.Tensor:
    """Key-free block-wise inversion: recover which observed block holds which plaintext block
    (``match_blocks``), then fit each plaintext block's rows from its observed block's rows,
    x_row ~ [z_row, 1] W_i (the inverse of R_i plus the noise's mean), and apply it."""
    x_padded = padded_to(x_known, z_known.shape)
    x_rows = block_rows(blocks_of(x_padded, block).double())
    z_rows = block_rows(blocks_of(z_known, block).double())
    source_of = match_blocks(x_rows, z_rows)
    t_blocks = blocks_of(z_test, block).double()
    out = torch.empty(len(z_test), x_rows.shape[0], *t_blocks.shape[2:], dtype=torch.float64)
    for p, i in enumerate(source_of.tolist()):
        weights = least_squares(with_intercept(z_rows[p]), x_rows[i])
        out[:, i] = (with_intercept(t_blocks[:, p].reshape(-1, block)) @ weights).reshape(
            len(z_test), -1, block)
    whole = unblock(out.float(), x_known.shape[1], tuple(z_known.shape[-2:]), block)
    return whole[..., :x_known.shape[-2], :x_known.shape[-1]]


def unblock(blocks: torch.Tensor, channels: int, padded: tuple[int, int], block: int) -> torch.Tensor:
    """Inverse of blocks_of."""
    n = blocks.shape[0]
    rows, cols = padded[0] // block, padded[1] // block
    grid = blocks.reshape(n, rows, cols, channels, block, block).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, channels, padded[0], padded[1])


@dataclass
class KnownPlaintext(Attack):
    """Fit a linear map from protected data back to pixels on k known pairs."""

    name: ClassVar[str] = "known-plaintext"
    summary: ClassVar[str] = ("known-plaintext: least-squares linear map from k (x, encoder(x)) pairs "
                              "back to pixels (Disguised-Nets key recovery)")
    threat_model: ClassVar[str] = "known-plaintext"
    requires: ClassVar[frozenset[str]] = frozenset({"known-pairs"})
    cost_hint: ClassVar[float] = 0.1  # relative run time, for parallel scheduling

    pairs: int = param(100, "k, known (x, encoder(x)) pairs of images the owner sent", minimum=1)
    mode: str = param("global", "one global fit, or per block of a block-wise transform",
                      choices=("global", "blockwise"))
    block: int = param(2, "the block side m the attacker assumes in mode=blockwise", minimum=1)

    def run(self, view) -> AttackOutput:
        known, z_known = view.known_pairs(self.pairs)
        if self.mode == "blockwise":
            self._check_blockwise(z_known, known)
            reconstructed = blockwise_inverse(self.block, z_known, known, view.observed)
        else:
            reconstructed = global_inverse(z_known, known, view.observed)
        return AttackOutput(reconstruction=reconstructed,
                            diagnostics={"attack.pairs": float(len(known))})

    def _check_blockwise(self, z_known, known) -> None:
        if z_known.dim() != 4 or z_known.shape[1] != known.shape[1]:
            raise NotApplicable("attack 'known-plaintext' with mode=blockwise needs image-shaped "
                                f"protected data; it observed shape {tuple(z_known.shape[1:])}")
        height, width = z_known.shape[-2:]
        if height % self.block or width % self.block or height < known.shape[-2]:
            raise NotApplicable(f"attack 'known-plaintext' with mode=blockwise, block={self.block}: "
                                f"the protected images ({height} x {width}) are no whole number of "
                                "blocks of that side")


@hookimpl
def register_attacks(register):
    register(KnownPlaintext)
