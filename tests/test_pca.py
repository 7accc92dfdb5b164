"""PCA embedding: an orthonormal, centred basis fitted once (not per batch, as InferenceBenchmark
does), k checked against the feature dimension, and fewer components leaving less to invert."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privbench.testing import check_defense
from privbench_plugins.pca import PCA, PCAEncoder, principal_basis

decomposition = pytest.importorskip("sklearn.decomposition")


def correlated_features(rows: int = 200, dimension: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dimension, dimension, generator=generator)
    return torch.randn(rows, dimension, generator=generator) @ mixing + 3.0  # far from centred


def test_the_basis_is_orthonormal_and_the_projections_centred():
    features = correlated_features()
    mean, basis = principal_basis(features, 5)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(mean, features.mean(0))
    projections = (features - mean) @ basis
    torch.testing.assert_close(projections.mean(0), torch.zeros(5), atol=1e-4, rtol=0)
    variances = projections.var(0)
    assert bool((variances[:-1] >= variances[1:]).all())  # by decreasing variance


def test_the_basis_is_sklearns_pca_up_to_the_sign_of_each_component():
    features = correlated_features()
    _, basis = principal_basis(features, 4)
    reference = torch.from_numpy(decomposition.PCA(4).fit(features.double().numpy()).components_.T).float()
    torch.testing.assert_close(basis.abs(), reference.abs(), atol=1e-4, rtol=0)
    assert bool(((basis * reference).sum(0).abs() > 0.999).all())


def test_the_signs_are_fixed_so_the_same_data_gives_the_same_basis():
    features = correlated_features()
    _, basis = principal_basis(features, 3)
    _, again = principal_basis(features.clone(), 3)
    assert torch.equal(basis, again)
    largest = basis.gather(0, basis.abs().argmax(0, keepdim=True))
    assert bool((largest > 0).all())


def encoder_on(features: torch.Tensor, k: int) -> PCAEncoder:
    mean, basis = principal_basis(features, k)
    return PCAEncoder(nn.Flatten(), mean, basis).eval()


def test_the_encoding_is_fitted_once_and_does_not_depend_on_the_batch():
    """InferenceBenchmark refits per batch, so an image's code changes with its batch; not here."""
    owner = correlated_features(seed=1)
    encoder = encoder_on(owner, 4)
    batch = correlated_features(rows=16, seed=2)
    with torch.no_grad():
        first, second = encoder(batch), encoder(batch)
        alone = torch.cat([encoder(batch[i:i + 1]) for i in range(len(batch))])
        shuffled = encoder(torch.cat([batch[8:], correlated_features(rows=5, seed=3), batch[:8]]))
    assert torch.equal(first, second)
    torch.testing.assert_close(alone, first, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([shuffled[13:], shuffled[:8]]), first, atol=1e-5, rtol=0)


def test_k_is_checked_against_the_feature_dimension():
    from privbench.api import DataFacts
    facts = DataFacts("digits", (1, 8, 8), {"parity": 2}, "parity", "digit", "lenet", 3)
    assert PCA.from_params({"k": 256}).check_data(facts) is None  # relu2: 16 x 4 x 4 on 8 x 8
    problem = PCA.from_params({"k": 257}).check_data(facts)
    assert problem is not None and "accepted: k from 1 to 256" in problem
    flat = PCA.from_params({"k": 65, "layer": "pool2"}).check_data(facts)  # 16 x 2 x 2
    assert flat is not None and "1 to 64" in flat


def test_pca_keeps_the_defense_contract():
    check_defense(PCA, {"k": 8})


@pytest.mark.slow
def test_fewer_components_lower_what_the_inverse_network_recovers(registry, shared_cache, tmp_path):
    """Measured (digits, target parity, 15 epochs, inverse network 15 epochs, the kit's secret):
    k 2 / 10 / 64 of 256 features keep 0.49 / 0.83 / 0.97 of the variance and give inverse-network
    SSIM 0.71 / 0.87 / 0.89 (an uninformed guess: 0.55) at service accuracy 0.95 / 0.97 / 0.98
    (unprotected 0.97)."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'p.db'}", shared_cache,
                               defenses=[("pca", {"k": [2, 64]})],
                               attacks=[("inverse-network", {"epochs": 15})])
    assert report.failures == []
    runs = {d.split("=")[-1]: v for (d, _, _), v in metrics_by_cell(store).items()}
    assert runs["2"]["attack.ssim"] < runs["64"]["attack.ssim"] - 0.1, runs
    assert runs["64"]["defense.explained_variance"] > runs["2"]["defense.explained_variance"]
    assert runs["64"]["utility.accuracy"] > 0.9, runs["64"]
    assert runs["2"]["utility.accuracy"] > 0.85, runs["2"]  # parity survives even 2 components
