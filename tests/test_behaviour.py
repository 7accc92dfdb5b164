"""Behaviour of the first built-ins on digits: the baseline is broken, stronger noise protects more."""

from __future__ import annotations


def test_every_cell_of_the_behaviour_run_is_done(behaviour_run):
    store, report, _ = behaviour_run
    assert report.failures == []
    assert {c.status for c in store.cells()} == {"done"}
    assert len(store.cells()) == 6


def test_unprotected_baseline_is_fully_broken_by_the_inverse_network(behaviour_run):
    metrics = behaviour_run[2][("identity", "inverse-network:epochs=30", 0)]
    assert metrics["attack.ssim"] >= 0.8
    assert metrics["attack.psnr"] > 20
    assert metrics["privacy.score"] < 0.2
    assert metrics["utility.accuracy"] > 0.9
    assert metrics["utility.drop"] == 0.0


def test_identity_leaks_the_private_digit(behaviour_run):
    metrics = behaviour_run[2][("identity", "attribute-inference:epochs=15", 0)]
    assert metrics["attack.accuracy"] > 0.8
    assert metrics["attack.chance"] < 0.2
    assert metrics["attack.p_value"] < 1e-6


def test_large_noise_drops_utility_towards_chance_and_lowers_psnr(behaviour_run):
    runs = behaviour_run[2]
    weak = runs[("noise:scale=0.05", "inverse-network:epochs=30", 0)]
    strong = runs[("noise:scale=2.0", "inverse-network:epochs=30", 0)]
    # parity is the digits target task: chance is about 0.5
    assert weak["utility.accuracy"] > 0.9
    assert strong["utility.accuracy"] < 0.7
    assert strong["utility.accuracy"] < weak["utility.accuracy"] - 0.2
    assert strong["attack.psnr"] < weak["attack.psnr"] - 3
    assert strong["attack.ssim"] < weak["attack.ssim"]
    assert strong["privacy.score"] > weak["privacy.score"]


def test_large_noise_hides_the_private_digit_better(behaviour_run):
    runs = behaviour_run[2]
    weak = runs[("noise:scale=0.05", "attribute-inference:epochs=15", 0)]
    strong = runs[("noise:scale=2.0", "attribute-inference:epochs=15", 0)]
    assert strong["attack.accuracy"] < weak["attack.accuracy"] - 0.2
    assert strong["privacy.score"] > weak["privacy.score"]


def test_cost_metrics_are_recorded(behaviour_run):
    for metrics in behaviour_run[2].values():
        assert metrics["cost.fit_s"] >= 0
        assert metrics["cost.encode_ms_per_image"] >= 0
        assert metrics["cost.attack_s"] > 0


def test_the_harness_counts_the_queries_of_black_box_attacks(behaviour_run):
    aux_images = round(0.3 * 1797)  # both attacks query the attacker's whole aux split once
    for metrics in behaviour_run[2].values():
        assert metrics["attack.queries"] == aux_images


def test_inverse_network_saves_a_png_grid(behaviour_run):
    store = behaviour_run[0]
    cell = next(c for c in store.cells() if c.attack == "inverse-network")
    artifact = store.artifact(cell.id, "reconstruction.png")
    assert artifact is not None and artifact.media_type == "image/png"
    assert artifact.data.startswith(b"\x89PNG")
