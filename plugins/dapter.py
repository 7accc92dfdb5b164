"""Defense ``dapter``: a user-side U-Net that removes pixel entropy before inference.

Paper: H. Wu, X. Tian, Y. Gong, X. Su, M. Li, F. Xu, "DAPter: Preventing User Data Abuse in Deep
Learning Inference Services", The Web Conference (WWW) 2021 (seed slides; no public code found).

The user converts each image with a symmetric U-Net (input and output of the same size, "copy"
connections concatenating the encoder path's feature maps onto the decoder path) and sends the
converted image to the unchanged inference service. The U-Net is trained on the data owner's
images with the data-abuse-prevention loss

    L_dap = lambda * L_eta + (1 - lambda) * L_acc,                                  (DAPter, L_dap)

where ``L_eta`` is the L1 distance between the converted image and a mid-gray reference image
(every pixel 128/255 per channel), and ``L_acc`` the cross-entropy of the *frozen* target model on
the converted image w.r.t. the target-task labels. Pulling pixels towards one value lowers the upper
bound of the image's pixel entropy ``H = -sum_i p_i log p_i``; the accuracy term keeps what the
service needs. Larger lambda removes more entropy and costs accuracy; lambda = 0.9 is the authors'
sweet spot.

Choices the slides leave open (documented parameters or stated here):
- ``L_eta`` is the *mean* absolute difference per pixel and channel (the slides write a sum over
  images of an L1 norm; the mean keeps lambda independent of image size and batch size);
- the U-Net: ``depth`` down-sampling levels at most (2x2 max-pooling), each level two 3x3
  convolutions with batch normalisation and ReLU, ``width`` channels at the first level doubled
  per level; up-sampling by 2x2 transposed convolutions whose output is sized to the matching
  skip connection, so any image size works (8x8 digits get 2 levels, 25x25 faces 3); a 1x1
  convolution and a sigmoid give an image in [0, 1];
- training: Adam (privbench's He et al. settings: amsgrad, eps 1e-3) with ``lr``, ``epochs`` and
  ``batch_size`` parameters; afterwards one pass over the owner's images sets the batch-norm
  statistics exactly (after a short run the running averages lag behind the weights, and the
  evaluation-mode U-Net would differ from the one the loss was minimised for).

Parameter -> paper symbol: ``lam`` = lambda (default 0.9); ``width``, ``depth`` = the U-Net's size
(not given in the slides); ``epochs``, ``lr``, ``batch_size`` = the U-Net's training (not given;
the defaults reach the paper's picture on digits in seconds: at lambda 0.9 the service keeps its
accuracy, at 0.99 it falls to chance).

Threat model: the U-Net runs on the user's device, so an attacker who is (or controls) a user holds
it: every access fact holds - white-box (its parameters), query, architecture, the server (the
unchanged public target model) and image-like protected data. The paper's own attacks are
black-box / known-plaintext style (auto-recognition of converted images, a reconstruction network
trained from converted to original images).

Metrics: ``defense.entropy`` and ``defense.entropy_original``, the mean pixel entropy in bits of the
converted and of the original test images (``pixel_entropy``); ``defense.gradcam_iou``, whether the
service still looks where it looked (the slides' "Conversion Quality": original image, the DLIS's
saliency map on it, protected image, the DAPter-enabled DLIS's saliency map, all by Grad-CAM). The
service model is the same frozen target model in both maps, so the metric is, per test image, the
IoU of the top 20% pixels of its Grad-CAM map (Selvaraju et al. 2017, ``privbench.saliency``) on the
converted image against that on the original, both for the image's true target-task class, averaged
over the test images (1: the attention survives the conversion).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from privbench.api import (
    EVAL_BATCH_SIZE,
    Defense,
    Protection,
    apply,
    batches,
    fit,
    grad_cam,
    hookimpl,
    param,
    saliency_iou,
)

MID_GRAY = 128 / 255  # DAPter's reference pixel value (R128, G128, B128) in [0, 1] units
INTENSITY_LEVELS = 256
SALIENT_FRACTION = 0.2  # defense.gradcam_iou compares each Grad-CAM map's top 20% of pixels


def pixel_entropy(images: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of each image's intensity histogram, ``H = -sum_i p_i log2 p_i``.

    ``images`` is N x C x H x W in [0, 1]; each image is quantised to the 256 levels 0..255 and its
    channels pooled into one histogram; ``p_i`` is the share of its values at level ``i``.
    Returns the N entropies (0 for a constant image, log2(k) for k equally frequent levels).
    """
    levels = (images.detach().float().clamp(0, 1) * (INTENSITY_LEVELS - 1)).round().long()
    count = levels.shape[0]
    offsets = torch.arange(count, device=levels.device).view(-1, 1) * INTENSITY_LEVELS
    flat = (levels.reshape(count, -1) + offsets).flatten()
    histogram = torch.bincount(flat, minlength=count * INTENSITY_LEVELS).view(count, -1).float()
    p = histogram / histogram.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(1)  # empty bins contribute 0 * log 0 = 0


def mean_pixel_entropy(images: torch.Tensor) -> float:
    """``pixel_entropy`` averaged over the images (bits)."""
    return float(pixel_entropy(images).mean())


def gradcam_iou(service: nn.Module, originals: torch.Tensor, converted: torch.Tensor,
                classes: torch.Tensor, ctx, fraction: float = SALIENT_FRACTION) -> float:
    """Mean IoU of the top-``fraction`` Grad-CAM pixels of ``service`` on converted vs original images.

    DAPter's "Conversion Quality" figure: the service's saliency map (Grad-CAM at its last
    convolution, for class ``classes[i]``) on the original image next to the one on the protected
    image; 1 = the same pixels support the service's decision after the conversion.
    """
    on_original = grad_cam(service, originals, classes, ctx)
    on_converted = grad_cam(service, converted, classes, ctx)
    return float(saliency_iou(on_converted, on_original, fraction).mean())


def levels_for(height: int, width: int, depth: int) -> int:
    """Down-sampling levels a U-Net can use: at most ``depth``, keeping maps at least 2x2."""
    fitting = int(math.floor(math.log2(min(height, width) / 2))) if min(height, width) >= 2 else 0
    return max(0, min(depth, fitting))


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 'same' convolutions, each with batch normalisation and ReLU (a U-Net level)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU())


class UNet(nn.Module):
    """Symmetric U-Net: same-size output in [0, 1], skip connections concatenated (DAPter Fig.).

    ``levels`` down-sampling steps (2x2 max-pool) with ``width * 2**level`` channels; each
    up-sampling step is a 2x2 stride-2 transposed convolution sized to its skip map, so odd sizes
    (25 -> 12 -> 6 -> 3 and back to 25) come out exactly the input size.
    """

    def __init__(self, channels: int, levels: int, width: int) -> None:
        super().__init__()
        widths = [width * 2 ** level for level in range(levels + 1)]
        self.down = nn.ModuleList(
            [conv_block(channels, widths[0])]
            + [conv_block(widths[i - 1], widths[i]) for i in range(1, levels + 1)])
        self.upsample = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2) for i in range(levels, 0, -1)])
        self.up = nn.ModuleList(
            [conv_block(2 * widths[i - 1], widths[i - 1]) for i in range(levels, 0, -1)])
        self.head = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not copied onto itself
        for upsample, block in zip(self.upsample, self.up, strict=True):
            skip = skips.pop()
            x = upsample(x, output_size=skip.shape[-2:])
            x = block(torch.cat([skip, x], dim=1))  # the "copy" connection
        return torch.sigmoid(self.head(x))


def build_unet(image_shape: tuple[int, int, int], depth: int, width: int) -> UNet:
    """An untrained U-Net sized for ``image_shape`` = (C, H, W)."""
    channels, height, width_px = image_shape
    return UNet(channels, levels_for(height, width_px, depth), width)


class DapLoss(nn.Module):
    """``L_dap = lam * L_eta + (1 - lam) * L_acc`` on converted images (DAPter, L_dap).

    ``L_eta``: mean |converted - 128/255| (L1 to the mid-gray reference); ``L_acc``: cross-entropy
    of the frozen ``target`` model on the converted images.
    """

    def __init__(self, target: nn.Module, lam: float) -> None:
        super().__init__()
        self.target = target
        self.lam = lam

    def forward(self, converted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        l_eta = (converted - MID_GRAY).abs().mean()  # L_eta = eta(I, I_ref), eta the L1 norm
        l_acc = F.cross_entropy(self.target(converted), labels)  # L_acc, the service's task loss
        return self.lam * l_eta + (1 - self.lam) * l_acc


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with no trainable parameters (the shared one is untouched)."""
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    return frozen


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: torch.Tensor, ctx) -> None:
    """Set batch-norm running statistics to the exact mean / variance over ``images``.

    The running averages lag behind the last weights after a short training run, so the
    evaluation-mode U-Net would differ from the one the loss saw; one pass fixes that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches of this pass
    model.to(ctx.device).train()
    for index in batches(len(images), EVAL_BATCH_SIZE, False):
        model(images[index].to(ctx.device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


@dataclass
class Dapter(Defense):
    """A user-side U-Net trained with L_dap against the frozen service; the server is unchanged."""

    name: ClassVar[str] = "dapter"
    summary: ClassVar[str] = ("user-side U-Net pulling images to mid-gray while the frozen service "
                              "still classifies them, L_dap (Wu et al., DAPter)")
    cost_hint: ClassVar[float] = 3  # a U-Net encoder: slower to refit (shadow), invert (rmle), run
    claims: ClassVar[frozenset[str]] = frozenset({"query-free", "black-box"})  # the service sees converted images only

    lam: float = param(0.9, "lambda: weight of L_eta (L1 to mid-gray) against L_acc (0.9: paper's "
                            "sweet spot)", minimum=0.0, maximum=1.0)
    width: int = param(16, "U-Net channels at the first level (doubled per level)", minimum=1)
    depth: int = param(3, "most U-Net down-sampling levels (fewer on small images)", minimum=0)
    epochs: int = param(15, "U-Net training epochs", minimum=1)
    lr: float = param(3e-3, "Adam learning rate of the U-Net", minimum=0.0)
    batch_size: int = param(64, "U-Net training batch size", minimum=1)

    def build(self, facts) -> Protection:
        return Protection(encoder=build_unet(facts.image_shape, self.depth, self.width),
                          server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        server = owner.target_model()
        unet = build_unet(owner.image_shape, self.depth, self.width)
        frozen = frozen_copy(server).to(owner.device)
        fit(unet, owner.images, owner.labels(), DapLoss(frozen, self.lam), owner, epochs=self.epochs,
            lr=self.lr, batch_size=self.batch_size, description=f"dapter: U-Net (lambda {self.lam})")
        recalibrate_batch_norm(unet, owner.images, owner)
        return Protection(encoder=unet.cpu().eval(), server=server)

    def evaluate(self, protection, data) -> dict[str, float]:
        """DAPter's pixel entropy of the converted and of the original test images, and the
        overlap of the service's Grad-CAM saliency on them (the slides' "Conversion Quality")."""
        converted = apply(protection.encoder, data.images, data)
        return {"defense.entropy": mean_pixel_entropy(converted),
                "defense.entropy_original": mean_pixel_entropy(data.images),
                "defense.gradcam_iou": gradcam_iou(protection.server, data.images, converted,
                                                   data.labels(), data)}


@hookimpl
def register_defenses(register):
    register(Dapter)
