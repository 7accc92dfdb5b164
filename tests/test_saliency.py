"""Grad-CAM on hand-built networks whose answer is known, and the top-k saliency overlap."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from privbench.errors import PrivbenchError
from privbench.saliency import grad_cam, last_conv_layer, saliency_iou, top_fraction_mask

CPU = SimpleNamespace(device=torch.device("cpu"))


class RegionSplit(nn.Module):
    """Two channels from a one-channel image: the pixels inside ``region`` and those outside it."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * self.region, x * (1 - self.region)], dim=1)


def region_network(region: torch.Tensor) -> nn.Sequential:
    """Class 0's score is the mean of the image inside ``region``, class 1's the mean outside it:
    a 1x1 identity convolution keeps the two region channels, global average pooling reads them."""
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    return nn.Sequential(RegionSplit(region), conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def gap_network(channels: int = 6, classes: int = 3) -> nn.Sequential:
    """conv -> ReLU -> global average pooling -> linear: the CAM architecture (Zhou et al. 2016)."""
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, classes))


def test_the_map_lights_up_exactly_the_region_the_class_score_reads():
    torch.manual_seed(0)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[1:4, 2:6] = True  # 12 pixels
    images = torch.rand(3, 1, 8, 8) + 0.1  # bright everywhere: only the network decides
    model = region_network(region)
    inside = grad_cam(model, images, torch.zeros(3, dtype=torch.long), CPU)
    outside = grad_cam(model, images, torch.ones(3, dtype=torch.long), CPU)
    assert inside.shape == (3, 8, 8)
    assert (inside[:, region] > 0).all() and (inside[:, ~region] == 0).all()
    assert (outside[:, ~region] > 0).all() and (outside[:, region] == 0).all()
    # alpha_0 = mean gradient of the region mean = 1 / 64 (eq. 1), so L = x / 64 inside (eq. 2)
    assert torch.allclose(inside[:, region], images[:, 0][:, region] / 64, atol=1e-6)
    assert top_fraction_mask(inside, 12 / 64).eq(region).all()


def test_grad_cam_equals_cam_on_a_global_average_pooling_network():
    """Selvaraju et al. Sec. 3.1: with GAP, alpha_k^c = w_k^c / Z, so Grad-CAM = ReLU(CAM) / Z."""
    torch.manual_seed(1)
    model = gap_network()
    images = torch.rand(4, 1, 8, 8)
    classes = torch.tensor([0, 1, 2, 1])
    maps = grad_cam(model, images, classes, CPU, layer=model[1])  # A^k: the rectified maps
    with torch.no_grad():
        features = model[1](model[0](images))  # 4 x 6 x 8 x 8
        weights = model[4].weight[classes]  # 4 x 6: w_k^c
        cam = torch.einsum("nk,nkhw->nhw", weights, features)
    assert torch.allclose(maps, F.relu(cam) / 64, atol=1e-6)


def test_the_map_is_upsampled_to_the_image_and_finds_the_evidence():
    torch.manual_seed(2)
    detector = nn.Conv2d(1, 1, 2, stride=2, bias=False)  # 8 x 8 -> 4 x 4 maps
    with torch.no_grad():
        detector.weight.fill_(0.25)
    model = nn.Sequential(detector, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor([[1.0], [-1.0]]))  # class 0: brightness; class 1: darkness
    images = torch.zeros(2, 1, 8, 8)
    images[0, 0, 0:4, 0:4] = 1  # evidence in the top-left quadrant
    images[1, 0, 4:8, 2:6] = 1  # at the bottom
    maps = grad_cam(model, images, torch.zeros(2, dtype=torch.long), CPU)
    assert maps.shape == (2, 8, 8)
    evidence = images[:, 0] > 0
    assert top_fraction_mask(maps, 16 / 64).eq(evidence).all()  # its 16 most salient pixels
    assert (maps * evidence).sum() > 0.8 * maps.sum()  # bilinear upsampling spills a little
    against = grad_cam(model, images, torch.ones(2, dtype=torch.long), CPU)
    assert (against == 0).all()  # negative evidence only: ReLU leaves nothing (eq. 2)


def test_images_are_explained_independently_and_the_model_is_left_as_it_was():
    torch.manual_seed(3)
    model = gap_network().train()
    model.requires_grad_(False)  # a frozen service model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = torch.rand(5, 1, 8, 8)
    classes = torch.tensor([2, 0, 1, 1, 0])
    together = grad_cam(model, images, classes, CPU, batch_size=5)
    one_by_one = grad_cam(model, images, classes, CPU, batch_size=1)
    assert torch.allclose(together, one_by_one, atol=1e-6)
    assert model.training  # its mode is restored
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_default_layer_is_the_last_convolution_and_bad_input_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Flatten())
    assert last_conv_layer(model) is model[2]
    with pytest.raises(PrivbenchError, match="no nn.Conv2d layer"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), torch.rand(1, 1, 8, 8),
                 torch.zeros(1, dtype=torch.long), CPU)
    with pytest.raises(ValueError, match="one class index per image"):
        grad_cam(gap_network(), torch.rand(2, 1, 8, 8), torch.zeros(3, dtype=torch.long), CPU)


def test_top_fraction_overlap():
    base = torch.arange(1.0, 11.0).view(1, 1, 10)  # top 20% = the pixels valued 10 and 9
    assert saliency_iou(base, base.clone()).tolist() == [1.0]
    shifted = torch.roll(base, 1, dims=-1)  # now 10 sits where 1 was, 9 where 10 was
    assert saliency_iou(base, shifted).tolist() == pytest.approx([1 / 3])  # {8,9} vs {9,0}
    reversed_ = base.flip(-1)
    assert saliency_iou(base, reversed_).tolist() == [0.0]
    assert saliency_iou(base, reversed_, fraction=1.0).tolist() == [1.0]
    zero = torch.zeros_like(base)
    assert saliency_iou(zero, zero).tolist() == [1.0]  # nothing salient in either
    assert saliency_iou(base, zero).tolist() == [0.0]
    with pytest.raises(ValueError, match="fraction must be in"):
        saliency_iou(base, base, fraction=0)
    with pytest.raises(ValueError, match="differ in shape"):
        saliency_iou(base, base[..., :5])
