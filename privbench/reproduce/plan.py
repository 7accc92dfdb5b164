"""A reproduction's matrix and which of its cells each row reads: the [[matrix]] tables as
MatrixConfigs (with the [quick] overrides), the planned cells, each row's points, and ``validate``,
the config checked against the registry."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from privbench.errors import PrivbenchError, accepted
from privbench.matrix import entries_from_config, parse_seeds
from privbench.params import validate_params
from privbench.plugins import Registry
from privbench.reproduce.config import FIT_METRIC_KINDS, KINDS, Reproduction, Row, Setting, over_parameter
from privbench.schedule import CellPlan, MatrixConfig, plan

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


FULL = Selection()  # the whole reproduction: no --quick, the config's seeds, every dataset


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
        named = [("metric", row.metric)] + ([("where-metric", row.condition.metric)] if row.condition else [])
        named += [("other_metric", row.spec["other_metric"])] if "other_metric" in row.spec else []
        for what, metric in named:
            if metric not in METRICS:
                raise PrivbenchError(f"reproduction {repro.name}: {row.where}: {what} '{metric}' is not "
                                     f"registered; accepted: {accepted(METRICS)}")
    for quick in (False, True):
        cells = plan_cells(repro, registry, Selection(quick=quick))
        for row in repro.rows:
            row_points(row, cells, registry, repro.name)
            condition_points(row, cells, registry, repro.name)


def row_points(row: Row, cells: list[CellPlan], registry: Registry, repro: str
               ) -> tuple[list[Point], Point | None]:
    """The row's points (one, or the across / over sequence) and, for a comparison, the other one."""
    where = f"reproduction {repro}: {row.where}"
    spec = row.spec
    points = _points(row, row.metric, cells, registry, where)
    other = None
    if row.check == "compare":
        target = Setting.parse(spec.get("less_than", spec.get("greater_than")), where)
        other = _single_point(row.setting.merged(target), other_metric(row), cells, registry, where)
    return points, other


def other_metric(row) -> str:
    """The metric a comparison reads at the other setting: ``other_metric``, else the row's own."""
    return row.spec.get("other_metric", row.metric)


def condition_points(row: Row, cells: list[CellPlan], registry: Registry, repro: str) -> list[Point]:
    """For a row with ``where``, the points of its sequence again, reading the where-metric (one
    defense fit per point for a utility or defense metric); otherwise none."""
    if row.condition is None:
        return []
    where = f"reproduction {repro}: {row.where}: where-metric {row.condition.metric}"
    return _points(row, row.condition.metric, cells, registry, where)


def _points(row: Row, metric: str, cells: list[CellPlan], registry: Registry, where: str) -> list[Point]:
    """One point, or one per ``across`` entry, or one per value of the ``over`` parameter."""
    spec = row.spec
    if "across" in spec:
        settings = [row.setting.merged(Setting.parse(entry, where)) for entry in spec["across"]]
        points = [_single_point(s, metric, cells, registry, where) for s in settings]
        for point, entry in zip(points, spec["across"], strict=True):
            point.label = " · ".join(entry.values())
        return points
    if "over" in spec:
        return _sweep_points(row, metric, cells, registry, where)
    return [_single_point(row.setting, metric, cells, registry, where)]


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


def result_key(cell: CellPlan, metric: str) -> tuple[str, ...]:
    """Which cells measure the same thing: one defense fit for utility / defense metrics, else one
    (dataset, defense, attack) result."""
    if metric.split(".", 1)[0] in FIT_METRIC_KINDS:
        return cell.dataset.spec, cell.defense.spec
    return cell.dataset.spec, cell.defense.spec, cell.attack.spec


def _group(cells: list[CellPlan], metric: str) -> dict[tuple[str, ...], list[CellPlan]]:
    groups: dict[tuple[str, ...], list[CellPlan]] = {}
    for cell in cells:
        groups.setdefault(result_key(cell, metric), []).append(cell)
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


def _sweep_points(row: Row, metric: str, cells: list[CellPlan], registry: Registry, where: str
                  ) -> list[Point]:
    """One point per value of the swept parameter, in ascending order."""
    kind, name = over_parameter(row.spec["over"], where)
    groups = _group(_matching(row.setting, cells, registry, where), metric)
    points = {}
    for group in groups.values():
        call = getattr(group[0], kind)
        if name not in call.params:
            raise PrivbenchError(f"{where}: {kind} '{call.name}' has no parameter '{name}' to sweep over")
        value = call.params[name]
        if value in points:
            raise PrivbenchError(f"{where}: two results share {name}={value} ({points[value].label}; "
                                 f"{' · '.join(result_key(group[0], metric))}); name the "
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
