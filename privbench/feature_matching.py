"""Distribution matching of feature samples: the multi-kernel MMD and the WGAN-GP gradient penalty.

Two losses that pull one sample of features towards another without pairing them, as FORA
(Xu et al., "A Stealthy Wolf in Sheep's Clothing: Feature-Oriented Reconstruction Attack against
Split Learning", CVPR 2024) trains its substitute client:

- ``mk_mmd``: the squared maximum mean discrepancy under a sum of Gaussian kernels (Long et al.,
  "Learning Transferable Features with Deep Adaptation Networks", ICML 2015; Gretton et al., JMLR
  2012, eq. 3 for the unbiased estimator). FORA's settings are the defaults: five kernels with
  alpha = 2^k for k = -3 .. 1, each of bandwidth sigma_u^2 = alpha_u * (mean squared distance over
  every pair of the pooled sample, the zero diagonal included), the bandwidth held fixed (no
  gradient flows through it).
- ``gradient_penalty``: Gulrajani et al.'s penalty (WGAN-GP, NeurIPS 2017, eq. 3),
  E[(||grad_x^ D(x^)||_2 - 1)^2] on points x^ drawn uniformly on the segments between paired real
  and fake samples; ``critic_loss`` and ``critic_step`` train a WGAN-GP critic with it (FORA's
  feature critic, the inverse network's realism prior).

Both take samples of any shape N x ...; each row is flattened to a vector.
"""

from __future__ import annotations

import torch
from torch import nn

FORA_ALPHAS = tuple(2.0 ** k for k in range(-3, 2))  # 1/8, 1/4, 1/2, 1, 2


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 for every row i of x and j of y (rows flattened); never below 0."""
    x, y = x.flatten(1), y.flatten(1)
    cross = x @ y.T
    return (x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2 * cross).clamp_min(0)


def kernel_bandwidths(source: torch.Tensor, target: torch.Tensor,
                      alphas: tuple[float, ...] = FORA_ALPHAS) -> torch.Tensor:
    """sigma_u^2 = alpha_u * mean ||p_i - p_j||^2 over all pairs (i, j) of the pooled sample
    p = source + target (the zero diagonal counted, as DAN's and FORA's code do), without gradient."""
    pooled = torch.cat([source.flatten(1), target.flatten(1)]).detach()
    mean_squared = squared_distances(pooled, pooled).mean()
    return torch.stack([alpha * mean_squared for alpha in alphas])  # made on the device: no host copy


def multi_kernel(squared: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """k(a, b) = sum_u exp(-||a - b||^2 / (2 sigma_u^2)) from the squared distances."""
    return torch.exp(-squared[..., None] / (2 * bandwidths)).sum(-1)


def mk_mmd(source: torch.Tensor, target: torch.Tensor,
           alphas: tuple[float, ...] = FORA_ALPHAS) -> torch.Tensor:
    """The unbiased estimate of MK-MMD^2 between the samples (n and m rows, n, m >= 2):

        1 / (n (n - 1)) sum_{i != j} k(s_i, s_j) + 1 / (m (m - 1)) sum_{i != j} k(t_i, t_j)
        - 2 / (n m) sum_{i, j} k(s_i, t_j)

    (Gretton et al. 2012, eq. 3), k the sum of Gaussian kernels of ``kernel_bandwidths``. Its
    expectation is 0 when both samples come from one distribution, so an estimate can be slightly
    negative. FORA's code adds the constant 2 / (n - 1) to keep its logged loss positive; a
    constant changes no gradient and is left out here."""
    n, m = len(source), len(target)
    if n < 2 or m < 2:
        raise ValueError("mk_mmd needs at least two rows in each sample")
    bandwidths = kernel_bandwidths(source, target, alphas)
    k_ss = multi_kernel(squared_distances(source, source), bandwidths)
    k_tt = multi_kernel(squared_distances(target, target), bandwidths)
    k_st = multi_kernel(squared_distances(source, target), bandwidths)
    within_source = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    within_target = (k_tt.sum() - k_tt.diagonal().sum()) / (m * (m - 1))
    return within_source + within_target - 2 * k_st.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's penalty mean_i (||grad D(x^_i)||_2 - 1)^2 with x^_i = e_i real_i + (1 - e_i) fake_i,
    e_i ~ U[0, 1] drawn from ``generator`` (one per row); the norm over each row's whole gradient.
    Differentiable in the critic's parameters (the graph is kept for its optimiser step)."""
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} "
                         "samples must have one shape")
    mix = torch.rand((len(real),) + (1,) * (real.dim() - 1), generator=generator).to(real)
    between = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    scores = critic(between)
    (gradients,) = torch.autograd.grad(scores.sum(), between, create_graph=True)
    return (gradients.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float,
                generator: torch.Generator) -> torch.Tensor:
    """L_D = E[D(fake)] - E[D(real)] + gp_weight * GP (Gulrajani et al., 2017, eq. 3): minimising it
    makes E[D(real)] - E[D(fake)] an estimate of the Wasserstein-1 distance between the two."""
    return critic(fake).mean() - critic(real).mean() + gp_weight * gradient_penalty(critic, real, fake, generator)


def critic_step(critic: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                fake: torch.Tensor, gp_weight: float, generator: torch.Generator) -> None:
    """One Adam step of the critic on ``critic_loss``."""
    optimizer.zero_grad(set_to_none=True)
    critic_loss(critic, real, fake.detach(), gp_weight, generator).backward()
    optimizer.step()
