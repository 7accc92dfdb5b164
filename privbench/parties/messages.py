"""Everything that crosses between the harness and a party's process, and how it is encoded.

One request per party. Each holds plain tensors, state dicts, numbers and the plugin's parameters
(its dataclass, pickled by reference to its class): no object of the harness, no scenario, no
closure, no random generator of another party.

- ``FitRequest`` (the defender, fitting): the owner's images and labels of every task, the public
  facts, the defender's seed. The service's target model comes over the pipe when ``fit`` asks.
- ``EncodeRequest`` (the defender, encoding): the fitted encoder's state and a seed. One request
  type serves the owner's own test images and the attacker's queries, in two fresh processes built
  the same way: nothing on the stack, in the call order or in the request tells them apart.
- ``EvaluateRequest`` (the defender's own ``defense.*`` metrics): the fitted state, the test images
  and labels, the evaluation seed. Its process answers nobody else.
- ``ServeRequest`` (the untrusted service): the server's state and the encoded test images, exactly
  the tensor the attacker observes; it returns logits and never sees a label.
- ``AttackRequest`` (the attacker): the observed encodings, its aux images and the labels of the
  tasks it knows, the attacker's own seed, and only what its threat model grants: the encoder's
  state (white-box), the server's state (server), the owner's data (owner-data), probe classes
  (class-statistic attacks). Queries, known pairs and the examiner go over the pipe.
- ``StolenClientsRequest`` (the defender, measuring clients an attack stole): the clone states the
  attack returned, the server's state, the test images and the evaluation seed; it returns the
  server's logits through each clone and never sees a label.
- ``DeclareRequest``: a defense's and its attacks' data-dependent declarations (``check_data``,
  ``unsupported``), answered from the public facts alone.

The harness sends with ``pickle`` (it trusts itself). A party's answer is read with
``torch.load(weights_only=True)``: it can hold tensors, numbers, strings, bytes, lists, tuples and
dicts, and nothing a party sends can run code in the harness.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from privbench.core import DataFacts

ROLES = ("declare", "fit", "encode", "evaluate", "serve", "attack", "stolen")


@dataclass(frozen=True)
class DeclareRequest:
    defense: Any
    attacks: tuple[Any, ...]
    facts: DataFacts


@dataclass(frozen=True)
class FitRequest:
    defense: Any  # the Defense dataclass: its class and parameters
    facts: DataFacts
    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    seed: int  # the defender's stream


@dataclass(frozen=True)
class EncodeRequest:
    defense: Any
    facts: DataFacts
    encoder_state: dict[str, torch.Tensor]
    seed: int  # the evaluation stream for the owner's images, the query stream for queries


@dataclass(frozen=True)
class EvaluateRequest:
    defense: Any
    facts: DataFacts
    encoder_state: dict[str, torch.Tensor]
    server_state: dict[str, torch.Tensor]
    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    seed: int  # the evaluation stream


@dataclass(frozen=True)
class ServeRequest:
    defense: Any
    facts: DataFacts
    server_state: dict[str, torch.Tensor]
    encoded: torch.Tensor
    seed: int


@dataclass(frozen=True)
class StolenClientsRequest:
    defense: Any
    facts: DataFacts
    server_state: dict[str, torch.Tensor]
    clone_states: list[dict[str, torch.Tensor]]
    images: torch.Tensor
    seed: int  # the evaluation stream


@dataclass(frozen=True)
class AttackRequest:
    attack: Any  # the Attack dataclass
    defense: Any  # to build the modules whose state is granted, or a fresh one (architecture)
    granted: frozenset[str]
    facts: DataFacts
    observed: torch.Tensor
    aux_images: torch.Tensor
    aux_labels: dict[str, torch.Tensor]
    seed: int  # the attacker's own stream, derived from the public seed alone
    encoder_state: dict[str, torch.Tensor] | None = None
    server_state: dict[str, torch.Tensor] | None = None
    owner: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
    probes: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class Setup:
    """How a party's process is set up before its request runs."""

    role: str
    device: str
    threads: int | None
    relay_progress: bool  # training loops report their epochs over the pipe
    exclude: tuple[str, ...] = ()  # paths never readable, even under an allowed folder (the cache)


# -- the two encodings --------------------------------------------------------------------------------

def to_party(message: Any) -> bytes:
    """The harness's message to a party (trusted direction: plain pickle, tensors by value)."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def from_harness(data: bytes) -> Any:
    return pickle.loads(data)


def to_harness(message: Any) -> bytes:
    """A party's message to the harness: tensors and plain values only (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


def from_party(data: bytes) -> Any:
    """Read a party's message without running any code it might carry (``weights_only``)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# -- an attack's output as plain values ----------------------------------------------------------------

def output_as_plain(output: Any) -> dict[str, Any]:
    """An ``AttackOutput`` as the plain values that cross back to the harness."""
    from privbench.core import AttackOutput
    if not isinstance(output, AttackOutput):
        raise TypeError(f"the attack returned {type(output).__name__}; run() must return a "
                        "privbench.api.AttackOutput")
    statistic = output.class_statistic
    return {
        "reconstruction": _plain_tensor(output.reconstruction),
        "predictions": {str(task): _plain_tensor(values) for task, values in output.predictions.items()},
        "class_statistic": None if statistic is None else {int(k): float(v) for k, v in statistic.items()},
        "diagnostics": {str(name): float(value) for name, value in output.diagnostics.items()},
        "artifacts": [{"name": str(a.name), "media_type": str(a.media_type), "data": bytes(a.data)}
                      for a in output.artifacts],
        "stolen_clients": [{str(name): _plain_tensor(value) for name, value in dict(state).items()}
                           for state in output.stolen_clients],
    }


def _plain_tensor(value: Any) -> Any:
    """A tensor detached onto the CPU (a non-tensor passes as is: the scorer names the problem)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return value


def output_from_plain(plain: Any):
    """The ``AttackOutput`` the harness scores, rebuilt from a party's plain values (checked)."""
    from privbench.core import Artifact, AttackOutput
    if not isinstance(plain, dict):
        raise TypeError("the attack's process returned no output record")
    statistic = plain.get("class_statistic")
    return AttackOutput(
        reconstruction=plain.get("reconstruction"),
        predictions=dict(plain.get("predictions") or {}),
        class_statistic=None if statistic is None else dict(statistic),
        diagnostics=dict(plain.get("diagnostics") or {}),
        artifacts=[Artifact(str(a["name"]), str(a["media_type"]), bytes(a["data"]))
                   for a in plain.get("artifacts") or []],
        stolen_clients=[dict(state) for state in plain.get("stolen_clients") or []])
