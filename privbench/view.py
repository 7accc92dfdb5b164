"""What each party of a cell may see: the defender's data, the attacker's view, the evaluation data.

The harness (``privbench.harness``) builds these objects; plugins never see a ``Scenario``.

- ``DataFacts``: the dataset's public facts (image shape, label tasks and their class counts, the
  service's architecture): every party has them.
- ``OwnerData``: what a defense's ``fit`` gets: the owner's images and labels, the shared target
  model, the defender's random stream. Never the test split, never the attacker's data.
- ``AttackView``: what an attack's ``run`` gets. Always: the protected test images it observed
  (``observed``), its own auxiliary images and the labels of the tasks it may know, the public
  facts, its own random stream, the device. Only when the attack declares the access in
  ``requires`` (and the defense gives it): a query oracle, a white-box copy of the encoder, the
  frozen server, a fresh-architecture builder, k known pairs. Never the clean test images, the test
  labels, the owner's data, the defense's key or the defender's stream: asking for any of them, or
  for an access the attack did not declare, raises ``AccessDenied`` naming what is missing.
- ``EvaluationData``: the test images and labels, for a defense's own ``evaluate`` metrics, run by
  the harness after the fit.

Python cannot stop code in the same process that goes out of its way (e.g. through the garbage
collector) to find objects; the view removes every ordinary path, each cell gets its own copies of
what it may touch, and the scores are computed by the harness, so no attack can report a number
it did not earn through its view.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from privbench.core import ACCESS
from privbench.errors import PrivbenchError

FORBIDDEN = {
    "test_images": "the clean test images",
    "test_labels": "the test labels",
    "owner_images": "the data owner's training images (an attack that declares 'owner-data' reads "
                    "them with owner_data())",
    "owner_labels": "the data owner's training labels (see owner_data())",
    "key": "the defense's secret key",
    "scenario": "the scenario (it holds the test split and the owner's data)",
    "protection": "the defender's fitted protection",
    "defender_generator": "the defender's random stream",
}


class AccessDenied(PrivbenchError):
    """An attack (or defense) asked for something its view does not hold."""


@dataclass(frozen=True)
class DataFacts:
    """The public facts of a scenario's dataset that every party knows."""

    dataset: str
    image_shape: tuple[int, int, int]
    task_classes: dict[str, int]
    target_task: str
    private_task: str
    arch: str
    target_epochs: int

    def classes(self, task: str | None = None) -> int:
        """How many classes ``task`` has (the target task by default)."""
        return self.task_classes[task or self.target_task]

    def service_classifier(self, input_shape: tuple[int, ...] | None = None) -> nn.Module:
        """A freshly initialised classifier of the service's architecture for the target task, on
        inputs shaped like the image (or ``input_shape``, e.g. a padded disguised image)."""
        from privbench.models import classifier
        return classifier(self.arch, tuple(input_shape or self.image_shape), self.classes())


class _Frozen:
    """Attributes are set once, in ``__init__``; a plugin cannot replace them."""

    _sealed = False

    def __setattr__(self, name: str, value: Any) -> None:
        if self._sealed:
            raise AttributeError(f"{type(self).__name__} is read-only; '{name}' cannot be set")
        object.__setattr__(self, name, value)

    def _seal(self) -> None:
        object.__setattr__(self, "_sealed", True)

    def __getattr__(self, name: str) -> Any:  # only called for names that do not exist
        if name in FORBIDDEN:
            raise AccessDenied(f"{type(self).__name__} never holds {FORBIDDEN[name]} ('{name}')")
        raise AttributeError(f"{type(self).__name__} has no '{name}'")


class _LabelledSplit(_Frozen):
    """One split of the scenario's images with their labels, the party's stream and where to compute:
    the common part of a defense's two views."""

    def __init__(self, facts: DataFacts, images: torch.Tensor, labels: dict[str, torch.Tensor], *,
                 device: torch.device, progress, seed: int) -> None:
        self.facts = facts
        self.images = images
        self._labels = labels
        self.device = device
        self.progress = progress
        self.seed = seed  # the party's stream: batch order of the training helpers
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.facts.image_shape

    def classes(self, task: str | None = None) -> int:
        return self.facts.classes(task)

    def labels(self, task: str | None = None) -> torch.Tensor:
        """The split's labels for ``task`` (the service's target task by default)."""
        return self._labels[task or self.facts.target_task]


class OwnerData(_LabelledSplit):
    """A defense's view: the owner's data, the shared target model, the defender's stream."""

    def __init__(self, facts: DataFacts, images: torch.Tensor, labels: dict[str, torch.Tensor], *,
                 device: torch.device, progress, seed: int, target_model: Callable[[], nn.Module]):
        super().__init__(facts, images, labels, device=device, progress=progress, seed=seed)
        self._target_model = target_model
        self._seal()

    def target_model(self) -> nn.Module:
        """A fresh copy of the service's unprotected classifier, trained on the owner's data."""
        return self._target_model()


class EvaluationData(_LabelledSplit):
    """The test split, for a defense's ``evaluate`` (run by the harness, after the fit), with the
    evaluation stream."""

    def __init__(self, facts: DataFacts, images: torch.Tensor, labels: dict[str, torch.Tensor], *,
                 device: torch.device, progress, seed: int) -> None:
        super().__init__(facts, images, labels, device=device, progress=progress, seed=seed)
        self._seal()


class QueryOracle:
    """encode(batch) of inputs the attacker chooses: counted, without gradients, on CPU tensors."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._encode = encode
        self.count = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError("query() takes a batch of images N x C x H x W")
        self.count += len(images)
        return self._encode(images.detach())


class AttackView(_Frozen):
    """Everything an attack may use, and nothing else (see the module docstring).

    ``granted`` is the access the attack declared (``Attack.requires``); the harness builds the
    view only when the defense gives all of it."""

    def __init__(self, *, attack: str, granted: frozenset[str], facts: DataFacts,
                 observed: torch.Tensor, aux_images: torch.Tensor,
                 aux_labels: dict[str, torch.Tensor], device: torch.device, progress, seed: int,
                 oracle: QueryOracle | None = None, encoder: nn.Module | None = None,
                 server: nn.Module | None = None,
                 build_encoder: Callable[[], nn.Module] | None = None,
                 known_pairs: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 raw_classifier: Callable[[str, int], nn.Module] | None = None,
                 owner_data: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None,
                 probes: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.attack = attack
        self.granted = frozenset(granted)
        self.facts = facts
        self.observed = observed.detach().clone()
        self.aux_images = aux_images.clone()
        self._aux_labels = {task: labels.clone() for task, labels in aux_labels.items()}
        self.device = device
        self.progress = progress
        self.seed = seed  # the attacker's stream
        self.generator = torch.Generator().manual_seed(seed)
        self._oracle = oracle
        self._encoder = encoder
        self._server = server
        self._build_encoder = build_encoder
        self._known_pairs = known_pairs
        self._raw_classifier = raw_classifier
        self._owner_data = owner_data
        self._probes = None if probes is None else (probes[0].clone(), probes[1].clone())
        self._seal()

    # -- always there ------------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.facts.image_shape

    @property
    def target_task(self) -> str:
        return self.facts.target_task

    @property
    def private_task(self) -> str:
        return self.facts.private_task

    def classes(self, task: str | None = None) -> int:
        return self.facts.classes(task)

    def aux_labels(self, task: str | None = None) -> torch.Tensor:
        """The labels of the attacker's own images for ``task`` (target or private task)."""
        task = task or self.facts.target_task
        if task not in self._aux_labels:
            raise AccessDenied(f"attack '{self.attack}': the attacker knows the labels of its aux "
                               f"images for {', '.join(sorted(self._aux_labels))}, not '{task}'")
        return self._aux_labels[task]

    def raw_classifier(self, task: str, epochs: int) -> nn.Module:
        """A classifier for ``task`` trained on the attacker's raw aux images (a shared artifact
        built from the attacker's own data and stream; a fresh copy for this cell)."""
        self.aux_labels(task)  # the task must be one the attacker knows
        return self._raw_classifier(task, epochs)

    def probes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A class-statistic attack's probe images and their probe-class ids (one id per class the
        attacker probes; the harness knows which ids were in the owner's training data, the attack
        does not): the attacker's aux images by target class, plus a foreign dataset's classes
        when the attack names one (``Attack.probe_dataset``)."""
        if self._probes is None:
            raise AccessDenied(f"attack '{self.attack}': probe classes are given to attacks that "
                               "produce a class-statistic only")
        return self._probes

    # -- only when declared and given ----------------------------------------------------------------

    def _need(self, fact: str, what: str) -> None:
        if fact not in self.granted:
            declared = ", ".join(sorted(self.granted)) or "nothing"
            raise AccessDenied(f"attack '{self.attack}' asked for {what}, which needs '{fact}' access "
                               f"({ACCESS[fact]}); it declared requires = {declared}")

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """encoder(images) for images of the attacker's choice (``query`` access); counted."""
        self._need("query", "the query oracle")
        return self._oracle(images)

    @property
    def queries(self) -> int:
        """How many images this attack has queried so far."""
        return self._oracle.count if self._oracle is not None else 0

    @property
    def encoder(self) -> nn.Module:
        """A white-box copy of the encoder (``white-box`` access): changing it changes nothing else."""
        self._need("white-box", "the encoder's parameters")
        return self._encoder

    @property
    def server(self) -> nn.Module:
        """The server model, frozen and in eval mode (``server`` access); a copy for this cell."""
        self._need("server", "the server model")
        return self._server

    def build_encoder(self) -> nn.Module:
        """A freshly initialised encoder of the defense's architecture (``architecture`` access),
        drawn from the attacker's stream: a fresh key, fresh weights."""
        self._need("architecture", "the encoder's architecture")
        return self._build_encoder(self.generator)

    def known_pairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k (x, encoder(x)) pairs of images the data owner really sent (``known-pairs`` access),
        which ones drawn from the attacker's stream."""
        self._need("known-pairs", "known (x, encoder(x)) pairs")
        return self._known_pairs(k, self.generator)

    def owner_data(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The owner's training images and their labels for the tasks the attacker knows
        (``owner-data`` access: He et al.'s "same set" attacker, a stronger assumption)."""
        self._need("owner-data", "the owner's training data")
        images, labels = self._owner_data()
        return images.clone(), {task: values.clone() for task, values in labels.items()}


class EvalOnly(nn.Module):
    """A frozen module that stays in eval mode: ``train()`` on it (or on a model that contains it)
    leaves its batch-norm statistics and dropout as the owner deployed them."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.eval()
        self.module.requires_grad_(False)

    def train(self, mode: bool = True) -> EvalOnly:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy, frozen and kept in eval mode: the server as an attacker may hold it."""
    return EvalOnly(copy.deepcopy(module))


def white_box_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode, gradients on: a white-box attacker may differentiate through it."""
    return copy.deepcopy(module).eval()
