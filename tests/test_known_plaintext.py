"""Behaviour of the key-free known-plaintext attack (issue 13: Disguised-Nets attacks) on digits."""

from __future__ import annotations

import pytest
import torch

from privbench.testing import run_cell
from privbench_plugins.disguised_nets import DisguiseEncoder
from privbench_plugins.known_plaintext import (
    GlobalInverse,
    KnownPlaintext,
    affine_fit,
    block_rows,
    blocks_of,
    match_blocks,
    plausible_blocks,
)

# The service's training is irrelevant to this attack: one epoch keeps each defense fit short.
SHORT_TRAINING = {"target_epochs": 1}


def attack(defense: str, defense_params: dict | None = None, **attack_params) -> dict[str, float]:
    return run_cell(defense, KnownPlaintext, defense_params=defense_params, attack_params=attack_params,
                    dataset_params=SHORT_TRAINING)


def fell(metrics: dict[str, float]) -> bool:
    """The issue's bar for a broken protection: SSIM >= 0.95 and privacy.score <= 0.05."""
    return metrics["attack.ssim"] >= 0.95 and metrics["privacy.score"] <= 0.05


def test_the_unprotected_baseline_is_fully_broken_by_default():
    metrics = attack("identity", pairs=100)
    assert fell(metrics), metrics
    assert metrics["attack.holdout_mse"] < 1e-12  # the fit kept is exact on the held-out pairs


def test_among_exact_fits_the_pixel_wise_one_is_kept():
    """Every candidate inverts identity exactly when no pixel is constant: the smallest block side
    wins the tie (on digits, a border pixel constant in the fitted pairs can leave side 1 inexact)."""
    from privbench_plugins.known_plaintext import choose_block
    x = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    block, error = choose_block([1, 2, 4, 8, 0], x.clone(), x, 0.0, torch.Generator().manual_seed(1))
    assert block == 1 and error < 1e-12


@pytest.mark.parametrize("permute", [True, False])
@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_noise_free_disguised_nets_falls_and_auto_finds_its_block_side(block, permute):
    metrics = attack("disguised-nets", {"noise": 0.0, "block": block, "permute": permute}, pairs=100)
    assert fell(metrics), metrics
    assert metrics["attack.block"] == block


def test_noise_free_blocks_fall_at_a_few_pairs_and_noise_slows_the_attack():
    def score(noise: float, pairs: int) -> float:
        return attack("disguised-nets", {"noise": noise, "block": 2}, pairs=pairs)["privacy.score"]

    # One pair gives each 2 x 2 block two rows for three unknowns per column: nothing falls.
    assert score(0.0, 1) > 0.5
    assert score(0.0, 10) <= 0.05
    noisy = {pairs: score(100.0, pairs) for pairs in (3, 10)}
    assert noisy[3] > score(0.0, 3) + 0.1 and noisy[10] < noisy[3], noisy


def test_blockwise_mode_keeps_the_block_it_is_given_and_rejects_one_that_does_not_tile():
    metrics = attack("disguised-nets", {"noise": 0.0, "block": 2}, pairs=100, mode="blockwise", block=2)
    assert fell(metrics) and metrics["attack.block"] == 2
    with pytest.raises(AssertionError, match="no whole number of blocks"):
        attack("disguised-nets", {"noise": 0.0, "block": 2}, pairs=100, mode="blockwise", block=3)


def test_matching_recovers_a_pixel_permutation_of_28x28_images_from_the_pairs_alone():
    images = torch.rand(100, 1, 28, 28)
    encoder = DisguiseEncoder((1, 28, 28), block=1, permute=True, noise=0.0, key_seed=3)
    x_rows = block_rows(blocks_of(images, 1).double())
    z_rows = block_rows(blocks_of(encoder(images), 1).double())
    assert torch.equal(match_blocks(x_rows, z_rows), encoder.permutation)


def test_candidate_block_sides_are_those_whose_padding_gives_the_observed_shape():
    assert plausible_blocks((1, 28, 28), torch.Size([5, 1, 28, 28])) == [1, 2, 4, 7, 14, 28]
    assert plausible_blocks((1, 28, 28), torch.Size([5, 1, 32, 32])) == [8, 16, 32]
    assert plausible_blocks((1, 8, 8), torch.Size([5, 120])) == []  # features: global fit only


def test_fewer_samples_than_unknowns_give_the_minimum_norm_fit_or_a_shrunken_ridge_fit():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 10, generator=generator, dtype=torch.float64)
    targets = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    weights, offset = affine_fit(inputs, targets, ridge=0.0)
    assert torch.allclose(inputs @ weights + offset, targets)  # interpolates the pairs
    shrunk, _ = affine_fit(inputs, targets, ridge=1.0)
    assert 0 < shrunk.norm() < weights.norm()
    images, disguised = targets.reshape(4, 1, 1, 3).float(), inputs.reshape(4, 1, 2, 5).float()
    whole = GlobalInverse.fit(disguised, images, ridge=0.0)  # the global fit, held in dual form
    assert torch.allclose(whole.apply(disguised), images, atol=1e-5)
