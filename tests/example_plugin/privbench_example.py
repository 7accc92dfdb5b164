"""A third-party privbench plugin: the shape a researcher's package takes.

One module, one ``[project.entry-points.privbench]`` line, imports from ``privbench.api`` only. It
adds the defense ``box-blur`` (average k x k cells, then upsample: the image leaves the owner
blurred; the server is trained on blurred owner data), the attack ``linear-inversion`` (a
ridge-regression decoder from protected data to pixels, fitted on queried aux images), the dataset
``bars`` (synthetic 8 x 8 images of horizontal or vertical bars, offline) and the metric the attack
reports besides what the harness scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    Attack,
    AttackOutput,
    Dataset,
    DatasetSource,
    Defense,
    LabelTask,
    MetricSpec,
    Protection,
    hookimpl,
    param,
    train_server_on_encoded,
)


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
    claims: ClassVar[frozenset[str]] = frozenset({"query-free", "black-box"})  # threat models it claims to withstand

    cell: int = param(2, "side of the averaged cells in pixels", minimum=1)

    def build(self, facts) -> Protection:  # untrained modules; the harness loads the fitted state
        return Protection(encoder=BoxBlur(self.cell),
                          server=facts.service_classifier())

    def fit(self, owner) -> Protection:  # the owner's data only: owner.images, owner.labels()
        encoder = BoxBlur(self.cell)
        server = train_server_on_encoded(owner, encoder, description="box-blur: server")
        return Protection(encoder=encoder, server=server)


@dataclass
class LinearInversion(Attack):
    name: ClassVar[str] = "linear-inversion"
    summary: ClassVar[str] = "black-box: ridge regression from protected data to pixels"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})  # view.query(...) and nothing more
    produces: ClassVar[str] = "reconstruction"  # the harness scores it against the originals

    ridge: float = param(1e-3, "ridge penalty", minimum=0.0)

    def run(self, view) -> AttackOutput:
        aux = view.aux_images
        z_aux = with_ones(view.query(aux))
        gram = z_aux.T @ z_aux + self.ridge * torch.eye(z_aux.shape[1], dtype=z_aux.dtype)
        weights = torch.linalg.solve(gram, z_aux.T @ aux.flatten(1).double())
        reconstructed = (with_ones(view.observed) @ weights).float()
        return AttackOutput(reconstruction=reconstructed.reshape(len(view.observed), *aux.shape[1:]),
                            diagnostics={"attack.ridge_condition": float(torch.linalg.cond(gram))})


def with_ones(z: torch.Tensor) -> torch.Tensor:
    flat = z.flatten(1).double()
    return torch.cat([flat, torch.ones(len(flat), 1, dtype=flat.dtype)], 1)


@dataclass
class Bars(DatasetSource):
    name: ClassVar[str] = "bars"
    summary: ClassVar[str] = "synthetic 8 x 8 horizontal or vertical bars, 600 images (offline)"
    tasks: ClassVar[tuple[LabelTask, ...]] = (LabelTask("orientation", 2, "horizontal (0) or vertical (1)"),
                                              LabelTask("position", 8, "which row or column"))
    default_target: ClassVar[str] = "orientation"
    default_private: ClassVar[str] = "position"

    def load_raw(self, ctx) -> Dataset:
        generator = torch.Generator().manual_seed(0)  # the data itself is fixed, not per cell
        orientation = torch.arange(600) % 2
        position = torch.randint(0, 8, (600,), generator=generator)
        images = 0.1 * torch.rand(600, 1, 8, 8, generator=generator)
        for i in range(600):
            if orientation[i]:
                images[i, 0, :, position[i]] = 1.0
            else:
                images[i, 0, position[i], :] = 1.0
        return Dataset(self.name, images, {"orientation": orientation, "position": position},
                       {t.name: t for t in self.tasks})


@hookimpl
def register_defenses(register):
    register(BoxBlurDefense)


@hookimpl
def register_attacks(register):
    register(LinearInversion)


@hookimpl
def register_datasets(register):
    register(Bars)


@hookimpl
def register_metrics(register):
    register(MetricSpec("attack.ridge_condition", "", "none", "condition number of the ridge "
                        "system (how well the queries determine the inverse map)", "torch.linalg.cond"))
