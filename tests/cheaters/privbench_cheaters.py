"""Plugins written to win privbench's leaderboard by any means (used by tests/test_isolation.py).

Each cheat tries one route to the ground truth, the key or the scores; when the route works it uses
what it found (the clean test images as its "reconstruction", the test labels as its predictions)
and reports ``attack.cheat_found`` = 1. With ``cheat=false`` the same class is the honest attack the
cheat falls back to (the aux mean, the majority label), so a cell's score can be compared with its
twin's. Under privbench's isolation every route must come back empty-handed; under
``--trust-plugins`` (one process, no isolation) the in-memory routes do work, which shows that
the cheats are real.
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import Attack, AttackOutput, Defense, MetricSpec, Protection, hookimpl, param

# Types of the harness's side: finding any of them means the attacker reached the harness.
HARNESS_TYPES = {"Scenario", "Harness", "GroundTruth", "RunContext", "SharedArtifacts",
                 "ArtifactCache", "QueryService", "Store", "CellPlan"}


def is_harness_object(obj) -> bool:
    return type(obj).__name__ in HARNESS_TYPES and type(obj).__module__.startswith("privbench")


def harness_objects(roots, limit: int = 50_000) -> list:
    """Objects of the harness's types reachable from ``roots`` through attributes, closures,
    bound methods, function globals and containers (a breadth-first walk, ``limit`` objects)."""
    seen, found, queue = set(), [], list(roots)
    while queue and len(seen) < limit:
        obj = queue.pop(0)
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor)):
            continue
        seen.add(id(obj))
        if is_harness_object(obj):
            found.append(obj)
        try:
            queue.extend(_neighbours(obj))
        except Exception:  # noqa: BLE001 - an object that resists being walked is skipped
            continue
    return found


def _neighbours(obj) -> list:
    out = []
    if isinstance(obj, dict):
        out += list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        out += list(obj)
    for name in ("__closure__", "__self__", "__func__", "__wrapped__", "f_locals"):
        value = getattr(obj, name, None) if not isinstance(obj, type) else None
        if value is not None:
            out += [c.cell_contents for c in value if _filled(c)] if name == "__closure__" else [value]
    try:
        out += list(vars(obj).values())
    except TypeError:
        pass
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            out.append(getattr(obj, slot))
    return out


def _filled(cell) -> bool:
    try:
        return cell.cell_contents is not None or True
    except ValueError:
        return False


def clean_images_from(found, count: int) -> torch.Tensor | None:
    """The clean test images, when a harness object holding them was found."""
    for obj in found:
        name = type(obj).__name__
        try:
            if name == "GroundTruth":
                return obj.originals[:count]
            if name == "Scenario":
                return obj.images("test")[:count]
            if name == "Harness":
                for scenario in obj.scenarios.values():
                    return scenario.images("test")[:count]
        except Exception:  # noqa: BLE001 - a cheat takes what it can
            continue
    return None


@dataclass
class Cheat(Attack):
    """The common part: try ``steal(view)``; use what it found, else the honest fallback."""

    name: ClassVar[str] = "cheat"
    summary: ClassVar[str] = "a cheating attack"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})

    cheat: bool = param(True, "try the cheat (false: the honest fallback alone)")

    def steal(self, view) -> list:  # pragma: no cover - each cheat has its own route
        return []

    def run(self, view) -> AttackOutput:
        found = self.steal(view) if self.cheat else []
        count = len(view.observed)
        stolen = clean_images_from(found, count)
        if stolen is not None and stolen.shape[0] == count:
            reconstruction = stolen
        else:
            reconstruction = view.aux_images.mean(0, keepdim=True).expand(count, *view.image_shape)
        return AttackOutput(reconstruction=reconstruction.clone(),
                            diagnostics={"attack.cheat_found": float(bool(found))})


@dataclass
class CheatAttributes(Cheat):
    name: ClassVar[str] = "cheat-attributes"
    summary: ClassVar[str] = "walks the view's attributes, closures and bound methods"

    def steal(self, view) -> list:
        return harness_objects([view, vars(view)])


@dataclass
class CheatGc(Cheat):
    name: ClassVar[str] = "cheat-gc"
    summary: ClassVar[str] = "searches every object the garbage collector tracks"

    def steal(self, view) -> list:
        return [obj for obj in gc.get_objects() if is_harness_object(obj)]


@dataclass
class CheatFrames(Cheat):
    name: ClassVar[str] = "cheat-frames"
    summary: ClassVar[str] = "walks up the call stack and every thread's frames"

    def steal(self, view) -> list:
        frames, frame = [], sys._getframe()
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        frames += list(sys._current_frames().values())
        return harness_objects([dict(f.f_locals) for f in frames], limit=20_000)


@dataclass
class CheatFiles(Cheat):
    name: ClassVar[str] = "cheat-files"
    summary: ClassVar[str] = "reads the store, the cache, the harness's /proc entries and inherited pipes"

    paths: str = param("", "files or folders to read, separated by ';' (the store, the cache)")

    def steal(self, view) -> list:
        targets = [p for p in self.paths.split(";") if p]
        targets += [f"/proc/{os.getppid()}/environ", f"/proc/{os.getppid()}/cwd", "/proc/1/environ",
                    os.path.expanduser("~/.privbench")]
        return [path for path in targets if _readable(path)] + _inherited_channels()


def _inherited_channels() -> list[int]:
    """Pipes and sockets this process holds beyond its own one socket to the harness (an executor's
    result queue would let it plant a finished cell)."""
    import stat
    channels = []
    for fd in range(3, 256):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            channels.append(fd)
    return channels if len(channels) > 1 else []


def _readable(path: str) -> bool:
    """Whether any byte of ``path`` (a file, or a file anywhere under a folder) can be read."""
    try:
        if os.path.isdir(path):
            for folder, _, files in os.walk(path):
                if any(_readable(os.path.join(folder, name)) for name in files):
                    return True
            return bool(os.listdir(path))
        with open(path, "rb") as handle:
            return bool(handle.read(1))
    except OSError:
        return False


@dataclass
class CheatSeed(Attack):
    """Rebuilds the scenario from public code and the public seed, then reads the test labels."""

    name: ClassVar[str] = "cheat-seed"
    summary: ClassVar[str] = "rebuilds the split from the seed and predicts the test labels"
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset()
    produces: ClassVar[str] = "labels"

    cheat: bool = param(True, "try the cheat (false: the majority label alone)")
    dataset: str = param("digits", "the matrix's dataset spec, as the public config states it")
    seed: int = param(0, "the matrix's public cell seed")

    def run(self, view) -> AttackOutput:
        task, count = view.private_task, len(view.observed)
        majority = int(view.aux_labels(task).bincount().argmax())
        predicted = torch.full((count,), majority)
        if self.cheat:
            labels = self.rebuilt_test_labels(task)
            if labels is not None and len(labels) == count:
                predicted = labels
        return AttackOutput(predictions={task: predicted})

    def rebuilt_test_labels(self, task: str) -> torch.Tensor | None:
        from privbench.context import RunContext
        from privbench.datasets import make_scenario
        from privbench.params import parse_spec
        from privbench.plugins import load_registry
        name, params = parse_spec(self.dataset)
        source = load_registry(entry_points=False, extra_plugins=[__import__("privbench_plugins.datasets",
                               fromlist=["x"])]).get("dataset", name).cls.from_params(params)
        scenario = make_scenario(source, source.load(RunContext()), self.seed)  # no secret: public
        return scenario.labels("test", task)


@dataclass
class CheatPatch(Cheat):
    name: ClassVar[str] = "cheat-patch"
    summary: ClassVar[str] = "patches privbench's scoring and torch so every cell scores perfectly"

    def steal(self, view) -> list:
        import privbench.scoring as scoring

        def perfect(reconstructed, truth):
            return {"attack.psnr": 100.0, "attack.ssim": 1.0, "attack.ssim_skimage": 1.0}
        scoring.reconstruction_metrics = perfect
        torch.nn.functional.mse_loss = lambda *args, **kwargs: torch.tensor(0.0)
        return []


@dataclass
class CheatGlobals(Cheat):
    name: ClassVar[str] = "cheat-globals"
    summary: ClassVar[str] = "turns off grad mode and changes the default dtype for later cells"

    def steal(self, view) -> list:
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        return []


@dataclass
class Sleeper(Cheat):
    name: ClassVar[str] = "sleeper"
    summary: ClassVar[str] = "never returns"

    def steal(self, view) -> list:
        while True:
            time.sleep(60)


@dataclass
class Exiter(Cheat):
    name: ClassVar[str] = "exiter"
    summary: ClassVar[str] = "calls sys.exit(0) to end the whole run with status 0"

    def steal(self, view) -> list:
        sys.exit(0)


@dataclass
class Interrupter(Cheat):
    name: ClassVar[str] = "interrupter"
    summary: ClassVar[str] = "raises KeyboardInterrupt as if Ctrl-C had been pressed"

    def steal(self, view) -> list:
        raise KeyboardInterrupt


# -- defenses ----------------------------------------------------------------------------------------

class TwoFacedEncoder(nn.Module):
    """Clean images for the owner's own encoding, noise whenever an attack may be asking: an
    attack's frame on the stack, or any call after the first in this process."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        TwoFacedEncoder.calls += 1
        if TwoFacedEncoder.calls > 1 or _attack_on_stack():
            return torch.rand_like(x)
        return x


def _attack_on_stack() -> bool:
    return any(isinstance(frame.frame.f_locals.get("self"), Attack) for frame in inspect.stack())


@dataclass
class TwoFaced(Defense):
    name: ClassVar[str] = "two-faced"
    summary: ClassVar[str] = "clean for the utility step, noise when the attack stage asks"

    def build(self, facts) -> Protection:
        return Protection(encoder=TwoFacedEncoder(), server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        return Protection(encoder=TwoFacedEncoder(), server=owner.target_model())


class PeekFlag(nn.Module):
    """The identity, carrying whether the fit found the test split (a buffer: it is stored)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("peeked", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class PeekingFit(Defense):
    name: ClassVar[str] = "peeking-fit"
    summary: ClassVar[str] = "searches its process for the test images while it fits"

    def build(self, facts) -> Protection:
        return Protection(encoder=PeekFlag(), server=facts.service_classifier())

    def fit(self, owner) -> Protection:
        encoder = PeekFlag()
        frames, frame = [], sys._getframe()
        while frame is not None:
            frames.append(dict(frame.f_locals))
            frame = frame.f_back
        found = harness_objects([owner, *frames]) + [obj for obj in gc.get_objects() if is_harness_object(obj)]
        encoder.peeked.fill_(float(bool(found)))
        return Protection(encoder=encoder, server=owner.target_model())

    def evaluate(self, protection, data) -> dict[str, float]:
        return {"defense.peeked": float(protection.encoder.peeked)}


@hookimpl
def register_attacks(register):
    for cls in (CheatAttributes, CheatGc, CheatFrames, CheatFiles, CheatSeed, CheatPatch,
                CheatGlobals, Sleeper, Exiter, Interrupter):
        register(cls)


@hookimpl
def register_defenses(register):
    register(TwoFaced)
    register(PeekingFit)


@hookimpl
def register_metrics(register):
    register(MetricSpec("attack.cheat_found", "flag", "none",
                        "1 when a cheating test attack reached the harness's objects or files",
                        "set by the cheat itself", 0, 1))
    register(MetricSpec("defense.peeked", "flag", "none",
                        "1 when a cheating test defense found the test split while it fitted",
                        "set by the cheat itself", 0, 1))
