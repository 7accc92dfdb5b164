"""He et al.'s target models (MNIST LeNet, CIFAR-10 CNN) with the paper's layer names, and SSIM as
the paper computes it (scikit-image), so reproductions compare like with like."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from privbench.errors import PrivbenchError
from privbench.metrics import METRICS, check_values, ssim_per_image
from privbench.models import classifier, he_cifar, lenet
from privbench.scoring import GroundTruth, reconstruction_metrics, ssim_skimage_per_image
from privbench.splitting import (
    HE_CIFAR_LAYERS,
    LENET_LAYERS,
    accepted_layers,
    check_known_layer,
    layer_names,
    split_model,
)
from privbench.testing import dataset_call
from privbench_plugins.split import Split


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int, int]]:
    """name -> (in channels, out channels, kernel side) of each convolution."""
    return {name: (m.in_channels, m.out_channels, m.kernel_size[0]) for name, m in model.named_children()
            if isinstance(m, torch.nn.Conv2d)}


# -- He et al.'s CIFAR-10 CNN ---------------------------------------------------------------------

def test_he_cifar_is_the_papers_cnn_with_its_layer_names():
    model = classifier("he-cifar", (3, 32, 32), 10)
    assert tuple(layer_names(model)) == HE_CIFAR_LAYERS == accepted_layers("he-cifar")
    assert {"conv11", "relu22", "relu32"} <= set(HE_CIFAR_LAYERS)  # the paper's split points
    assert conv_shapes(model) == {"conv11": (3, 64, 3), "conv12": (64, 64, 3), "conv21": (64, 128, 3),
                                  "conv22": (128, 128, 3), "conv31": (128, 128, 3),
                                  "conv32": (128, 128, 3)}
    assert (model.fc1.in_features, model.fc1.out_features) == (2048, 512)  # 128 x 4 x 4
    assert isinstance(model.fc1act, torch.nn.Sigmoid)
    assert (model.fc2.in_features, model.fc2.out_features) == (512, 10)
    assert parameter_count(model) == 1_609_546  # the authors' CIFAR10CNN, counted layer by layer
    with torch.no_grad():
        assert model(torch.rand(5, 3, 32, 32)).shape == (5, 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28), (3, 7, 5), (3, 64, 48)])
def test_he_cifar_adapts_to_the_image_size(shape):
    model = he_cifar(shape, 4).eval()
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 4)
        flat = model[:HE_CIFAR_LAYERS.index("flatten") + 1](torch.rand(1, *shape)).shape[1]
    assert model.fc1.in_features == flat  # sized by the dry run


def test_he_cifar_normalises_colour_as_the_authors_and_grey_as_lenet():
    grey = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(he_cifar((1, 8, 8), 2).normalize(grey), torch.zeros_like(grey))
    colour = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    assert torch.allclose(he_cifar((3, 8, 8), 2).normalize(colour), torch.zeros(1, 3, 8, 8), atol=1e-6)


@pytest.fixture(scope="module")
def cifar_model():
    torch.manual_seed(0)
    return he_cifar((3, 32, 32), 10).eval()


@pytest.mark.parametrize("layer", HE_CIFAR_LAYERS)
def test_a_split_at_each_he_cifar_layer_composes_to_the_model(layer, cifar_model):
    check_known_layer("split", layer)
    client, server = split_model(cifar_model, layer, "he-cifar")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        features = client(x)
        assert torch.allclose(server(features), cifar_model(x), atol=1e-5)
    assert list(client.named_children())[-1][0] == layer


def test_the_papers_cifar_split_points_send_the_papers_feature_maps(cifar_model):
    sizes = {"conv11": (64, 32, 32), "relu22": (128, 16, 16), "relu32": (128, 8, 8)}
    for layer, size in sizes.items():
        client, _ = split_model(cifar_model, layer, "he-cifar")
        with torch.no_grad():
            assert tuple(client(torch.rand(1, 3, 32, 32)).shape[1:]) == size
    assert Split.from_params({"layer": "relu22"}).layer == "relu22"  # accepted before any training


def test_an_unknown_layer_names_every_architectures_layers():
    with pytest.raises(PrivbenchError) as error:
        check_known_layer("split", "ReLU99")
    message = error.value.format_message()
    assert "\n" not in message and "'ReLU99'" in message
    assert "he-cifar: " + ", ".join(HE_CIFAR_LAYERS) in message
    accepted = "lenet, lenet5, he-cifar, resnet18, titcombe"
    with pytest.raises(PrivbenchError, match=f"unknown architecture 'vgg'; accepted: {accepted}"):
        accepted_layers("vgg")


def test_he_cifar_trains_on_a_tiny_synthetic_batch():
    """Two classes (left half brighter vs right half brighter): Adam drives the loss down."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 0.5
    y = torch.arange(8) % 2
    x[y == 0, :, :, :8] += 0.5
    x[y == 1, :, :, 8:] += 0.5
    model = he_cifar((3, 16, 16), 2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-3, amsgrad=True)  # the authors'
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.6 and losses[-1] < 0.25 * losses[0]  # from about ln 2 to well below


def test_he_cifar_is_an_accepted_dataset_architecture():
    assert dataset_call("digits", {"arch": "he-cifar"}).instance.arch == "he-cifar"
    with pytest.raises(PrivbenchError, match="he-cifar"):
        dataset_call("digits", {"arch": "vgg"})


# -- He et al.'s MNIST LeNet ----------------------------------------------------------------------

def test_lenet_on_28x28_mnist_is_the_authors_lenet():
    model = lenet((1, 28, 28), 10)
    assert tuple(layer_names(model)) == LENET_LAYERS
    assert conv_shapes(model) == {"conv1": (1, 8, 5), "conv2": (8, 16, 5)}
    assert all(m.padding == (0, 0) for m in (model.conv1, model.conv2))  # no padding at 28 x 28
    assert [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.fc3)] == \
        [(256, 120), (120, 84), (84, 10)]
    assert parameter_count(model) == 45_278  # the authors' LeNet, counted layer by layer
    assert torch.allclose(model.normalize(torch.ones(1, 1, 2, 2)), torch.ones(1, 1, 2, 2))  # (x-.5)/.5
    for layer, size in {"conv1": (8, 24, 24), "relu2": (16, 8, 8)}.items():  # the paper's splits
        client, server = split_model(model, layer, "lenet")
        x = torch.rand(2, 1, 28, 28)
        with torch.no_grad():
            assert tuple(client(x).shape[1:]) == size
            assert torch.allclose(server(client(x)), model(x), atol=1e-5)


# -- SSIM as He et al. compute it -----------------------------------------------------------------

def digit_images() -> torch.Tensor:
    from sklearn.datasets import load_digits
    images = torch.tensor(load_digits().images[:6], dtype=torch.float32) / 16.0
    return images.unsqueeze(1)  # 6 x 1 x 8 x 8


def smoothed(images: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)


def skimage_ssim(reconstructed: torch.Tensor, original: torch.Tensor, window: int = 7,
                 range_of: torch.Tensor | None = None) -> list[float]:
    """scikit-image called directly, image by image, with the data range of each original."""
    ranges = original if range_of is None else range_of
    return [structural_similarity(o.numpy(), r.numpy(), win_size=window, channel_axis=0,
                                  data_range=float(d.max() - d.min()))
            for r, o, d in zip(reconstructed, original, ranges, strict=True)]


def test_ssim_skimage_of_identical_images_is_one():
    images = digit_images()
    assert torch.allclose(ssim_skimage_per_image(images, images), torch.ones(len(images)))


@pytest.mark.parametrize("images", [digit_images(), torch.rand(4, 3, 32, 32)], ids=["digits", "colour"])
def test_ssim_skimage_matches_scikit_image_and_not_torchmetrics(images):
    blurred = smoothed(images)
    ours = ssim_skimage_per_image(blurred, images)
    assert torch.allclose(ours, torch.tensor(skimage_ssim(blurred, images)), atol=1e-5)
    assert ours.max() < 0.99  # smoothing is seen
    torchmetrics = ssim_per_image(blurred, images)
    assert (ours - torchmetrics).abs().mean() > 1e-3  # 7 x 7 uniform is not 11 x 11 Gaussian


def test_ssim_skimage_on_tiny_images_uses_the_largest_odd_window_and_either_data_range():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 6, 5)
    noisy = (images + 0.2 * torch.randn_like(images)).clamp(0, 1)
    expected = skimage_ssim(noisy, images, window=5)
    assert torch.allclose(ssim_skimage_per_image(noisy, images), torch.tensor(expected), atol=1e-5)
    faint = 0.5 * noisy  # the authors' script takes the range of the reconstruction
    as_authors = skimage_ssim(faint, images, window=5, range_of=faint)
    assert torch.allclose(ssim_skimage_per_image(faint, images, "reconstruction"),
                          torch.tensor(as_authors), atol=1e-5)
    with pytest.raises(PrivbenchError, match="range_of 'both'; accepted: original, reconstruction"):
        ssim_skimage_per_image(faint, images, "both")


def test_the_harness_reports_ssim_skimage_next_to_ssim_and_it_falls_with_noise():
    images = digit_images()
    truth = GroundTruth(originals=images, labels={"digit": torch.arange(len(images))},
                        target_task="digit", private_task="digit", classes=10,
                        aux_mean=images.mean(0, keepdim=True), aux_majority={"digit": 0})
    generator = torch.Generator().manual_seed(0)
    values = []
    for sigma in (0.0, 0.1, 0.3):
        noisy = (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        metrics = check_values(reconstruction_metrics(noisy, truth), "test")  # registered and in range
        assert "attack.ssim" in metrics
        values.append(metrics["attack.ssim_skimage"])
    assert values[0] == pytest.approx(1.0) and values[0] > values[1] > values[2]
    assert "scikit-image" in METRICS["attack.ssim_skimage"].computed
    assert "max - min of the reconstruction" in METRICS["attack.ssim_skimage"].computed


def test_the_reported_ssim_skimage_takes_the_reconstructions_data_range_as_the_authors_do():
    """He et al.'s scripts call compare_ssim(ref, inv, data_range=inv.max() - inv.min()): a faint
    reconstruction is scored with its own, smaller range."""
    images = digit_images()
    faint = 0.3 * smoothed(images)
    truth = GroundTruth(originals=images, labels={"digit": torch.arange(len(images))},
                        target_task="digit", private_task="digit", classes=10,
                        aux_mean=images.mean(0, keepdim=True), aux_majority={"digit": 0})
    reported = reconstruction_metrics(faint, truth)["attack.ssim_skimage"]
    as_authors = sum(skimage_ssim(faint, images, range_of=faint)) / len(images)
    with_original_range = sum(skimage_ssim(faint, images)) / len(images)
    assert reported == pytest.approx(as_authors, abs=1e-5)
    assert abs(as_authors - with_original_range) > 1e-3


def test_the_split_defense_accepts_he_cifar_layers_and_refuses_lenet_ones():
    from privbench.plugins import load_registry
    from privbench.view import DataFacts
    split = load_registry().get("defense", "split").cls
    facts = DataFacts("cifar-10", (3, 32, 32), {"class": 10}, "class", "class", "he-cifar", 1)
    for layer in ("conv11", "relu22", "relu32"):
        assert split.from_params({"layer": layer}).check_data(facts) is None
    refused = split.from_params({"layer": "relu2"}).check_data(facts)
    assert refused.startswith("defense 'split': unknown layer 'relu2' for he-cifar; accepted: ")
