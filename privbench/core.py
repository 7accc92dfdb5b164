"""The core types: Defense -> Protection, Attack -> AttackResult, and the threat-model facts.

A defense is fitted on a Scenario and returns a Protection: the ``encoder`` (what leaves the data
owner), the ``server`` (what the untrusted party runs on the encoder's output) and the access an
attacker can have to them. An attack declares the access it ``requires``; the matrix records a cell
whose defense cannot give that access as ``not-applicable`` with the defense's reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from privbench.params import ParamInfo, parameters_of, validate_params

if TYPE_CHECKING:  # torch is imported lazily, only when a command runs plugins
    import torch
    from torch import nn

    from privbench.context import RunContext
    from privbench.datasets import Scenario

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
}


class Plugin:
    """Base of defenses and attacks: a dataclass whose fields are the plugin's parameters."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @classmethod
    def parameters(cls) -> list[ParamInfo]:
        return parameters_of(cls)

    @classmethod
    def from_params(cls, raw: dict[str, Any] | None = None):
        """Build the plugin from raw (CLI or TOML) parameters, validated against their declaration."""
        return cls(**validate_params(f"{cls.kind} '{cls.name}'", cls, raw or {}))

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    kind: ClassVar[str] = "plugin"


class Defense(Plugin):
    """A protection the data owner applies before data reaches the untrusted party.

    Subclasses are dataclasses; they set ``name``, ``summary`` and ``gives`` (the ACCESS facts an
    attacker can have against this defense) and implement ``fit``.
    """

    kind: ClassVar[str] = "defense"
    gives: ClassVar[frozenset[str]] = frozenset(ACCESS)
    withheld_reasons: ClassVar[dict[str, str]] = {}
    # Scheduling hints only. Whether fit() starts from the service's trained target model
    # (ctx.target_model): parallel executors fit the defenses that do not while it trains.
    needs_target_model: ClassVar[bool] = True
    # Relative cost of fitting and running the encoder (1 = a fixed transform or a small network);
    # it scales the cost_hint of every attack on this defense.
    cost_hint: ClassVar[float] = 1.0

    def access(self) -> frozenset[str]:
        """The access facts this configured defense gives an attacker (may depend on parameters)."""
        return self.gives

    def withheld_reason(self, fact: str) -> str:
        return self.withheld_reasons.get(fact, f"defense '{self.name}' does not give {ACCESS[fact]}")

    def fit(self, scenario: Scenario, ctx: RunContext) -> Protection:  # pragma: no cover - abstract
        raise NotImplementedError


class Attack(Plugin):
    """An attack on a fitted Protection. Subclasses set ``threat_model`` and ``requires``."""

    kind: ClassVar[str] = "attack"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = ""
    # Relative run time on one dataset (1 = a quick fit), a scheduling hint only: parallel executors
    # start the longest cells first so that no long one is left for the end.
    cost_hint: ClassVar[float] = 1.0

    def missing_access(self, defense: Defense) -> str | None:
        """Why this attack cannot run against ``defense``, or None when it can."""
        missing = sorted(self.requires - defense.access())
        if not missing:
            return None
        return (f"attack '{self.name}' needs {ACCESS[missing[0]]}; "
                + defense.withheld_reason(missing[0]))

    def unsupported(self, scenario: Scenario) -> str | None:
        """Why this attack cannot run on ``scenario`` (e.g. too few classes), or None."""
        return None

    def run(self, scenario: Scenario, protection: Protection,
            ctx: RunContext) -> AttackResult:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Protection:
    """What a fitted defense hands over: the encoder, the server model and facts about them."""

    encoder: nn.Module
    server: nn.Module
    build_encoder: Any = None  # a callable giving an untrained encoder of the same architecture
    metrics: dict[str, float] = field(default_factory=dict)  # defense.* facts, e.g. entropy
    fit_s: float = 0.0

    def to(self, device: torch.device) -> Protection:
        self.encoder.to(device)
        self.server.to(device)
        return self


@dataclass
class Artifact:
    """A file an attack produced, e.g. a PNG grid of originals and reconstructions."""

    name: str
    media_type: str
    data: bytes


@dataclass
class AttackResult:
    """The metrics (DESIGN.md vocabulary) and artifacts of one attack run."""

    metrics: dict[str, float]
    artifacts: list[Artifact] = field(default_factory=list)
