"""NoPeek (Vepakomma et al. 2020): a true distance correlation, differentiable, and a client that
leaks less of its input as alpha grows while the service keeps working."""

from __future__ import annotations

import pytest
import torch

from privbench.testing import check_defense
from privbench_plugins.nopeek import NoPeek, distance_correlation

dcor = pytest.importorskip("dcor")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_correlation_is_szekelys_as_the_dcor_package_computes_it(seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(24, 1, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(24, 5, generator=generator, dtype=torch.float64)
    for z in (torch.randn(24, 7, generator=generator, dtype=torch.float64),  # independent
              x.flatten(1)[:, :5] ** 2 + 0.1 * noise,                        # nonlinear dependence
              x.flatten(1) @ torch.randn(16, 3, generator=generator, dtype=torch.float64)):  # linear
        ours = float(distance_correlation(x, z))
        reference = dcor.distance_correlation(x.flatten(1).numpy(), z.numpy())
        assert ours == pytest.approx(reference, abs=1e-6)


def test_distance_correlation_is_not_the_squared_distance_rv_variant():
    """With squared distances the statistic is sqrt(RV), which misses this nonlinear dependence."""
    x = torch.linspace(-1, 1, 41, dtype=torch.float64).unsqueeze(1)
    z = x ** 2  # uncorrelated with x, yet a function of it
    assert float(distance_correlation(x, z)) > 0.4
    centred = x - x.mean()
    assert float((centred * (z - z.mean())).sum()).__abs__() < 1e-9  # the linear measure sees nothing


def test_distance_correlation_has_finite_gradients_with_repeated_rows():
    x = torch.rand(8, 3).repeat(2, 1).requires_grad_(True)  # every row twice: zero distances
    z = torch.tanh(x @ torch.randn(3, 4))
    distance_correlation(x, z).backward()
    assert torch.isfinite(x.grad).all()


def test_nopeek_keeps_the_defense_contract():
    check_defense(NoPeek, {"epochs": 2})


@pytest.mark.slow
def test_a_larger_alpha_lowers_the_distance_correlation_and_what_the_decoder_recovers(registry, shared_cache,
                                                                                    tmp_path):
    """Measured (digits, target digit, 15 epochs): alpha 0 / 0.3 / 1.0 give dCor 0.93 / 0.84 / 0.59,
    accuracy 0.95 / 0.96 / 0.46, inverse-network SSIM 0.80 / 0.77 / 0.59 (one run secret): the leakage falls with alpha,
    and a small alpha keeps the service."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'n.db'}", shared_cache,
                               datasets=[("digits", {"target": "digit", "target_epochs": 15})],
                               defenses=[("nopeek", {"alpha": [0.0, 0.3, 1.0]})],
                               attacks=[("inverse-network", {"epochs": 15})])
    assert report.failures == []
    runs = {d.split("=")[-1] if "=" in d else "0.3": v  # 0.3 is the default: its spec is plain "nopeek"
            for (d, _, _), v in metrics_by_cell(store).items()}
    dcors = [runs[alpha]["defense.dcor"] for alpha in ("0.0", "0.3", "1.0")]
    assert dcors[0] > dcors[1] > dcors[2], dcors
    assert runs["1.0"]["attack.ssim"] < runs["0.0"]["attack.ssim"] - 0.05, runs
    assert runs["0.3"]["utility.accuracy"] > 0.8, runs["0.3"]  # measured 0.96 and 0.87 (two secrets)
