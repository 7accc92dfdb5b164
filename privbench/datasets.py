"""Datasets, label tasks and scenarios.

A dataset plugin is a ``DatasetSource``: a dataclass whose fields are the scenario options (which
task the service computes, which must stay private, the service architecture, resize, limit, split
fractions) and whose ``load`` returns a ``Dataset`` of images N x C x H x W in [0, 1] with named
label tasks. ``make_scenario`` splits it deterministically by seed and run secret into owner / aux /
test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from privbench.core import Plugin
from privbench.errors import PrivbenchError, accepted
from privbench.params import param
from privbench.streams import Streams

if TYPE_CHECKING:
    import torch

    from privbench.context import RunContext


@dataclass(frozen=True)
class LabelTask:
    """A named labelling of a dataset's images (e.g. digits' ``parity``: 2 classes)."""

    name: str
    classes: int
    description: str


@dataclass
class Dataset:
    """Images N x C x H x W (float32 in [0, 1]) with one label tensor per task."""

    name: str
    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    tasks: dict[str, LabelTask]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


@dataclass
class DatasetSource(Plugin):
    """Base of dataset plugins; the fields are the scenario options every dataset accepts."""

    kind: ClassVar[str] = "dataset"
    name: ClassVar[str]
    summary: ClassVar[str]
    tasks: ClassVar[tuple[LabelTask, ...]]
    default_target: ClassVar[str]
    default_private: ClassVar[str]

    target: str = param("", "task the service legitimately computes (empty: the dataset's default)")
    private: str = param("", "task that must not leak (empty: the dataset's default)")
    arch: str = param("lenet", "architecture of the service's target model",
                      choices=("lenet", "lenet5", "he-cifar", "resnet18", "titcombe"))
    target_epochs: int = param(30, "epochs to train the unprotected target model", minimum=1)
    resize: int = param(0, "resize images to resize x resize pixels (0: keep)", minimum=0)
    limit: int = param(0, "use at most this many images, a fixed subset (0: all)", minimum=0)
    owner_fraction: float = param(0.5, "share of images in the data owner's split",
                                  minimum=0.05, maximum=0.9)
    aux_fraction: float = param(0.3, "share of images in the attacker's auxiliary split",
                                minimum=0.05, maximum=0.9)

    @classmethod
    def from_params(cls, raw=None):
        source = super().from_params(raw)
        source.check_tasks()
        return source

    @property
    def target_task(self) -> str:
        return self.target or self.default_target

    @property
    def private_task(self) -> str:
        return self.private or self.default_private

    def check_tasks(self) -> None:
        names = [t.name for t in self.tasks]
        for option, task in (("target", self.target_task), ("private", self.private_task)):
            if task not in names:
                raise PrivbenchError(
                    f"dataset '{self.name}': unknown {option} task '{task}'; accepted: {accepted(names)}")
        if self.owner_fraction + self.aux_fraction >= 0.95:
            raise PrivbenchError(f"dataset '{self.name}': owner_fraction + aux_fraction must stay "
                                 "below 0.95 so that a test split remains")

    def load_raw(self, ctx: RunContext) -> Dataset:  # pragma: no cover - abstract
        """Load every image and label of the dataset (before resize and limit)."""
        raise NotImplementedError

    def load(self, ctx: RunContext) -> Dataset:
        """The dataset with this source's ``limit`` and ``resize`` applied."""
        dataset = self.load_raw(ctx)
        if self.limit and self.limit < len(dataset):
            dataset = subset(dataset, fixed_subset(len(dataset), self.limit))
        if self.resize:
            dataset = resized(dataset, self.resize)
        return dataset

    def load_config(self) -> dict:
        """What determines the data and everything trained on it: part of every cache key built
        on it. By default every parameter of the source (so a parameter a subclass adds can never
        be left out of the key) and its ``cache_version``."""
        return {"dataset": self.name, "cache_version": self.cache_version, **self.params()}

    def facts(self, image_shape: tuple[int, int, int], tasks: dict[str, LabelTask]):
        """The public facts of this source's scenarios (privbench.view.DataFacts)."""
        from privbench.view import DataFacts
        return DataFacts(self.name, tuple(image_shape), {name: t.classes for name, t in tasks.items()},
                         self.target_task, self.private_task, self.arch, self.target_epochs)


def fixed_subset(total: int, count: int):
    """A subset of ``count`` indices that is the same for every seed (so scenarios share a pool)."""
    import torch
    generator = torch.Generator().manual_seed(20_240_601)
    return torch.randperm(total, generator=generator)[:count].sort().values


def subset(dataset: Dataset, indices) -> Dataset:
    return Dataset(dataset.name, dataset.images[indices],
                   {task: labels[indices] for task, labels in dataset.labels.items()}, dataset.tasks)


def resized(dataset: Dataset, size: int) -> Dataset:
    images = conformed(dataset.images, (dataset.images.shape[1], size, size))
    return Dataset(dataset.name, images, dataset.labels, dataset.tasks)


def conformed(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``images`` converted to ``shape`` = (C, H, W): grey to colour by repeating the channel,
    colour to grey by the channel mean, then bilinear resizing with antialiasing (e.g. foreign
    probe images fed to a scenario's model)."""
    import torch.nn.functional as F
    channels, height, width = shape
    if images.shape[1] != channels:
        images = (images.mean(1, keepdim=True) if channels == 1
                  else images.mean(1, keepdim=True).expand(-1, channels, -1, -1))
    if tuple(images.shape[-2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False,
                               antialias=True).clamp(0, 1)
    return images.contiguous()


@dataclass
class Scenario:
    """A dataset with a target task, a private task, a seed and the owner / aux / test splits.

    ``owner`` is the data owner's training data, ``aux`` the attacker's own data (same distribution,
    disjoint), ``test`` the evaluation images. ``held_out`` lists target-task classes removed from
    the owner split (for attacks that need out-of-training classes).
    """

    source: DatasetSource
    dataset: Dataset
    streams: Streams
    owner: torch.Tensor
    aux: torch.Tensor
    test: torch.Tensor
    held_out: tuple[int, ...] = ()
    version: str = ""  # the dataset plugin's package and version: part of every cache key

    @property
    def seed(self) -> int:
        return self.streams.seed

    @property
    def label(self) -> str:
        return f"{self.source.name} (seed {self.seed})"

    def facts(self):
        """The public facts every party knows (privbench.view.DataFacts)."""
        return self.source.facts(self.image_shape, self.dataset.tasks)

    @property
    def target_task(self) -> str:
        return self.source.target_task

    @property
    def private_task(self) -> str:
        return self.source.private_task

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    def images(self, split: str) -> torch.Tensor:
        return self.dataset.images[getattr(self, split)]

    def labels(self, split: str, task: str | None = None) -> torch.Tensor:
        return self.dataset.labels[task or self.target_task][getattr(self, split)]

    def classes(self, task: str | None = None) -> int:
        return self.dataset.tasks[task or self.target_task].classes

    def with_held_out(self, classes: tuple[int, ...]) -> Scenario:
        """The same scenario with the target-task ``classes`` removed from the owner split."""
        return _split(self.source, self.dataset, self.streams, tuple(sorted(classes)), self.version)

    def cache_config(self) -> dict:
        """What determines this scenario's data: the key of artifacts trained on it. With a run
        secret it holds the secret's public fingerprint ``secret_id`` (never the secret), so two
        stores with different secrets never share an artifact built on their splits; without one
        (tests, trusted tools) the key is what it was before the secret existed."""
        config = {**self.source.load_config(), "dataset_version": self.version, "seed": self.seed,
                  "held_out": list(self.held_out)}
        if self.streams.secret_id:
            config["secret_id"] = self.streams.secret_id
        return config


def make_scenario(source: DatasetSource, dataset: Dataset, seed: int,
                  held_out: tuple[int, ...] = (), version: str = "",
                  secret: int | None = None) -> Scenario:
    """Split ``dataset`` into owner / aux / test with the ``split`` stream of ``seed`` and the run
    ``secret`` (deterministic, disjoint; ``privbench.streams``); ``held_out`` target-task classes
    are then removed from the owner split. ``secret=None`` (tests and trusted tools only) splits by
    the seed alone, which anyone who knows the seed can redo."""
    return _split(source, dataset, Streams.from_seed(seed, secret), held_out, version)


def _split(source: DatasetSource, dataset: Dataset, streams: Streams, held_out: tuple[int, ...],
           version: str) -> Scenario:
    import torch
    generator = streams.generator("split")
    order = torch.randperm(len(dataset), generator=generator)
    n_owner = int(round(source.owner_fraction * len(dataset)))
    n_aux = int(round(source.aux_fraction * len(dataset)))
    owner, aux, test = order[:n_owner], order[n_owner:n_owner + n_aux], order[n_owner + n_aux:]
    if held_out:
        target = dataset.labels[source.target_task]
        keep = ~torch.isin(target[owner], torch.tensor(held_out))
        owner = owner[keep]
    if min(len(owner), len(aux), len(test)) == 0:
        raise PrivbenchError(f"dataset '{source.name}' has {len(dataset)} images: too few to split "
                             "into owner, aux and test; raise limit or the split fractions")
    return Scenario(source, dataset, streams, owner.sort().values, aux.sort().values,
                    test.sort().values, tuple(held_out), version)


DIGIT_TASKS = (
    LabelTask("digit", 10, "which digit 0-9"),
    LabelTask("parity", 2, "even (0) or odd (1)"),
    LabelTask("magnitude", 2, "below 5 (0) or 5 and above (1)"),
    LabelTask("above5", 2, "0-5 (0) or 6-9 (1): Shredder's and Cloak's MNIST task, \"digit > 5\""),
)


def digit_task_labels(digits) -> dict[str, torch.Tensor]:
    """The labels of DIGIT_TASKS from a tensor of digit labels."""
    import torch
    digits = torch.as_tensor(digits, dtype=torch.long)
    return {"digit": digits, "parity": digits % 2, "magnitude": (digits >= 5).long(),
            "above5": (digits > 5).long()}


@dataclass
class Digits(DatasetSource):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): the offline default."""

    name: ClassVar[str] = "digits"
    summary: ClassVar[str] = "scikit-learn's bundled 8x8 handwritten digits, 1,797 images (offline)"
    tasks: ClassVar[tuple[LabelTask, ...]] = DIGIT_TASKS
    default_target: ClassVar[str] = "parity"
    default_private: ClassVar[str] = "digit"

    def load_raw(self, ctx: RunContext) -> Dataset:
        import torch
        from sklearn.datasets import load_digits
        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return Dataset(self.name, images, digit_task_labels(bunch.target),
                       {t.name: t for t in self.tasks})


@dataclass
class LfwSubset(DatasetSource):
    """scikit-image's bundled ``lfw_subset``: 100 face and 100 non-face 25x25 grey crops."""

    name: ClassVar[str] = "lfw-subset"
    summary: ClassVar[str] = "scikit-image's bundled 25x25 face / non-face crops, 200 images (offline)"
    tasks: ClassVar[tuple[LabelTask, ...]] = (LabelTask("face", 2, "non-face (0) or face (1)"),)
    default_target: ClassVar[str] = "face"
    default_private: ClassVar[str] = "face"

    def load_raw(self, ctx: RunContext) -> Dataset:
        import torch
        from skimage.data import lfw_subset
        images = torch.tensor(lfw_subset(), dtype=torch.float32).unsqueeze(1)
        face = torch.zeros(len(images), dtype=torch.long)
        face[:100] = 1  # scikit-image documents the first 100 images as faces
        return Dataset(self.name, images, {"face": face}, {t.name: t for t in self.tasks})
