"""Attack ``known-plaintext``: least-squares key recovery from known (x, encoder(x)) pairs.

Generalises the Disguised-Nets authors' later attack on their own transform: with k known
(plain, disguised) pairs, estimate the secret matrix by least squares, R_hat = (X^T X)^-1 X^T Y,
and undo it. Their block-wise version needs the block positions; a secret permutation adds a
matching step; but the whole transform (block matrices, permutation, padding) is linear in the
image, so one global least-squares map from protected data to pixels inverts it when k exceeds the
number of protected values. Against any other defense the same fit measures how linear (and so how
invertible from a few pairs) the protection is.

Threat model: known-plaintext. The attacker holds k of its aux images together with their
protected versions (it needs the encoder's outputs for them: ``query``). It fits
X ~ [Z, 1] W (pixels X, protected data Z, an intercept) with numpy-style minimum-norm least squares
(torch.linalg.lstsq, gelsd) - exact when k > dim(Z) and the map is linear and noise-free, the
minimum-norm solution when k is smaller - then reconstructs the test images as [Z_test, 1] W.
Sweep ``pairs`` (the paper sweeps k in 1, 2, 3, 10, 25, 50, 100).

``mode``: ``global`` (default; any defense) or ``blockwise``: one least-squares fit per block
position, using the block size, padding and permutation the encoder exposes (a Disguised-Nets
encoder); it needs far fewer pairs (k > block^2) because each block has only block^2 unknowns
per column.

Reports ``attack.psnr``, ``attack.ssim``, ``attack.pairs`` (k actually used) and privacy.score as
for every reconstruction attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench import hookimpl
from privbench.core import Attack, AttackResult
from privbench.errors import NotApplicable
from privbench.params import param
from privbench.reconstruction import reconstruction_result
from privbench.training import apply, seed_everything


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


def blockwise_inverse(encoder, z_known, x_known, z_test) -> torch.Tensor:
    """Per source block position i, fit the block of x from the block of z that the (known)
    permutation moved it to: each block row is a sample, x_row ~ z_row R_i^-1 (plus noise)."""
    block = int(encoder.block)
    padded = tuple(encoder.padded_shape[-2:])
    pad = (0, padded[1] - x_known.shape[-1], 0, padded[0] - x_known.shape[-2])
    x_blocks = blocks_of(torch.nn.functional.pad(x_known, pad), block)
    source_to_output = torch.argsort(encoder.permutation.cpu())  # output p holds source permutation[p]
    z_blocks = blocks_of(z_known, block)[:, source_to_output]
    t_blocks = blocks_of(z_test, block)[:, source_to_output]
    out = torch.empty(len(z_test), *t_blocks.shape[1:], dtype=torch.float64)
    for i in range(x_blocks.shape[1]):
        inputs = with_intercept(z_blocks[:, i].reshape(-1, block))
        weights = least_squares(inputs, x_blocks[:, i].reshape(-1, block).double())
        out[:, i] = (with_intercept(t_blocks[:, i].reshape(-1, block)) @ weights).reshape(
            len(z_test), -1, block)
    return unblock(out.float(), x_known.shape[1], padded, block)[..., :x_known.shape[-2], :x_known.shape[-1]]


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
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)"
    cost_hint: ClassVar[float] = 0.1  # relative run time, for parallel scheduling

    pairs: int = param(100, "k, known (x, encoder(x)) pairs from the aux images", minimum=1)
    mode: str = param("global", "one global fit, or per block of a block-wise encoder",
                      choices=("global", "blockwise"))

    def run(self, scenario, protection, ctx) -> AttackResult:
        if self.mode == "blockwise":
            self._check_blockwise(protection.encoder)
        seed_everything(ctx.seed)
        aux = scenario.images("aux")
        known = aux[torch.randperm(len(aux), generator=torch.Generator().manual_seed(ctx.seed))[:self.pairs]]
        z_known = apply(protection.encoder, known, ctx)
        test = scenario.images("test")
        z_test = apply(protection.encoder, test, ctx)
        if self.mode == "blockwise":
            reconstructed = blockwise_inverse(protection.encoder, z_known, known, z_test)
        else:
            reconstructed = global_inverse(z_known, known, z_test)
        return reconstruction_result(scenario, test, z_test, reconstructed,
                                     extra={"attack.pairs": float(len(known))})

    @staticmethod
    def _check_blockwise(encoder) -> None:
        missing = [a for a in ("block", "padded_shape", "permutation") if not hasattr(encoder, a)]
        if missing:
            raise NotApplicable("attack 'known-plaintext' with mode=blockwise needs a block-wise "
                                "encoder (one exposing block, padded_shape, permutation, as "
                                f"disguised-nets does); this encoder lacks {', '.join(missing)}")


@hookimpl
def register_attacks(register):
    register(KnownPlaintext)
