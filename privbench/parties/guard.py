"""Torch's process-wide switches, checked around every piece of plugin code.

A plugin that turns off grad mode, changes the default dtype or flips the deterministic flags would
otherwise change every later computation of its process. In a party's process that process ends
with the cell; the check still fails the cell that did it, with the reason, instead of a later one.
With ``--trust-plugins`` (one process) the switches are also put back, so the next cell starts as
the first did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from privbench.errors import PrivbenchError


class GlobalStateChanged(PrivbenchError):
    """Plugin code left torch's global switches changed."""


@dataclass(frozen=True)
class TorchSwitches:
    grad_mode: bool
    default_dtype: torch.dtype
    deterministic_algorithms: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool

    @classmethod
    def now(cls) -> TorchSwitches:
        return cls(torch.is_grad_enabled(), torch.get_default_dtype(),
                   torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)

    def differences(self, other: TorchSwitches) -> list[str]:
        return [f"{f.name} {getattr(self, f.name)} -> {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def restore(self) -> None:
        torch.set_grad_enabled(self.grad_mode)
        torch.set_default_dtype(self.default_dtype)
        torch.use_deterministic_algorithms(self.deterministic_algorithms,
                                           warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Run plugin code (``what`` names it); raise ``GlobalStateChanged`` if it left torch's switches
    changed, after putting them back."""
    before = TorchSwitches.now()
    yield
    changed = before.differences(TorchSwitches.now())
    if changed:
        before.restore()
        raise GlobalStateChanged(f"{what} changed torch's global state ({', '.join(changed)}); "
                                 "a plugin must leave grad mode, the default dtype and the "
                                 "deterministic flags as it found them")


def check_unchanged(expected: TorchSwitches, where: str) -> None:
    """Before a job of the harness: torch's switches are as the run started, or fail the job (and
    put them back)."""
    changed = expected.differences(TorchSwitches.now())
    if changed:
        expected.restore()
        raise GlobalStateChanged(f"torch's global state was changed before {where} "
                                 f"({', '.join(changed)}); the job fails and the switches are reset")
