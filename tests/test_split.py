"""Defense ``split`` (He et al.): exact split, perturbations, access facts, and depth vs inversion."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import FAST_DIGITS, metrics_by_cell, run_matrix

from privbench.context import RunContext
from privbench.datasets import Digits, make_scenario
from privbench.errors import PrivbenchError
from privbench.models import classifier
from privbench_plugins.split import (
    LENET_LAYERS,
    RESNET18_LAYERS,
    FeaturePerturbation,
    Split,
    layer_names,
    split_model,
)


@pytest.fixture(scope="module")
def ctx(shared_cache) -> RunContext:
    return RunContext(cache=shared_cache)


@pytest.fixture(scope="module")
def scenario(ctx):
    source = Digits.from_params(FAST_DIGITS[1])
    return make_scenario(source, source.load(ctx), seed=0)


@pytest.fixture(scope="module")
def target(scenario, ctx):
    return ctx.target_model(scenario)


def test_staging_names_every_layer_of_both_architectures():
    assert tuple(layer_names(classifier("lenet", (1, 8, 8), 2))) == LENET_LAYERS
    assert tuple(layer_names(classifier("resnet18", (3, 32, 32), 10))) == RESNET18_LAYERS


@pytest.mark.parametrize("layer", ["normalize", "conv1", "relu2", "flatten", "fc1", "fc2", "fc3"])
def test_server_of_encoder_is_the_target_model_on_lenet(layer, scenario, target, ctx):
    protection = Split(layer=layer).fit(scenario, ctx)
    x = scenario.images("test")[:64]
    with torch.no_grad():
        expected = target.cpu()(x)
        features = protection.encoder(x)
        got = protection.server(features)
    assert torch.allclose(got, expected, atol=1e-6)
    if layer != "fc3":
        assert features.shape[1:] != expected.shape[1:]  # the client sends mid-network features
    assert protection.metrics["defense.feature_size"] == features[0].numel()


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


def test_fitting_with_a_finetuned_server_leaves_the_target_model_unchanged(scenario, target, ctx):
    before = {k: v.clone() for k, v in target.state_dict().items()}
    defense = Split(layer="relu2", feature_noise="gaussian", noise_scale=1.0,
                    finetune_server=True, finetune_epochs=2)
    protection = defense.fit(scenario, ctx)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fc3 = dict(protection.server.named_children())["fc3"]
    assert not torch.equal(fc3.weight.cpu(), before["fc3.weight"].cpu())  # the copy was trained
    pickle.loads(pickle.dumps(protection))  # cached with torch.save: everything picklable


def test_an_unknown_layer_is_a_one_line_error_listing_the_layers(scenario, ctx):
    with pytest.raises(PrivbenchError) as error:
        Split(layer="conv9").fit(scenario, ctx)
    message = error.value.format_message()
    assert "\n" not in message and "'conv9'" in message and "lenet" in message
    assert ", ".join(LENET_LAYERS) in message
    with pytest.raises(PrivbenchError, match="resnet18: normalize, conv1, bn1"):
        Split.from_params({"layer": "conv9"})  # rejected before anything trains
    help_text = next(p.help for p in Split.parameters() if p.name == "layer")
    assert all(name in help_text for name in LENET_LAYERS)


def test_gaussian_and_laplace_feature_noise_have_the_asked_spread(scenario, target, ctx):
    x = scenario.images("test")
    clean = Split(layer="relu2").fit(scenario, ctx).encoder(x)
    gaussian = Split(layer="relu2", feature_noise="gaussian", noise_scale=0.7).fit(scenario, ctx)
    first, second = gaussian.encoder(x) - clean, gaussian.encoder(x) - clean
    assert abs(first.std().item() - 0.7) < 0.02 and abs(first.mean().item()) < 0.02
    assert not torch.allclose(first, second)  # fresh noise on every query
    laplace = Split(layer="relu2", feature_noise="laplace", noise_scale=0.5).fit(scenario, ctx)
    eps = laplace.encoder(x) - clean
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


def test_access_facts_and_untrained_encoder(scenario, ctx):
    defense = Split()
    assert defense.layer == "relu2"
    assert defense.access() == {"query", "white-box", "architecture", "server"}
    assert "not images" in defense.withheld_reason("image-like")
    protection = defense.fit(scenario, ctx)
    shadow = protection.build_encoder()
    x = scenario.images("test")[:8]
    with torch.no_grad():
        assert shadow(x).shape == protection.encoder(x).shape
        assert not torch.allclose(shadow(x), protection.encoder(x))  # untrained, not a copy


def test_inverse_network_quality_falls_as_the_split_moves_deeper(registry, shared_cache, tmp_path):
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'split.db'}", shared_cache,
                               defenses=[("split", {"layer": ["conv1", "relu2", "fc2"]})],
                               attacks=[("inverse-network", {"epochs": 4})])
    assert report.failures == []
    runs = metrics_by_cell(store)
    ssim = {layer: runs[(spec, "inverse-network:epochs=4", 0)]["attack.ssim"]
            for layer, spec in [("conv1", "split:layer=conv1"), ("relu2", "split"),
                                ("fc2", "split:layer=fc2")]}
    # observed on seeds 0-2 (5 epochs): conv1 ~0.94, relu2 ~0.46-0.51, fc2 ~0.0
    assert ssim["conv1"] > 0.8
    assert ssim["conv1"] > ssim["relu2"] + 0.2
    assert ssim["relu2"] > ssim["fc2"] + 0.2
    assert all(runs[key]["utility.drop"] == 0.0 for key in runs)  # no perturbation: exact split
