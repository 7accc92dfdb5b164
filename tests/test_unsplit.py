"""UnSplit (Erdogan et al., WPES 2022): the side-by-side search is the authors' one-target search,
every target has its own fresh clone, and the attack recovers more from a shallow split than from a
deep one."""

from __future__ import annotations

import copy

import pytest
import torch

from privbench.inversion import squared_total_variation, unsplit
from privbench.models import classifier
from privbench.parties.channel import _Quiet
from privbench.splitting import split_model
from privbench.testing import check_attack
from privbench_plugins.unsplit import UnSplit


class Context:
    device = torch.device("cpu")
    progress = _Quiet()


def clients(count: int, layer: str = "relu1", seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [split_model(classifier("lenet", (1, 8, 8), 10), layer, "lenet")[0] for _ in range(count)]


def search(clones, targets, **settings):
    defaults = dict(iterations=2, input_steps=5, model_steps=5, tv_weight=0.1, l2_weight=1.0, lr=1e-2)
    return unsplit([copy.deepcopy(c) for c in clones], targets, (1, 8, 8), Context,
                   description="test", **{**defaults, **settings})


def test_side_by_side_search_equals_one_target_at_a_time():
    (real,) = clients(1, seed=1)
    targets = real(torch.rand(3, 1, 8, 8)).detach()
    clones = clients(3, seed=2)
    together = search(clones, targets)
    alone = torch.cat([search([clones[i]], targets[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    swapped = search(clones[::-1], targets.flip(0))  # no target's search sees another's
    assert torch.allclose(swapped.flip(0), together, atol=1e-5)


def test_the_image_and_the_clone_both_move_and_the_clones_observation_gets_closer():
    (real,) = clients(1, seed=1)
    target = real(torch.rand(1, 1, 8, 8)).detach()
    (clone,) = clients(1, seed=3)
    start = torch.full((1, 1, 8, 8), 0.5)
    estimate = search([clone], target, iterations=5, input_steps=20, model_steps=20)
    assert not torch.allclose(estimate, start)  # the image moved
    frozen_clone = search([clone], target, iterations=5, input_steps=20, model_steps=0)
    assert not torch.allclose(estimate, frozen_clone)  # the clone's steps changed the search
    matched = search([clone], target, iterations=5, input_steps=20, model_steps=0, tv_weight=0.0,
                     l2_weight=0.0)  # the MSE term alone, through a fixed clone, only falls
    before = float((clone(start) - target).pow(2).mean().detach())
    assert float((clone(matched) - target).pow(2).mean().detach()) < before


def test_each_clone_keeps_the_weights_stolen_for_its_own_target():
    (real,) = clients(1, seed=1)
    targets = real(torch.rand(2, 1, 8, 8)).detach()
    clones = clients(2, seed=2)
    before = [copy.deepcopy(c.state_dict()) for c in clones]
    together = [copy.deepcopy(c) for c in clones]
    unsplit(together, targets, (1, 8, 8), Context, iterations=2, input_steps=5, model_steps=5,
            tv_weight=0.1, l2_weight=1.0, lr=1e-2, description="test")
    for number, clone in enumerate(clones):
        alone = copy.deepcopy(clone)
        unsplit([alone], targets[number:number + 1], (1, 8, 8), Context, iterations=2, input_steps=5,
                model_steps=5, tv_weight=0.1, l2_weight=1.0, lr=1e-2, description="test")
        for name, value in together[number].state_dict().items():
            assert not torch.equal(value, before[number][name])  # the clone's weights moved
            assert torch.allclose(value, alone.state_dict()[name], atol=1e-5)


def test_squared_total_variation_is_the_authors_mean_of_both_directions():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal steps of 1, no vertical change
    assert squared_total_variation(x).tolist() == [1.0]
    assert squared_total_variation(torch.full((2, 1, 4, 4), 0.3)).tolist() == [0.0, 0.0]


def test_a_parameter_free_client_is_inverted_without_a_clone():
    targets = torch.rand(2, 1, 8, 8)
    recovered = unsplit([torch.nn.Identity(), torch.nn.Identity()], targets, (1, 8, 8), Context,
                        iterations=20, input_steps=50, model_steps=50, tv_weight=0.0, l2_weight=0.0,
                        lr=5e-2, description="test")
    assert float((recovered - targets).abs().max()) < 0.05


def test_unsplit_keeps_the_attack_contract():
    check_attack(UnSplit, {"iterations": 1, "input_steps": 5, "model_steps": 5, "images": 4},
                 defense="split", defense_params={"layer": "conv1"})


def test_unsplit_asks_for_the_architecture_only():
    assert UnSplit.requires == frozenset({"architecture"}) and UnSplit.threat_model == "query-free"


def test_minmax_stretches_each_image_by_its_own_range():
    from privbench_plugins.unsplit import stretched
    images = torch.tensor([[[[0.1, 0.3], [0.2, 0.1]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    expected = torch.tensor([[[[0.0, 1.0], [0.5, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert torch.allclose(stretched(images), expected)


@pytest.mark.slow
def test_a_shallow_split_leaks_more_to_unsplit_than_a_deep_one(registry, shared_cache, tmp_path):
    """Measured on digits (parity, seed 0, 5 outer steps, raw estimates): SSIM 0.36 at conv1, 0.01
    at relu2 and relu3; the authors' code on MNIST: 0.32 at conv1 against 0.16 at conv2 + ReLU."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'u.db'}", shared_cache,
                               defenses=[("split", {"layer": ["conv1", "relu2"]})],
                               attacks=[("unsplit", {})])
    assert report.failures == []
    ssim = {d: m["attack.ssim"] for (d, _, _), m in metrics_by_cell(store).items()}
    assert ssim["split:layer=conv1"] > ssim["split"] + 0.1, ssim


@pytest.mark.slow
def test_the_stolen_clients_are_measured_with_the_real_server(registry, shared_cache, tmp_path):
    """attack.clone_accuracy: the clones with the real server on the test images (split gives the
    attacker the server). Clone steps steal a better client than none at all (the untrained
    clone)."""
    from conftest import metrics_by_cell, run_matrix
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'c.db'}", shared_cache,
                               defenses=[("split", {"layer": ["conv1"]})],
                               attacks=[("unsplit", {"iterations": [2], "model_steps": [0, 100]})])
    assert report.failures == []
    metrics = {(d, a): m for (d, a, _), m in metrics_by_cell(store).items()}
    stolen = metrics[("split:layer=conv1", "unsplit:iterations=2")]["attack.clone_accuracy"]
    untrained = metrics[("split:layer=conv1", "unsplit:iterations=2,model_steps=0")]["attack.clone_accuracy"]
    assert 0 <= untrained < stolen <= 1, (untrained, stolen)


class NoisyClient(torch.nn.Module):
    """A client that adds noise of its own on every call (as pixelation's and a disguise's do)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + 0.01 * torch.randn_like(x)


def test_a_client_that_draws_its_own_noise_is_searched_through_fresh_draws():
    targets = torch.rand(3, 1, 8, 8)
    recovered = unsplit([NoisyClient() for _ in range(3)], targets, (1, 8, 8), Context, iterations=2,
                        input_steps=10, model_steps=10, tv_weight=0.1, l2_weight=1.0, lr=1e-2,
                        description="test")
    assert recovered.shape == targets.shape and torch.isfinite(recovered).all()
