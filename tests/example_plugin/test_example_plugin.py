"""The example plugin tests itself with privbench's conformance kit, as a third-party package would."""

from __future__ import annotations

import pytest
from privbench_example import Bars, BoxBlurDefense, LinearInversion

from privbench.testing import check_attack, check_defense, run_cell

pytestmark = pytest.mark.slow


def test_box_blur_keeps_the_defense_contract():
    check_defense(BoxBlurDefense, {"cell": 2})


def test_linear_inversion_keeps_the_attack_contract():
    metrics = check_attack(LinearInversion, defense="identity")
    assert metrics["attack.ssim"] > 0.95  # the unprotected baseline is fully broken
    assert "attack.ridge_condition" in metrics


def test_a_coarser_blur_hides_more_from_the_linear_inversion():
    fine = run_cell(BoxBlurDefense, LinearInversion, defense_params={"cell": 1})
    coarse = run_cell(BoxBlurDefense, LinearInversion, defense_params={"cell": 4})
    assert coarse["privacy.score"] > fine["privacy.score"] + 0.2


def test_the_bars_dataset_runs_a_cell():
    metrics = run_cell("identity", LinearInversion, dataset=Bars, dataset_params={"target_epochs": 3})
    assert metrics["utility.accuracy"] > 0.9
