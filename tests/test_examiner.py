"""The examiner (Sharma & Chen's DNN examiner) on protected images of another height or width."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from privbench.testing import run_cell
from privbench_plugins.disguised_nets import DisguisedNets
from privbench_plugins.examiner import Examiner, as_input_images

EXAMINER = {"epochs": 15}
PADDING_ONLY = {"block": 3, "matrix": "none", "permute": False, "noise": 0.0}  # 8x8 -> 9x9, unchanged


def examine(defense_params: dict) -> dict[str, float]:
    return run_cell(DisguisedNets, Examiner, defense_params=defense_params, attack_params=EXAMINER)


def test_a_disguise_padded_to_a_block_multiple_is_examined_and_scored():
    metrics = examine({"block": 3})  # 3 does not divide 8: the disguise is 9 x 9
    assert 0.0 <= metrics["privacy.score"] <= 1.0
    assert 0.0 <= metrics["attack.visual_privacy"] <= 1.0
    assert metrics["attack.accuracy"] < metrics["attack.chance"] + 0.15, metrics  # 3x3 RMT + permutation hide the digit


def test_resizing_keeps_what_the_padded_image_shows():
    # padding alone hides nothing: resized back to 8 x 8 the digits are read far above chance
    # (observed, seed 0: digit accuracy 0.33 against chance 0.075; the 3x3 disguise: 0.075)
    padded = examine(PADDING_ONLY)
    disguised = examine({"block": 3})
    assert padded["attack.p_value"] < 1e-3, padded
    assert padded["attack.accuracy"] > disguised["attack.accuracy"] + 0.15, (padded, disguised)
    assert padded["privacy.score"] < disguised["privacy.score"] - 0.2


def test_the_narrower_output_of_a_dimension_reducing_projection_is_examined():
    metrics = examine({"matrix": "projection", "out_dim": 1})  # 2 x 2 blocks -> 2 x 1: 8 x 4
    assert 0.0 <= metrics["privacy.score"] <= 1.0 and "attack.visual_privacy" in metrics


def test_only_height_and_width_are_resized_bilinearly():
    same = torch.rand(2, 1, 8, 8)
    assert as_input_images(same, (1, 8, 8)) is same
    flat = torch.full((2, 3, 9, 4), 0.3)
    resized = as_input_images(flat, (3, 8, 8))
    assert resized.shape == (2, 3, 8, 8)
    torch.testing.assert_close(resized, torch.full((2, 3, 8, 8), 0.3))  # a flat image stays flat


@pytest.mark.parametrize("observed", [torch.rand(2, 3, 8, 8), torch.rand(2, 64)])
def test_other_channels_or_no_image_are_refused_in_one_line(observed):
    view = SimpleNamespace(observed=observed, image_shape=(1, 8, 8), private_task="digit",
                           target_task="parity")
    with pytest.raises(ValueError, match="the examiner reads only images with the input's channels") as refused:
        Examiner().run(view)
    assert "\n" not in str(refused.value) and "(1, 8, 8)" in str(refused.value)
