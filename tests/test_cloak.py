"""Cloak (Mireshghallah et al., WWW 2021): learned per-pixel input noise in front of a frozen
service. The sigma parametrisation, the log-sigma term reaching rho (InferenceBenchmark's port
discards it), fresh noise per image and call, the suppression mask, the defense contract, and a
larger lambda giving more noise and less for an attacker to recover."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from privbench.errors import PrivbenchError
from privbench.inversion import without_random_layers
from privbench.progress import SilentProgress
from privbench.testing import check_defense
from privbench_plugins.cloak import Cloak, CloakEncoder, cloak_loss, frozen, sigma_from_rho

SHAPE = (1, 4, 4)


def test_sigma_is_equation_2_inside_its_range():
    rho = torch.tensor([-50.0, -9.0, 0.0, 50.0])
    sigma = sigma_from_rho(rho, 1e-4, 1.5)
    assert sigma[0] == pytest.approx(1e-4) and sigma[3] == pytest.approx(1.5)
    assert sigma[2] == pytest.approx((1e-4 + 1.5) / 2)
    assert sigma[1] == pytest.approx(1e-4, abs=1e-7)  # the notebook's rho0 = -9: sigma_min
    assert float(sigma_from_rho(torch.tensor(0.3), 0.2, 0.8)) == pytest.approx(
        0.5 * (1 + math.tanh(0.3)) * 0.6 + 0.2)


def test_the_log_sigma_term_reaches_rho_with_its_exact_gradient():
    """d/d rho_i [-lambda log mean sigma] = -lambda sigma'(rho_i) / (N mean sigma): nonzero and
    negative (descent raises sigma); the cross-entropy adds its own part on top."""
    torch.manual_seed(0)
    encoder = CloakEncoder(SHAPE, 1e-4, 1.5, rho0=-1.0)
    with torch.no_grad():
        encoder.noise.rho.add_(torch.linspace(-1, 1, 16).view(SHAPE))  # unequal pixels
    constant = frozen(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))
    with torch.no_grad():
        constant[1].weight.zero_()  # logits independent of the image: CE gives rho no gradient
    x, y = torch.rand(8, *SHAPE), torch.randint(0, 2, (8,))
    lam = 3.0
    cloak_loss(constant(encoder(x)), y, encoder.sigma(), lam).backward()
    rho = encoder.noise.rho.detach()
    slope = 0.5 * (1 - torch.tanh(rho) ** 2) * (1.5 - 1e-4)
    sigma = sigma_from_rho(rho, 1e-4, 1.5)
    expected = -lam * slope / (sigma.numel() * sigma.mean())
    assert torch.allclose(encoder.noise.rho.grad, expected, rtol=1e-5)
    assert (encoder.noise.rho.grad < 0).all()


def owner_of(images, labels, model):
    return SimpleNamespace(device=torch.device("cpu"), images=images, labels=lambda task=None: labels,
                           seed=0, progress=SilentProgress(), image_shape=tuple(images.shape[1:]),
                           target_model=lambda: model)


def test_training_raises_sigma_through_the_optimiser_and_leaves_the_service_frozen():
    """With a service that ignores its input, only -lambda log(mean sigma) moves rho: training must
    raise sigma (InferenceBenchmark zeroes this gradient before its step, so there it stays)."""
    torch.manual_seed(0)
    service = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        service[1].weight.zero_()
    before = [p.detach().clone() for p in service.parameters()]
    images, labels = torch.rand(64, *SHAPE), torch.randint(0, 2, (64,))
    defense = Cloak.from_params({"epochs": 20, "lam": 1.0, "rho0": -4.0, "lr": 0.05})
    protection = defense.fit(owner_of(images, labels, service))
    sigma = protection.encoder.sigma().detach()
    assert float(sigma.mean()) > 10 * float(sigma_from_rho(torch.tensor(-4.0), 1e-4, 1.5))
    assert all(torch.equal(a, b) for a, b in zip(before, protection.server.parameters(), strict=True))
    assert not any(p.requires_grad for p in protection.server.parameters())
    unpushed = Cloak.from_params({"epochs": 3, "lam": 0.0, "rho0": -4.0, "lr": 0.05})
    flat = unpushed.fit(owner_of(images, labels, service)).encoder.sigma().detach()
    assert torch.allclose(flat, sigma_from_rho(torch.tensor(-4.0), 1e-4, 1.5).expand_as(flat))


def test_noise_is_fresh_for_every_image_and_every_call():
    torch.manual_seed(0)
    encoder = CloakEncoder(SHAPE, 0.1, 1.0, rho0=0.0).eval()
    x = torch.rand(1, *SHAPE).repeat(2, 1, 1, 1)  # the same image twice in one batch
    first, second = encoder(x), encoder(x)
    assert not torch.allclose(first[0], first[1])
    assert not torch.allclose(first, second)
    with torch.no_grad():
        noise = torch.cat([encoder(x) - x for _ in range(200)])
    assert float(noise.std()) == pytest.approx(0.55, rel=0.1)  # sigma at rho 0: (0.1 + 1) / 2


def test_suppressed_pixels_send_mu_alone_and_the_others_the_noisy_image():
    torch.manual_seed(0)
    encoder = CloakEncoder(SHAPE, 1e-4, 5.0, rho0=-3.0)
    loud = torch.zeros(SHAPE, dtype=torch.bool)
    loud[0, :2] = True  # the top two rows: sigma near 5
    with torch.no_grad():
        encoder.noise.rho[loud] = 4.0
        encoder.mu.copy_(torch.linspace(-0.5, 0.5, 16).view(SHAPE))
    encoder.suppress_above(4.5)  # the authors' CelebA threshold with sigma in [0, 5]
    assert encoder.keep[loud].eq(0).all() and encoder.keep[~loud].eq(1).all()
    x = torch.rand(5, *SHAPE)
    sent = encoder(x).detach()
    assert torch.equal(sent[:, loud], encoder.mu.detach()[loud].expand(5, -1))  # x (*) 0 + mu + 0
    assert not torch.allclose(sent[:, ~loud], x[:, ~loud] + encoder.mu.detach()[~loud], atol=1e-6)
    encoder.suppress_above(math.inf)
    assert encoder.keep.eq(1).all()


def test_a_white_box_attacker_inverts_the_noiseless_part_x_times_m_plus_mu():
    encoder = CloakEncoder(SHAPE, 1e-4, 5.0, rho0=0.0)
    with torch.no_grad():
        encoder.mu.fill_(0.25)
        encoder.noise.rho[0, 0] = 9.0
    encoder.suppress_above(4.5)
    x = torch.rand(3, *SHAPE)
    clean = without_random_layers(encoder)(x)
    assert torch.allclose(clean, x * encoder.keep + encoder.mu)


@pytest.mark.parametrize("raw, message", [
    ({"sigma_min": 0.0}, "sigma_min"),
    ({"sigma_min": 2.0, "sigma_max": 1.5}, "sigma_min"),
])
def test_sigma_range_is_checked_when_parsed(raw, message):
    with pytest.raises(PrivbenchError) as error:
        Cloak.from_params(raw)
    assert message in error.value.format_message() and "\n" not in error.value.format_message()


def test_threshold_accepts_inf_and_rejects_nan():
    assert Cloak.from_params({"suppress_above": "inf"}).suppress_above == math.inf
    with pytest.raises(PrivbenchError):
        Cloak.from_params({"suppress_above": "nan"})


def test_cloak_keeps_the_defense_contract():
    check_defense(Cloak, {"epochs": 2})


def test_cloak_with_a_mask_keeps_the_defense_contract():
    check_defense(Cloak, {"epochs": 2, "lam": 3.0, "suppress_above": 0.5})


def test_reproduction_config_is_the_notebooks_setting(registry):
    """The shipped cloak-mnist config parses and plans on the registry (no MNIST needed): the
    notebook's task, model, size and Cloak settings, its published figures as rows."""
    from privbench.reproduce import Selection, load, plan_cells, validate
    repro = load("cloak-mnist")
    validate(repro, registry)
    cells = plan_cells(repro, registry)
    cloak = next(c for c in cells if c.defense.name == "cloak")
    assert cloak.dataset.params["target"] == "above5"
    assert cloak.dataset.params["arch"] == "lenet5" and cloak.dataset.params["resize"] == 32
    assert {k: cloak.defense.params[k] for k in ("lam", "rho0", "sigma_min", "sigma_max", "lr",
                                                 "batch_size", "suppress_above", "evaluations")} == {
        "lam": 3.0, "rho0": -9.0, "sigma_min": 1e-4, "sigma_max": 1.5, "lr": 0.01, "batch_size": 64,
        "suppress_above": math.inf, "evaluations": 20}
    values = {(row.metric, row.setting.label): row.value for row in repro.rows if row.value is not None}
    assert values == {("defense.noisy_accuracy", "cloak:lam=3"): 0.86196,
                      ("utility.accuracy", "identity"): 0.9929}
    quick = plan_cells(repro, registry, Selection(quick=True))
    assert len(quick) == len(cells)
    assert any(row.in_quick and row.check != "tolerance" for row in repro.rows)


@pytest.mark.slow
def test_a_larger_lambda_gives_more_noise_and_less_for_the_attacker(registry, shared_cache, tmp_path):
    """Measured (digits, parity, lenet, seed 0, kit secret): lambda 0 / 1 / 3 give mean sigma
    0.001 / 0.50 / 0.84, averaged accuracy 0.96 / 0.86 / 0.80 (clean 0.98), inverse-network SSIM
    0.96 / 0.50 / 0.39 and examiner digit accuracy 0.90 / 0.37 / 0.28 (50 and 30 attack epochs)."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'c.db'}", shared_cache,
                               datasets=[("digits", {"target_epochs": 15})],
                               defenses=[("cloak", {"lam": [0.0, 3.0]})],
                               attacks=[("inverse-network", {"epochs": 15}), ("examiner", {"epochs": 15})])
    assert report.failures == []
    runs = {(d.split("=")[-1], a.split(":")[0]): v for (d, a, _), v in metrics_by_cell(store).items()}
    weak, strong = runs["0.0", "examiner"], runs["3.0", "examiner"]
    assert strong["defense.mean_sigma"] > 0.3 > 0.01 > weak["defense.mean_sigma"], (weak, strong)
    assert strong["attack.accuracy"] < weak["attack.accuracy"] - 0.2, (weak, strong)
    assert runs["3.0", "inverse-network"]["attack.ssim"] < runs["0.0", "inverse-network"]["attack.ssim"] - 0.2
    assert weak["utility.accuracy"] > 0.85 and strong["defense.noisy_accuracy"] > 0.6, (weak, strong)
