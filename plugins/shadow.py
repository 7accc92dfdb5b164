"""Attack ``shadow``: query-free shadow-model reconstruction (He, Zhang, Lee, ACSAC 2019, Sec. 6).

Threat model: query-free. The attacker cannot query the encoder and does not have its parameters;
it knows the encoder's architecture, holds the frozen server model f2 and its own labelled
auxiliary images, and observes the protected data z of the victim's images. It trains a shadow
encoder f1' so that f2(f1'(x)) classifies its aux images (cross-entropy on the target task, f2
frozen), then inverts the shadow with rMLE (privbench_plugins.rmle.invert) against the observed z.

``shadow_arch``: ``same`` builds an untrained copy of the real encoder's architecture (the
protection's ``build_encoder``); ``different`` uses a generic convolutional network (or a
perceptron for vector outputs) with the same output shape, He et al.'s "different net" setting.
Defaults follow the authors' code: shadow trained with Adam, lr 1e-3; rMLE 500 iterations, lr 0.1;
the code's lambda_TV = 2 is for summed terms, our averaged TV uses ``tv_weight`` 1e-3 (see rmle).

Reports ``attack.psnr``, ``attack.ssim`` and the shadow's accuracy through the server on the test
images (``attack.shadow_accuracy``); privacy.score as for every reconstruction attack.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench import hookimpl
from privbench.core import Attack, AttackResult
from privbench.errors import NotApplicable
from privbench.params import param
from privbench.reconstruction import reconstruction_result, test_subset
from privbench.training import accuracy, apply, seed_everything, train_classifier
from privbench_plugins.rmle import invert


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


class ThroughFrozenServer(nn.Module):
    """f2(f1'(x)) with only the shadow f1' trainable."""

    def __init__(self, shadow: nn.Module, server: nn.Module) -> None:
        super().__init__()
        self.shadow = shadow
        self.server = copy.deepcopy(server).eval()
        for parameter in self.server.parameters():
            parameter.requires_grad_(False)

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
    privacy_mapping: ClassVar[str] = "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)"
    cost_hint: ClassVar[float] = 6  # relative run time, for parallel scheduling

    shadow_arch: str = param("same", "shadow architecture", choices=("same", "different"))
    epochs: int = param(30, "shadow training epochs", minimum=1)
    iterations: int = param(500, "rMLE iterations (code: 500)", minimum=1)
    lr: float = param(0.1, "rMLE learning rate (code: 0.1)", minimum=0.0)
    tv_weight: float = param(1e-3, "lambda_TV of the rMLE step", minimum=0.0)
    images: int = param(100, "test images to invert, every class first (0: all)", minimum=0)

    def run(self, scenario, protection, ctx) -> AttackResult:
        seed_everything(ctx.seed)
        index = test_subset(scenario, self.images)
        originals = scenario.images("test")[index]
        observed = apply(protection.encoder, originals, ctx)
        shadow = self._train_shadow(scenario, protection, tuple(observed.shape[1:]), ctx)
        reconstructed = invert(shadow, observed, scenario.image_shape, ctx, iterations=self.iterations,
                               lr=self.lr, tv_weight=self.tv_weight, beta=2.0,
                               description="shadow: inverting the shadow encoder")
        through = ThroughFrozenServer(shadow, protection.server)
        shadow_accuracy = accuracy(apply(through, scenario.images("test"), ctx), scenario.labels("test"))
        return reconstruction_result(scenario, originals, observed, reconstructed,
                                     extra={"attack.shadow_accuracy": shadow_accuracy},
                                     labels=scenario.labels("test")[index])

    def _train_shadow(self, scenario, protection, z_shape, ctx) -> nn.Module:
        if self.shadow_arch == "same":
            if protection.build_encoder is None:
                raise NotApplicable("attack 'shadow' with shadow_arch=same needs the encoder's "
                                    "architecture, and this defense's Protection has no "
                                    "build_encoder; shadow_arch=different needs none")
            shadow = protection.build_encoder()
        else:
            shadow = GenericShadow(scenario.image_shape, z_shape)
        if not any(p.requires_grad for p in shadow.parameters()):
            return shadow.eval()  # nothing to learn: the architecture alone is the encoder
        model = ThroughFrozenServer(shadow, protection.server)
        train_classifier(model, scenario.images("aux"), scenario.labels("aux"), ctx, epochs=self.epochs,
                         description=f"shadow: {self.shadow_arch} encoder through the frozen server")
        return model.shadow.eval()


@hookimpl
def register_attacks(register):
    register(Shadow)
