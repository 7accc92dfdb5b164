"""DP pixelization (Fan 2018): cell means, the Laplace scale m / (b^2 eps), and what b does to attacks."""

from __future__ import annotations

import math

import pytest
import torch

from privbench.api import ACCESS
from privbench.testing import check_defense, harness, run_cell
from privbench_plugins.inverse_network import InverseNetwork
from privbench_plugins.pixelation import Pixelation, PixelationEncoder

DIGITS = {"limit": 0, "target_epochs": 15}  # every digit: the servers train in seconds
# The 64-channel decoder learns the inverse of a fine pixelation in 3 epochs; He et al.'s mirrored
# decoder (one 5 x 5 transposed convolution on image-like data) needs far more.
WIDE_DECODER = {"epochs": 3, "decoder": "wide"}


def noise_free(b: int) -> PixelationEncoder:
    return PixelationEncoder(b=b, m=1, epsilon=math.inf)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_without_noise_each_cell_holds_its_mean_at_the_original_size(b):
    x = torch.rand(3, 2, 8, 8)
    z = noise_free(b)(x)
    means = x.reshape(3, 2, 8 // b, b, 8 // b, b).mean(dim=(3, 5))
    expected = means.repeat_interleave(b, dim=2).repeat_interleave(b, dim=3)
    assert z.shape == x.shape
    torch.testing.assert_close(z, expected)


def test_clipped_edge_cells_average_only_their_own_pixels():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    z = noise_free(2)(x)
    assert z.shape == (1, 1, 5, 5)
    assert float(z[0, 0, 0, 4]) == pytest.approx((4 + 9) / 2)  # right column: a 2 x 1 cell
    assert float(z[0, 0, 4, 4]) == 24.0  # bottom-right corner: a single pixel
    assert float(z[0, 0, 1, 1]) == pytest.approx((0 + 1 + 5 + 6) / 4)


def cell_noise(encoder: PixelationEncoder, size: int = 8, images: int = 4000) -> torch.Tensor:
    """The noise of every cell of all-zero images (one value per cell: its top-left pixel)."""
    torch.manual_seed(0)
    z = encoder(torch.zeros(images, 1, size, size))
    return z[:, :, :: encoder.b, :: encoder.b]


@pytest.mark.parametrize(("b", "m", "epsilon"), [(2, 1, 0.5), (2, 4, 2.0), (4, 16, 1.0), (1, 1, 4.0)])
def test_the_empirical_noise_is_laplace_with_scale_m_over_b_squared_epsilon(b, m, epsilon):
    encoder = PixelationEncoder(b, m, epsilon)
    noise = cell_noise(encoder)
    scale = m / (b ** 2 * epsilon)
    assert encoder.laplace_scale == pytest.approx(scale)
    # Laplace(0, s): mean absolute deviation s, median 0, variance 2 s^2
    assert float(noise.abs().mean()) == pytest.approx(scale, rel=0.05)
    assert abs(float(noise.median())) < 0.05 * scale
    assert float(noise.var()) == pytest.approx(2 * scale ** 2, rel=0.1)


def test_the_noise_is_shared_by_a_cell_and_fresh_for_every_image():
    z = PixelationEncoder(2, 1, 1.0)(torch.zeros(2, 1, 8, 8))
    cells = z.reshape(2, 1, 4, 2, 4, 2)
    assert torch.equal(cells, cells[:, :, :, :1, :, :1].expand_as(cells))
    assert not torch.allclose(z[0], z[1])


def test_a_larger_epsilon_gives_less_noise():
    spread = [float(cell_noise(PixelationEncoder(2, 1, eps)).abs().mean()) for eps in (0.25, 1.0, 4.0)]
    assert spread[0] > 3 * spread[1] > 9 * spread[2]


def test_clipped_edge_cells_get_proportionally_more_noise():
    noise = cell_noise(PixelationEncoder(2, 1, 1.0), size=5)  # cells of 4, 2 and 1 pixels
    full, side, corner = (float(noise[:, :, i, j].abs().mean()) for i, j in ((0, 0), (0, 2), (2, 2)))
    assert full == pytest.approx(1 / 4, rel=0.1)
    assert side == pytest.approx(1 / 2, rel=0.1)
    assert corner == pytest.approx(1.0, rel=0.1)


def test_the_pixelation_is_differentiable():
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    PixelationEncoder(2, 1, 0.5)(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # each pixel feeds b^2 copies of 1/b^2


def test_the_defense_gives_every_access_fact():
    assert Pixelation().access() == frozenset(ACCESS)  # no secret: white-box, query-free, all of it


def test_pixelation_keeps_the_defense_contract():
    check_defense(Pixelation, {"b": 2, "epsilon": 0.5})


@pytest.mark.slow
def test_larger_cells_defeat_the_inverse_network(shared_cache):
    runner = harness(shared_cache)
    fine, coarse = (run_cell(Pixelation, InverseNetwork, defense_params={"b": b, "epsilon": 100.0},
                             attack_params=WIDE_DECODER, dataset_params=DIGITS, runner=runner)
                    for b in (1, 4))
    # observed on seed 0: PSNR 17-18 dB (b = 1) vs 9-10 dB (b = 4), privacy.score 0.2 vs 1.0
    assert coarse["attack.psnr"] < fine["attack.psnr"] - 3
    assert coarse["privacy.score"] > fine["privacy.score"] + 0.3
    assert fine["defense.laplace_scale"] == pytest.approx(0.01)
    assert coarse["defense.laplace_scale"] == pytest.approx(1 / 1600)
