"""The harness's side of the parties: run a role isolated in its own process, or trusted in this one.

``IsolatedParties`` (the default) starts every role in a fresh child of this process's zygote with
a wall-time limit; ``TrustedParties`` (``--trust-plugins``, for plugin development) calls the same
role functions in the harness's own process, without isolation and without a time limit. Both give
the harness the same answers for honest plugins.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from privbench.parties import roles
from privbench.parties.channel import LocalChannel
from privbench.parties.launcher import PartyFailed, PartyProcess, Zygote
from privbench.parties.messages import EncodeRequest, Setup

Handlers = dict[str, Callable[..., Any]]

# This process's zygote, started once (``start_zygote``) and shared by every harness of the process.
_ZYGOTE: list[Zygote] = []


def start_zygote(fork_here: bool = False) -> Zygote:
    """This process's zygote; ``fork_here`` when this process is still clean (a worker that has run
    no job): a plain fork, else a child of multiprocessing's fork server."""
    if _ZYGOTE and not _ZYGOTE[0].alive():
        stop_zygote()
    if not _ZYGOTE:
        _ZYGOTE.append(Zygote(fork_here=fork_here))
    return _ZYGOTE[0]


def stop_zygote() -> None:
    if _ZYGOTE:
        _ZYGOTE.pop().close()


class IsolatedParties:
    """Each role in a fresh process forked from the zygote (see ``privbench.parties``)."""

    isolation = "process"

    def __init__(self, device: torch.device, threads: int | None = None, relay_progress: bool = True,
                 exclude: tuple[str, ...] = ()) -> None:
        self.device = str(device)
        self.threads = threads
        self.relay_progress = relay_progress
        self.exclude = exclude

    def _setup(self, role: str) -> Setup:
        return Setup(role, self.device, self.threads or torch.get_num_threads(), self.relay_progress,
                     self.exclude)

    def run(self, role: str, request: Any, *, label: str, limit_s: float | None,
            handlers: Handlers | None = None, progress=None) -> Any:
        party = PartyProcess(start_zygote(), self._setup(role), request, limit_s=limit_s, label=label)
        try:
            return party.result(handlers, progress)
        finally:
            party.close()

    def encoder(self, request: EncodeRequest, *, label: str, limit_s: float | None) -> IsolatedEncoder:
        return IsolatedEncoder(self, request, label=label, limit_s=limit_s)


def session_seed(seed: int, session: int) -> int:
    """The stream of an encoder's ``session``-th process, derived from the encoder's seed."""
    import numpy as np
    return int(np.random.SeedSequence([seed, session]).generate_state(1, dtype=np.uint64)[0]) >> 1


class IsolatedEncoder:
    """The data owner's device: images in, encodings out.

    Every call, the owner's whole test set or one query of the attacker, is answered by a fresh
    defender's process seeded with a secret stream of its own, which encodes it in batches of at
    most ``EVAL_BATCH_SIZE`` through one code path: each process sees the same sequence of calls,
    from the same stack, whoever asked. Nothing in the stack, the call order or the seed tells an
    owner's batch from a query."""

    def __init__(self, parties: IsolatedParties, request: EncodeRequest, *, label: str,
                 limit_s: float | None) -> None:
        self.parties, self.request, self.label, self.limit_s = parties, request, label, limit_s
        self.sessions = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        from privbench.training import EVAL_BATCH_SIZE
        request = dataclasses.replace(self.request, seed=session_seed(self.request.seed, self.sessions))
        self.sessions += 1
        party = PartyProcess(start_zygote(), self.parties._setup("encode"), request,
                             limit_s=self.limit_s, label=self.label)
        try:
            parts = [self._batch(party, images[start:start + EVAL_BATCH_SIZE].clone())
                     for start in range(0, len(images), EVAL_BATCH_SIZE)]
        finally:
            party.close()
        return torch.cat(parts) if parts else torch.empty(0)

    def _batch(self, party: PartyProcess, batch: torch.Tensor) -> torch.Tensor:
        party.send(("batch", batch))
        encoded = party.result()
        if not isinstance(encoded, torch.Tensor) or len(encoded) != len(batch):
            raise PartyFailed(f"{self.label}: the encoder did not return one output per image")
        return encoded

    def close(self) -> None:
        pass


class TrustedParties:
    """``--trust-plugins``: the roles run in the harness's own process (no isolation, no limit)."""

    isolation = "trusted"

    def __init__(self, device: torch.device, progress=None) -> None:
        self.device = torch.device(device)
        self.progress = progress

    def run(self, role: str, request: Any, *, label: str, limit_s: float | None,
            handlers: Handlers | None = None, progress=None) -> Any:
        channel = LocalChannel(handlers, progress if progress is not None else self.progress)
        try:
            with torch.random.fork_rng(devices=gpu_indices(self.device)):
                return roles.run(role, request, channel, self.device)
        except SystemExit as exiting:  # a plugin's sys.exit fails its cell, not the run
            from privbench.parties.child import one_line
            raise PartyFailed(one_line(exiting)) from None

    def encoder(self, request: EncodeRequest, *, label: str, limit_s: float | None) -> TrustedEncoder:
        return TrustedEncoder(request, self.device, self.progress)


def gpu_indices(device: torch.device) -> list[int]:
    """The GPU whose global generator a party on ``device`` draws from (none on the CPU): what
    ``torch.random.fork_rng`` must save besides the CPU's."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def generators_restored(device: torch.device):
    """Python's, NumPy's and torch's global generators (the CPU's and ``device``'s) as they were,
    whatever runs inside."""
    import random

    import numpy as np
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=gpu_indices(device)):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class TrustedEncoder:
    """An encoding session in the harness's process that draws exactly what ``IsolatedEncoder``'s
    processes draw: every call builds the encoder afresh from the next session's seed and seeds the
    global generators with it (as ``roles.encode_session`` does in its process), inside
    ``generators_restored``, so an honest defense gives the same encodings trusted or isolated, and queries
    answered in the middle of an attack leave the attack's draws alone."""

    def __init__(self, request: EncodeRequest, device: torch.device, progress=None) -> None:
        self.request, self.device, self.progress = request, device, progress
        self.sessions = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        from privbench.streams import seed_globals
        from privbench.training import EVAL_BATCH_SIZE
        request = dataclasses.replace(self.request, seed=session_seed(self.request.seed, self.sessions))
        self.sessions += 1
        with generators_restored(self.device):
            encoder = roles.Encoder(request, self.device, self.progress)
            seed_globals(request.seed)
            parts = [encoder.encode(images[start:start + EVAL_BATCH_SIZE].clone())
                     for start in range(0, len(images), EVAL_BATCH_SIZE)]
        return torch.cat(parts) if parts else torch.empty(0)

    def close(self) -> None:
        pass
