"""Grad-CAM saliency maps and the overlap of two maps' most salient pixels.

Grad-CAM (R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra, "Grad-CAM:
Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017, Sec. 3) explains
a classifier's score ``y^c`` for class ``c`` by the feature maps ``A^k`` of a convolutional layer
(the last one by default, as in the paper):

    alpha_k^c = 1/Z * sum_ij d y^c / d A^k_ij                  (eq. 1: global-average-pooled gradient)
    L^c       = ReLU( sum_k alpha_k^c A^k )                    (eq. 2)

``L^c`` has the layer's resolution; it is upsampled to the image size by bilinear interpolation
(Sec. 3.1, "Guided Grad-CAM"). ``y^c`` is the score before the softmax. privbench writes these few
lines itself (a forward hook and one ``autograd.grad``) instead of depending on a package that pulls
OpenCV into the install.

DAPter (Wu et al., seed slides, "Conversion Quality") compares the service model's Grad-CAM on the
original and on the converted image; ``saliency_iou`` turns that picture into a number: the
intersection over union of the two maps' top ``fraction`` of pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from privbench.errors import PrivbenchError
from privbench.training import batches

# Grad-CAM keeps every activation for the backward pass: smaller batches than plain evaluation.
GRAD_CAM_BATCH_SIZE = 64


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` in ``model``'s module order (Grad-CAM's default layer)."""
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise PrivbenchError(f"grad_cam: {type(model).__name__} has no nn.Conv2d layer; pass the "
                             "layer whose feature maps Grad-CAM should weigh (layer=...)")
    return convs[-1]


def _grad_cam_batch(model: nn.Module, layer: nn.Module, images: torch.Tensor,
                    classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N x H x W) of one batch already on the model's device."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        with torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)  # the maps join the graph even
            scores = model(inputs)                                  # when the weights are frozen
    finally:
        handle.remove()
    maps = captured[-1]
    if maps.dim() != 4:
        raise PrivbenchError(f"grad_cam: the layer's output must be N x K x h x w feature maps, got "
                             f"shape {tuple(maps.shape)}")
    # Images are independent in evaluation mode, so the gradient of the summed scores holds each
    # image's own d y^c / d A^k.
    chosen = scores.gather(1, classes.view(-1, 1).to(scores.device)).sum()
    (gradients,) = torch.autograd.grad(chosen, maps)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # alpha_k^c, eq. 1
    cam = F.relu((weights * maps).sum(dim=1, keepdim=True))  # L^c, eq. 2
    cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0].detach()


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, ctx, *,
             layer: nn.Module | None = None, batch_size: int = GRAD_CAM_BATCH_SIZE) -> torch.Tensor:
    """Grad-CAM maps (N x H x W, on the CPU, >= 0) of ``model`` for class ``classes[i]`` of image i.

    ``images`` is N x C x H x W; ``layer`` a module of ``model`` whose output are the feature maps
    ``A^k`` (default: the last ``nn.Conv2d``). The model runs in evaluation mode on ``ctx.device``
    (its mode is restored afterwards); its weights are read, never changed or given gradients.
    """
    if classes.shape != (len(images),):
        raise ValueError(f"grad_cam: classes must hold one class index per image ({len(images)}), "
                         f"got shape {tuple(classes.shape)}")
    layer = layer if layer is not None else last_conv_layer(model)
    was_training = model.training
    model.to(ctx.device).eval()
    try:
        maps = [_grad_cam_batch(model, layer, images[index].to(ctx.device), classes[index]).cpu()
                for index in batches(len(images), batch_size, False)]
    finally:
        model.train(was_training)
    return torch.cat(maps)


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean N x H x W: each map's ``ceil(fraction * H * W)`` highest pixels, less any of value 0.

    A pixel with zero saliency is never "salient" (a map that is zero everywhere selects nothing);
    ties among positive values are broken by pixel order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"saliency fraction must be in (0, 1], got {fraction}")
    flat = maps.flatten(1)
    count = max(1, math.ceil(fraction * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(count, dim=1).indices, True)
    return (mask & (flat > 0)).view_as(maps)


def saliency_iou(maps: torch.Tensor, other: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Per image, intersection over union of the top-``fraction`` pixels of two N x H x W maps.

    1 = the same pixels are the most salient, 0 = none shared. Two maps with nothing salient (both
    zero everywhere) agree: 1.
    """
    if maps.shape != other.shape:
        raise ValueError(f"saliency_iou: the maps differ in shape, {tuple(maps.shape)} and "
                         f"{tuple(other.shape)}")
    first, second = top_fraction_mask(maps, fraction), top_fraction_mask(other, fraction)
    intersection = (first & second).flatten(1).sum(1).float()
    union = (first | second).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))
