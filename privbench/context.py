"""The run context: device, seed, artifact cache, progress, and the shared artifacts.

Shared artifacts (the unprotected target model, fitted defenses) are trained once and cached on
disk under a key derived from everything that determines them, so every cell and every later run
reuses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from privbench.errors import PrivbenchError
from privbench.progress import SilentProgress

# Bump when a change to training code makes older cached artifacts wrong.
ARTIFACT_RECIPE = 1


def privbench_home() -> Path:
    return Path(os.environ.get("PRIVBENCH_HOME", Path.home() / ".privbench"))


def default_cache_dir() -> Path:
    return privbench_home() / "cache"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PrivbenchError("--device cuda was asked for but torch sees no CUDA device; "
                             "accepted here: auto, cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PrivbenchError(f"unknown device '{name}'; accepted: auto, cpu, cuda, cuda:N") from None


def config_key(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ArtifactCache:
    """Pickled artifacts on disk, one file per (kind, config), written atomically."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self.loaded: dict[str, tuple[Any, float]] = {}  # in-process memo: load each file once

    def path(self, kind: str, config: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        return self.root / kind / f"{config_key(config)}.pt"

    def get_or_build(self, kind: str, config: dict[str, Any], build: Callable[[], Any]) -> tuple[Any, float]:
        """The cached artifact and the seconds its build took (when first built)."""
        config = {**config, "recipe": ARTIFACT_RECIPE}
        memo_key = f"{kind}/{config_key(config)}"
        if memo_key not in self.loaded:
            self.loaded[memo_key] = self._load_or_build(kind, config, build)
        return self.loaded[memo_key]

    def _load_or_build(self, kind: str, config: dict[str, Any], build: Callable[[], Any]) -> tuple[Any, float]:
        path = self.path(kind, config)
        if path is None:
            return self._build(build)
        loaded = self._load(path)
        if loaded is None:
            with file_lock(path.with_suffix(".lock")):  # another process may be building it now
                loaded = self._load(path)  # it finished while we waited: load, do not rebuild
                if loaded is None:
                    loaded = self._build(build)
                    self._save(path, config, *loaded)
        return loaded

    @staticmethod
    def _build(build: Callable[[], Any]) -> tuple[Any, float]:
        """Build the artifact without moving the caller's random streams: a cell gets the same
        numbers whether it built a shared artifact or loaded it from the cache."""
        with preserved_rng():
            started = time.perf_counter()
            artifact = build()
            return artifact, time.perf_counter() - started

    @staticmethod
    def _load(path: Path) -> tuple[Any, float] | None:
        if not path.exists():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=False)
            return record["artifact"], record["build_s"]
        except Exception:  # a corrupt or outdated file: rebuild it
            path.unlink(missing_ok=True)
            return None

    @staticmethod
    def _save(path: Path, config: dict[str, Any], artifact: Any, build_s: float) -> None:
        """Write atomically: a reader sees the whole file or none."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            torch.save({"artifact": artifact, "build_s": build_s, "config": config}, tmp)
        os.replace(tmp.name, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (or on a shared filesystem with
    working POSIX locks), held while one process builds a shared artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:  # pragma: no cover - no POSIX locks (Windows): one process at a time
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) random states on exit."""
    import random

    import numpy as np
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


@dataclasses.dataclass
class RunContext:
    """What every defense and attack receives: where to compute, with which seed, what to reuse."""

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    cache: ArtifactCache = dataclasses.field(default_factory=lambda: ArtifactCache(None))
    progress: Any = dataclasses.field(default_factory=SilentProgress)
    data_dir: Path = dataclasses.field(default_factory=lambda: privbench_home() / "data")
    download: bool = False
    # Set by the matrix while an attack runs: fits the cell's defense on a variant of the scenario
    # (e.g. ``scenario.with_held_out((8, 9))``), cached like every shared artifact.
    fit_defense: Callable | None = None

    def target_model(self, scenario) -> torch.nn.Module:
        """The service's unprotected classifier for the scenario's target task (shared artifact)."""
        model, _ = self.cache.get_or_build("target-model", self._target_config(scenario),
                                           lambda: self._train_target(scenario))
        return model.to(self.device).eval()

    def raw_classifier(self, scenario, task: str, epochs: int = 30) -> torch.nn.Module:
        """A classifier for ``task`` trained on the attacker's *raw* aux images (shared artifact).

        The examiner of Disguised-Nets and DAPter's auto-recognition model: trained once per
        (dataset, task, seed, architecture, epochs) and reused by every cell that needs it.
        """
        config = {**scenario.cache_config(), "task": task, "arch": scenario.source.arch,
                  "epochs": epochs, "split": "aux"}
        model, _ = self.cache.get_or_build("raw-classifier", config,
                                           lambda: self._train_raw(scenario, task, epochs))
        return model.to(self.device).eval()

    def _train_raw(self, scenario, task: str, epochs: int) -> torch.nn.Module:
        from privbench.models import classifier
        from privbench.training import seed_everything, train_classifier
        seed_everything(scenario.seed)
        model = classifier(scenario.source.arch, scenario.image_shape, scenario.classes(task))
        model = train_classifier(model, scenario.images("aux"), scenario.labels("aux", task), self,
                                 epochs=epochs, description=f"examiner for {task} on raw aux images")
        return model.cpu()

    def _target_config(self, scenario) -> dict[str, Any]:
        source = scenario.source
        return {**scenario.cache_config(), "task": scenario.target_task, "arch": source.arch,
                "epochs": source.target_epochs}

    def _train_target(self, scenario) -> torch.nn.Module:
        from privbench.models import classifier
        from privbench.training import seed_everything, train_classifier
        seed_everything(scenario.seed)
        model = classifier(scenario.source.arch, scenario.image_shape, scenario.classes())
        model = train_classifier(model, scenario.images("owner"), scenario.labels("owner"), self,
                                 epochs=scenario.source.target_epochs,
                                 description=f"target model ({scenario.source.arch})")
        return model.cpu()
