"""A third-party privbench plugin: the shape a researcher's package takes.

One module, one ``[project.entry-points.privbench]`` line. It adds the defense ``box-blur`` (average
k x k cells, then upsample: the image leaves the owner blurred; the server is trained on blurred
owner data) and the attack ``linear-inversion`` (a ridge-regression decoder from protected data to
pixels, fitted on queried aux images).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from privbench import hookimpl
from privbench.core import Attack, AttackResult, Defense, Protection
from privbench.metrics import reconstruction_metrics
from privbench.models import classifier
from privbench.params import param
from privbench.training import apply, train_classifier


class BoxBlur(nn.Module):
    def __init__(self, cell: int) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, self.cell, ceil_mode=True)
        return nn.functional.interpolate(pooled, size=x.shape[-2:], mode="nearest")


@dataclass
class BoxBlurDefense(Defense):
    name: ClassVar[str] = "box-blur"
    summary: ClassVar[str] = "average k x k pixel cells; the server trains on blurred images"
    needs_target_model: ClassVar[bool] = False  # a scheduling hint: fit() trains its own server

    cell: int = param(2, "side of the averaged cells in pixels", minimum=1)

    def fit(self, scenario, ctx) -> Protection:
        encoder = BoxBlur(self.cell)
        server = classifier(scenario.source.arch, scenario.image_shape, scenario.classes())
        train_classifier(server, scenario.images("owner"), scenario.labels("owner"), ctx,
                         epochs=scenario.source.target_epochs, transform=encoder,
                         description="box-blur: server")
        # build_encoder: an untrained copy of the encoder's architecture, for query-free attacks
        return Protection(encoder=encoder, server=server, build_encoder=partial(BoxBlur, self.cell))


@dataclass
class LinearInversion(Attack):
    name: ClassVar[str] = "linear-inversion"
    summary: ClassVar[str] = "black-box: ridge regression from protected data to pixels"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)"

    ridge: float = param(1e-3, "ridge penalty", minimum=0.0)

    def run(self, scenario, protection, ctx) -> AttackResult:
        aux, test = scenario.images("aux"), scenario.images("test")
        z_aux = apply(protection.encoder, aux, ctx).flatten(1).double()
        z_aux = torch.cat([z_aux, torch.ones(len(z_aux), 1, dtype=z_aux.dtype)], 1)
        gram = z_aux.T @ z_aux + self.ridge * torch.eye(z_aux.shape[1], dtype=z_aux.dtype)
        weights = torch.linalg.solve(gram, z_aux.T @ aux.flatten(1).double())
        z_test = apply(protection.encoder, test, ctx).flatten(1).double()
        z_test = torch.cat([z_test, torch.ones(len(z_test), 1, dtype=z_test.dtype)], 1)
        reconstructed = (z_test @ weights).float().reshape(test.shape)
        return AttackResult(reconstruction_metrics(reconstructed, test, aux.mean(0, keepdim=True)))


@hookimpl
def register_defenses(register):
    register(BoxBlurDefense)


@hookimpl
def register_attacks(register):
    register(LinearInversion)
