"""Attack ``known-plaintext``: key-free least-squares inversion from known (x, encoder(x)) pairs.

Where it comes from. Sharma & Chen's Disguised-Nets paper (Sec. 2.1 and 4.1), privbench's source,
assumes ciphertext-only attackers, who never see a (plain, disguised) pair, and argues that
enumerating the secret matrices is intractable; it runs no known-plaintext attack. The authors'
later work (not among privbench's source texts; known to the project only through its notes) attacks
the transform under known plaintext with the block positions known: estimate each block's matrix by
least squares, R_hat = (X^T X)^-1 X^T Y, undo it, and sweep k in 1, 2, 3, 10, 25, 50, 100. This
attack generalises that idea and assumes less: the attacker knows neither the block side nor the
permutation nor any matrix. Everything is recovered from the pairs alone; the key is never read.

Threat model: known-plaintext. The attacker holds k images the data owner really sent together with
their protected versions (``known-pairs`` access; which k, the attacker's stream decides) and the
protected test images it attacks.

``mode``:

- ``global``: one affine map from all protected values to all pixels, X ~ Z W + c. Exact when the
  transform is linear and noise-free and k exceeds the number of protected values; with fewer pairs
  the minimum-norm (or ``ridge``) solution. Works against any defense and measures how linear, and
  so how invertible from a few pairs, its protection is.
- ``blockwise``: for a block side ``block`` = m, each row of an m x m block is one sample (a block
  transform right-multiplies the block, so row r of observed block p is row r of plaintext block
  pi(p) times R, plus noise). The permutation is recovered by matching: the least-squares residual of
  every observed block regressed on every plaintext block (all pairs at once, ``match_blocks``),
  then the assignment of least total residual. One affine map per block follows. Each block row is
  a sample, so far fewer pairs suffice than for the global fit: noise-free, two pairs already give
  2m rows for the m + 1 unknowns of each output column.
- ``auto`` (default): the block side is unknown too. The candidates are the global fit and every
  plausible block side (those whose zero padding gives the observed height and width; side 1 is a
  pixel-wise map, which inverts identity exactly). A fifth of the pairs (drawn from the attacker's
  stream) is held out, each candidate is fitted on the rest and scored by its held-out mean squared
  pixel error; the lowest wins (fits within EXACT_TIE of the best count as tied and the smallest
  block side, then global, is preferred), and it is refitted on all k pairs. With one pair nothing
  can be held out, and the candidates are scored on that pair.

Every fit is affine (an intercept absorbs the noise's mean), solved on centred data by minimum-norm
least squares (``ridge`` = 0, LAPACK gelsd) or by ridge regression, whichever is asked; both handle
k below the number of unknowns.

Returns the reconstructions, scored by the harness like every reconstruction, ``attack.pairs`` (k),
``attack.block`` (the block side of the fit used, 0 for the global fit) and, under ``auto`` with at
least two pairs, ``attack.holdout_mse`` (the chosen fit's held-out error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench.api import (
    Attack,
    AttackOutput,
    MetricSpec,
    NotApplicable,
    hookimpl,
    param,
)

HOLDOUT_FRACTION = 0.2  # share of the known pairs auto holds out to compare the candidate fits
EXACT_TIE = 1e-6  # held-out errors within this fraction of the mean squared pixel count as tied
MAX_POSITIONS = 4096  # block positions matched at most (the cost matrix is positions^2)
RANK_TOLERANCE = 1e-10  # Gram eigenvalues below this fraction of a block's largest count as 0
APPLY_CHUNK = 1024  # test images reconstructed at a time


# -- affine least squares ----------------------------------------------------------------------------

def affine_fit(inputs: torch.Tensor, targets: torch.Tensor,
               ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, c) with targets ~ inputs W + c, batched over leading dimensions (samples on dim -2).

    Both sides are centred, so the intercept is left out of the penalty: c = mean(targets) -
    mean(inputs) W. ``ridge`` = 0 gives the minimum-norm least-squares W (gelsd, exact when the
    samples determine it); otherwise W = (A^T A + lambda s I)^-1 A^T Y with s = trace(A^T A) / m,
    the mean squared norm of an input column (so lambda is scale-free)."""
    input_mean, target_mean = inputs.mean(-2, keepdim=True), targets.mean(-2, keepdim=True)
    centred, centred_targets = inputs - input_mean, targets - target_mean
    if ridge > 0:
        gram = centred.mT @ centred
        scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
        weights = torch.linalg.solve(gram + ridge * scale[..., None, None] * eye,
                                     centred.mT @ centred_targets)
    else:
        weights = torch.linalg.lstsq(centred, centred_targets, driver="gelsd").solution
    return weights, target_mean - input_mean @ weights


# -- block geometry ----------------------------------------------------------------------------------

def blocks_of(images: torch.Tensor, block: int) -> torch.Tensor:
    """N x C x H x W (H, W multiples of block) -> N x P x C*block x block, P block positions in
    row-major order; each block's rows stacked over channels."""
    n, c, h, w = images.shape
    grid = images.reshape(n, c, h // block, block, w // block, block)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(n, (h // block) * (w // block), c * block, block)


def unblock(blocks: torch.Tensor, channels: int, padded: tuple[int, int], block: int) -> torch.Tensor:
    """Inverse of blocks_of."""
    n = blocks.shape[0]
    rows, cols = padded[0] // block, padded[1] // block
    grid = blocks.reshape(n, rows, cols, channels, block, block).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, channels, padded[0], padded[1])


def block_rows(blocks: torch.Tensor) -> torch.Tensor:
    """N x P x C*m x m -> P x N*C*m x m: every row of every block of one position, as samples."""
    n, positions, rows, side = blocks.shape
    return blocks.permute(1, 0, 2, 3).reshape(positions, n * rows, side)


def rows_to_blocks(rows: torch.Tensor, images: int) -> torch.Tensor:
    """Inverse of block_rows: P x N*C*m x m -> N x P x C*m x m."""
    positions, samples, side = rows.shape
    return rows.reshape(positions, images, samples // images, side).permute(1, 0, 2, 3)


def padded_to(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad images at the bottom and right to the protected data's height and width (a block
    transform pads the image up to a multiple of its block side)."""
    extra_h, extra_w = shape[-2] - x.shape[-2], shape[-1] - x.shape[-1]
    return torch.nn.functional.pad(x, (0, extra_w, 0, extra_h)) if extra_h or extra_w else x


def image_shaped(image_shape: tuple[int, ...], observed: torch.Size) -> bool:
    """Whether the protected data are images with the plaintext's channels, at least as large."""
    return (len(observed) == 4 and observed[1] == image_shape[0]
            and observed[2] >= image_shape[1] and observed[3] >= image_shape[2])


def block_fits(block: int, image_shape: tuple[int, ...], observed: torch.Size) -> bool:
    """Whether padding the image up to a multiple of ``block`` gives the observed height and width."""
    height, width = image_shape[1:]
    return (image_shaped(image_shape, observed)
            and -(-height // block) * block == observed[2] and -(-width // block) * block == observed[3])


def positions_of(block: int, observed: torch.Size) -> int:
    """Block positions of side ``block`` in the observed images."""
    return (observed[2] // block) * (observed[3] // block)


def plausible_blocks(image_shape: tuple[int, ...], observed: torch.Size) -> list[int]:
    """Every block side a block transform could have used to give data of the observed shape, with
    at most MAX_POSITIONS positions to match; none when the data are not image-shaped."""
    if not image_shaped(image_shape, observed):
        return []
    return [side for side in range(1, min(observed[2:]) + 1)
            if block_fits(side, image_shape, observed) and positions_of(side, observed) <= MAX_POSITIONS]


# -- the fits ----------------------------------------------------------------------------------------

def gram_pseudo_inverses(centred: torch.Tensor) -> torch.Tensor:
    """P x S x m -> P x m x m: the pseudo-inverse of each position's Gram matrix A^T A (its
    eigenvalues below RANK_TOLERANCE times the largest count as zero: rank-deficient blocks)."""
    values, vectors = torch.linalg.eigh(centred.mT @ centred)
    largest = values[..., -1:].clamp_min(torch.finfo(values.dtype).tiny)
    inverted = torch.where(values > RANK_TOLERANCE * largest, 1 / values.clamp_min(1e-300), 0.0)
    return (vectors * inverted.unsqueeze(-2)) @ vectors.mT


def residual_costs(x_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
    """cost[p, i]: the squared residual of observed block p's rows regressed on plaintext block i's
    rows (with an intercept), for all P^2 pairs at once.

    With centred rows A_i (plaintext) and B_p (observed) and C_ip = A_i^T B_p, the residual is
    ||B_p||^2 - <(A_i^T A_i)^+ C_ip, C_ip>: one S x Pm by S x Pm product gives every C_ip."""
    positions, samples, side = x_rows.shape
    centred_x = x_rows - x_rows.mean(1, keepdim=True)
    centred_z = z_rows - z_rows.mean(1, keepdim=True)
    cross = (centred_x.permute(1, 0, 2).reshape(samples, positions * side).T
             @ centred_z.permute(1, 0, 2).reshape(samples, positions * side))
    cross = cross.reshape(positions, side, positions, side)
    solved = torch.einsum("iab,ibpc->iapc", gram_pseudo_inverses(centred_x), cross)
    captured = (solved * cross).sum((1, 3))  # captured[i, p]
    return (centred_z.pow(2).sum((1, 2))[:, None] - captured.T).clamp_min(0)


def match_blocks(x_rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
    """For each observed block position p, the plaintext position i it came from.

    Under a block transform every row of observed block p is a row of plaintext block pi(p) times
    one matrix (plus noise), so the regression of p on the right i leaves the least residual. The
    assignment of least total residual (scipy's linear_sum_assignment) is the recovered
    permutation. Ties (e.g. among always-blank border blocks) are harmless: any of them inverts."""
    from scipy.optimize import linear_sum_assignment
    observed, source = linear_sum_assignment(residual_costs(x_rows, z_rows).numpy())
    return torch.as_tensor(source)[torch.argsort(torch.as_tensor(observed))]


def dual_solver(centred: torch.Tensor, ridge: float) -> torch.Tensor:
    """D x k matrix S with W = S Y for centred inputs A (k x D): the pseudo-inverse A^+ (minimum
    norm), or A^T (A A^T + lambda s I)^-1 (ridge, s = trace(A^T A) / D). Kept apart from Y, W
    never has to be formed: D^2 values would not fit for large images."""
    if ridge <= 0:
        return torch.linalg.pinv(centred)
    kernel = centred @ centred.T
    scale = float(torch.diagonal(kernel).sum()) / max(1, centred.shape[1])  # as in affine_fit
    eye = torch.eye(len(kernel), dtype=kernel.dtype)
    return centred.T @ torch.linalg.inv(kernel + ridge * max(scale, 1e-12) * eye)


@dataclass
class GlobalInverse:
    """X ~ Z W + c over all protected values and all pixels, W = S Y_c held as its two factors."""

    solver: torch.Tensor  # D_z x k
    targets: torch.Tensor  # k x D_x, centred
    input_mean: torch.Tensor
    target_mean: torch.Tensor
    image_shape: tuple[int, ...]
    block: ClassVar[int] = 0

    @classmethod
    def fit(cls, z: torch.Tensor, x: torch.Tensor, ridge: float) -> GlobalInverse:
        inputs, targets = z.flatten(1).double(), x.flatten(1).double()
        input_mean, target_mean = inputs.mean(0), targets.mean(0)
        return cls(dual_solver(inputs - input_mean, ridge), targets - target_mean, input_mean,
                   target_mean, tuple(x.shape[1:]))

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        plain = (z.flatten(1).double() - self.input_mean) @ self.solver @ self.targets + self.target_mean
        return plain.float().reshape(len(z), *self.image_shape)


@dataclass
class BlockwiseInverse:
    """One affine map per block, from the matched observed block's rows to the plaintext rows."""

    block: int
    source_of: torch.Tensor  # observed position p holds plaintext block source_of[p]
    weights: torch.Tensor  # P x m x m
    offset: torch.Tensor  # P x 1 x m
    image_shape: tuple[int, ...]

    @classmethod
    def fit(cls, block: int, z: torch.Tensor, x: torch.Tensor, ridge: float) -> BlockwiseInverse:
        """Match the blocks (``match_blocks``), then fit x_row ~ z_row W_p + c_p per observed
        position p against the rows of its plaintext block: the inverse of R plus the noise's mean."""
        x_rows = block_rows(blocks_of(padded_to(x, z.shape), block).double())
        z_rows = block_rows(blocks_of(z, block).double())
        source_of = match_blocks(x_rows, z_rows)
        weights, offset = affine_fit(z_rows, x_rows[source_of], ridge)
        return cls(block, source_of, weights, offset, tuple(x.shape[1:]))

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        rows = block_rows(blocks_of(z, self.block).double()) @ self.weights + self.offset
        plain = torch.empty_like(rows)
        plain[self.source_of] = rows
        channels, height, width = self.image_shape
        whole = unblock(rows_to_blocks(plain, len(z)).float(), channels, tuple(z.shape[-2:]), self.block)
        return whole[..., :height, :width]


def fit_inverse(block: int, z: torch.Tensor, x: torch.Tensor, ridge: float):
    """The global fit for block 0, the block-wise fit for a side of 1 or more."""
    return GlobalInverse.fit(z, x, ridge) if block == 0 else BlockwiseInverse.fit(block, z, x, ridge)


def reconstruct(inverse, z: torch.Tensor) -> torch.Tensor:
    """The inverse applied to the protected images, APPLY_CHUNK at a time, clipped to [0, 1]."""
    return torch.cat([inverse.apply(part) for part in z.split(APPLY_CHUNK)]).clamp(0, 1)


# -- choosing the fit (mode=auto) --------------------------------------------------------------------

def holdout_split(k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): HOLDOUT_FRACTION of the k pairs, at least one, held out;
    with a single pair both are that pair."""
    if k < 2:
        return torch.arange(k), torch.arange(k)
    order = torch.randperm(k, generator=generator)
    held = max(1, round(HOLDOUT_FRACTION * k))
    return order[held:], order[:held]


def choose_block(candidates: list[int], z: torch.Tensor, x: torch.Tensor, ridge: float,
                 generator: torch.Generator) -> tuple[int, float]:
    """(block side, held-out MSE) of the candidate with the least held-out pixel error.

    ``candidates`` are in order of preference: fits within EXACT_TIE * mean(x_held^2) of the best
    are tied (e.g. every exact fit of a noise-free map) and the first of them wins."""
    fit_part, held = holdout_split(len(x), generator)
    errors = [float((reconstruct(fit_inverse(block, z[fit_part], x[fit_part], ridge), z[held])
                     - x[held]).pow(2).mean()) for block in candidates]
    tolerance = EXACT_TIE * float(x[held].double().pow(2).mean())
    best = min(errors)
    chosen = next(i for i, error in enumerate(errors) if error <= best + tolerance)
    return candidates[chosen], errors[chosen]


@dataclass
class KnownPlaintext(Attack):
    """Fit an affine map from protected data back to pixels on k known pairs, key-free."""

    name: ClassVar[str] = "known-plaintext"
    summary: ClassVar[str] = ("known-plaintext: key-free least-squares inversion from k (x, encoder(x)) "
                              "pairs; auto finds the block side and permutation (Disguised-Nets key "
                              "recovery, generalised)")
    threat_model: ClassVar[str] = "known-plaintext"
    requires: ClassVar[frozenset[str]] = frozenset({"known-pairs"})
    cost_hint: ClassVar[float] = 0.1  # relative run time, for parallel scheduling

    pairs: int = param(100, "k, known (x, encoder(x)) pairs of images the owner sent", minimum=1)
    mode: str = param("auto", "auto: keep the global or block-wise fit (any plausible block side) "
                              "with the least held-out error; global: one map; blockwise: one map "
                              "per block of side `block`, blocks matched without the key",
                      choices=("auto", "global", "blockwise"))
    block: int = param(2, "the block side m the attacker assumes in mode=blockwise", minimum=1)
    ridge: float = param(0.0, "ridge penalty lambda, relative to the inputs' mean squared column "
                              "norm; 0: minimum-norm least squares", minimum=0.0)

    def run(self, view) -> AttackOutput:
        known, z_known = (part.detach().cpu() for part in view.known_pairs(self.pairs))
        diagnostics = {"attack.pairs": float(len(known))}
        if self.mode == "blockwise":
            self._check_blockwise(z_known, known)
            block = self.block
        elif self.mode == "global":
            block = 0
        else:
            candidates = plausible_blocks(tuple(known.shape[1:]), z_known.shape) + [0]
            block, error = choose_block(candidates, z_known, known, self.ridge, view.generator)
            if len(known) > 1:
                diagnostics["attack.holdout_mse"] = error
        inverse = fit_inverse(block, z_known, known, self.ridge)
        diagnostics["attack.block"] = float(block)
        return AttackOutput(reconstruction=reconstruct(inverse, view.observed.cpu()),
                            diagnostics=diagnostics)

    def _check_blockwise(self, z_known, known) -> None:
        if not image_shaped(tuple(known.shape[1:]), z_known.shape):
            raise NotApplicable("attack 'known-plaintext' with mode=blockwise needs image-shaped "
                                f"protected data; it observed shape {tuple(z_known.shape[1:])}")
        if z_known.shape[2] % self.block or z_known.shape[3] % self.block:
            raise NotApplicable(f"attack 'known-plaintext' with mode=blockwise, block={self.block}: "
                                f"the protected images ({z_known.shape[2]} x {z_known.shape[3]}) are "
                                "no whole number of blocks of that side")
        if positions_of(self.block, z_known.shape) > MAX_POSITIONS:
            raise NotApplicable(f"attack 'known-plaintext' with mode=blockwise, block={self.block}: "
                                f"{positions_of(self.block, z_known.shape)} block positions to match; "
                                f"accepted: at most {MAX_POSITIONS} (a larger block, or mode=global)")


@hookimpl
def register_attacks(register):
    register(KnownPlaintext)


@hookimpl
def register_metrics(register):
    register(MetricSpec("attack.block", "pixels", "none", "block side of the known-plaintext fit "
                        "the attack used (0: one global map)", "chosen by held-out error under "
                        "mode=auto, else the mode's", 0, None))
    register(MetricSpec("attack.holdout_mse", "pixel^2", "none", "held-out mean squared pixel error "
                        "of the chosen known-plaintext fit", "fit on 80% of the known pairs, "
                        "measured on the rest (mode=auto)", 0, None))
