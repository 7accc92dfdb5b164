"""Disguised-Nets (Sharma & Chen): the keyed block transform's maths, its key, and its utility."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import FAST_DIGITS, metrics_by_cell, run_matrix

from privbench_plugins.disguised_nets import DisguisedNets, DisguiseEncoder, block_pixel_index

DIGIT_SHAPE = (1, 8, 8)


def blocks_of(images: torch.Tensor, encoder: DisguiseEncoder) -> torch.Tensor:
    """N x C x t x m x m: the blocks of padded-size images, numbered row by row."""
    index = block_pixel_index(encoder.grid, encoder.block)
    return images.flatten(2)[:, :, index]


def encoder(seed: int = 0, shape=DIGIT_SHAPE, **params) -> DisguiseEncoder:
    return DisguisedNets(**params).encoder_for(shape, seed)


@pytest.mark.parametrize("permute", [False, True])
def test_orthogonal_rmt_keeps_every_block_norm_and_moves_blocks_by_the_permutation(permute):
    enc = encoder(permute=permute, noise=0.0, block=2, shape=(1, 12, 12))
    x = torch.rand(16, 1, 12, 12)
    z = enc(x)
    plain, disguised = blocks_of(x, enc), blocks_of(z, enc)
    source_norms = plain.flatten(3).norm(dim=-1)[:, :, enc.permutation]
    torch.testing.assert_close(disguised.flatten(3).norm(dim=-1), source_norms, atol=1e-5, rtol=1e-5)
    # the blocks themselves changed: R_i mixes the columns, it is not the identity
    assert (disguised - plain[:, :, enc.permutation]).abs().max() > 0.05
    assert permute == (not torch.equal(enc.permutation, torch.arange(len(enc.permutation))))


def test_orthogonal_matrices_are_haar_random_orthogonal_with_both_determinant_signs():
    matrices = encoder(block=4, shape=(1, 32, 32)).matrices.double()
    eye = torch.eye(4, dtype=torch.float64).expand_as(matrices)
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), eye, atol=1e-6, rtol=0)
    signs = torch.linalg.det(matrices).sign()
    assert (signs > 0).any() and (signs < 0).any()  # O(m), not only rotations
    assert abs(float(matrices.mean())) < 0.1


def test_the_permutation_is_a_bijection_of_block_positions():
    enc = encoder(shape=(1, 28, 28), block=7)
    assert enc.grid == (4, 4)
    assert sorted(enc.permutation.tolist()) == list(range(16))
    assert not torch.equal(enc.permutation, torch.arange(16))


def test_same_seed_gives_the_same_key_and_another_seed_another_key():
    first, again, other = encoder(seed=3), encoder(seed=3), encoder(seed=4)
    assert torch.equal(first.matrices, again.matrices)
    assert torch.equal(first.permutation, again.permutation)
    assert not torch.allclose(first.matrices, other.matrices)
    attacker = DisguisedNets().encoder_for(DIGIT_SHAPE, 3, purpose="attacker-key")
    assert not torch.allclose(first.matrices, attacker.matrices)


def test_key_generation_leaves_the_global_rng_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    encoder(seed=5, shape=(3, 32, 32), matrix="projection")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("matrix", ["projection", "gaussian-projection"])
def test_projection_matrices_are_full_rank_and_invertible(matrix):
    enc = encoder(matrix=matrix, noise=0.0, block=4, shape=(1, 28, 28))
    assert bool((torch.linalg.matrix_rank(enc.matrices.double()) == 4).all())
    if matrix == "projection":  # the 2019 code's U[0, 1) entries
        assert float(enc.matrices.min()) >= 0 and float(enc.matrices.max()) < 1
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(enc.invert(enc(x)), x, atol=1e-4, rtol=1e-4)


def test_noise_before_the_multiplication_is_uniform_in_the_plain_domain():
    enc = encoder(noise=50.0, noise_placement="before")
    x = torch.rand(64, *DIGIT_SHAPE)
    z = enc(x)
    delta = enc.invert(z) - x  # (X + Delta) R  ->  X + Delta
    assert float(delta.min()) > -1e-5 and float(delta.max()) < 50 / 255 + 1e-5
    assert float(delta.max()) > 0.9 * 50 / 255
    # in the disguised domain the noise is Delta R: mixed by R, so it has negative entries
    assert float((z - enc.keyed_map(x)).min()) < -0.02


def test_noise_after_the_multiplication_is_uniform_in_the_disguised_domain():
    enc = encoder(noise=50.0, noise_placement="after")
    x = torch.rand(64, *DIGIT_SHAPE)
    z = enc(x)
    delta = z - enc.keyed_map(x)  # T(X) + Delta
    assert float(delta.min()) > -1e-5 and float(delta.max()) < 50 / 255 + 1e-5
    assert float(delta.max()) > 0.9 * 50 / 255
    assert float((enc.invert(z) - x).min()) < -0.02  # T^-1(Delta) leaves [0, N]


def test_noise_is_drawn_afresh_for_every_image():
    enc = encoder(noise=25.0)
    x = torch.rand(1, *DIGIT_SHAPE).expand(2, *DIGIT_SHAPE)
    z = enc(x)
    assert not torch.allclose(z[0], z[1])
    torch.testing.assert_close(enc.keyed_map(x)[0], enc.keyed_map(x)[1])


@pytest.mark.parametrize("shape", [(1, 25, 25), (3, 25, 25), (3, 32, 32)])
def test_padding_to_a_multiple_of_the_block_and_colour_channels(shape):
    enc = encoder(shape=shape, noise=0.0)
    x = torch.rand(5, *shape)
    z = enc(x)
    side = -(-shape[1] // 2) * 2
    assert enc.padded_shape == (shape[0], side, side) and z.shape == (5, shape[0], side, side)
    torch.testing.assert_close(enc.invert(z), x, atol=1e-5, rtol=1e-5)
    # the same key for every channel: each channel is disguised as if it were a grey image
    grey = DisguiseEncoder((1, *shape[1:]), 2, "orthogonal", True, 0.0, "before", 0)
    grey.load_state_dict(enc.state_dict())
    for channel in range(shape[0]):
        torch.testing.assert_close(z[:, channel:channel + 1], grey(x[:, channel:channel + 1]))


def test_padding_on_a_25x25_image_disguises_the_zero_padding_too():
    enc = encoder(shape=(1, 25, 25), noise=25.0, permute=False)
    z = enc(torch.zeros(2, 1, 25, 25))
    assert float(z[:, :, 24:, :].abs().max()) > 0  # noise enters the padded row, then R mixes it


def test_the_encoder_is_differentiable_for_a_white_box_attacker():
    enc = encoder(noise=25.0, matrix="projection").double()
    x = torch.rand(2, *DIGIT_SHAPE, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda image: enc.keyed_map(image), (x,))
    enc(x).pow(2).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_the_encoder_is_vectorised():
    enc = encoder(shape=(1, 28, 28))
    x = torch.rand(256, 1, 28, 28)
    enc(x)
    started = time.perf_counter()
    for _ in range(5):
        enc(x)
    ms_per_image = 1000 * (time.perf_counter() - started) / (5 * 256)
    assert ms_per_image < 0.5  # target 0.05 ms; a Python loop over blocks would take far longer


def test_the_defense_gives_every_access_fact():
    assert DisguisedNets().access() == frozenset(
        {"query", "white-box", "architecture", "server", "image-like"})


def test_orthogonal_2x2_blocks_without_noise_keep_the_utility(registry, shared_cache, tmp_path):
    store, report = run_matrix(
        registry, f"sqlite:///{tmp_path / 'dn.db'}", shared_cache, datasets=[FAST_DIGITS],
        defenses=[("disguised-nets", {"block": 2, "noise": 0.0, "permute": False})],
        attacks=[("attribute-inference", {"epochs": 2})])
    assert report.failures == []
    (metrics,) = metrics_by_cell(store).values()
    assert metrics["utility.baseline_accuracy"] > 0.85
    assert metrics["utility.accuracy"] >= metrics["utility.baseline_accuracy"] - 0.05
