"""DISCO's likelihood maximisation with a deep image prior (``likelihood``): the generator follows
the authors' skip network and its depth rule, the noise schedule is theirs as fractions, side-by-side
generators are exact one-at-a-time runs, and on digits it inverts a shallow split, recovers less
from a deeper one and beats rMLE at ReLU2."""

from __future__ import annotations

import pytest
import torch

from privbench.core import DataFacts
from privbench.image_prior import (
    ImagePrior,
    PriorLevel,
    likelihood_maximisation,
    noise_scale,
    prior_levels,
)
from privbench.models import classifier
from privbench.parties.channel import _Quiet
from privbench.splitting import split_model
from privbench.testing import check_attack, harness, run_cell
from privbench_plugins.likelihood import Likelihood
from privbench_plugins.rmle import RegularizedMLE


class Context:
    device = torch.device("cpu")
    progress = _Quiet()


def client(layer: str = "relu2", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return split_model(classifier("lenet", (1, 8, 8), 10), layer, "lenet")[0]


def fit(encoder, targets, seeds, **settings):
    defaults = dict(iterations=10, width=4)  # 10 steps cross every phase of the noise schedule
    return likelihood_maximisation(encoder, targets, (1, 8, 8), Context, seeds=seeds,
                                   description="test", **{**defaults, **settings})


def level_settings(prior: ImagePrior) -> list[tuple[int, int]]:
    """(width, kernel) of each level, top first."""
    found, level = [], prior.body
    while level is not None:
        assert isinstance(level, PriorLevel)
        found.append((level.width, level.down[0].kernel_size[0]))
        level = level.inner
    return found


def test_the_generator_is_the_authors_skip_network_at_their_image_sizes():
    ib = ImagePrior((3, 128, 128), width=0)  # IB input_model_optimization
    assert level_settings(ib) == list(zip([16, 32, 64, 128, 128, 128], [7, 7, 5, 5, 3, 3], strict=True))
    glass = ImagePrior((3, 64, 64), width=0)  # GLASS optimize_onlyM
    assert level_settings(glass) == list(zip([32, 64, 128, 128, 128], [7, 5, 5, 3, 3], strict=True))
    assert all(level.skip[0].out_channels == 4 for level in [ib.body, glass.body])


def test_the_depth_halves_the_image_down_to_two_pixels():
    assert [prior_levels(side) for side in (8, 28, 32, 64, 128)] == [2, 3, 4, 5, 6]
    for shape in [(1, 8, 8), (1, 28, 28), (3, 25, 25)]:  # odd sides need no cropping
        image = ImagePrior(shape, width=8)(torch.rand(2, 3, *shape[1:])).detach()
        assert image.shape == (2, *shape) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert ImagePrior((1, 8, 8), width=8).levels == 2
    with pytest.raises(ValueError, match="at most 2"):
        ImagePrior((1, 8, 8), levels=3)


def test_the_input_noise_follows_the_authors_schedule_as_fractions():
    at = {step: noise_scale(step, 25_000) for step in (0, 9_999, 10_000, 14_999, 15_000, 19_999,
                                                       20_000, 24_999)}
    assert list(at.values()) == [10.0, 10.0, 2.0, 2.0, 0.5, 0.5, 0.0, 0.0]
    assert [noise_scale(step, 10) for step in range(10)] == [10.0] * 4 + [2.0] * 2 + [0.5] * 2 + [0.0] * 2


def test_side_by_side_generators_equal_one_at_a_time():
    encoder = client(seed=1)
    targets = encoder(torch.rand(3, 1, 8, 8)).detach()
    seeds = [11, 22, 33]
    together = fit(encoder, targets, seeds)
    alone = torch.cat([fit(encoder, targets[i:i + 1], seeds[i:i + 1]) for i in range(3)])
    # float sums in another order (batched kernels, torch's threads): 1e-5 to 2e-5 apart, measured
    assert torch.allclose(together, alone, atol=1e-4)
    swapped = fit(encoder, targets.flip(0), seeds[::-1])  # no target's search sees another's
    assert torch.allclose(swapped.flip(0), together, atol=1e-4)
    assert not torch.allclose(together[0], together[1])


def test_the_generator_fits_the_observation_and_leaves_global_randomness_alone():
    encoder = client("conv1", seed=1)
    truth = torch.rand(2, 1, 8, 8)
    targets = encoder(truth).detach()
    state = torch.random.get_rng_state()
    short = fit(encoder, targets, [1, 2], iterations=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    long = fit(encoder, targets, [1, 2], iterations=200, width=8)
    error = [float((encoder(x) - targets).pow(2).mean().detach()) for x in (short, long)]
    assert error[1] < error[0] / 10, error
    assert float((long - truth).abs().mean()) < float((short - truth).abs().mean())


def test_too_many_levels_for_the_image_is_refused_before_running():
    facts = DataFacts(dataset="digits", image_shape=(1, 8, 8), task_classes={"digit": 10},
                      target_task="digit", private_task="digit", arch="lenet", target_epochs=1)
    assert Likelihood.from_params({"levels": 3}).unsupported(facts) is not None
    assert Likelihood.from_params({"levels": 2}).unsupported(facts) is None
    assert Likelihood.from_params({}).unsupported(facts) is None


def test_likelihood_asks_for_the_white_box_client_as_rmle():
    assert Likelihood.requires == RegularizedMLE.requires == frozenset({"white-box"})
    assert Likelihood.threat_model == "white-box"


def test_likelihood_keeps_the_attack_contract():
    check_attack(Likelihood, {"iterations": 20, "width": 4, "images": 4}, defense="split",
                 defense_params={"layer": "conv1"})


@pytest.fixture(scope="module")
def digits_ssim():
    """attack.ssim on digits (parity, seed 0), 10 images, each attack at its defaults."""
    runner = harness()

    def ssim(attack, layer):
        metrics = run_cell("split", attack, defense_params={"layer": layer},
                           attack_params={"images": 10}, runner=runner)
        return metrics["attack.ssim"]
    return ssim


def test_a_shallow_split_is_inverted_and_a_deeper_one_leaks_less(digits_ssim):
    """Measured (defaults, 100 steps, width 16): SSIM 0.997 at conv1, 0.93 at relu2, 0.27 at relu3."""
    shallow, deep = digits_ssim(Likelihood, "conv1"), digits_ssim(Likelihood, "relu3")
    assert shallow > 0.9, shallow
    assert deep < shallow - 0.3, (shallow, deep)


def test_likelihood_is_at_least_as_good_as_rmle_at_relu2(digits_ssim):
    """DISCO's shape check without TV tuning. Measured: likelihood 0.93, rmle (its defaults, 500
    steps, TV auto) 0.10: rmle's TV prior flattens the 8 x 8 digit (0.57 with TV 0 and torch Adam)."""
    likelihood, rmle = digits_ssim(Likelihood, "relu2"), digits_ssim(RegularizedMLE, "relu2")
    assert likelihood >= rmle, (likelihood, rmle)
    assert likelihood > 0.8, likelihood


class LoudNoise(torch.nn.Module):
    """A feature perturbation an attacker who knows the mechanism can strip (as split's noise)."""

    random_perturbation = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 10 * torch.randn_like(x)


class FakeView:
    """The part of an AttackView that ``Likelihood.run`` reads."""

    def __init__(self, encoder, observed) -> None:
        self.encoder, self.observed, self.image_shape = encoder, observed, (1, 8, 8)
        self.generator = torch.Generator().manual_seed(5)
        self.device, self.progress = torch.device("cpu"), _Quiet()


def test_a_random_perturbation_is_stripped_by_default_and_kept_on_request():
    clean = client("conv1", seed=1)
    noisy = torch.nn.Sequential(clean, LoudNoise())
    observed = clean(torch.rand(2, 1, 8, 8)).detach()
    settings = {"iterations": 5, "width": 4}

    def attack(encoder, **extra):
        torch.manual_seed(0)  # the perturbed encoder's noise draws
        return Likelihood.from_params({**settings, **extra}).run(FakeView(encoder, observed)).reconstruction
    stripped = attack(noisy)
    assert torch.allclose(stripped, attack(clean), atol=1e-6)
    assert not torch.allclose(attack(noisy, through="perturbed"), stripped, atol=1e-3)
