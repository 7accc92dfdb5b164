"""``privbench matrix --dry-run``: what a run would do, without training anything.

It prints the plan's cells (and which are already in the store), the shared artifacts the pending
cells need (one target model per dataset and seed, one fit per dataset, seed and defense; the
artifact cache may already hold some of them) and a rough cost: for each pending cell, the mean
duration of the store's finished cells of the same defense and attack, or else its scheduling cost
hints (attack ``cost_hint`` x defense ``cost_hint``) in seconds per unit calibrated on the store's
past cells (0.3 s per unit when the store has none: calibrated on the default matrix, see
SECONDS_PER_UNIT; a larger dataset than digits takes longer per unit, which the store's own timings
then correct).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from privbench.schedule import CellPlan, MatrixConfig, plan

# The cost of one hint unit when the store has no past timings, calibrated on the default matrix
# (digits, 49 cells, 244 hint units) on 2 CPU cores: about 75 s of scenario, fit and cell work
# measured with the local executor (2026-12-06), so 0.3 s per unit.
SECONDS_PER_UNIT = 0.3


def stored_cells(db: str) -> list:
    """The store's cells, or [] when there is no store yet (a dry run never creates one)."""
    from privbench.store import Store, normalize_url
    url = normalize_url(db)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    try:
        return Store(db, create=False).cells()
    except Exception:  # no schema yet, or unreachable: a dry run reports nothing stored
        return []


def hint(cell: CellPlan) -> float:
    return cell.attack.instance.cost_hint * cell.defense.instance.cost_hint


def estimates(pending: list[CellPlan], stored: list) -> tuple[dict[str, float], str]:
    """Seconds per pending cell (by key) and how they were estimated."""
    past: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in stored:
        if cell.status == "done":
            past[(cell.defense, cell.attack)].append(cell.duration_s)
    per_unit = [statistics.fmean(times) for times in past.values()]
    unit = SECONDS_PER_UNIT
    if past:
        hints = {(c.defense.name, c.attack.name): hint(c) for c in pending}
        ratios = [statistics.fmean(times) / hints[key] for key, times in past.items() if key in hints]
        unit = statistics.median(ratios) if ratios else statistics.median(per_unit)
    seconds = {}
    for cell in pending:
        times = past.get((cell.defense.name, cell.attack.name))
        seconds[cell.key] = statistics.fmean(times) if times else hint(cell) * unit
    source = (f"past timings in the store where they exist, else cost hints at {unit:.1f} s per unit"
              if past else f"cost hints only (no past timings in the store), {unit:.1f} s per unit, "
              "calibrated on the default digits matrix on 2 CPU cores")
    return seconds, source


class RunPace:
    """The time a run has left, from its own pace: each pending cell weighs its estimated seconds
    (``estimates``), and the run's elapsed time over the estimated seconds of the cells it has
    finished scales the estimate of those still to run. The unit of the estimate cancels out (a
    slower machine, a larger dataset), and the longest-first order of the cells does not fool it as
    a count of cells would: the first cells to finish are the heavy ones, and they weigh so."""

    def __init__(self, expected_s: dict[str, float]) -> None:
        self.expected_s = expected_s
        self.total = sum(expected_s.values())
        self.done = 0.0
        self.finished: set[str] = set()

    def finish(self, key: str) -> None:
        if key in self.expected_s and key not in self.finished:
            self.finished.add(key)
            self.done += self.expected_s[key]

    def left_s(self, elapsed_s: float) -> float | None:
        """Seconds left, or None before the first cell has finished."""
        if self.done <= 0:
            return None
        return elapsed_s * max(0.0, self.total - self.done) / self.done

    def describe(self, elapsed_s: float) -> str:
        left = self.left_s(elapsed_s)
        return "" if left is None else f"about {left:.0f} s left"


def executor_line(executor: str, workers: int | None, device: str) -> str:
    """What the run would start: for ``process``, how many workers with how many threads and GPUs
    (``privbench.devices``); ``device`` ``auto`` is CUDA where torch sees a GPU."""
    from privbench.devices import describe_workers, host_cores, visible_gpu_memory
    if executor != "process":
        return f"executor: {executor}"
    wanted = "cuda" if device == "auto" else device
    free = visible_gpu_memory(wanted) if wanted.startswith("cuda") else []
    if device.startswith("cuda") and not free:
        return f"executor: process; --device {device} but torch sees no GPU here (the run would stop)"
    return describe_workers(wanted if free else "cpu", workers, free, host_cores())


def describe(registry, config: MatrixConfig, db: str, executor: str | None = None) -> list[str]:
    """The dry run's lines; ``executor``: the line of ``executor_line`` to print after the plan."""
    cells = plan(registry, config)
    stored = stored_cells(db)
    finished = {c.key for c in stored if c.status in ("done", "not-applicable")}
    pending = [c for c in cells if c.key not in finished]
    seconds, source = estimates(pending, stored)
    lines = [f"plan: {len(cells)} cells, {len(cells) - len(pending)} already in the store, "
             f"{len(pending)} to run"]
    targets = sorted({(c.dataset.spec, c.seed) for c in pending})
    fits = sorted({(c.dataset.spec, c.seed, c.defense.spec) for c in pending})
    lines.append(f"shared artifacts the pending cells need (the cache may hold some): "
                 f"{len(targets)} target model(s), {len(fits)} defense fit(s)")
    lines += [f"  target model: {dataset} · seed {seed}" for dataset, seed in targets]
    lines += [f"  fit: {dataset} · seed {seed} · {defense}" for dataset, seed, defense in fits]
    lines.append("cells:")
    for cell in cells:
        state = "stored " if cell.key in finished else f"~{seconds[cell.key]:6.0f} s"
        lines.append(f"  {state}  {cell.label}")
    total = sum(seconds.values())
    if executor:
        lines.append(executor)
    lines.append(f"estimated time for the pending cells: about {total / 60:.1f} min ({source}); "
                 "nothing was trained or stored")
    return lines
