"""Every shared artifact of a run: its key, its builder, and how it is saved and loaded.

The artifacts are the service's unprotected target model, the examiner (a classifier trained on
the attacker's raw aux images), each fitted defense (also refitted on a variant of the scenario
with classes held out of the owner's data) and the owner's encodings of the test images. Each is
built once under a file lock, keyed by everything that determines it (the dataset's parameters,
the seed, the run secret's public fingerprint, the plugin's parameters, its package version and
``cache_version``, privbench's ``ARTIFACT_RECIPE``), and stored as state dicts and plain tensors in
a file read with ``torch.load(weights_only=True)``: a corrupt or foreign file is rebuilt, never
executed. Files are the owner's alone (0600) in folders only the owner enters (0700).

Only the harness reads and writes the cache; no party's process can reach it. A fitted defense is
cached only from a defender's process of its own, never from a process that ran an attack. A
loaded artifact is immutable: the in-process memo holds its state, and every caller gets a fresh
module or a copy built from it, so nothing done to a module reaches another cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from privbench.keys import config_key
from privbench.streams import seed_globals
from privbench.training import TrainingContext

# Bump when a change to privbench's training code makes older cached artifacts wrong.
ARTIFACT_RECIPE = 2


# Seconds this process has waited in ``file_lock`` for another process's build (the harness reads
# it before and after a job: the job's wait, which the timeline separates from its work).
LOCK_WAIT_S = [0.0]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (or on a shared filesystem with
    working POSIX locks), held while one process builds a shared artifact."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as handle:
        if fcntl is None:  # pragma: no cover - no POSIX locks (Windows): one process at a time
            yield
            return
        waiting = time.perf_counter()
        fcntl.flock(handle, fcntl.LOCK_EX)
        LOCK_WAIT_S[0] += time.perf_counter() - waiting
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) random states on exit: a cell gets the
    same numbers whether it built a shared artifact or loaded it."""
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


class ArtifactCache:
    """Artifact states (nested dicts of tensors and plain values) on disk, one file per
    (kind, config), written atomically and read with ``weights_only=True``."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self.loaded: dict[str, tuple[dict, float]] = {}  # in-process memo: read each file once

    def path(self, kind: str, config: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        return self.root / kind / f"{config_key(config)}.pt"

    def get_or_build(self, kind: str, config: dict[str, Any],
                     build: Callable[[], dict]) -> tuple[dict, float]:
        """The artifact's state and the seconds its build took (when it was first built)."""
        config = {**config, "recipe": ARTIFACT_RECIPE}
        memo_key = f"{kind}/{config_key(config)}"
        if memo_key not in self.loaded:
            self.loaded[memo_key] = self._load_or_build(kind, config, build)
        return self.loaded[memo_key]

    def _load_or_build(self, kind: str, config: dict[str, Any],
                       build: Callable[[], dict]) -> tuple[dict, float]:
        path = self.path(kind, config)
        if path is None:
            return self._build(build)
        loaded = self._load(path, config)
        if loaded is None:
            with file_lock(path.with_suffix(".lock")):  # another process may be building it now
                loaded = self._load(path, config)  # it finished while we waited: load it
                if loaded is None:
                    loaded = self._build(build)
                    self._save(path, config, *loaded)
        return loaded

    @staticmethod
    def _build(build: Callable[[], dict]) -> tuple[dict, float]:
        with preserved_rng():
            started = time.perf_counter()
            state = build()
            return state, time.perf_counter() - started

    @staticmethod
    def _load(path: Path, config: dict[str, Any]) -> tuple[dict, float] | None:
        """The stored state, or None for a missing, corrupt, foreign or mismatched file (which is
        removed so that it is rebuilt). ``weights_only=True`` never runs code from the file."""
        if not path.exists():
            return None
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
            if record.get("config") != json.dumps(config, sort_keys=True, default=str):
                raise ValueError("the file was written for another config")
            return record["state"], float(record["build_s"])
        except Exception:
            path.unlink(missing_ok=True)
            return None

    @staticmethod
    def _save(path: Path, config: dict[str, Any], state: dict, build_s: float) -> None:
        """Write atomically: a reader sees the whole file or none. The file is the owner's alone
        (0600, as ``tempfile`` creates it) in folders only the owner can enter (0700)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {"state": state, "build_s": build_s,
                  "config": json.dumps(config, sort_keys=True, default=str)}
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            torch.save(record, tmp)
        os.replace(tmp.name, path)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in module.state_dict().items()}


class SharedArtifacts:
    """The target model, the examiners and the fitted defenses of one process, through the cache."""

    def __init__(self, cache: ArtifactCache, device: torch.device, progress) -> None:
        self.cache = cache
        self.device = device
        self.progress = progress

    # -- the service's target model ---------------------------------------------------------------------

    def target_config(self, scenario) -> dict[str, Any]:
        return {**scenario.cache_config(), "task": scenario.target_task}

    def target_model(self, scenario) -> nn.Module:
        """A fresh copy of the unprotected classifier of the target task, trained on the owner's
        data from the service's stream."""
        state, _ = self.cache.get_or_build("target-model", self.target_config(scenario),
                                           lambda: self._train_target(scenario))
        return self._classifier(scenario, scenario.image_shape, scenario.classes(), state)

    def target_state(self, scenario) -> dict[str, torch.Tensor]:
        """The target model's state, as the defender's process receives it."""
        return cpu_state(self.target_model(scenario))

    def _train_target(self, scenario) -> dict:
        from privbench.training import train_classifier
        seed = scenario.streams.service
        seed_globals(seed)
        model = self._classifier(scenario, scenario.image_shape, scenario.classes())
        self.progress.log(f"training the target model ({scenario.source.arch}, "
                          f"{scenario.source.target_epochs} epochs) on {scenario.label}")
        train_classifier(model, scenario.images("owner"), scenario.labels("owner"),
                         TrainingContext(self.device, self.progress, seed),
                         epochs=scenario.source.target_epochs,
                         description=f"target model ({scenario.source.arch})")
        return cpu_state(model)

    def _classifier(self, scenario, shape, classes: int, state: dict | None = None) -> nn.Module:
        from privbench.models import classifier
        model = classifier(scenario.source.arch, shape, classes)
        if state is not None:
            model.load_state_dict(state)
        return model.to(self.device).eval()

    # -- the examiner: a classifier of the attacker's raw aux images -----------------------------------

    def raw_classifier(self, scenario, task: str, epochs: int) -> nn.Module:
        """A classifier for ``task`` trained on the attacker's raw aux images from the attacker's
        stream (Disguised-Nets' examiner, DAPter's auto-recognition model)."""
        config = {**scenario.cache_config(), "task": task, "epochs": epochs, "split": "aux"}
        state, _ = self.cache.get_or_build("raw-classifier", config,
                                           lambda: self._train_raw(scenario, task, epochs))
        return self._classifier(scenario, scenario.image_shape, scenario.classes(task), state)

    def raw_classifier_state(self, scenario, task: str, epochs: int) -> dict[str, torch.Tensor]:
        """The examiner's state, as the attacker's process receives it."""
        return cpu_state(self.raw_classifier(scenario, task, epochs))

    def _train_raw(self, scenario, task: str, epochs: int) -> dict:
        from privbench.training import train_classifier
        seed = scenario.streams.attacker
        seed_globals(seed)
        model = self._classifier(scenario, scenario.image_shape, scenario.classes(task))
        train_classifier(model, scenario.images("aux"), scenario.labels("aux", task),
                         TrainingContext(self.device, self.progress, seed), epochs=epochs,
                         description=f"examiner for {task} on raw aux images")
        return cpu_state(model)

    # -- fitted defenses ---------------------------------------------------------------------------------

    @staticmethod
    def protection_config(scenario, defense) -> dict[str, Any]:
        """Everything that determines a fitted defense: its cache key."""
        return {**scenario.cache_config(), "defense": defense.name, "params": defense.params,
                "version": defense.version}

    def protection_state(self, scenario, defense, fit: Callable[[], dict]) -> tuple[dict, float]:
        """The defense fitted on the owner's data of ``scenario`` (its ``encoder`` and ``server``
        states) and its fit time; ``fit`` runs the defender's process when nothing is cached. Only a
        fit that ran in a defender's process of its own is ever cached here."""
        return self.cache.get_or_build("protection", self.protection_config(scenario, defense), fit)
