"""Reproductions: a paper's experiment as a matrix config, with its published numbers as data.

A reproduction config (TOML, shipped in ``privbench/reproductions/``) holds

- the paper and what a run costs (``name``, ``paper``, ``summary``, ``dataset``, ``cost``,
  ``quick_cost``, optionally ``data``: how to get the data);
- one or more ``[[matrix]]`` tables in the shape ``privbench matrix -c`` reads (datasets, defenses,
  attacks, seeds; a list value is a sweep), run by the ordinary ``MatrixRunner``: same store, same
  cache, a rerun skips finished cells;
- a ``[quick]`` table of parameter overrides per plugin kind (``dataset``, ``defense``, ``attack``):
  ``key = value`` sets that parameter on every plugin of the kind that declares it, and
  ``plugin-name = { key = value }`` on that plugin only. ``--quick`` runs with them and checks only
  the shape facts;
- ``[[published]]`` rows: a ``setting`` (``{dataset = SPEC, defense = SPEC, attack = SPEC}``, each
  part optional, matched against the planned cells by name and the parameters it names), a registered
  ``metric``, the published ``value`` (``std`` where the paper gives one), its ``source`` (table or
  figure) and exactly one check:

  ============== =================================================================================
  ``tolerance``  |measured mean - value| <= tolerance (absolute; never checked with ``--quick``)
  ``below`` /    the measured mean is < below and/or > above; with ``across`` or ``over``, every
  ``above``      point is
  ``order``      ``"decreasing"`` or ``"increasing"`` along ``across``, a list of partial settings
                 merged onto ``setting`` (e.g. split depth); ``slack`` lets a step go against the
                 trend by at most that much
  ``monotone``   as ``order``, over the values of a swept parameter, ``over`` = ``defense.lam``
  ``less_than``  the mean is below (``greater_than``: above) that of another partial setting merged
                 onto ``setting``, by more than ``margin`` (default 0; a negative margin allows that
                 much the other way, "within 4 points": ``greater_than = ..., margin = -0.04``)
  ``spread``     max - min of the points (``across`` or ``over``) is at most this: a flat curve
  ============== =================================================================================

  ``values`` gives published values per point, ``note`` a remark, ``quick = false`` keeps a shape
  fact out of ``--quick`` runs (e.g. an absolute level only the full training reaches).

A metric of kind ``utility`` or ``defense`` belongs to the defense's fit: its cells with different
attacks measure the same thing, so a setting need not name an attack for it. Any other metric needs
the setting to pin one (dataset, defense, attack) result. ``load`` checks a config's structure;
``validate`` checks it against the registry (plugins, parameters, metrics, which cells a row reads).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError, accepted
from privbench.matrix import entries_from_config, parse_seeds
from privbench.params import parse_spec, validate_params
from privbench.plugins import Registry
from privbench.schedule import CellPlan, MatrixConfig, plan

KINDS = ("dataset", "defense", "attack")
TOP_KEYS = {"name", "paper", "summary", "dataset", "cost", "quick_cost", "data", "matrix", "quick",
            "published"}
MATRIX_KEYS = {"datasets", "dataset", "defenses", "defense", "attacks", "attack", "seeds"}
ROW_KEYS = {"setting", "metric", "value", "std", "values", "source", "note", "quick", "tolerance",
            "below", "above", "order", "monotone", "over", "across", "slack", "less_than",
            "greater_than", "margin", "spread"}
CHECKS = {"tolerance": ("tolerance",), "bounds": ("below", "above"), "order": ("order",),
          "monotone": ("monotone",), "compare": ("less_than", "greater_than"), "spread": ("spread",)}
DIRECTIONS = ("decreasing", "increasing")
FIT_METRIC_KINDS = ("utility", "defense")  # measured once per defense fit, whatever the attack


# -- the config as data ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """A partial cell: per kind, a plugin name and the parameters it pins (raw, as written)."""

    parts: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...]

    @classmethod
    def parse(cls, table: Any, where: str) -> Setting:
        if not isinstance(table, dict) or not table:
            raise PrivbenchError(f"{where}: a setting is a table such as {{defense = \"noise:scale=0.5\"}}"
                                 f"; got {table!r}")
        unknown = set(table) - set(KINDS)
        if unknown:
            raise PrivbenchError(f"{where}: unknown setting part '{sorted(unknown)[0]}'; accepted: "
                                 + ", ".join(KINDS))
        parts = []
        for kind in KINDS:
            if kind in table:
                if not isinstance(table[kind], str):
                    raise PrivbenchError(f"{where}: setting part '{kind}' must be a spec string")
                name, raw = parse_spec(table[kind])
                parts.append((kind, name, tuple(sorted(raw.items()))))
        return cls(tuple(parts))

    def merged(self, other: Setting) -> Setting:
        """This setting with ``other``'s parts taking over the kinds it names."""
        mine = {kind: (kind, name, raw) for kind, name, raw in self.parts}
        mine.update({kind: (kind, name, raw) for kind, name, raw in other.parts})
        return Setting(tuple(mine[kind] for kind in KINDS if kind in mine))

    @property
    def label(self) -> str:
        return " · ".join(_spec_text(name, raw) for _, name, raw in self.parts)


def _spec_text(name: str, raw: tuple[tuple[str, Any], ...]) -> str:
    return name + (":" + ",".join(f"{k}={v}" for k, v in raw) if raw else "")


@dataclass(frozen=True)
class Row:
    """One published number (or shape fact) and how a measured value is checked against it."""

    number: int  # 1-based, for messages
    setting: Setting
    metric: str
    source: str
    check: str  # a key of CHECKS
    spec: dict[str, Any]  # the row's TOML table
    value: float | None = None
    std: float | None = None
    note: str = ""
    in_quick: bool = True

    @property
    def where(self) -> str:
        return f"published row {self.number} ({self.metric} at {self.setting.label})"


@dataclass(frozen=True)
class Reproduction:
    name: str
    paper: str
    summary: str
    dataset: str
    cost: str
    quick_cost: str
    data: str
    matrices: tuple[dict[str, Any], ...]
    quick: dict[str, Any]
    rows: tuple[Row, ...]
    path: str


def shipped_dir() -> Path:
    return Path(str(resources.files("privbench") / "reproductions"))


def shipped() -> dict[str, Path]:
    """The shipped reproduction configs by name (the file's stem)."""
    return {path.stem: path for path in sorted(shipped_dir().glob("*.toml"))}


def find(name: str) -> Path:
    """A shipped config by name, or a ``.toml`` file path; otherwise a one-line error."""
    configs = shipped()
    if name in configs:
        return configs[name]
    if name.endswith(".toml"):
        return Path(name)
    raise PrivbenchError(f"unknown reproduction '{name}'; accepted: {accepted(configs)} "
                         "(or a path to a .toml reproduction config)")


def load(name: str) -> Reproduction:
    """Read and check the structure of a reproduction config (see the module docstring)."""
    path = find(name)
    data = _read_toml(path)
    where = f"reproduction {path.name}"
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise PrivbenchError(f"{where}: unknown key '{sorted(unknown)[0]}'; accepted: "
                             + ", ".join(sorted(TOP_KEYS)))
    for key in ("name", "paper", "cost"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise PrivbenchError(f"{where}: '{key}' must be a non-empty string")
    matrices = tuple(_matrix_tables(data.get("matrix"), where))
    quick = data.get("quick", {})
    if not isinstance(quick, dict) or set(quick) - set(KINDS):
        raise PrivbenchError(f"{where}: [quick] holds only the tables " + ", ".join(KINDS))
    rows = data.get("published")
    if not isinstance(rows, list) or not rows:
        raise PrivbenchError(f"{where}: no [[published]] rows; each row needs a setting, a metric, "
                             "a source and a tolerance or shape fact")
    return Reproduction(
        name=data["name"], paper=data["paper"], summary=str(data.get("summary", "")),
        dataset=str(data.get("dataset", "")), cost=data["cost"],
        quick_cost=str(data.get("quick_cost", "")), data=str(data.get("data", "")),
        matrices=matrices, quick=quick,
        rows=tuple(parse_row(table, number, where) for number, table in enumerate(rows, 1)),
        path=str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise PrivbenchError(f"cannot read reproduction config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise PrivbenchError(f"reproduction config {path} is not valid TOML: {error}") from None


def _matrix_tables(value: Any, where: str) -> list[dict[str, Any]]:
    tables = [value] if isinstance(value, dict) else value
    if not isinstance(tables, list) or not tables:
        raise PrivbenchError(f"{where}: needs at least one [[matrix]] table (datasets, defenses, "
                             "attacks, seeds, as `privbench matrix -c` reads them)")
    for table in tables:
        unknown = set(table) - MATRIX_KEYS if isinstance(table, dict) else {"?"}
        if unknown:
            raise PrivbenchError(f"{where}: [[matrix]] has unknown key '{sorted(unknown)[0]}'; "
                                 "accepted: " + ", ".join(sorted(MATRIX_KEYS)))
    return tables


def parse_row(table: Any, number: int, where: str) -> Row:
    """One ``[[published]]`` table: setting, metric, source and exactly one check."""
    place = f"{where}: published row {number}"
    if not isinstance(table, dict):
        raise PrivbenchError(f"{place} must be a table")
    unknown = set(table) - ROW_KEYS
    if unknown:
        raise PrivbenchError(f"{place}: unknown key '{sorted(unknown)[0]}'; accepted: "
                             + ", ".join(sorted(ROW_KEYS)))
    if "setting" not in table:
        raise PrivbenchError(f"{place}: no setting (which dataset / defense / attack it is about)")
    for key in ("metric", "source"):
        if not isinstance(table.get(key), str) or not table[key].strip():
            raise PrivbenchError(f"{place}: no {key}; every published row names its {key}")
    row = Row(number=number, setting=Setting.parse(table["setting"], place), metric=table["metric"],
              source=table["source"], check=_check_kind(table, place), spec=table,
              value=_number(table, "value", place), std=_number(table, "std", place),
              note=str(table.get("note", "")), in_quick=bool(table.get("quick", True)))
    _check_row_shape(row, place)
    return row


def _check_kind(table: dict[str, Any], place: str) -> str:
    kinds = [kind for kind, keys in CHECKS.items() if any(key in table for key in keys)]
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise PrivbenchError(f"{place}: needs exactly one check, a tolerance or a shape fact (found: "
                             f"{found}); accepted: tolerance, below/above, order, monotone, "
                             "less_than/greater_than, spread")
    return kinds[0]


def _number(table: dict[str, Any], key: str, place: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivbenchError(f"{place}: '{key}' must be a number; got {value!r}")
    return float(value)


def _check_row_shape(row: Row, place: str) -> None:
    """The keys a row's check needs are there, and no point list where one point is meant."""
    spec = row.spec
    points = "across" in spec or "over" in spec
    if "across" in spec and "over" in spec:
        raise PrivbenchError(f"{place}: give 'across' (a list of settings) or 'over' (a swept "
                             "parameter), not both")
    for key in ("tolerance", "slack", "margin", "spread", "below", "above"):
        _number(spec, key, place)
    if not isinstance(spec.get("quick", True), bool):
        raise PrivbenchError(f"{place}: 'quick' must be true or false")
    if row.check == "tolerance" and (row.value is None or points):
        raise PrivbenchError(f"{place}: a tolerance needs a single published 'value' (no across/over)")
    if row.check == "order" and not isinstance(spec.get("across"), list):
        raise PrivbenchError(f"{place}: 'order' needs 'across', a list of settings in that order")
    if row.check == "monotone" and "over" not in spec:
        raise PrivbenchError(f"{place}: 'monotone' needs 'over', the swept parameter, e.g. "
                             "\"defense.lam\"")
    if row.check == "spread" and not points:
        raise PrivbenchError(f"{place}: 'spread' needs 'across' or 'over'")
    if row.check == "compare" and points:
        raise PrivbenchError(f"{place}: less_than / greater_than compare two single settings")
    direction = spec.get("order", spec.get("monotone"))
    if row.check in ("order", "monotone") and direction not in DIRECTIONS:
        raise PrivbenchError(f"{place}: bad direction {direction!r}; accepted: " + ", ".join(DIRECTIONS))
    if "over" in spec:
        _over_parameter(spec["over"], place)
    if "across" in spec:
        across = spec["across"]
        if not isinstance(across, list) or len(across) < 2:
            raise PrivbenchError(f"{place}: 'across' needs a list of at least two settings")
        for entry in across:
            Setting.parse(entry, place)
        values = spec.get("values")
        if values is not None and (not isinstance(values, list) or len(values) != len(across)):
            raise PrivbenchError(f"{place}: 'values' needs one published value per 'across' entry")
    if row.check == "compare":
        Setting.parse(spec.get("less_than", spec.get("greater_than")), place)


def _over_parameter(text: Any, place: str) -> tuple[str, str]:
    kind, _, name = str(text).partition(".")
    if kind not in KINDS or not name:
        raise PrivbenchError(f"{place}: bad 'over' {text!r}; accepted: KIND.PARAMETER with KIND one of "
                             + ", ".join(KINDS) + ", e.g. \"defense.lam\"")
    return kind, name


# -- the matrix of a reproduction ----------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """Which part of a reproduction runs: ``--quick``, ``--seeds`` (instead of the config's) and
    ``--dataset`` (only the [[matrix]] datasets of these names; rows about others are not checked)."""

    quick: bool = False
    seeds: tuple[int, ...] = ()
    datasets: tuple[str, ...] = ()

    def everything(self) -> Selection:
        """The same run without the dataset filter: what the rows are matched against."""
        return replace(self, datasets=())


def matrix_configs(repro: Reproduction, registry: Registry, selection: Selection = Selection()
                   ) -> list[MatrixConfig]:
    """The reproduction's [[matrix]] tables as MatrixConfigs, with the [quick] overrides applied."""
    configs = [MatrixConfig(datasets=entries_from_config(table, "dataset"),
                            defenses=entries_from_config(table, "defense"),
                            attacks=entries_from_config(table, "attack"),
                            seeds=list(selection.seeds) or parse_seeds(table.get("seeds", [0])))
               for table in repro.matrices]
    if selection.quick:  # against the whole config: a --dataset filter leaves some keys unused
        for kind in KINDS:
            entries = [entry for config in configs for entry in getattr(config, kind + "s")]
            _check_override_keys(kind, repro.quick.get(kind, {}), entries, registry, repro.name)
    if selection.datasets:
        configs = _only_datasets(configs, selection.datasets, repro.name)
    if not selection.quick:
        return configs
    return [_with_overrides(config, repro, registry) for config in configs]


def _only_datasets(configs: list[MatrixConfig], names: tuple[str, ...], repro: str
                   ) -> list[MatrixConfig]:
    """The configs restricted to the datasets named (``--dataset``); an unknown name is an error."""
    present = {name for config in configs for name, _ in config.datasets}
    unknown = set(names) - present
    if unknown:
        raise PrivbenchError(f"reproduction {repro} has no dataset '{sorted(unknown)[0]}'; accepted: "
                             f"{accepted(present)}")
    kept = [replace(config, datasets=[entry for entry in config.datasets if entry[0] in names])
            for config in configs]
    return [config for config in kept if config.datasets]


def _with_overrides(config: MatrixConfig, repro: Reproduction, registry: Registry) -> MatrixConfig:
    """The config with [quick]'s parameters set on every plugin (of the kind) declaring them."""
    changed = {}
    for kind in KINDS:
        overrides = repro.quick.get(kind, {})
        changed[kind + "s"] = [(name, _override(kind, name, raw, overrides, registry))
                               for name, raw in getattr(config, kind + "s")]
    return replace(config, **changed)


def _declared(registry: Registry, kind: str, name: str) -> set[str]:
    return {info.name for info in registry.get(kind, name).cls.parameters()}


def _override(kind: str, name: str, raw: dict, overrides: dict, registry: Registry) -> dict:
    declared = _declared(registry, kind, name)
    general = {k: v for k, v in overrides.items() if not isinstance(v, dict) and k in declared}
    return {**raw, **general, **overrides.get(name, {})}


def _check_override_keys(kind: str, overrides: Any, entries: list[tuple[str, dict]],
                         registry: Registry, repro: str) -> None:
    """Every [quick] key names a parameter some plugin of the kind declares, or one of its plugins."""
    if not isinstance(overrides, dict):
        raise PrivbenchError(f"reproduction {repro}: [quick] {kind} must be a table")
    names = {name for name, _ in entries}
    declared = set().union(*(_declared(registry, kind, name) for name in names)) if names else set()
    for key, value in overrides.items():
        if isinstance(value, dict) and key not in names:
            raise PrivbenchError(f"reproduction {repro}: [quick] {kind} table '{key}' names no {kind} "
                                 f"of the matrix; accepted: {accepted(names)}")
        if not isinstance(value, dict) and key not in declared:
            raise PrivbenchError(f"reproduction {repro}: [quick] {kind} key '{key}' is no parameter of "
                                 f"{', '.join(sorted(names)) or 'any of its plugins'}; accepted: "
                                 f"{accepted(declared)}")


def plan_cells(repro: Reproduction, registry: Registry, selection: Selection = Selection()
               ) -> list[CellPlan]:
    """Every planned cell of the reproduction, without duplicates, in plan order."""
    cells: dict[str, CellPlan] = {}
    for config in matrix_configs(repro, registry, selection):
        for cell in plan(registry, config):
            cells.setdefault(cell.key, cell)
    return list(cells.values())


# -- which cells a row reads -------------------------------------------------------------------------------

@dataclass
class Point:
    """One measured point of a row: its label and the cells (same result, several seeds) it reads."""

    label: str
    cells: list[CellPlan]


def validate(repro: Reproduction, registry: Registry) -> None:
    """Check the config against the registry: every plugin spec, every [quick] key, every metric,
    and that each row's settings pin the results it is about, in the full and the quick plan."""
    from privbench.metrics import METRICS
    for row in repro.rows:
        if row.metric not in METRICS:
            raise PrivbenchError(f"reproduction {repro.name}: {row.where}: metric '{row.metric}' is not "
                                 f"registered; accepted: {accepted(METRICS)}")
    for quick in (False, True):
        cells = plan_cells(repro, registry, Selection(quick=quick))
        for row in repro.rows:
            row_points(row, cells, registry, repro.name)


def row_points(row: Row, cells: list[CellPlan], registry: Registry, repro: str
               ) -> tuple[list[Point], Point | None]:
    """The row's points (one, or the across / over sequence) and, for a comparison, the other one."""
    where = f"reproduction {repro}: {row.where}"
    spec = row.spec
    if "across" in spec:
        settings = [row.setting.merged(Setting.parse(entry, where)) for entry in spec["across"]]
        points = [_single_point(s, row.metric, cells, registry, where) for s in settings]
        for point, entry in zip(points, spec["across"], strict=True):
            point.label = " · ".join(entry.values())
    elif "over" in spec:
        points = _sweep_points(row, cells, registry, where)
    else:
        points = [_single_point(row.setting, row.metric, cells, registry, where)]
    other = None
    if row.check == "compare":
        target = Setting.parse(spec.get("less_than", spec.get("greater_than")), where)
        other = _single_point(row.setting.merged(target), row.metric, cells, registry, where)
    return points, other


def _matching(setting: Setting, cells: list[CellPlan], registry: Registry, where: str
              ) -> list[CellPlan]:
    """The planned cells whose plugins have the setting's names and parameter values."""
    wanted = []
    for kind, name, raw in setting.parts:
        cls = registry.get(kind, name).cls
        given = validate_params(f"{where}: {kind} '{name}'", cls, dict(raw))
        wanted.append((kind, name, {key: given[key] for key, _ in raw}))
    return [cell for cell in cells
            if all(_call_matches(getattr(cell, kind), name, params) for kind, name, params in wanted)]


def _call_matches(call, name: str, params: dict[str, Any]) -> bool:
    return call.name == name and all(call.params.get(k) == v for k, v in params.items())


def _result_key(cell: CellPlan, metric: str) -> tuple[str, ...]:
    """Which cells measure the same thing: one defense fit for utility / defense metrics, else one
    (dataset, defense, attack) result."""
    if metric.split(".", 1)[0] in FIT_METRIC_KINDS:
        return cell.dataset.spec, cell.defense.spec
    return cell.dataset.spec, cell.defense.spec, cell.attack.spec


def _group(cells: list[CellPlan], metric: str) -> dict[tuple[str, ...], list[CellPlan]]:
    groups: dict[tuple[str, ...], list[CellPlan]] = {}
    for cell in cells:
        groups.setdefault(_result_key(cell, metric), []).append(cell)
    return groups


def _single_point(setting: Setting, metric: str, cells: list[CellPlan], registry: Registry,
                  where: str) -> Point:
    groups = _group(_matching(setting, cells, registry, where), metric)
    if len(groups) != 1:
        found = "; ".join(" · ".join(key) for key in list(groups)[:3])
        raise PrivbenchError(f"{where}: setting '{setting.label}' matches {len(groups)} results of the "
                             f"matrix, not one ({found or 'none'}); name the parameters that tell "
                             "them apart, or add the setting to a [[matrix]]")
    return Point(setting.label, next(iter(groups.values())))


def _sweep_points(row: Row, cells: list[CellPlan], registry: Registry, where: str) -> list[Point]:
    """One point per value of the swept parameter, in ascending order."""
    kind, name = _over_parameter(row.spec["over"], where)
    groups = _group(_matching(row.setting, cells, registry, where), row.metric)
    points = {}
    for group in groups.values():
        call = getattr(group[0], kind)
        if name not in call.params:
            raise PrivbenchError(f"{where}: {kind} '{call.name}' has no parameter '{name}' to sweep over")
        value = call.params[name]
        if value in points:
            raise PrivbenchError(f"{where}: two results share {name}={value} ({points[value].label}; "
                                 f"{' · '.join(_result_key(group[0], row.metric))}); name the "
                                 "parameters that tell them apart")
        points[value] = Point(f"{name}={value}", group)
    if len(points) < 2:
        raise PrivbenchError(f"{where}: the sweep over {row.spec['over']} has {len(points)} value(s) "
                             "in the matrix; a monotone or spread fact needs at least two")
    ordered = [points[value] for value in sorted(points)]
    values = row.spec.get("values")
    if values is not None and len(values) != len(ordered):
        raise PrivbenchError(f"{where}: 'values' has {len(values)} entries for {len(ordered)} swept values")
    return ordered


# -- measuring and checking ---------------------------------------------------------------------------------

@dataclass
class Measured:
    """A point's values over seeds."""

    label: str
    values: list[float]
    problems: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class RowResult:
    row: Row
    points: list[Measured]
    other: Measured | None
    holds: bool | None  # None: not checked (a tolerance, or quick = false, under --quick)
    why: str = ""


def measure(point: Point, metric: str, outcomes: dict[str, Any]) -> Measured:
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
    return Measured(point.label, [by_seed[seed] for seed in sorted(by_seed)], problems)


def evaluate(repro: Reproduction, registry: Registry, outcomes: dict[str, Any],
             selection: Selection = Selection()) -> list[RowResult]:
    """Every row of the reproduction, measured from the stored cells (``outcomes`` by cell key)."""
    cells = plan_cells(repro, registry, selection.everything())
    results = []
    for row in repro.rows:
        points, other = row_points(row, cells, registry, repro.name)
        measured = [measure(point, row.metric, outcomes) for point in points]
        other_measured = measure(other, row.metric, outcomes) if other else None
        outside = _outside(points + ([other] if other else []), selection.datasets)
        results.append(RowResult(row, measured, other_measured, None, f"not run: {outside} is not in "
                                 "--dataset") if outside else
                       check_row(row, measured, other_measured, quick=selection.quick))
    return results


def _outside(points: list[Point], datasets: tuple[str, ...]) -> str | None:
    """The first dataset a row reads that the ``--dataset`` filter leaves out, or None."""
    for point in points:
        for cell in point.cells:
            if datasets and cell.dataset.name not in datasets:
                return cell.dataset.name
    return None


def check_row(row: Row, points: list[Measured], other: Measured | None, *, quick: bool) -> RowResult:
    """Whether the measured points satisfy the row's check."""
    if quick and (row.check == "tolerance" or not row.in_quick):
        why = "not checked with --quick" + (" (tolerance rows need the full run)"
                                           if row.check == "tolerance" else "")
        return RowResult(row, points, other, None, why)
    missing = [p for p in [*points, *([other] if other else [])] if p.mean is None]
    if missing:
        problems = "; ".join(missing[0].problems) or "no value"
        return RowResult(row, points, other, False, f"no measured value for {missing[0].label}: {problems}")
    holds, why = CHECKERS[row.check](row, [p.mean for p in points], other.mean if other else None)
    return RowResult(row, points, other, holds, why)


def _check_tolerance(row: Row, means: list[float], other: float | None) -> tuple[bool, str]:
    gap = abs(means[0] - row.value)
    tolerance = row.spec["tolerance"]
    return gap <= tolerance, f"|measured - published| = {gap:.3g} {'<=' if gap <= tolerance else '>'} {tolerance:g}"


def _check_bounds(row: Row, means: list[float], other: float | None) -> tuple[bool, str]:
    below, above = row.spec.get("below"), row.spec.get("above")
    bad = [m for m in means if (below is not None and not m < below) or (above is not None and not m > above)]
    if bad:
        return False, f"{bad[0]:.3g} is outside {_bounds_text(row)}"
    return True, f"every point {_bounds_text(row)}" if len(means) > 1 else _bounds_text(row)


def _check_trend(row: Row, means: list[float], other: float | None) -> tuple[bool, str]:
    direction = row.spec.get("order", row.spec.get("monotone"))
    slack = float(row.spec.get("slack", 0.0))
    sign = -1.0 if direction == "decreasing" else 1.0
    for before, after in zip(means, means[1:], strict=False):
        if sign * (after - before) <= -slack:  # slack 0: a strict trend
            return False, f"{before:.3g} -> {after:.3g} breaks the {direction} trend"
    return True, f"{direction}" + (f" (slack {slack:g})" if slack else "")


def _check_compare(row: Row, means: list[float], other: float | None) -> tuple[bool, str]:
    margin = float(row.spec.get("margin", 0.0))
    less = "less_than" in row.spec
    holds = means[0] < other - margin if less else means[0] > other + margin
    shift = f" {'-' if less == (margin > 0) else '+'} {abs(margin):g}" if margin else ""
    return holds, f"{means[0]:.3g} {'<' if less else '>'} {other:.3g}{shift}: {'yes' if holds else 'no'}"


def _check_spread(row: Row, means: list[float], other: float | None) -> tuple[bool, str]:
    spread = max(means) - min(means)
    limit = row.spec["spread"]
    return spread <= limit, f"max - min = {spread:.3g} {'<=' if spread <= limit else '>'} {limit:g}"


CHECKERS = {"tolerance": _check_tolerance, "bounds": _check_bounds, "order": _check_trend,
            "monotone": _check_trend, "compare": _check_compare, "spread": _check_spread}


def _bounds_text(row: Row) -> str:
    below, above = row.spec.get("below"), row.spec.get("above")
    if below is not None and above is not None:
        return f"in ({above:g}, {below:g})"
    return f"< {below:g}" if below is not None else f"> {above:g}"


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
        word, target = ("<", spec["less_than"]) if "less_than" in spec else (">", spec["greater_than"])
        margin = float(spec.get("margin", 0.0))
        shift = f" {'-' if (word == '<') == (margin > 0) else '+'} {abs(margin):g}" if margin else ""
        return f"{word} {' · '.join(target.values())}{shift}"
    return f"max - min <= {spec['spread']:g}"


# -- running ------------------------------------------------------------------------------------------------

def run(repro: Reproduction, registry: Registry, store, ctx, selection: Selection = Selection(),
        executor: dict[str, Any] | None = None) -> list:
    """Run each [[matrix]] of the reproduction through the ordinary MatrixRunner (same store and
    cache; finished cells are skipped) and return the run reports."""
    from privbench.matrix import MatrixRunner
    runner = MatrixRunner(registry, store, ctx, **(executor or {}))
    return [runner.run(config) for config in matrix_configs(repro, registry, selection)]


def stored_outcomes(store, cells: Iterable[CellPlan]) -> dict[str, Any]:
    return {cell.key: cell for cell in store.cells({c.key for c in cells})}


# -- output -----------------------------------------------------------------------------------------------

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


def measured_text(result: RowResult) -> str:
    """Mean ± std of each point and the number of seeds; 'a vs b' for a comparison, a → b along a
    sequence (its points are named in the setting column)."""
    def one(point: Measured) -> str:
        if point.mean is None:
            return "—"
        return f"{point.mean:.4g}" + (f" ± {point.std:.2g}" if point.n > 1 else "")
    points = result.points + ([result.other] if result.other is not None else [])
    if all(point.mean is None for point in points):
        return "—"
    seeds = f" (n={min(point.n for point in points)})"
    if result.other is not None:
        return f"{one(result.points[0])} vs {one(result.other)}{seeds}"
    return " → ".join(one(point) for point in result.points) + seeds


def setting_text(result: RowResult) -> str:
    """The row's setting; along a sequence, followed by its points in order."""
    label = result.row.setting.label
    if len(result.points) > 1:
        label += " · " + " → ".join(point.label for point in result.points)
    return label


def holds_text(result: RowResult) -> str:
    return {True: "yes", False: "NO", None: "—"}[result.holds]


def as_dicts(results: list[RowResult]) -> list[dict[str, Any]]:
    """The side-by-side rows as plain data (JSON, CSV, the leaderboard)."""
    rows = []
    for result in results:
        row = result.row
        rows.append({
            "setting": setting_text(result), "metric": row.metric,
            "published": {"value": row.value, "std": row.std, "values": row.spec.get("values")},
            "check": check_text(row),
            "measured": [{"label": p.label, "mean": p.mean, "std": p.std, "n": p.n,
                          "problems": p.problems} for p in result.points],
            "compared_with": (None if result.other is None else
                              {"label": result.other.label, "mean": result.other.mean,
                               "std": result.other.std, "n": result.other.n}),
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
        return _csv(results)
    _table(repro, results, quick, console)
    return None


def _csv(results: list[RowResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["setting", "metric", "published", "check", "measured", "holds", "why", "source"])
    for result in results:
        row = result.row
        writer.writerow([setting_text(result), row.metric, published_text(row), check_text(row),
                         measured_text(result), holds_text(result), result.why, row.source])
    return buffer.getvalue()


def _table(repro: Reproduction, results: list[RowResult], quick: bool, console) -> None:
    from rich.table import Table
    title = f"{repro.name}: published vs measured" + (" (--quick: shape facts only)" if quick else "")
    table = Table(title=title, caption=repro.paper)
    for column in ("setting", "metric", "published", "check", "measured (mean ± std, n seeds)",
                   "holds", "source"):
        table.add_column(column, overflow="fold", no_wrap=column in ("metric", "holds"))
    colour = {True: "green", False: "red", None: "dim"}
    for result in results:
        row = result.row
        holds = f"[{colour[result.holds]}]{holds_text(result)}[/]"
        table.add_row(setting_text(result), row.metric, published_text(row), check_text(row),
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


# -- the command ----------------------------------------------------------------------------------------------

def command(name: str | None, *, list_only: bool, quick: bool, seeds: str | None,
            datasets: tuple[str, ...], fmt: str, db: str, device: str, cache_dir: str | None,
            data_dir: str | None, download: bool, quiet: bool, executor: dict[str, Any]) -> int:
    """``privbench reproduce``: list the configs, or run one and print it beside the paper; the exit
    status is 1 when a checked row does not hold."""
    import click
    if list_only:
        return _print_listing(fmt)
    if not name:
        raise PrivbenchError("name a reproduction; accepted: " + accepted(shipped())
                             + " (privbench reproduce --list describes them)")
    from privbench.plugins import load_registry
    repro = load(name)
    registry = load_registry()
    validate(repro, registry)
    selection = Selection(quick, tuple(parse_seeds(seeds)) if seeds else (), tuple(datasets))
    matrix_configs(repro, registry, selection)  # an unknown --dataset fails before anything runs
    store, reports = _run_with_progress(repro, registry, selection, db=db, device=device,
                                        cache_dir=cache_dir, data_dir=data_dir, download=download,
                                        quiet=quiet, executor=executor)
    cells = plan_cells(repro, registry, selection.everything())
    results = evaluate(repro, registry, stored_outcomes(store, cells), selection)
    text = render(repro, results, fmt, quick=quick, console=_stdout_console())
    if text is not None:
        click.echo(text, nl=not text.endswith("\n"))
    return _summary(repro, results, reports, store, fmt)


def _stdout_console():
    from privbench.progress import output_console
    return output_console()


def _print_listing(fmt: str) -> int:
    import click
    rows = listing()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["name"])
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        from rich.table import Table
        table = Table(title="shipped reproductions (privbench reproduce NAME [--quick])")
        for column in ("name", "paper", "dataset", "cost", "--quick"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["name"], row["paper"], row["dataset"], row["cost"], row["quick_cost"])
        _stdout_console().print(table)
    return 0


def _run_with_progress(repro: Reproduction, registry: Registry, selection: Selection, *, db: str,
                       device: str, cache_dir, data_dir, download: bool, quiet: bool,
                       executor: dict[str, Any]):
    """Check what the run needs (``privbench.preflight``, as ``privbench matrix`` does), then run
    the matrices with progress on stderr (stdout keeps the table, JSON or CSV)."""
    import click
    from rich.console import Console

    from privbench.artifacts import ArtifactCache
    from privbench.context import RunContext, default_cache_dir, privbench_home, resolve_device
    from privbench.progress import PlainProgress, RichProgress
    from privbench.store import Store
    ctx = RunContext(device=resolve_device(str(device)),
                     cache=ArtifactCache(cache_dir or default_cache_dir()),
                     data_dir=Path(data_dir) if data_dir else privbench_home() / "data",
                     download=download)
    loaded = _preflight(repro, registry, selection, ctx, db)
    store = Store(db)
    console = Console(stderr=True)
    progress = (RichProgress(console, disable=quiet) if quiet or console.is_terminal
                else PlainProgress(stream=console.file))
    with progress:
        try:
            reports = run(repro, registry, store, replace(ctx, progress=progress), selection,
                          {**executor, "datasets": loaded})
        except KeyboardInterrupt:
            progress.stop()
            click.echo("interrupted: every finished cell is kept in the store; rerun the same "
                       "command to go on", err=True)
            raise SystemExit(130) from None
    return store, reports


def _preflight(repro: Reproduction, registry: Registry, selection: Selection, ctx, db: str) -> dict:
    """Every problem of every [[matrix]] (a dataset not on disk, a store that cannot be written...)
    printed together before anything trains, exit status 2; else the datasets it loaded."""
    import click

    from privbench.preflight import preflight
    problems: list[str] = []
    loaded: dict = {}
    for config in matrix_configs(repro, registry, selection):
        found = preflight(registry, config, ctx, db)
        problems += [problem for problem in found.problems if problem not in problems]
        loaded.update(found.datasets)
    if problems:
        for problem in problems:
            click.echo(f"Error: {problem}", err=True)
        names = {name for config in matrix_configs(repro, registry) for name, _ in config.datasets}
        hint = (f"; --dataset NAME runs the part on one dataset (accepted: {accepted(names)})"
                if len(names) > 1 and not selection.datasets else "")
        click.echo(f"reproduction {repro.name}: {len(problems)} problem(s) found before the run "
                   f"started; nothing was trained or stored{hint}", err=True)
        raise SystemExit(2)
    return loaded


def _summary(repro: Reproduction, results: list[RowResult], reports: list, store, fmt: str) -> int:
    """One line per failed cell and per row that does not hold (stderr), then the exit status."""
    import click
    for report in reports:
        for outcome in report.failures:
            click.echo(f"failed cell: {outcome.dataset_spec} · {outcome.defense_spec} · "
                       f"{outcome.attack_spec} · seed {outcome.seed}: {outcome.reason}", err=True)
    failing = [r for r in results if r.holds is False]
    for result in failing:
        click.echo(f"does not hold: {result.row.where}: {result.why}", err=True)
    checked = sum(r.holds is not None for r in results)
    ran = sum(len(report.outcomes) for report in reports)
    skipped = sum(report.skipped for report in reports)
    click.echo(f"{repro.name}: {checked - len(failing)} of {checked} checked rows hold; "
               f"{ran} cells run, {skipped} already finished; results in {store.display_url}",
               err=fmt != "table")
    return 1 if failing else 0
