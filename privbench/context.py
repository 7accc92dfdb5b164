"""The run context: where to compute, where the cache and the data live, how to report progress.

It is frozen and resolved once per run: ``device`` is a ``torch.device`` (``resolve_device`` turns
the ``--device`` text into one, once, in the CLI) and every later step passes it on. The random
streams are per cell (``privbench.streams``), not part of the run context; ``secret`` is the store's
run secret they are derived from (``privbench.store.Store.run_secret``), ``None`` only for tests and
trusted tools without a store. It is left out of the context's repr, so a printed or logged context
never shows it; never hand it to a plugin.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from privbench.artifacts import ArtifactCache
from privbench.errors import PrivbenchError
from privbench.progress import SilentProgress


def privbench_home() -> Path:
    return Path(os.environ.get("PRIVBENCH_HOME", Path.home() / ".privbench"))


def default_cache_dir() -> Path:
    return privbench_home() / "cache"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PrivbenchError(f"unknown device '{name}'; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrivbenchError(f"--device {name} was asked for but torch sees no CUDA device; "
                             "accepted here: auto, cpu")
    return device


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What the harness of a run holds: device, artifact cache, progress, data directory, and the
    store's run secret (never in the repr)."""

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    cache: ArtifactCache = dataclasses.field(default_factory=lambda: ArtifactCache(None))
    progress: object = dataclasses.field(default_factory=SilentProgress)
    data_dir: Path = dataclasses.field(default_factory=lambda: privbench_home() / "data")
    download: bool = False
    secret: int | None = dataclasses.field(default=None, repr=False)
    # The plugins' code runs in this process instead of party processes (``--trust-plugins``).
    trust_plugins: bool = False
    # A party's wall-time limit in seconds: None derives it from the cost hints, 0 sets none.
    cell_timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, torch.device):
            object.__setattr__(self, "device", resolve_device(str(self.device)))

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"
