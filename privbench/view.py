"""What each party of a cell may see: the defender's data, the attacker's view, the evaluation data.

These objects are built inside the party's own process (``privbench.parties``) from the plain
tensors the harness sent it; plugins never see a ``Scenario``, and nothing here refers back to the
harness.

- ``DataFacts`` (defined in ``privbench.core``): the dataset's public facts (image shape, label
  tasks and their class counts, the service's architecture): every party has them.
- ``OwnerData``: what a defense's ``fit`` gets: the owner's images and labels, the shared target
  model (sent by the harness when asked for), the defender's random stream. Never the test split,
  never the attacker's data.
- ``AttackView``: what an attack's ``run`` gets. Always: the protected test images it observed
  (``observed``), its own auxiliary images and the labels of the tasks it may know, the public
  facts, its own random stream, the device. Only when the attack declares the access in
  ``requires`` (and the defense gives it): queries answered by the defender's process, a white-box
  copy of the encoder, the frozen server, a fresh-architecture builder, k known pairs. Never the
  clean test images, the test labels, the owner's data, the defense's key or the defender's
  stream: asking for any of them, or for an access the attack did not declare, raises
  ``AccessDenied`` naming what is missing; the harness refuses such a call on its side as well.
- ``EvaluationData``: the test images and labels, for a defense's own ``evaluate`` metrics, in a
  process of its own that answers nobody else.

The view is a convenience, not the boundary: the boundary is the process. What the attacker's
process never received (the scenario, the ground truth, the run secret, the defender's fitted
state unless white-box) cannot be found in it by any route, attributes, the garbage collector or
stack frames included.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from privbench.core import ACCESS, DataFacts
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


class AttackView(_Frozen):
    """Everything an attack may use, and nothing else (see the module docstring).

    A plain data object, built in the attacker's own process: tensors, the public facts, the
    attacker's stream and the modules its grants hold. Its one way out is its channel to the
    harness (``privbench.parties.channel``), over which queries, known pairs and the examiner are
    asked for; the harness answers only what the cell grants. ``granted`` is the access the attack
    declared (``Attack.requires``); the harness builds the view only when the defense gives all of
    it."""

    def __init__(self, *, attack: str, granted: frozenset[str], facts: DataFacts,
                 observed: torch.Tensor, aux_images: torch.Tensor,
                 aux_labels: dict[str, torch.Tensor], device: torch.device, progress, seed: int,
                 channel, encoder: nn.Module | None = None, server: nn.Module | None = None,
                 build_encoder: Callable[[int], nn.Module] | None = None,
                 owner: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None,
                 probes: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.attack = attack
        self.granted = frozenset(granted)
        self.facts = facts
        self.observed = observed.detach().clone()
        self.aux_images = aux_images.clone()
        self._aux_labels = {task: labels.clone() for task, labels in aux_labels.items()}
        self.device = device
        self.progress = progress
        self.seed = seed  # the attacker's own stream (derived from the public seed alone)
        self.generator = torch.Generator().manual_seed(seed)
        self._channel = channel
        self._encoder = encoder
        self._server = server
        self._build_encoder = build_encoder
        self._owner = owner
        self._probes = probes
        self._queries = 0
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
        built by the harness from the attacker's own data and stream; a fresh copy for this cell)."""
        from privbench.models import classifier
        self.aux_labels(task)  # the task must be one the attacker knows
        state = self._channel.call("raw_classifier", task, int(epochs))
        model = classifier(self.facts.arch, self.facts.image_shape, self.facts.classes(task))
        model.load_state_dict(state)
        return model.to(self.device).eval()

    def probes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A class-statistic attack's probe images and their probe-class ids (one id per class the
        attacker probes; the harness knows which ids were in the owner's training data, the attack
        does not): the attacker's aux images by target class, plus a foreign dataset's classes
        when the attack names one (``Attack.probe_dataset``)."""
        if self._probes is None:
            raise AccessDenied(f"attack '{self.attack}': probe classes are given to attacks that "
                               "produce a class-statistic only")
        return self._probes[0].clone(), self._probes[1].clone()

    # -- only when declared and given ----------------------------------------------------------------

    def _need(self, fact: str, what: str) -> None:
        if fact not in self.granted:
            declared = ", ".join(sorted(self.granted)) or "nothing"
            raise AccessDenied(f"attack '{self.attack}' asked for {what}, which needs '{fact}' access "
                               f"({ACCESS[fact]}); it declared requires = {declared}")

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """encoder(images) for images of the attacker's choice (``query`` access), answered by the
        defender's process; counted by the harness."""
        self._need("query", "the query oracle")
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError("query() takes a batch of images N x C x H x W")
        images = images.detach().to("cpu", torch.float32).contiguous()
        encoded = self._channel.call("query", images)
        object.__setattr__(self, "_queries", self._queries + len(images))
        return encoded

    @property
    def queries(self) -> int:
        """How many images this attack has queried so far."""
        return self._queries

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
        return self._build_encoder(int(torch.randint(0, 2**62, (1,), generator=self.generator)))

    def known_pairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k (x, encoder(x)) pairs of images the data owner really sent (``known-pairs`` access);
        the harness chooses which."""
        self._need("known-pairs", "known (x, encoder(x)) pairs")
        images, encoded = self._channel.call("known_pairs", int(k))
        return images, encoded

    def owner_data(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The owner's training images and their labels for the tasks the attacker knows
        (``owner-data`` access: He et al.'s "same set" attacker, a stronger assumption)."""
        self._need("owner-data", "the owner's training data")
        images, labels = self._owner
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
