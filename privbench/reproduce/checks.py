"""Measuring a reproduction's rows from stored cells and checking each against its published fact:
``evaluate`` reads every row's points, ``check_row`` applies the row's check (``CHECKERS``) to the
points' mean (or median) over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from privbench.plugins import Registry
from privbench.reproduce.config import Reproduction, Row, bound_text, within
from privbench.reproduce.plan import FULL, Point, Selection, condition_points, other_metric, plan_cells, row_points


@dataclass
class Measured:
    """A point's values over seeds."""

    label: str
    values: list[float]
    problems: list[str] = field(default_factory=list)
    aggregate: str = "mean"  # what ``center`` is: "mean" or "median"

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def center(self) -> float | None:
        """The value the row's check reads: the mean or the median over seeds."""
        return self.median if self.aggregate == "median" else self.mean


@dataclass
class RowResult:
    row: Row
    points: list[Measured]
    other: Measured | None
    holds: bool | None  # None: not checked (a tolerance, or quick = false, under --quick)
    why: str = ""
    condition: list[Measured] = field(default_factory=list)  # the where-metric at each point

    @property
    def measured(self) -> list[Measured]:
        """Every measured point the check reads."""
        return [*self.points, *([self.other] if self.other is not None else []), *self.condition]


def measure(point: Point, metric: str, outcomes: dict[str, Any], aggregate: str = "mean") -> Measured:
    """Per seed, the metric of the first finished cell of the point that has it."""
    by_seed: dict[int, float] = {}
    problems = []
    for cell in point.cells:
        stored = outcomes.get(cell.key)
        if stored is None:
            problems.append(f"seed {cell.seed}: not run")
        elif stored.status != "done":
            problems.append(f"seed {cell.seed}: {stored.status}: {stored.reason}")
        else:
            values = {m.name: m.value for m in stored.metrics}
            if metric in values:
                by_seed.setdefault(cell.seed, values[metric])
            else:
                problems.append(f"seed {cell.seed}: the cell reported no {metric}")
    return Measured(point.label, [by_seed[seed] for seed in sorted(by_seed)], problems, aggregate)


def evaluate(repro: Reproduction, registry: Registry, outcomes: dict[str, Any],
             selection: Selection = FULL) -> list[RowResult]:
    """Every row of the reproduction, measured from the stored cells (``outcomes`` by cell key)."""
    cells = plan_cells(repro, registry, selection.everything())
    return [_evaluate_row(row, cells, registry, repro.name, outcomes, selection) for row in repro.rows]


def _evaluate_row(row: Row, cells: list, registry: Registry, repro: str, outcomes: dict[str, Any],
                  selection: Selection) -> RowResult:
    """One row: its points (and the other setting, the where-metric's points) measured, then checked
    unless ``--dataset`` left some of its cells out."""
    points, other = row_points(row, cells, registry, repro)
    conditions = condition_points(row, cells, registry, repro)
    measured = [measure(point, row.metric, outcomes, row.aggregate) for point in points]
    other_measured = measure(other, other_metric(row), outcomes, row.aggregate) if other else None
    condition = [measure(point, row.condition.metric, outcomes, row.aggregate) for point in conditions]
    outside = _outside(points + ([other] if other else []) + conditions, selection.datasets)
    if outside:
        return RowResult(row, measured, other_measured, None, f"not run: {outside} is not in --dataset", condition)
    return check_row(row, measured, other_measured, quick=selection.quick, condition=condition)


def _outside(points: list[Point], datasets: tuple[str, ...]) -> str | None:
    """The first dataset a row reads that the ``--dataset`` filter leaves out, or None."""
    for point in points:
        for cell in point.cells:
            if datasets and cell.dataset.name not in datasets:
                return cell.dataset.name
    return None


def check_row(row: Row, points: list[Measured], other: Measured | None, *, quick: bool,
              condition: list[Measured] | None = None) -> RowResult:
    """Whether the measured points satisfy the row's check (``condition``: the where-metric at each
    point, for a row with ``where``)."""
    result = RowResult(row, points, other, None, "", list(condition or []))
    if quick and (row.check == "tolerance" or not row.in_quick):
        result.why = "not checked with --quick" + (" (tolerance rows need the full run)"
                                                  if row.check == "tolerance" else "")
        return result
    result.holds, result.why = _unmeasured(result) or CHECKERS[row.check](result)
    return result


def _unmeasured(result: RowResult) -> tuple[bool, str] | None:
    """A failure when a point has no value or fewer seeds than ``min_seeds``; else None."""
    measured = result.measured
    missing = [p for p in measured if p.mean is None]
    if missing:
        problems = "; ".join(missing[0].problems) or "no value"
        return False, f"no measured value for {missing[0].label}: {problems}"
    need = result.row.min_seeds
    short = [p for p in measured if p.n < need]
    if short:
        at = f" at {short[0].label}" if len(measured) > 1 else ""
        return False, f"needs at least {need} seeds, measured {short[0].n}{at}"
    return None


def _centers(result: RowResult) -> list[float]:
    return [point.center for point in result.points]


def _check_tolerance(result: RowResult) -> tuple[bool, str]:
    row = result.row
    gap = abs(_centers(result)[0] - row.value)
    tolerance = row.spec["tolerance"]
    return gap <= tolerance, f"|measured - published| = {gap:.3g} {'<=' if gap <= tolerance else '>'} {tolerance:g}"


def _check_bounds(result: RowResult) -> tuple[bool, str]:
    below, above = result.row.spec.get("below"), result.row.spec.get("above")
    values = _centers(result)
    bad = [m for m in values if not within(m, below, above)]
    if bad:
        return False, f"{bad[0]:.3g} is outside {_bounds_text(result.row)}"
    return True, f"every point {_bounds_text(result.row)}" if len(values) > 1 else _bounds_text(result.row)


def _check_trend(result: RowResult) -> tuple[bool, str]:
    direction = result.row.spec.get("order", result.row.spec.get("monotone"))
    slack = float(result.row.spec.get("slack", 0.0))
    sign = -1.0 if direction == "decreasing" else 1.0
    values = _centers(result)
    for before, after in zip(values, values[1:], strict=False):
        if sign * (after - before) <= -slack:  # slack 0: a strict trend
            return False, f"{before:.3g} -> {after:.3g} breaks the {direction} trend"
    return True, f"{direction}" + (f" (slack {slack:g})" if slack else "")


def _check_compare(result: RowResult) -> tuple[bool, str]:
    margin = float(result.row.spec.get("margin", 0.0))
    less = "less_than" in result.row.spec
    mine, other = result.points[0].center, result.other.center
    holds = mine < other - margin if less else mine > other + margin
    return holds, f"{mine:.3g} {'<' if less else '>'} {other:.3g}{_shift(less, margin)}: {'yes' if holds else 'no'}"


def _shift(less: bool, margin: float) -> str:
    return f" {'-' if less == (margin > 0) else '+'} {abs(margin):g}" if margin else ""


def _check_spread(result: RowResult) -> tuple[bool, str]:
    values = _centers(result)
    spread = max(values) - min(values)
    limit = result.row.spec["spread"]
    return spread <= limit, f"max - min = {spread:.3g} {'<=' if spread <= limit else '>'} {limit:g}"


@dataclass(frozen=True)
class _Candidate:
    """One point of a some_below / some_above row: its value and, with ``where``, the where-metric's."""

    label: str
    value: float
    level: float | None


def _check_some(result: RowResult) -> tuple[bool, str]:
    """Some point is past ``some_below`` / ``some_above`` while, at that point, ``where`` holds."""
    row = result.row
    levels = [point.center for point in result.condition] or [None] * len(result.points)
    candidates = [_Candidate(point.label, point.center, level)
                  for point, level in zip(result.points, levels, strict=True)]
    good = [c for c in candidates if _some_excess(row, c.value) < 0 and _condition_holds(row, c.level)]
    if good:
        return True, "; ".join(_some_point_text(row, c) for c in good)
    best = min(candidates, key=lambda c: (not _condition_holds(row, c.level), _some_excess(row, c.value),
                                          _condition_excess(row, c.level)))
    return False, f"no point {_some_text(row)}; best {_some_point_text(row, best)}"


def _some_excess(row: Row, value: float) -> float:
    return _excess(value, row.spec.get("some_below"), row.spec.get("some_above"))


def _condition_holds(row: Row, level: float | None) -> bool:
    return row.condition is None or row.condition.holds(level)


def _condition_excess(row: Row, level: float | None) -> float:
    return 0.0 if row.condition is None else _excess(level, row.condition.below, row.condition.above)


def _excess(value: float, below: float | None, above: float | None) -> float:
    """How far ``value`` is past its bounds: positive outside, negative inside (the further in, the
    lower), 0 on a bound (outside too: the bounds are strict)."""
    return max(value - below if below is not None else -float("inf"),
               above - value if above is not None else -float("inf"))


def _some_point_text(row: Row, candidate: _Candidate) -> str:
    """``dropout=0.7: attack.ssim 0.21 < 0.25 at utility.accuracy 0.962 > 0.95``."""
    below, above = row.spec.get("some_below"), row.spec.get("some_above")
    text = f"{candidate.label}: {row.metric} {candidate.value:.3g} {bound_text(below, above, candidate.value)}"
    return text + (f" at {row.condition.text(candidate.level)}" if row.condition is not None else "")


def _some_text(row: Row) -> str:
    """``< 0.25 with utility.accuracy > 0.95``."""
    text = bound_text(row.spec.get("some_below"), row.spec.get("some_above"))
    return text + (f" with {row.condition.text()}" if row.condition is not None else "")


CHECKERS: dict[str, Callable[[RowResult], tuple[bool, str]]] = {
    "tolerance": _check_tolerance, "bounds": _check_bounds, "order": _check_trend, "monotone": _check_trend,
    "compare": _check_compare, "spread": _check_spread, "some": _check_some}


def _bounds_text(row: Row) -> str:
    return bound_text(row.spec.get("below"), row.spec.get("above"))


def check_text(row: Row) -> str:
    """The row's check in a few words, for the table."""
    spec = row.spec
    if row.check == "tolerance":
        return f"± {spec['tolerance']:g}"
    if row.check == "bounds":
        return _bounds_text(row) + (" at every point" if "across" in spec or "over" in spec else "")
    if row.check in ("order", "monotone"):
        direction = spec.get("order", spec.get("monotone"))
        over = f" in {spec['over'].split('.', 1)[1]}" if "over" in spec else ""
        return direction + over + (f" (slack {spec['slack']:g})" if spec.get("slack") else "")
    if row.check == "compare":
        less = "less_than" in spec
        target = spec["less_than"] if less else spec["greater_than"]
        of = f" ({spec['other_metric']})" if "other_metric" in spec else ""
        return f"{'<' if less else '>'} {' · '.join(target.values())}{of}{_shift(less, float(spec.get('margin', 0.0)))}"
    if row.check == "some":
        return "some point " + _some_text(row)
    return f"max - min <= {spec['spread']:g}"
