"""Attack ``shadow``: query-free shadow-model reconstruction (He, Zhang, Lee, ACSAC 2019, Sec. 6).

Threat model: query-free. The attacker cannot query the encoder and does not have its parameters;
it knows the encoder's architecture, holds the frozen server model f2 and its own labelled
auxiliary images, and observes the protected data z of the victim's images. It trains a shadow
encoder f1' so that f2(f1'(x)) classifies its aux images (cross-entropy on the target task, f2
frozen and kept in eval mode), then inverts the shadow with rMLE (``privbench.inversion.invert``)
against the observed z.

``shadow_arch``: ``same`` asks the view for a freshly initialised encoder of the defense's
architecture (drawn from the attacker's own random stream: new weights, a new key, never the
defender's); ``different`` is He et al.'s "different net" setting, a network of another
architecture with the same output shape. Where the client is LeNet on a 28 x 28 grey image, it is
the authors' Table 5 network (their ``net.py``): at conv1 (8 x 24 x 24) two 3 x 3 convolutions
1 -> 8 -> 8 with no activation (``LeNetAlternativeconv1``); at ReLU2 (16 x 8 x 8) four 3 x 3
convolutions 1 -> 8 -> 16, a 2 x 2 max-pool, 16 -> 16 -> 16 and a ReLU
(``LeNetAlternativeReLU2Archi2``). For any other output shape it is a generic convolutional network
(or a perceptron for vector outputs) of that shape. The attacker picks it from the shapes it sees.

Defaults follow the authors' code: shadow trained with Adam, lr 1e-3; rMLE with their optimiser
(``privbench.inversion``: Adam with amsgrad and eps 1e-3 on the normalised image), 500 iterations,
lr 0.1, their lambda_TV = 2. Their TV and feature losses are means on [-1, 1] images, so lambda_TV
= 2 is ``tv_weight`` 8 in privbench's [0, 1] pixel scale (see rmle); ``tv_weight=auto`` (default) is
that 8, scaled like rmle's to images smaller than 28 x 28 (times (s / 28)^2), and 0 when the
protected data is shaped like the image (noise, disguising), where rmle uses no prior either.

``data``: the shadow trains on the attacker's aux images (default; He et al.'s "diff set") or on the
owner's training images (``same-set``, their "same set"; needs ``owner-data`` access). The server
the view gives is frozen and stays in eval mode however the shadow is trained (batch-norm
statistics are the owner's).

Returns the reconstructions (scored by the harness like every reconstruction) and, as a
diagnostic, ``attack.shadow_accuracy``: the shadow's accuracy through the server on its own
training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    Attack,
    AttackOutput,
    Normalize,
    accuracy,
    apply,
    checked_tv_weight,
    hookimpl,
    invert,
    param,
    train_classifier,
    tv_size_factor,
)


class GenericShadow(nn.Module):
    """A shadow encoder of another architecture with the real encoder's output shape."""

    def __init__(self, image_shape: tuple[int, ...], z_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        channels = image_shape[0]
        if len(z_shape) == 3:
            self.net = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(z_shape[1:]), nn.Conv2d(width, z_shape[0], 1))
        else:
            size = int(torch.tensor(image_shape).prod())
            out = int(torch.tensor(z_shape).prod())
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, 256), nn.ReLU(),
                                     nn.Linear(256, out), nn.Unflatten(1, tuple(z_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


LENET_IMAGE = (1, 28, 28)
AUTHORS_TV_WEIGHT = 8.0  # their lambda_TV = 2 on [-1, 1] images, in privbench's [0, 1] pixel scale


def lenet_alternative(z_shape: tuple[int, ...]) -> nn.Module | None:
    """He et al.'s Table 5 "different net" for LeNet's conv1 or ReLU2 output on a 28 x 28 image
    (their ``LeNetAlternativeconv1`` / ``LeNetAlternativeReLU2Archi2``), else None. Like theirs, it
    sees the normalised image (mean 0.5, std 0.5), as LeNet does."""
    if z_shape == (8, 24, 24):  # conv1: 28 -> 26 -> 24
        return nn.Sequential(Normalize(), nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3))
    if z_shape == (16, 8, 8):  # ReLU2: 28 -> 26 -> 24 -> pool 12 -> 10 -> 8
        return nn.Sequential(Normalize(), nn.Conv2d(1, 8, 3), nn.Conv2d(8, 16, 3), nn.MaxPool2d(2, 2),
                             nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3), nn.ReLU())
    return None


def different_net(image_shape: tuple[int, ...], z_shape: tuple[int, ...]) -> nn.Module:
    """The "different net" shadow: the authors' Table 5 network where the shapes are LeNet's on
    28 x 28 MNIST, else ``GenericShadow``."""
    table5 = lenet_alternative(tuple(z_shape)) if tuple(image_shape) == LENET_IMAGE else None
    return table5 if table5 is not None else GenericShadow(image_shape, z_shape)


class ThroughFrozenServer(nn.Module):
    """f2(f1'(x)) with only the shadow f1' trainable (the view's server is frozen, in eval mode)."""

    def __init__(self, shadow: nn.Module, server: nn.Module) -> None:
        super().__init__()
        self.shadow = shadow
        self.server = server

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.server(self.shadow(x))


@dataclass
class Shadow(Attack):
    """Train a shadow encoder through the frozen server, then invert the shadow."""

    name: ClassVar[str] = "shadow"
    summary: ClassVar[str] = ("query-free: train a shadow encoder through the frozen server, invert "
                              "it with rMLE (He et al.)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"server", "architecture"})
    cost_hint: ClassVar[float] = 6  # relative run time, for parallel scheduling

    shadow_arch: str = param("same", "shadow architecture", choices=("same", "different"))
    epochs: int = param(30, "shadow training epochs", minimum=1)
    iterations: int = param(500, "rMLE iterations (code: 500)", minimum=1)
    lr: float = param(0.1, "rMLE learning rate (code: 0.1)", minimum=0.0)
    tv_weight: str = param("auto", "lambda_TV of the rMLE step in privbench's [0, 1] pixel scale, "
                                   "or auto: the authors' 2 on [-1, 1] images = 8 here, scaled to "
                                   "the image size, 0 for image-shaped outputs")
    images: int = param(100, "test images to invert, every class first (0: all)", minimum=0)
    data: str = param("aux", "the shadow's labelled training images: aux (He et al.'s different "
                             "set) or same-set (the owner's; needs owner-data access)",
                      choices=("aux", "same-set"))

    def __post_init__(self) -> None:
        checked_tv_weight(self.name, self.tv_weight)

    def tv_setting(self, image_shape: tuple[int, ...], z_shape: tuple[int, ...]) -> float:
        """``tv_weight``, or under auto the authors' lambda_TV = 2 (8 in pixel scale) scaled to the
        image size; 0 when the protected data is shaped like the image, as rmle does."""
        if self.tv_weight != "auto":
            return float(self.tv_weight)
        if tuple(z_shape) == tuple(image_shape):
            return 0.0
        return AUTHORS_TV_WEIGHT * tv_size_factor(image_shape)

    def granted_needs(self) -> frozenset[str]:
        """``different`` builds its own network: it needs the server, not the architecture;
        ``same-set`` trains on the owner's data: it needs owner-data access."""
        needs = self.requires if self.shadow_arch == "same" else frozenset({"server"})
        return needs | {"owner-data"} if self.data == "same-set" else needs

    def training_data(self, view):
        """(images, target-task labels) the shadow is trained on."""
        if self.data == "same-set":
            images, labels = view.owner_data()
            return images, labels[view.target_task]
        return view.aux_images, view.aux_labels()

    def victims(self) -> int:
        return self.images

    def run(self, view) -> AttackOutput:
        z_shape = tuple(view.observed.shape[1:])
        shadow = self._untrained_shadow(view, z_shape)
        through = ThroughFrozenServer(shadow, view.server)
        images, labels = self.training_data(view)
        if any(p.requires_grad for p in shadow.parameters()):
            train_classifier(through, images, labels, view, epochs=self.epochs,
                             description=f"shadow: {self.shadow_arch} encoder through the frozen server")
        shadow.eval()
        reconstructed = invert(shadow, view.observed, view.image_shape, view, iterations=self.iterations,
                               lr=self.lr, tv_weight=self.tv_setting(tuple(view.image_shape), z_shape),
                               beta=2.0,
                               description="shadow: inverting the shadow encoder")
        shadow_accuracy = accuracy(apply(through, images, view), labels)
        return AttackOutput(reconstruction=reconstructed,
                            diagnostics={"attack.shadow_accuracy": shadow_accuracy})

    def _untrained_shadow(self, view, z_shape) -> nn.Module:
        if self.shadow_arch == "same":
            return view.build_encoder()
        return different_net(tuple(view.image_shape), z_shape)


@hookimpl
def register_attacks(register):
    register(Shadow)
