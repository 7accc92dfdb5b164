"""Every built-in defense works on grey and colour images of sizes that tile no block or cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from privbench.artifacts import ArtifactCache, TrainingContext
from privbench.datasets import Dataset, DatasetSource, LabelTask, LfwSubset
from privbench.progress import SilentProgress
from privbench.testing import FittedDefenses, call_of, check_defense, dataset_call, harness
from privbench.training import apply

BUILTIN_DEFENSES = {"identity": {}, "noise": {}, "disguised-nets": {}, "dapter": {"epochs": 1},
                    "split": {}, "privacy-finetune": {"epochs": 1}, "pixelation": {},
                    "nopeek": {"epochs": 1}}


@dataclass
class ColourBlobs(DatasetSource):
    """Synthetic 3 x 11 x 13 colour images: class k is a bright blob in colour channel k % 3."""

    name: ClassVar[str] = "colour-blobs"
    summary: ClassVar[str] = "synthetic colour test images"
    tasks: ClassVar[tuple[LabelTask, ...]] = (LabelTask("class", 4, "which blob"),)
    default_target: ClassVar[str] = "class"
    default_private: ClassVar[str] = "class"

    def load_raw(self, ctx) -> Dataset:
        generator = torch.Generator().manual_seed(0)
        labels = torch.arange(160) % 4
        images = 0.2 * torch.rand(160, 3, 11, 13, generator=generator)
        for index, label in enumerate(labels.tolist()):
            row, col = (2, 2) if label < 3 else (7, 8)
            images[index, label % 3, row:row + 3, col:col + 4] += 0.7
        return Dataset(self.name, images, {"class": labels}, {t.name: t for t in self.tasks})


@pytest.fixture(scope="module", params=["colour 3x11x13", "grey 1x25x25 (lfw-subset)"])
def scenario_and_artifacts(request, tmp_path_factory):
    cache = ArtifactCache(tmp_path_factory.mktemp("shapes"))
    data = (dataset_call(ColourBlobs, {"target_epochs": 3}) if request.param.startswith("colour")
            else dataset_call(LfwSubset, {"target_epochs": 3}))
    runner = harness(cache)
    return runner.scenario(data, 0), FittedDefenses(runner)


@pytest.mark.parametrize("name", sorted(BUILTIN_DEFENSES))
def test_defense_fits_encodes_and_serves_any_image_shape(name, registry, scenario_and_artifacts):
    scenario, artifacts = scenario_and_artifacts
    call = call_of(registry.get("defense", name).cls, BUILTIN_DEFENSES[name])
    assert call.instance.check_data(scenario.facts()) is None
    protection, _ = artifacts.protection(scenario, call)
    test = scenario.images("test")
    ctx = TrainingContext(torch.device("cpu"), SilentProgress(), scenario.streams.evaluation)
    encoded = apply(protection.encoder, test, ctx)
    logits = apply(protection.server, encoded, ctx)
    assert logits.shape == (len(test), scenario.classes())
    assert torch.isfinite(encoded).all() and torch.isfinite(logits).all()
    channels, height, width = scenario.image_shape
    if "image-like" in call.instance.access():
        assert encoded.shape[1] == channels
        assert encoded.shape[2] >= height and encoded.shape[3] >= width  # disguised-nets pads


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUILTIN_DEFENSES))
def test_defense_keeps_the_defense_contract_on_colour_images(name, registry):
    check_defense(registry.get("defense", name).cls, BUILTIN_DEFENSES[name], dataset=ColourBlobs,
                  dataset_params={"target_epochs": 3})
