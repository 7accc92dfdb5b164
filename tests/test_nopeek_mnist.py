"""The nopeek-mnist reproduction (Titcombe et al. 2021): its network, its config, and the dependence
metrics the harness computes for every reconstruction (attack.dcor, attack.rv_dcor)."""

from __future__ import annotations

import pytest
import torch

from privbench.dependence import blockwise, distance_correlation, rv_distance_correlation
from privbench.models import classifier
from privbench.reproduce import Selection, load, plan_cells, validate
from privbench.scoring import DCOR_MIN_IMAGES, dependence_metrics
from privbench.splitting import ARCH_LAYERS, layer_names, split_model
from privbench_plugins.nopeek import NoPeek

# -- Titcombe et al.'s network -----------------------------------------------------------------------

def test_titcombe_is_their_mnist_split_network_cut_after_the_tanh():
    model = classifier("titcombe", (1, 28, 28), 10)
    assert tuple(layer_names(model)) == ARCH_LAYERS["titcombe"]
    assert (model.fc1.in_features, model.fc1.out_features) == (9216, 500)  # 64 x 12 x 12, as theirs
    assert [(m.in_features, m.out_features) for m in (model.fc2, model.fc3)] == [(500, 128), (128, 10)]
    assert sum(p.numel() for p in model.parameters()) == 4_692_734  # 320 + 18,496 + 4,608,500 + 64,128 + 1,290
    client, server = split_model(model, "tanh", "titcombe")
    images = torch.rand(4, 1, 28, 28)
    sent = client(images)
    assert sent.shape == (4, 500) and sent.abs().max() <= 1  # bounded by the tanh
    assert torch.allclose(server(sent), model(images))


def test_titcombe_normalises_pixels_with_their_mnist_mean_and_std():
    model = classifier("titcombe", (1, 28, 28), 10)
    pixels = torch.full((1, 1, 2, 2), 0.1307 + 0.3081)
    assert torch.allclose(model.normalize(pixels), torch.ones_like(pixels))


def test_titcombe_builds_on_8x8_digits_and_nopeek_accepts_its_tanh_cut():
    assert classifier("titcombe", (1, 8, 8), 10)(torch.rand(2, 1, 8, 8)).shape == (2, 10)

    class Facts:
        arch = "titcombe"
    assert NoPeek.from_params({"layer": "tanh"}).check_data(Facts()) is None
    assert "accepted" in NoPeek.from_params({"layer": "relu5"}).check_data(Facts())


# -- the dependence metrics on known inputs ------------------------------------------------------------

def test_both_statistics_are_1_for_an_affine_copy_and_near_0_for_independent_samples():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 6, 6, generator=generator, dtype=torch.float64)
    copy = 3 * x.flatten(1) + 1
    assert float(distance_correlation(x, copy)) == pytest.approx(1.0, abs=1e-9)
    assert float(rv_distance_correlation(x, copy)) == pytest.approx(1.0, abs=1e-9)
    # independent low-dimensional samples: near 0 (both are V-statistics, biased upwards at finite n,
    # the more so the more dimensions: 36-dimensional uniforms give dCor 0.64 at n = 200)
    a, b = torch.rand(2, 400, 2, generator=generator, dtype=torch.float64)
    assert float(distance_correlation(a, b)) < 0.15
    assert float(rv_distance_correlation(a, b)) < 0.15


def test_rv_dcor_is_the_square_root_of_the_rv_coefficient():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    z = x @ torch.randn(5, 3, generator=generator, dtype=torch.float64) + torch.randn(30, 3, generator=generator,
                                                                                      dtype=torch.float64)
    xc, zc = x - x.mean(0), z - z.mean(0)
    kx, kz = xc @ xc.T, zc @ zc.T  # centred Gram matrices
    rv = torch.trace(kx @ kz) / torch.sqrt(torch.trace(kx @ kx) * torch.trace(kz @ kz))
    assert float(rv_distance_correlation(x, z)) == pytest.approx(float(rv.sqrt()), abs=1e-9)


def test_rv_dcor_misses_a_nonlinear_dependence_that_dcor_sees():
    x = torch.linspace(-1, 1, 41, dtype=torch.float64).unsqueeze(1)
    z = x ** 2
    assert float(distance_correlation(x, z)) > 0.4
    assert float(rv_distance_correlation(x, z)) < 1e-6


def test_blockwise_is_the_mean_over_near_equal_consecutive_blocks():
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(600, 10, generator=generator, dtype=torch.float64)
    z = x + 0.5 * torch.rand(600, 10, generator=generator, dtype=torch.float64)
    blocks = [(0, 200), (200, 400), (400, 600)]  # ceil(600 / 256) = 3 blocks of 200
    expected = sum(float(distance_correlation(x[a:b], z[a:b])) for a, b in blocks) / 3
    assert blockwise(distance_correlation, x, z) == pytest.approx(expected, abs=1e-12)
    assert blockwise(distance_correlation, x[:100], z[:100]) == pytest.approx(
        float(distance_correlation(x[:100], z[:100])), abs=1e-12)


def test_the_harness_scores_dependence_of_reconstructions_and_not_of_a_handful():
    generator = torch.Generator().manual_seed(3)
    originals = torch.rand(40, 1, 8, 8, generator=generator)
    perfect = dependence_metrics(originals.clone(), originals)
    assert perfect["attack.dcor"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["attack.rv_dcor"] == pytest.approx(1.0, abs=1e-6)
    blank = dependence_metrics(torch.full_like(originals, 0.5), originals)  # one guess for every image
    assert blank == {"attack.dcor": 0.0, "attack.rv_dcor": 0.0}
    noisy = dependence_metrics((originals + 0.3 * torch.rand(40, 1, 8, 8, generator=generator)).clamp(0, 1),
                               originals)
    assert 0.3 < noisy["attack.rv_dcor"] < 1 and 0.3 < noisy["attack.dcor"] < 1
    assert dependence_metrics(originals[:DCOR_MIN_IMAGES - 1], originals[:DCOR_MIN_IMAGES - 1]) == {}


# -- the config ---------------------------------------------------------------------------------------

def test_the_config_parses_validates_and_runs_their_setting(registry):
    repro = load("nopeek-mnist")
    validate(repro, registry)
    cells = plan_cells(repro, registry, Selection())
    assert len(cells) == 4
    alphas = sorted(cell.defense.params["alpha"] for cell in cells)
    assert alphas == [0.0, 0.1, 0.5, 1.0]
    for cell in cells:
        assert cell.dataset.name == "mnist"
        assert (cell.dataset.params["arch"], cell.dataset.params["target"]) == ("titcombe", "digit")
        assert (cell.defense.name, cell.defense.params["layer"]) == ("nopeek", "tanh")
        assert (cell.defense.params["epochs"], cell.defense.params["batch_size"]) == (10, 32)
        assert cell.attack.name == "inverse-network"
    metrics = {row.metric for row in repro.rows}
    assert metrics == {"attack.rv_dcor", "attack.dcor"}
    curve = next(row for row in repro.rows if row.check == "monotone" and row.metric == "attack.rv_dcor")
    assert curve.spec["values"] == [0.946, 0.828, 0.748, 0.717]  # Titcombe et al.'s MeanValDCorr
    assert len(plan_cells(repro, registry, Selection(quick=True))) == 4


# -- end to end ---------------------------------------------------------------------------------------

def test_reconstruction_attacks_on_digits_get_both_dependence_metrics(registry, shared_cache, tmp_path):
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'd.db'}", shared_cache,
                               datasets=[("digits", {"target": "digit", "target_epochs": 3})],
                               defenses=[("identity", {}), ("noise", {"scale": 2.0})],
                               attacks=[("inverse-network", {"epochs": 3})])
    assert report.failures == []
    runs = {defense: values for (defense, _, _), values in metrics_by_cell(store).items()}
    assert set(runs) == {"identity", "noise:scale=2.0"}, runs.keys()
    for values in runs.values():
        assert 0 <= values["attack.dcor"] <= 1 and 0 <= values["attack.rv_dcor"] <= 1
    # heavy input noise leaves the decoder less of each digit than the clean images do
    assert runs["noise:scale=2.0"]["attack.dcor"] < runs["identity"]["attack.dcor"]
