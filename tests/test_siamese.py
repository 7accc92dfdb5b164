"""Siamese embedding (Osia et al.): the contrastive loss over distinct batch pairs, the automatic
margin, and a client that gives away less of the private label as alpha grows."""

from __future__ import annotations

import itertools

import pytest
import torch

from privbench.testing import check_defense
from privbench_plugins.siamese import Siamese, contrastive_loss, median_distance


def loop_contrastive(features: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """L_ct written pair by pair: the mean over i != j of d_ij (same class) or max(0, m - d_ij)."""
    flat = features.flatten(1).double()
    terms = []
    for i, j in itertools.permutations(range(len(flat)), 2):
        distance = float((flat[i] - flat[j]).norm())
        terms.append(distance if labels[i] == labels[j] else max(0.0, margin - distance))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("margin", [0.5, 2.0, 30.0])
def test_the_contrastive_loss_is_the_mean_over_distinct_pairs(margin):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(9, 4, 2, 2, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 2, 2])
    ours = float(contrastive_loss(features, labels, margin))
    assert ours == pytest.approx(loop_contrastive(features, labels, margin), rel=1e-9)


def test_pairs_of_an_image_with_itself_are_left_out():
    """Two images of different classes at distance 1, margin 3: both distinct pairs cost 2; counting
    i = j (InferenceBenchmark) would halve the mean to 1."""
    features = torch.tensor([[0.0], [1.0]])
    assert float(contrastive_loss(features, torch.tensor([0, 1]), 3.0)) == pytest.approx(2.0)


def test_the_loss_is_zero_for_collapsed_classes_a_margin_apart():
    features = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4.0, 3.0], [4.0, 3.0]])  # classes 5 apart
    labels = torch.tensor([0, 0, 1, 1])
    assert float(contrastive_loss(features, labels, 5.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(contrastive_loss(features, labels, 7.0)) > 0.5  # inside the margin: pushed apart


def test_the_gradient_is_finite_when_features_coincide():
    features = torch.zeros(4, 3, requires_grad=True)
    contrastive_loss(features, torch.tensor([0, 0, 1, 1]), 1.0).backward()
    assert torch.isfinite(features.grad).all()


def test_the_automatic_margin_is_the_median_pairwise_distance():
    points = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 2, 3
    assert median_distance(points) == pytest.approx(2.0)


def test_siamese_keeps_the_defense_contract():
    check_defense(Siamese, {"epochs": 2})


@pytest.mark.slow
def test_a_larger_alpha_hides_the_private_digit_and_a_mild_one_keeps_the_service(registry, shared_cache,
                                                                                tmp_path):
    """Measured (digits, target parity, private digit, 15 epochs, attackers 15 epochs, one run
    secret): alpha 0 / 0.5 / 0.9 / 1.0 give attribute-inference accuracy on the digit 0.98 / 0.80 /
    0.52 / 0.47 (chance 0.10) and parity accuracy 0.98 / 0.96 / 0.97 / 0.98 (unprotected 0.97),
    margin 3.28; the inverse network's SSIM falls too, 0.72 / 0.59 / 0.58 / 0.57."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 's.db'}", shared_cache,
                               defenses=[("siamese", {"alpha": [0.0, 0.5, 1.0]})],
                               attacks=[("attribute-inference", {"epochs": 15})])
    assert report.failures == []
    runs = {d.split("=")[-1] if "=" in d else "0.5": v  # 0.5 is the default: its spec is plain "siamese"
            for (d, _, _), v in metrics_by_cell(store).items()}
    assert runs["1.0"]["attack.accuracy"] < runs["0.0"]["attack.accuracy"] - 0.3, runs
    assert runs["0.5"]["attack.accuracy"] < runs["0.0"]["attack.accuracy"] - 0.08, runs
    assert runs["0.5"]["utility.accuracy"] > 0.9, runs["0.5"]
    assert runs["1.0"]["utility.accuracy"] > 0.9, runs["1.0"]  # the server still learns from CE
