"""The leaderboard's Reproductions page: each paper's published numbers beside what the store measured.

For every reproduction config (the shipped ones, ``privbench reproduce --list``, plus any extra config
paths given) whose full plan (not ``--quick``) has at least one cell in the store, the rows are
evaluated exactly as ``privbench reproduce`` evaluates them (``privbench.reproduce.evaluate`` on the
stored outcomes, ``as_dicts`` for the table). A row whose cells are missing reads "no measured value"
and does not hold, as on the command line. A row's ``reference`` (the authors' own code's number)
stands beside the published value, its ``reference_source`` as the cell's tooltip and note; a
reproduction without one has no such column. The PSNR-by-split figure follows He et al. 2019 (ACSAC,
Table 3 / Figures 11-12): x is the split point (the defense), one colour per attacker, the published
line dashed and the measured line solid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.plot import LineFigure, line_figure
from privbench.errors import PrivbenchError
from privbench.reproduce import (
    Reproduction,
    RowResult,
    Setting,
    as_dicts,
    evaluate,
    load,
    measured_text,
    plan_cells,
    published_text,
    reference_text,
    shipped,
)
from privbench.store import Cell

FIGURE_METRIC = "attack.psnr"
FILENAME = "reproductions.html"


@dataclass
class Grid:
    """A reconstruction grid an attack saved for one of the reproduction's cells."""

    label: str
    seed: int
    path: str


@dataclass
class ReproductionView:
    """One reproduction as the page shows it."""

    repro: Reproduction
    command: str
    planned: int
    stored: int
    rows: list[dict[str, Any]]
    figure: LineFigure | None = None
    grids: list[Grid] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "r-" + "".join(ch if ch.isalnum() else "-" for ch in self.repro.name)

    def count(self, holds: bool | None) -> int:
        return sum(row["holds"] is holds for row in self.rows)

    @property
    def has_reference(self) -> bool:
        """Whether some row carries the authors' own code's number (the page then has its column)."""
        return any(row["reference"] is not None for row in self.rows)


def config_paths(extra: Iterable[str | Path] = ()) -> list[str]:
    """The shipped configs, then the extra ``.toml`` paths (tests, a user's own config)."""
    return [str(path) for path in shipped().values()] + [str(path) for path in extra]


def command_line(repro: Reproduction) -> str:
    """The exact command that reruns it: the shipped name, or the config's path for any other."""
    name = repro.name if shipped().get(repro.name) == Path(repro.path) else repro.path
    return f"privbench reproduce {name} --data-dir DIR"


def reproduction_views(cells: list[Cell], images: dict[int, list[tuple[str, str]]], registry,
                       extra: Iterable[str | Path] = ()) -> list[ReproductionView]:
    """A view per config with at least one planned cell in the store; a config the installed plugins
    cannot plan (a plugin or metric not registered here) is left out."""
    by_key = {cell.key: cell for cell in cells}
    views = []
    for path in config_paths(extra):
        try:
            repro = load(path)
            planned = plan_cells(repro, registry)
            outcomes = {plan.key: by_key[plan.key] for plan in planned if plan.key in by_key}
            if not outcomes:
                continue
            results = evaluate(repro, registry, outcomes)
        except PrivbenchError:
            continue
        views.append(ReproductionView(repro, command_line(repro), len(planned), len(outcomes),
                                      table_rows(results), split_figure(results),
                                      grids(planned, outcomes, images)))
    return views


def table_rows(results: list[RowResult]) -> list[dict[str, Any]]:
    """``as_dicts`` with the published, authors' code and measured columns as ``privbench reproduce``
    prints them."""
    rows = as_dicts(results)
    for row, result in zip(rows, results, strict=True):
        row["published_text"] = published_text(result.row)
        row["reference_text"] = reference_text(result.row)
        row["measured_text"] = measured_text(result)
    return rows


def part_label(setting: Setting, kind: str) -> str | None:
    """The spec text of one kind's part of a setting, or None when the setting leaves it open."""
    parts = tuple(part for part in setting.parts if part[0] == kind)
    return Setting(parts).label if parts else None


def row_settings(result: RowResult) -> list[Setting]:
    """The setting of each measured point of a single-point or ``across`` row (others: none)."""
    row = result.row
    if "across" in row.spec:
        return [row.setting.merged(Setting.parse(entry, row.where)) for entry in row.spec["across"]]
    if "over" in row.spec or row.check == "compare":
        return []
    return [row.setting]


def published_values(result: RowResult) -> list[float | None]:
    row = result.row
    values = row.spec.get("values")
    if values is not None:
        return [float(v) for v in values]
    return [row.value] * len(result.points)


def split_figure(results: list[RowResult]) -> LineFigure | None:
    """He et al.'s PSNR by split depth: per attacker and split (defense), the published and the
    measured PSNR from the PSNR rows; None unless some attacker has numbers at two splits or more."""
    series: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    splits: list[str] = []
    for result in results:
        if result.row.metric != FIGURE_METRIC:
            continue
        for setting, published, point in zip(row_settings(result), published_values(result), result.points,
                                             strict=False):
            attacker, split = part_label(setting, "attack"), part_label(setting, "defense")
            if attacker is None or split is None or (published is None and point.mean is None):
                continue
            splits += [split] if split not in splits else []
            known = series.setdefault(attacker, {}).get(split, (None, None))
            series[attacker][split] = (known[0] if known[0] is not None else published,
                                       known[1] if known[1] is not None else point.mean)
    if not any(len(points) > 1 for points in series.values()):
        return None
    return line_figure(f"{FIGURE_METRIC} (dB)", splits, series)


def grids(planned, outcomes: dict[str, Cell], images: dict[int, list[tuple[str, str]]]) -> list[Grid]:
    """The images the stored cells of the plan saved, in plan order."""
    found = []
    for plan in planned:
        cell = outcomes.get(plan.key)
        for _, path in images.get(cell.id, []) if cell is not None else []:
            found.append(Grid(f"{cell.dataset_spec} · {cell.defense_spec} · {cell.attack_spec}", cell.seed, path))
    return found
