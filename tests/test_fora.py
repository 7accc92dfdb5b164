"""FORA (Xu et al., CVPR 2024): the MK-MMD estimator and the WGAN-GP penalty against direct
computations, the networks sized from the observed shape alone, the attack contract, and on digits:
the reconstruction beats the mean image at a shallow split, beats the query-free shadow there and
stays below the inverse network that has queries, and a deeper split recovers less."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from privbench.feature_matching import (
    FORA_ALPHAS,
    gradient_penalty,
    kernel_bandwidths,
    mk_mmd,
    squared_distances,
)
from privbench.testing import check_attack, harness, run_cell
from privbench_plugins.fora import Fora, feature_critic, feature_decoder, substitute_client

# -- MK-MMD --------------------------------------------------------------------------------------------


def direct_mk_mmd(source: torch.Tensor, target: torch.Tensor, alphas=FORA_ALPHAS) -> float:
    """Gretton et al.'s unbiased MMD^2 (JMLR 2012, eq. 3) written out with loops, with FORA's
    bandwidths sigma_u^2 = alpha_u * mean squared distance over all ordered pairs of the pool."""
    pool = [row.flatten() for row in torch.cat([source, target]).double()]
    mean_squared = sum(float((p - q).pow(2).sum()) for p in pool for q in pool) / len(pool) ** 2

    def k(p, q):
        squared = float((p - q).pow(2).sum())
        return sum(math.exp(-squared / (2 * alpha * mean_squared)) for alpha in alphas)

    s, t = pool[:len(source)], pool[len(source):]
    n, m = len(s), len(t)
    within_s = sum(k(s[i], s[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_t = sum(k(t[i], t[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(a, b) for a in s for b in t) / (n * m)
    return within_s + within_t - 2 * cross


def test_mk_mmd_on_a_hand_example():
    """s = {0, 1}, t = {0, 2} on a line: the pooled squared distances sum to 22 over 16 ordered pairs,
    so sigma^2 = 1.375 alpha; within s: k(1); within t: k(4); cross: (k(0) + k(4) + 2 k(1)) / 4;
    MMD^2 = k(1) + k(4) - (k(0) + k(4) + 2 k(1)) / 2 = (k(4) - k(0)) / 2."""
    source, target = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    assert torch.allclose(kernel_bandwidths(source, target, (1.0,)), torch.tensor([1.375]))
    expected = (math.exp(-4 / 2.75) - 1) / 2
    assert mk_mmd(source, target, (1.0,)).item() == pytest.approx(expected, rel=1e-6)
    five = sum(math.exp(-4 / (2.75 * alpha)) - 1 for alpha in FORA_ALPHAS) / 2
    assert mk_mmd(source, target).item() == pytest.approx(five, rel=1e-6)


def test_mk_mmd_equals_the_direct_sum_on_feature_maps_of_unequal_sample_sizes():
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(7, 2, 3, 3, generator=generator), torch.randn(5, 2, 3, 3, generator=generator) + 0.3
    assert mk_mmd(source, target).item() == pytest.approx(direct_mk_mmd(source, target), rel=1e-5)
    assert squared_distances(source, source).diagonal().abs().max() < 1e-4


def test_mk_mmd_is_near_zero_for_one_distribution_and_clearly_positive_for_shifted_samples():
    generator = torch.Generator().manual_seed(1)
    same = [float(mk_mmd(torch.randn(64, 16, generator=generator), torch.randn(64, 16, generator=generator)))
            for _ in range(5)]
    shifted = float(mk_mmd(torch.randn(64, 16, generator=generator),
                           torch.randn(64, 16, generator=generator) + 1.0))
    assert max(abs(value) for value in same) < 0.05, same
    assert shifted > 0.3 and shifted > 10 * max(abs(value) for value in same), (shifted, same)


def test_the_mmd_gradient_pulls_the_source_towards_the_target():
    generator = torch.Generator().manual_seed(2)
    source = torch.randn(32, 4, generator=generator).requires_grad_(True)
    target = torch.randn(32, 4, generator=generator) + 2.0
    mk_mmd(source, target).backward()
    assert float(source.grad.mean(0).sum()) < 0  # descending the loss moves the source up, to the target


# -- the gradient penalty --------------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_is_the_squared_norm_gap_of_its_weights():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(12.0).view(1, 12) / 10)
    real, fake = torch.randn(6, 3, 2, 2), torch.randn(6, 3, 2, 2)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    norm = float(critic[1].weight.detach().norm())
    assert penalty.item() == pytest.approx((norm - 1) ** 2, rel=1e-5)
    penalty.backward()  # differentiable in the critic's weights: d/dw (||w|| - 1)^2 = 2 (1 - 1/||w||) w
    expected = 2 * (1 - 1 / norm) * critic[1].weight.detach()
    assert torch.allclose(critic[1].weight.grad, expected, atol=1e-5)


def test_gradient_penalty_is_taken_between_the_samples():
    """A critic of slope 1 below 1 and 3 above: the interpolates of samples at 0 and at 1 lie where
    the slope is 1, so the penalty is 0 whatever the mixing weights; between 2 and 3 it is (3 - 1)^2."""
    class Piecewise(nn.Module):
        def forward(self, x):
            return (x + 2 * (x - 1).clamp_min(0)).flatten(1).sum(1)
    real, fake = torch.ones(8, 1), torch.zeros(8, 1)
    assert gradient_penalty(Piecewise(), real, fake).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_penalty(Piecewise(), real + 2, fake + 2).item() == pytest.approx(4.0, abs=1e-5)


# -- the networks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("z_shape", [(8, 8, 8), (16, 4, 4), (16, 2, 2), (120,), (1, 8, 8), (3, 10, 10), (4, 3, 3)])
@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_the_networks_are_sized_from_the_observed_shape(z_shape, kind):
    images = torch.rand(5, 1, 8, 8)
    substitute = substitute_client((1, 8, 8), z_shape, kind=kind, width=8, depth=2, relu_output=True)
    features = substitute(images)
    assert features.shape == (5, *z_shape) and bool((features >= 0).all())
    assert feature_critic(z_shape, 16)(features).shape == (5, 1)
    decoded = feature_decoder(z_shape, (1, 8, 8), 8)(features)
    assert decoded.shape == images.shape and bool((decoded.abs() <= 1).all())


def test_a_split_feature_map_is_reached_by_stride_two_convolutions():
    substitute = substitute_client((1, 8, 8), (16, 2, 2), kind="conv", width=8, depth=1, relu_output=False)
    strides = [m.stride[0] for m in substitute if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 1] and not isinstance(substitute[-1], nn.ReLU)


def test_auto_output_is_a_relu_only_when_nothing_observed_is_negative():
    attack = Fora.from_params({})
    assert isinstance(attack.networks((1, 8, 8), torch.rand(4, 8, 4, 4)).substitute[-1], nn.ReLU)
    assert not isinstance(attack.networks((1, 8, 8), torch.randn(4, 8, 4, 4)).substitute[-1], nn.ReLU)


def test_each_network_trains_at_its_own_rate():
    attack = Fora.from_params({"lr": 2e-3, "decoder_lr": 5e-2, "critic_lr": 7e-3})
    nets = attack.networks((1, 8, 8), torch.rand(4, 8, 4, 4))
    substitute, decoder, critic = attack.optimisers(nets)
    assert [group["lr"] for group in substitute.param_groups] == [2e-3]
    assert [group["lr"] for group in decoder.param_groups] == [5e-2]
    assert [group["lr"] for group in critic.param_groups] == [7e-3]
    for optimiser, net in ((substitute, nets.substitute), (decoder, nets.decoder), (critic, nets.critic)):
        assert {id(p) for p in optimiser.param_groups[0]["params"]} == {id(p) for p in net.parameters()}


# -- the attack --------------------------------------------------------------------------------------

def test_fora_asks_for_nothing_but_what_every_attacker_has():
    assert Fora.requires == frozenset() and Fora.threat_model == "query-free"


def test_fora_keeps_the_attack_contract():
    check_attack(Fora, {"iterations": 10, "batch_size": 16, "width": 8, "decoder_width": 8},
                 defense="split", defense_params={"layer": "conv1"})


FULL_DIGITS = {"limit": 0, "target_epochs": 15}
SMALL_FORA = {"iterations": 100}


def ssim(runner, layer: str, attack: type, params: dict) -> dict[str, float]:
    return run_cell("split", attack, defense_params={"layer": layer}, attack_params=params,
                    dataset_params=FULL_DIGITS, runner=runner)


def test_fora_reconstructs_a_shallow_split_between_the_shadow_and_the_inverse_network():
    """Digits, seed 0, split at conv1 (z 8 x 8 x 8), 100 iterations."""
    from privbench.plugins import load_registry
    registry, runner = load_registry(), harness()
    fora = ssim(runner, "conv1", Fora, SMALL_FORA)
    shadow = ssim(runner, "conv1", registry.get("attack", "shadow").cls, {})
    inverse = ssim(runner, "conv1", registry.get("attack", "inverse-network").cls, {})
    assert fora["attack.ssim"] > fora["attack.ssim_chance"] + 0.1, fora
    assert fora["attack.ssim"] > shadow["attack.ssim"] + 0.1, (fora, shadow)
    assert fora["attack.ssim"] < inverse["attack.ssim"], (fora, inverse)
    deeper = ssim(runner, "relu3", Fora, SMALL_FORA)
    assert deeper["attack.ssim"] < fora["attack.ssim"] - 0.1, (deeper, fora)
