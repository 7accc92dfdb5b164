"""The core types: Defense -> Protection, Attack -> AttackOutput, and the threat-model facts.

A defense is fitted on the data owner's data (an ``OwnerData``, ``privbench.view``) and returns a
Protection: the ``encoder`` (what leaves the data owner) and the ``server`` (what the untrusted party
runs on the encoder's output). Which access an attacker can have to them is the defense's ``gives``.

An attack declares its ``threat_model`` and the access it ``requires``. The harness builds the
attack's view (an ``AttackView``, ``privbench.view``) from those declarations and the defense's ``gives``;
the attack returns what it produced (``AttackOutput``: reconstructions, predicted labels or a
per-class statistic) and the harness scores that against the ground truth the attack never saw
(``privbench.scoring``). A cell whose defense cannot give what the attack requires is recorded as
``not-applicable`` with the defense's reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from privbench.errors import PluginError, accepted
from privbench.params import ParamInfo, parameters_of, validate_params

if TYPE_CHECKING:  # torch is imported lazily, only when a command runs plugins
    import torch
    from torch import nn

THREAT_MODELS = {
    "white-box": "the attacker has the encoder's parameters or secret key",
    "black-box": "the attacker can query the encoder with inputs of its choice",
    "query-free": "the attacker knows the encoder's architecture and has auxiliary data, no queries",
    "known-plaintext": "the attacker holds some (x, encoder(x)) pairs",
}

ACCESS = {
    "query": "query the encoder with inputs of the attacker's choice",
    "white-box": "the encoder's parameters or secret key (a differentiable encoder)",
    "architecture": "the encoder's architecture, to build and train an untrained copy",
    "server": "the server model that runs on the protected data",
    "image-like": "protected data shaped like the input image (same channels, height, width)",
    "known-pairs": "k (x, encoder(x)) pairs of images the data owner really sent",
    "owner-data": "the data owner's training images and labels (He et al.'s \"same set\" attacker)",
}


# Access that depends on what the attacker holds, not on what the defense lets through: never withheld.
ATTACKER_ASSUMPTIONS = frozenset({"owner-data"})


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


class Plugin:
    """Base of defenses and attacks: a dataclass whose fields are the plugin's parameters."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # Part of every cache and cell key built on this plugin: bump it when a code change makes
    # earlier results or fitted artifacts of the same parameters wrong (the package version is
    # part of the key too).
    cache_version: ClassVar[str] = "1"

    @classmethod
    def parameters(cls) -> list[ParamInfo]:
        return parameters_of(cls)

    @classmethod
    def from_params(cls, raw: dict[str, Any] | None = None):
        """Build the plugin from raw (CLI or TOML) parameters, validated against their declaration."""
        return cls(**validate_params(f"{cls.kind} '{cls.name}'", cls, raw or {}))

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_data(self, facts: DataFacts) -> str | None:
        """Why these parameters cannot work on this dataset's images (one line), or None.

        Called before anything trains, e.g. a block larger than the image side."""
        return None

    kind: ClassVar[str] = "plugin"


class Defense(Plugin):
    """A protection the data owner applies before data reaches the untrusted party.

    Subclasses are dataclasses; they set ``name``, ``summary``, ``gives`` (the ACCESS facts an
    attacker can have against this defense) and ``claims`` (the THREAT_MODELS under which the
    defense's paper claims protection) and implement ``build`` and ``fit``:

    - ``build(facts)``: the protection's modules, untrained (a fresh key, fresh weights), on the CPU
      and drawn from the CPU's global random state the harness seeded (no GPU's: the harness moves
      the modules to the run's device itself). The harness uses it to rebuild a cached protection
      before loading its state dicts, and to give an attacker with ``architecture`` access a fresh
      copy drawn from the attacker's own stream.
    - ``fit(owner)``: the fitted protection, from the owner's data only (never the test split).
    - ``evaluate(protection, data)`` (optional): ``defense.*`` metrics the harness measures on the
      test images, e.g. DAPter's pixel entropy.
    """

    kind: ClassVar[str] = "defense"
    gives: ClassVar[frozenset[str]] = frozenset(ACCESS)
    withheld_reasons: ClassVar[dict[str, str]] = {}
    # The threat models (THREAT_MODELS words) under which the defense claims protection, as its paper
    # states them: the leaderboard's headline is the worst case over these only, and attacks of the
    # others still show beside it. Default: every threat model. An empty set claims nothing (the
    # unprotected baseline); the leaderboard then ranks the defense over every threat model.
    claims: ClassVar[frozenset[str]] = frozenset(THREAT_MODELS)
    # Scheduling hints only. Whether fit() starts from the service's trained target model
    # (owner.target_model()): parallel executors fit the defenses that do not while it trains.
    needs_target_model: ClassVar[bool] = True
    # Relative cost of fitting and running the encoder (1 = a fixed transform or a small network);
    # it scales the cost_hint of every attack on this defense.
    cost_hint: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs) -> None:
        """Refuse, when the class is defined, ``claims`` that are not a set of THREAT_MODELS words."""
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.claims, (set, frozenset)) or not set(cls.claims) <= set(THREAT_MODELS):
            raise PluginError(f"defense class {cls.__name__} claims {cls.claims!r}; accepted: a frozenset "
                              f"of threat models from {accepted(THREAT_MODELS)}")

    def access(self) -> frozenset[str]:
        """The access facts this configured defense gives an attacker (may depend on parameters)."""
        return self.gives

    def withheld_reason(self, fact: str) -> str:
        return self.withheld_reasons.get(fact, f"defense '{self.name}' does not give {ACCESS[fact]}")

    def build(self, facts: DataFacts) -> Protection:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, owner) -> Protection:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, protection: Protection, data) -> dict[str, float]:
        return {}


class Attack(Plugin):
    """An attack on a fitted Protection. Subclasses set ``threat_model`` and ``requires``."""

    kind: ClassVar[str] = "attack"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    # What run() returns, which decides how the harness scores it and maps it onto privacy.score
    # (privbench.scoring.PRIVACY_MAPPINGS): reconstruction, labels or class-statistic.
    produces: ClassVar[str] = "reconstruction"
    # Relative run time on one dataset (1 = a quick fit), a scheduling hint only: parallel executors
    # start the longest cells first so that no long one is left for the end.
    cost_hint: ClassVar[float] = 1.0

    def missing_access(self, defense: Defense) -> str | None:
        """Why this attack cannot run against ``defense``, or None when it can."""
        missing = sorted(self.granted_needs() - defense.access() - ATTACKER_ASSUMPTIONS)
        if not missing:
            return None
        return (f"attack '{self.name}' needs {ACCESS[missing[0]]}; "
                + defense.withheld_reason(missing[0]))

    def granted_needs(self) -> frozenset[str]:
        """The access this configured attack needs (may depend on parameters); default ``requires``."""
        return self.requires

    def unsupported(self, facts: DataFacts) -> str | None:
        """Why this attack cannot run on this scenario (e.g. too few classes), or None."""
        return None

    def victims(self) -> int:
        """How many protected test images to attack (0: all). The harness picks them, one per
        class first, and scores the attack on those only."""
        return 0

    def held_out_classes(self) -> int:
        """Target-task classes the harness leaves out of the owner's training data for this cell
        (class-membership tests); 0: none. The harness chooses which, and the attack never learns."""
        return 0

    def probe_dataset(self, dataset: str) -> str | None:
        """For a class-statistic attack on ``dataset``: the dataset whose classes the harness adds
        as out-of-training probe classes (resized and converted to the scenario's images), or
        None to hold out classes of the scenario's own target task instead (``held_out_classes``).
        Resolved when the matrix is planned, so an unknown name fails before anything runs."""
        return None

    def run(self, view) -> AttackOutput:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Protection:
    """What a fitted defense hands over: the encoder and the server model.

    Both are stored in the cache as state dicts and rebuilt through ``Defense.build``; neither is
    ever handed to an attack: the harness gives a copy or an oracle, as the view allows."""

    encoder: nn.Module
    server: nn.Module

    def to(self, device: torch.device) -> Protection:
        self.encoder.to(device)
        self.server.to(device)
        return self


@dataclass
class Artifact:
    """A file an attack or the harness produced, e.g. a PNG grid of originals and reconstructions."""

    name: str
    media_type: str
    data: bytes


@dataclass
class AttackOutput:
    """What an attack produced; the harness scores it (privbench.scoring).

    - ``reconstruction``: images in [0, 1], one per observed protected image, in the view's order;
    - ``predictions``: task name -> predicted label of each observed protected image;
    - ``class_statistic``: target-task class -> a statistic that is higher for classes the attacker
      believes were in the owner's training data (class-membership);
    - ``diagnostics``: further registered metrics the attack measured on its own data (e.g.
      ``attack.shadow_accuracy``); they never count towards ``privacy.score``;
    - ``artifacts``: files to keep with the cell;
    - ``stolen_clients``: state dicts of client copies the attack trained for itself (UnSplit's model
      stealing), each loadable into the defense's architecture without its random layers; when the
      defense gives ``server`` access the harness measures them with the real server on the test
      images (``attack.clone_accuracy``).
    """

    reconstruction: torch.Tensor | None = None
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    class_statistic: dict[int, float] | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    stolen_clients: list[dict[str, torch.Tensor]] = field(default_factory=list)
