"""A reproduction's rows side by side with the paper: the texts of each column, the rows as plain data
(JSON, CSV, the leaderboard), the rich table, and the listing of the shipped configs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from privbench.reproduce.checks import Measured, RowResult, check_text
from privbench.reproduce.config import Reproduction, Row, load, shipped

REFERENCE_COLUMN = "authors' code"


def _number_text(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.4g}"
    return f"{text} ± {std:.2g}" if std else text


def published_text(row: Row) -> str:
    values = row.spec.get("values")
    if values:
        return " → ".join(_number_text(v) for v in values)
    return _number_text(row.value, row.std) if row.value is not None else "(shape)"


def reference_text(row: Row) -> str:
    """The authors' own code's number on the same data, or "—"."""
    return _number_text(row.reference)


def measured_text(result: RowResult) -> str:
    """Mean ± std of each point and the number of seeds (the median and "median of n seeds" for a row
    with ``aggregate = "median"``); 'a vs b' for a comparison, a → b along a sequence (its points are
    named in the setting column); then the where-metric's value at each point, for a row with ``where``."""
    median = result.row.aggregate == "median"

    def one(point: Measured) -> str:
        if point.mean is None:
            return "—"
        if median:
            return f"{point.median:.4g}"
        return f"{point.mean:.4g}" + (f" ± {point.std:.2g}" if point.n > 1 else "")
    points = result.points + ([result.other] if result.other is not None else [])
    if all(point.mean is None for point in points):
        return "—"
    n = min(point.n for point in points)
    seeds = f" (median of {n} seed{'s' if n != 1 else ''})" if median else f" (n={n})"
    if result.other is not None:
        return f"{one(result.points[0])} vs {one(result.other)}{seeds}"
    text = " → ".join(one(point) for point in result.points) + seeds
    if result.condition:  # the where-metric's mean (median) only
        text += f"; {result.row.condition.metric}: " + " → ".join(
            "—" if point.center is None else f"{point.center:.4g}" for point in result.condition)
    return text


def setting_text(result: RowResult) -> str:
    """The row's setting; along a sequence, followed by its points in order."""
    label = result.row.setting.label
    if len(result.points) > 1:
        label += " · " + " → ".join(point.label for point in result.points)
    return label


def holds_text(result: RowResult) -> str:
    return {True: "yes", False: "NO", None: "—"}[result.holds]


def _point_dict(point: Measured) -> dict[str, Any]:
    return {"label": point.label, "mean": point.mean, "median": point.median, "std": point.std, "n": point.n,
            "problems": point.problems}


def as_dicts(results: list[RowResult]) -> list[dict[str, Any]]:
    """The side-by-side rows as plain data (JSON, CSV, the leaderboard)."""
    rows = []
    for result in results:
        row = result.row
        rows.append({
            "setting": setting_text(result), "metric": row.metric,
            "published": {"value": row.value, "std": row.std, "values": row.spec.get("values")},
            "reference": (None if row.reference is None else
                          {"value": row.reference, "source": row.reference_source}),
            "check": check_text(row), "aggregate": row.aggregate, "min_seeds": row.min_seeds,
            "measured": [_point_dict(p) for p in result.points],
            "compared_with": (None if result.other is None else
                              {"label": result.other.label, "mean": result.other.mean,
                               "std": result.other.std, "n": result.other.n}),
            "where": (None if row.condition is None else
                      {"metric": row.condition.metric, "below": row.condition.below,
                       "above": row.condition.above, "measured": [_point_dict(p) for p in result.condition]}),
            "holds": result.holds, "why": result.why, "source": row.source, "note": row.note})
    return rows


def render(repro: Reproduction, results: list[RowResult], fmt: str, *, quick: bool, console=None) -> str | None:
    """Print the side-by-side table (rich) or return JSON / CSV text."""
    if fmt == "json":
        return json.dumps({"reproduction": repro.name, "paper": repro.paper, "summary": repro.summary,
                           "quick": quick,
                           "holds": all(r.holds is not False for r in results),
                           "rows": as_dicts(results)}, indent=2)
    if fmt == "csv":
        return csv_text(results)
    print_table(repro, results, quick, console)
    return None


def csv_text(results: list[RowResult]) -> str:
    """One line per row; ``reference`` and ``reference_source`` are empty for a row without one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["setting", "metric", "published", "reference", "check", "measured", "holds", "why",
                     "source", "reference_source"])
    for result in results:
        row = result.row
        writer.writerow([setting_text(result), row.metric, published_text(row),
                         "" if row.reference is None else _number_text(row.reference), check_text(row),
                         measured_text(result), holds_text(result), result.why, row.source,
                         row.reference_source])
    return buffer.getvalue()


def print_table(repro: Reproduction, results: list[RowResult], quick: bool, console) -> None:
    """The rich table; the authors' code column only when some row has a ``reference``."""
    from rich.table import Table
    title = f"{repro.name}: published vs measured" + (" (--quick: shape facts only)" if quick else "")
    table = Table(title=title, caption=repro.paper)
    references = any(result.row.reference is not None for result in results)
    columns = ["setting", "metric", "published", *([REFERENCE_COLUMN] if references else []), "check",
               "measured (mean ± std, n seeds)", "holds", "source"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("metric", "holds"))
    colour = {True: "green", False: "red", None: "dim"}
    for result in results:
        row = result.row
        holds = f"[{colour[result.holds]}]{holds_text(result)}[/]"
        table.add_row(setting_text(result), row.metric, published_text(row),
                      *([reference_text(row)] if references else []), check_text(row),
                      measured_text(result), holds, row.source)
    console.print(table)


def listing() -> list[dict[str, str]]:
    """Name, paper, dataset and expected cost of every shipped reproduction."""
    rows = []
    for name in shipped():
        repro = load(name)
        rows.append({"name": repro.name, "paper": repro.paper, "summary": repro.summary,
                     "dataset": repro.dataset,
                     "cost": repro.cost, "quick_cost": repro.quick_cost, "data": repro.data,
                     "rows": str(len(repro.rows))})
    return rows
