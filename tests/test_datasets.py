"""The offline datasets and deterministic scenario splits."""

from __future__ import annotations

import pytest
import torch

from privbench.context import RunContext
from privbench.datasets import Digits, LfwSubset, make_scenario
from privbench.errors import PrivbenchError


@pytest.fixture(scope="module")
def digits():
    return Digits.from_params().load(RunContext())


def test_digits_are_the_bundled_8x8_images_with_four_tasks(digits):
    assert digits.images.shape == (1797, 1, 8, 8)
    assert 0.0 <= float(digits.images.min()) and float(digits.images.max()) == 1.0
    labels = digits.labels
    assert set(labels) == {"digit", "parity", "magnitude", "above5"}
    assert torch.equal(labels["parity"], labels["digit"] % 2)
    assert torch.equal(labels["magnitude"], (labels["digit"] >= 5).long())
    assert torch.equal(labels["above5"], (labels["digit"] > 5).long())  # Cloak's "digit > 5"


def test_lfw_subset_has_100_faces_and_100_other_crops():
    data = LfwSubset.from_params().load(RunContext())
    assert data.images.shape == (200, 1, 25, 25)
    assert int(data.labels["face"].sum()) == 100


def test_splits_are_disjoint_cover_the_data_and_follow_the_fractions(digits):
    scenario = make_scenario(Digits.from_params(), digits, seed=0)
    owner, aux, test = (set(s.tolist()) for s in (scenario.owner, scenario.aux, scenario.test))
    assert not (owner & aux or owner & test or aux & test)
    assert len(owner | aux | test) == len(digits)
    assert len(owner) == round(0.5 * 1797) and len(aux) == round(0.3 * 1797)


def test_splits_are_deterministic_by_seed(digits):
    source = Digits.from_params()
    first, again = make_scenario(source, digits, 3), make_scenario(source, digits, 3)
    other = make_scenario(source, digits, 4)
    assert torch.equal(first.owner, again.owner) and torch.equal(first.test, again.test)
    assert not torch.equal(first.owner, other.owner)


def test_held_out_classes_leave_the_owner_split_only(digits):
    source = Digits.from_params({"target": "digit"})
    scenario = make_scenario(source, digits, 0, held_out=(3, 7))
    assert not torch.isin(scenario.labels("owner"), torch.tensor([3, 7])).any()
    assert torch.isin(scenario.labels("test"), torch.tensor([3, 7])).any()


def test_target_and_private_tasks_default_and_are_validated():
    source = Digits.from_params()
    assert (source.target_task, source.private_task) == ("parity", "digit")
    with pytest.raises(PrivbenchError, match="unknown private task 'age'; accepted: above5, digit, "
                                             "magnitude, parity"):
        Digits.from_params({"private": "age"})


def test_resize_and_limit():
    data = Digits.from_params({"resize": 16, "limit": 100}).load(RunContext())
    assert data.images.shape == (100, 1, 16, 16)
    again = Digits.from_params({"limit": 100}).load(RunContext())
    assert torch.equal(data.labels["digit"], again.labels["digit"])


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 25, 25)])
def test_architectures_adapt_to_the_image_size(shape):
    from privbench.models import classifier
    for arch in ("lenet", "resnet18"):
        model = classifier(arch, shape, 10).eval()
        assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_lenet_follows_he_et_al_on_28x28():
    from privbench.models import lenet
    model = lenet((1, 28, 28), 10)
    assert model.conv1.out_channels == 8 and model.conv2.out_channels == 16
    assert model.fc1.in_features == 256 and model.fc1.out_features == 120
    assert model.fc2.out_features == 84
