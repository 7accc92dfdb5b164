"""What each party does with its request: the only place where a plugin's code runs during a cell.

Each function takes its request (``privbench.parties.messages``), a channel to the harness and the
device, seeds the global generators from the party's own stream, runs the plugin's code under the
torch-switch guard (``privbench.parties.guard``) and returns plain values. In a party's process
that is all the process does; with ``--trust-plugins`` the harness calls the same functions itself.
"""

from __future__ import annotations

from typing import Any

import torch

from privbench.core import Protection
from privbench.errors import NotApplicable
from privbench.parties.guard import guarded
from privbench.parties.messages import (
    AttackRequest,
    DeclareRequest,
    EncodeRequest,
    EvaluateRequest,
    FitRequest,
    ServeRequest,
    StolenClientsRequest,
    output_as_plain,
)
from privbench.streams import seed_globals


def warm() -> None:
    """Import what the roles use lazily, so a forked party starts ready (called in the zygote)."""
    import torch._dynamo  # noqa: F401 - the first torch optimizer imports it

    import privbench.models  # noqa: F401
    import privbench.training  # noqa: F401
    import privbench.view  # noqa: F401


def run(role: str, request: Any, channel, device: str | torch.device) -> Any:
    """Run ``role`` on its request; the result is plain data."""
    device = torch.device(device)
    roles = {"declare": declare, "fit": fit, "encode": encode_session, "evaluate": evaluate,
             "serve": serve, "attack": attack, "stolen": stolen_clients}
    return roles[role](request, channel, device)


def _reason(value: Any) -> str | None:
    return None if value is None else str(value)


def declare(request: DeclareRequest, channel, device: torch.device) -> dict[str, Any]:
    """The defense's ``check_data`` and each attack's ``unsupported`` on the public facts."""
    with guarded(f"defense '{request.defense.name}': check_data()"):
        refused = _reason(request.defense.check_data(request.facts))
    unsupported = []
    for plugin in request.attacks:
        with guarded(f"attack '{plugin.name}': unsupported()"):
            unsupported.append(_reason(plugin.unsupported(request.facts)))
    return {"check_data": refused, "unsupported": unsupported}


# -- the defender -------------------------------------------------------------------------------------

def fit(request: FitRequest, channel, device: torch.device) -> dict[str, Any]:
    """``Defense.fit`` on the owner's data; the fitted modules' states."""
    from privbench.view import OwnerData
    owner = OwnerData(request.facts, request.images, request.labels, device=device,
                      progress=channel.progress, seed=request.seed,
                      target_model=lambda: _target_model(request, channel, device))
    seed_globals(request.seed)
    with guarded(f"defense '{request.defense.name}': fit()"):
        protection = request.defense.fit(owner)
    if not isinstance(protection, Protection):
        raise TypeError(f"defense '{request.defense.name}': fit() returned "
                        f"{type(protection).__name__}, not a privbench.api.Protection")
    return {"encoder": cpu_state(protection.encoder), "server": cpu_state(protection.server)}


def _target_model(request: FitRequest, channel, device: torch.device) -> torch.nn.Module:
    """A fresh copy of the service's unprotected classifier, its state sent by the harness."""
    from privbench.models import classifier
    facts = request.facts
    model = classifier(facts.arch, facts.image_shape, facts.classes())
    model.load_state_dict(channel.call("target_model"))
    return model.to(device).eval()


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in module.state_dict().items()}


def rebuilt(defense, facts, device: torch.device, *, encoder_state=None, server_state=None,
            seed: int = 0) -> Protection:
    """The defense's modules from ``build`` (drawn from ``seed``) with the granted states loaded."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # build() draws on the CPU: a GPU's stream is left alone
        with guarded(f"defense '{defense.name}': build()"):
            protection = defense.build(facts)
    if encoder_state is not None:
        protection.encoder.load_state_dict(encoder_state)
    if server_state is not None:
        protection.server.load_state_dict(server_state)
    protection.encoder.eval()
    protection.server.eval()
    return protection.to(device)


class Encoder:
    """The data owner's device: the fitted encoder, answering batches. The owner's own test images
    and the attacker's queries go through this same object, in two processes set up alike."""

    def __init__(self, request: EncodeRequest, device: torch.device, progress=None) -> None:
        from privbench.training import TrainingContext
        self.name = request.defense.name
        self.encoder = rebuilt(request.defense, request.facts, device,
                               encoder_state=request.encoder_state).encoder
        self.ctx = TrainingContext(device, progress, request.seed)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        from privbench.training import apply
        with guarded(f"defense '{self.name}': the encoder"):
            encoded = apply(self.encoder, images, self.ctx)
        if not isinstance(encoded, torch.Tensor) or len(encoded) != len(images):
            raise TypeError(f"defense '{self.name}': the encoder must return one output per image")
        return encoded


def encode_session(request: EncodeRequest, channel, device: torch.device) -> None:
    """Answer ``("batch", images)`` messages until the harness sends anything else."""
    encoder = Encoder(request, device, channel.progress)
    seed_globals(request.seed)
    while True:
        message = channel.receive()
        if not (isinstance(message, tuple) and len(message) == 2 and message[0] == "batch"):
            return None
        channel.reply(encoder.encode(message[1]))


def evaluate(request: EvaluateRequest, channel, device: torch.device) -> dict[str, float]:
    """The defense's own ``defense.*`` metrics on the test split."""
    from privbench.view import EvaluationData
    protection = rebuilt(request.defense, request.facts, device, encoder_state=request.encoder_state,
                         server_state=request.server_state)
    data = EvaluationData(request.facts, request.images, request.labels, device=device,
                          progress=channel.progress, seed=request.seed)
    seed_globals(request.seed)
    with guarded(f"defense '{request.defense.name}': evaluate()"):
        metrics = request.defense.evaluate(protection, data) or {}
    return {str(name): float(value) for name, value in dict(metrics).items()}


def serve(request: ServeRequest, channel, device: torch.device) -> torch.Tensor:
    """The untrusted service: the server's logits on the encoded test images (no labels here)."""
    from privbench.training import TrainingContext, apply
    server = rebuilt(request.defense, request.facts, device, server_state=request.server_state).server
    seed_globals(request.seed)
    with guarded(f"defense '{request.defense.name}': the server"):
        logits = apply(server, request.encoded, TrainingContext(device, channel.progress, request.seed))
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(request.encoded), request.facts.classes()):
        raise TypeError(f"defense '{request.defense.name}': the server must return one row of "
                        f"{request.facts.classes()} logits per image")
    return logits


def stolen_clients(request: StolenClientsRequest, channel, device: torch.device) -> torch.Tensor:
    """The real server's logits on the test images through each client an attack stole: each
    clone state is loaded into the defense's architecture without its random layers (the map the
    attack optimised), then the fitted server runs on its outputs. Labels stay with the harness."""
    from privbench.inversion import without_random_layers
    from privbench.training import TrainingContext, apply
    protection = rebuilt(request.defense, request.facts, device, server_state=request.server_state)
    ctx = TrainingContext(device, channel.progress, request.seed)
    logits = []
    for number, state in enumerate(request.clone_states):
        clone = without_random_layers(protection.encoder)
        try:
            clone.load_state_dict(state)
        except (RuntimeError, TypeError) as error:
            raise TypeError(f"stolen client {number} does not fit the defense's architecture: "
                            f"{str(error).splitlines()[0]}") from None
        seed_globals(request.seed)
        with guarded(f"defense '{request.defense.name}': the server"):
            logits.append(apply(torch.nn.Sequential(clone.eval(), protection.server), request.images, ctx))
    return torch.stack(logits) if logits else torch.empty(0)


# -- the attacker ---------------------------------------------------------------------------------------

def attack(request: AttackRequest, channel, device: torch.device) -> dict[str, Any]:
    """``Attack.run`` on a view built from the request alone; its output as plain values."""
    view = attack_view(request, channel, device)
    seed_globals(request.seed)
    try:
        with guarded(f"attack '{request.attack.name}': run()"):
            output = request.attack.run(view)
    except NotApplicable as found_late:
        return {"not_applicable": str(found_late)}
    return output_as_plain(output)


def attack_view(request: AttackRequest, channel, device: torch.device):
    """The attacker's view: what its threat model grants, and nothing else."""
    from privbench.view import AttackView, EvalOnly
    granted = request.granted
    protection = None
    if {"white-box", "server"} & granted:
        protection = rebuilt(request.defense, request.facts, device,
                             encoder_state=request.encoder_state if "white-box" in granted else None,
                             server_state=request.server_state if "server" in granted else None)

    def build_encoder(seed: int) -> torch.nn.Module:
        return rebuilt(request.defense, request.facts, device, seed=seed).encoder.train()

    return AttackView(
        attack=request.attack.name, granted=granted, facts=request.facts, observed=request.observed,
        aux_images=request.aux_images, aux_labels=request.aux_labels, device=device,
        progress=channel.progress, seed=request.seed, channel=channel,
        encoder=protection.encoder if "white-box" in granted else None,
        server=EvalOnly(protection.server) if "server" in granted else None,
        build_encoder=build_encoder if "architecture" in granted else None,
        owner=request.owner if "owner-data" in granted else None,
        probes=request.probes)
