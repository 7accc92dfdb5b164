"""Dependence between two batches of samples: Szekely's distance correlation, and the squared-distance
variant (sqrt of the RV coefficient) that several NoPeek implementations compute under that name.

Distance correlation (Szekely, Rizzo & Bakirov, Ann. Statist. 2007, Definition 4 and eq. 2.8) of two
samples x_1..x_n and z_1..z_n, each row flattened to a vector:

    a_ij = ||x_i - x_j||_2,  A = a - row mean - column mean + grand mean  (double centring)
    dCov^2(X, Z) = mean_ij(A_ij B_ij),  dCor^2 = dCov^2(X, Z) / sqrt(dCov^2(X, X) dCov^2(Z, Z))

It lies in [0, 1] and, for the population, is 0 exactly when X and Z are independent.

The *squared-distance variant*: InferenceBenchmark, NoPeekNN and Titcombe et al.'s code (TTitcombe/
Model-Inversion-SplitNN, ``DistanceCorrelationLoss``) put ||x_i - x_j||^2 where a_ij should be
||x_i - x_j||. Double centring squared distances gives -2 times the centred Gram matrix, so the ratio
becomes the RV coefficient tr(K_x K_z) / sqrt(tr(K_x^2) tr(K_z^2)) (Robert & Escoufier 1976) and
their "dCor" is sqrt(RV): a measure of *linear* dependence only. ``rv_distance_correlation`` computes
it, so that measured values can be set beside the numbers those papers publish.

Both are V-statistics: they depend on the number of samples (biased upwards on small batches), so
``blockwise`` averages a statistic over consecutive blocks of a fixed size, as Titcombe et al.
evaluate theirs (batches of 256 reconstructions, averaged).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EVALUATION_BLOCK = 256  # Titcombe et al.'s evaluation batch (scripts/evaluate_attackers.py)


ROUNDING = 1e-12  # squared distances below this share of the largest squared norm count as 0


def pairwise_distances(rows: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """||r_i - r_j||_2 (``squared``: its square) between the rows of ``rows`` flattened per sample, in
    float64.

    Squared distances come from the Gram matrix, |r_i|^2 + |r_j|^2 - 2 r_i.r_j (an n x n x d tensor of
    differences would not fit for 256 CIFAR images), in float64. Its rounding leaves coinciding rows
    a tiny nonzero distance, which would turn a batch of identical rows into equidistant points, so
    squared distances below ``ROUNDING`` times the largest squared norm are set to exactly 0. The
    square root is taken only of the others, so the gradient stays finite (0) where rows coincide."""
    flat = rows.flatten(1).double()
    norms = flat.pow(2).sum(1)
    squares = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * flat @ flat.T).clamp_min(0)
    off_diagonal = ~torch.eye(len(flat), dtype=torch.bool, device=flat.device)
    distinct = off_diagonal & (squares.detach() > ROUNDING * float(norms.detach().max()))
    squares = torch.where(distinct, squares, torch.zeros_like(squares))
    if squared:
        return squares
    return torch.where(distinct, torch.where(distinct, squares, torch.ones_like(squares)).sqrt(),
                       torch.zeros_like(squares))


def double_centred(distances: torch.Tensor) -> torch.Tensor:
    """A = a - row means - column means + grand mean."""
    return (distances - distances.mean(0, keepdim=True) - distances.mean(1, keepdim=True)
            + distances.mean())


def double_centred_distances(rows: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """The double-centred (Euclidean, or ``squared``) distance matrix of the rows."""
    return double_centred(pairwise_distances(rows, squared))


def _correlation(x: torch.Tensor, z: torch.Tensor, squared: bool) -> torch.Tensor:
    """sqrt(mean(A B) / sqrt(mean(A A) mean(B B))) for the chosen distances; 0 for a constant batch."""
    a, b = double_centred_distances(x, squared), double_centred_distances(z, squared)
    covariance = (a * b).mean()
    variances = (a * a).mean() * (b * b).mean()
    if float(variances.detach()) <= 0:  # a constant batch: no dependence to measure
        return (covariance * 0).to(x.dtype)
    return (covariance.clamp_min(0) / variances.sqrt()).clamp_min(0).sqrt().to(x.dtype)


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Szekely's sample distance correlation dCor(x, z) of two batches (rows = samples, each
    flattened), in [0, 1]; differentiable (NoPeek trains on it)."""
    return _correlation(x, z, squared=False)


def rv_distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The squared-distance "dCor" of InferenceBenchmark, NoPeekNN and Titcombe et al.: sqrt(RV), in
    [0, 1]; a linear-dependence measure, *not* a distance correlation (see the module docstring)."""
    return _correlation(x, z, squared=True)


def blockwise(statistic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
              z: torch.Tensor, block: int = EVALUATION_BLOCK) -> float:
    """The mean of ``statistic`` over ceil(n / block) consecutive, near-equal blocks of the n paired
    rows (one block when n <= block), computed without gradients."""
    if len(x) != len(z):
        raise ValueError(f"blockwise: {len(x)} rows against {len(z)}; the samples must be paired")
    count = max(1, -(-len(x) // block))
    with torch.no_grad():
        values = [float(statistic(xs, zs))
                  for xs, zs in zip(torch.tensor_split(x, count), torch.tensor_split(z, count), strict=True)]
    return sum(values) / len(values)
