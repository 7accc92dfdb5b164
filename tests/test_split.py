"""Defense ``split`` (He et al.): exact split, perturbations, access facts, and depth vs inversion."""

from __future__ import annotations

import pytest
import torch

from privbench.api import OwnerData
from privbench.artifacts import cpu_state
from privbench.errors import PrivbenchError
from privbench.models import classifier
from privbench.progress import SilentProgress
from privbench.splitting import (
    LENET_LAYERS,
    RESNET18_LAYERS,
    FeaturePerturbation,
    layer_names,
    split_model,
)
from privbench.testing import (
    FittedDefenses,
    call_of,
    check_defense,
    dataset_call,
    fresh_artifacts,
    harness,
    run_cell,
)
from privbench_plugins.inverse_network import InverseNetwork
from privbench_plugins.split import Split

DIGITS = {"limit": 0, "target_epochs": 15}  # every digit: the target model reaches ~0.98 parity


@pytest.fixture(scope="module")
def runner(shared_cache):
    return harness(shared_cache)


@pytest.fixture(scope="module")
def scenario(runner):
    return runner.scenario(dataset_call("digits", DIGITS), 0)


@pytest.fixture(scope="module")
def target(runner, scenario):
    return runner.artifacts.target_model(scenario)


def fitted(runner, scenario, **params):
    """Split fitted through the shared artifacts (a fresh copy of the cached protection)."""
    return FittedDefenses(runner).protection(scenario, call_of(Split, params))[0]


def owner_of(scenario, target) -> OwnerData:
    """The owner's view whose target model is ``target`` itself (to see whether fit changes it)."""
    return OwnerData(scenario.facts(), scenario.images("owner"),
                     {task: scenario.labels("owner", task) for task in scenario.dataset.tasks},
                     device=torch.device("cpu"), progress=SilentProgress(),
                     seed=scenario.streams.defender, target_model=lambda: target)


def test_staging_names_every_layer_of_both_architectures():
    assert tuple(layer_names(classifier("lenet", (1, 8, 8), 2))) == LENET_LAYERS
    assert tuple(layer_names(classifier("resnet18", (3, 32, 32), 10))) == RESNET18_LAYERS


@pytest.mark.parametrize("layer", ["normalize", "conv1", "relu2", "flatten", "fc1", "fc2", "fc3"])
def test_server_of_encoder_is_the_target_model_on_lenet(layer, runner, scenario, target):
    call = call_of(Split, {"layer": layer})
    protection = FittedDefenses(runner).protection(scenario, call)[0]
    x = scenario.images("test")[:64]
    with torch.no_grad():
        expected = target.cpu()(x)
        features = protection.encoder(x)
        got = protection.server(features)
    assert torch.allclose(got, expected, atol=1e-6)
    if layer != "fc3":
        assert features.shape[1:] != expected.shape[1:]  # the client sends mid-network features
    metrics = runner.utility(scenario, call)
    assert metrics["defense.feature_size"] == features[0].numel()
    assert metrics["utility.drop"] == 0.0


@pytest.mark.parametrize("layer", ["bn1", "layer2", "avgpool"])
def test_server_of_encoder_is_the_model_on_resnet18_digits(layer):
    torch.manual_seed(0)
    model = classifier("resnet18", (1, 8, 8), 2).eval()
    client, server = split_model(model, layer, "resnet18")
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        features = client(x)
        kept = features.clone()
        out = server(features)
        assert torch.allclose(out, model(x), atol=1e-6)
    assert torch.equal(features, kept)  # the server's in-place ReLU (after bn1) left v untouched
    assert client[-1] is not getattr(model[1], layer)  # copies, not the model's own modules


def test_fitting_with_a_finetuned_server_leaves_the_target_model_unchanged(scenario, target):
    before = {k: v.clone() for k, v in target.state_dict().items()}
    params = {"layer": "relu2", "feature_noise": "gaussian", "noise_scale": 1.0,
              "finetune_server": True, "finetune_epochs": 2}
    protection = Split(**params).fit(owner_of(scenario, target))
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fc3 = dict(protection.server.named_children())["fc3"]
    assert not torch.equal(fc3.weight.cpu(), before["fc3.weight"].cpu())  # the copy was trained
    # the cache stores state dicts and rebuilds the modules through build(): nothing is lost
    state = {"encoder": cpu_state(protection.encoder), "server": cpu_state(protection.server)}
    rebuilt = fresh_artifacts().rebuild(scenario, call_of(Split, params), state)
    x = scenario.images("test")[:8]
    with torch.no_grad():
        clean = protection.encoder.eval().client(x)
        assert torch.equal(rebuilt.encoder.client(x), clean)
        assert torch.equal(rebuilt.server(clean), protection.server.eval()(clean))


def test_an_unknown_layer_is_a_one_line_error_listing_the_layers(scenario, target):
    with pytest.raises(PrivbenchError, match="resnet18: normalize, conv1, bn1") as error:
        Split.from_params({"layer": "conv9"})  # rejected before anything trains
    message = error.value.format_message()
    assert "\n" not in message and "'conv9'" in message and ", ".join(LENET_LAYERS) in message
    # a layer only resnet18 has: accepted as a parameter, refused for a lenet dataset
    problem = Split.from_params({"layer": "layer2"}).check_data(scenario.facts())
    assert problem is not None and "\n" not in problem
    assert "'layer2'" in problem and "lenet" in problem and ", ".join(LENET_LAYERS) in problem
    with pytest.raises(PrivbenchError) as error:
        Split(layer="conv9").fit(owner_of(scenario, target))
    message = error.value.format_message()
    assert "\n" not in message and "'conv9'" in message and ", ".join(LENET_LAYERS) in message
    help_text = next(p.help for p in Split.parameters() if p.name == "layer")
    assert all(name in help_text for name in LENET_LAYERS)


def test_gaussian_and_laplace_feature_noise_have_the_asked_spread(runner, scenario):
    x = scenario.images("test")
    with torch.no_grad():
        clean = fitted(runner, scenario, layer="relu2").encoder(x)
        gaussian = fitted(runner, scenario, layer="relu2", feature_noise="gaussian", noise_scale=0.7)
        first, second = gaussian.encoder(x) - clean, gaussian.encoder(x) - clean
        laplace = fitted(runner, scenario, layer="relu2", feature_noise="laplace", noise_scale=0.5)
        eps = laplace.encoder(x) - clean
    assert abs(first.std().item() - 0.7) < 0.02 and abs(first.mean().item()) < 0.02
    assert not torch.allclose(first, second)  # fresh noise on every query
    assert abs(eps.std().item() - 0.5 * 2 ** 0.5) < 0.03  # Laplace(0, b) has std sqrt(2) b
    assert abs(eps.abs().mean().item() - 0.5) < 0.02  # and mean absolute deviation b


def test_dropout_zeroes_a_fraction_r_of_features_without_rescaling():
    v = torch.rand(200, 16, 4, 4) + 0.5
    dropped = FeaturePerturbation(dropout=0.3)(v)
    zeroed = (dropped == 0).float().mean().item()
    assert abs(zeroed - 0.3) < 0.02
    kept = dropped != 0
    assert torch.equal(dropped[kept], v[kept])  # f(x) (*) M, no 1 / (1 - r)
    assert not torch.equal(FeaturePerturbation(dropout=0.3)(v), dropped)


def test_access_facts_and_untrained_encoder(runner, scenario):
    defense = Split()
    assert defense.layer == "relu2"
    assert {"query", "white-box", "architecture", "server", "known-pairs"} <= defense.access()
    assert "image-like" not in defense.access()
    assert "not images" in defense.withheld_reason("image-like")
    protection = fitted(runner, scenario)
    shadow = defense.build(scenario.facts()).encoder.eval()  # what architecture access builds
    x = scenario.images("test")[:8]
    with torch.no_grad():
        assert shadow(x).shape == protection.encoder(x).shape
        assert not torch.allclose(shadow(x), protection.encoder(x))  # untrained, not a copy


def test_split_keeps_the_defense_contract():
    check_defense(Split, {"layer": "relu2", "feature_noise": "laplace", "dropout": 0.1,
                          "finetune_server": True, "finetune_epochs": 1})


@pytest.mark.slow
def test_inverse_network_quality_falls_as_the_split_moves_deeper(runner):
    runs = {layer: run_cell(Split, InverseNetwork, defense_params={"layer": layer},
                            attack_params={"epochs": 8, "decoder": "wide"}, dataset_params=DIGITS,
                            runner=runner)
            for layer in ("conv1", "relu2", "fc2")}
    ssim = {layer: metrics["attack.ssim"] for layer, metrics in runs.items()}
    # observed on seeds 0-2 (8 epochs, the 64-channel decoder): conv1 ~0.955, relu2 ~0.58-0.62,
    # fc2 ~0.09-0.2 (at 5 epochs relu2 fell to 0.15 on seed 1)
    assert ssim["conv1"] > 0.8
    assert ssim["conv1"] > ssim["relu2"] + 0.2
    assert ssim["relu2"] > ssim["fc2"] + 0.2
    assert all(metrics["utility.drop"] == 0.0 for metrics in runs.values())  # no perturbation: exact
