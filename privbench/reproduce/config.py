"""A reproduction config as data: ``load`` reads the TOML and checks its structure (keys, types, exactly
one check per row); checking it against the registry is ``privbench.reproduce.plan.validate``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError, accepted
from privbench.params import parse_spec

KINDS = ("dataset", "defense", "attack")
TOP_KEYS = {"name", "paper", "summary", "dataset", "cost", "quick_cost", "data", "matrix", "quick",
            "published"}
MATRIX_KEYS = {"datasets", "dataset", "defenses", "defense", "attacks", "attack", "seeds"}
ROW_KEYS = {"setting", "metric", "value", "std", "values", "source", "note", "quick", "tolerance",
            "below", "above", "order", "monotone", "over", "across", "slack", "less_than",
            "greater_than", "margin", "other_metric", "spread", "some_below", "some_above", "where", "reference",
            "reference_source", "aggregate", "min_seeds"}
CHECKS = {"tolerance": ("tolerance",), "bounds": ("below", "above"), "order": ("order",),
          "monotone": ("monotone",), "compare": ("less_than", "greater_than"), "spread": ("spread",),
          "some": ("some_below", "some_above")}
DIRECTIONS = ("decreasing", "increasing")
AGGREGATES = ("mean", "median")
CONDITION_KEYS = ("metric", "above", "below")
FIT_METRIC_KINDS = ("utility", "defense")  # measured once per defense fit, whatever the attack


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
class Condition:
    """A ``where`` table: another metric that must hold at the same point (< below and/or > above)."""

    metric: str
    below: float | None = None
    above: float | None = None

    @classmethod
    def parse(cls, table: Any, place: str) -> Condition:
        example = "e.g. where = { metric = \"utility.accuracy\", above = 0.95 }"
        if not isinstance(table, dict):
            raise PrivbenchError(f"{place}: 'where' must be a table, {example}")
        unknown = set(table) - set(CONDITION_KEYS)
        if unknown:
            raise PrivbenchError(f"{place}: 'where' has unknown key '{sorted(unknown)[0]}'; accepted: "
                                 + ", ".join(CONDITION_KEYS))
        if not isinstance(table.get("metric"), str) or not table["metric"].strip():
            raise PrivbenchError(f"{place}: 'where' needs a metric, {example}")
        if "above" not in table and "below" not in table:
            raise PrivbenchError(f"{place}: 'where' needs 'above' and/or 'below', {example}")
        return cls(table["metric"], _number(table, "below", f"{place}: where"),
                   _number(table, "above", f"{place}: where"))

    def holds(self, value: float) -> bool:
        return within(value, self.below, self.above)

    def text(self, value: float | None = None) -> str:
        """``utility.accuracy > 0.95``, or with a measured value ``utility.accuracy 0.962 > 0.95``."""
        shown = "" if value is None else f" {value:.3g}"
        return f"{self.metric}{shown} {bound_text(self.below, self.above, value)}"


def within(value: float, below: float | None, above: float | None) -> bool:
    """``value`` < below (when given) and > above (when given)."""
    return (below is None or value < below) and (above is None or value > above)


def bound_text(below: float | None, above: float | None, value: float | None = None) -> str:
    """``< 0.25``, ``> 0.95`` or ``in (0.1, 0.25)``; for a value outside them ``>= 0.25``, ``<= 0.95``,
    ``not in (0.1, 0.25)``."""
    ok = value is None or within(value, below, above)
    if below is not None and above is not None:
        return f"{'in' if ok else 'not in'} ({above:g}, {below:g})"
    if below is not None:
        return f"{'<' if ok else '>='} {below:g}"
    return f"{'>' if ok else '<='} {above:g}"


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
    reference: float | None = None  # the authors' own code's number on the same data: shown, not checked
    reference_source: str = ""
    aggregate: str = "mean"  # over seeds, per point: a key of AGGREGATES
    min_seeds: int = 1
    condition: Condition | None = None  # ``where``: for some_below / some_above

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
    """Read and check the structure of a reproduction config (see ``privbench.reproduce``)."""
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
              note=str(table.get("note", "")), in_quick=bool(table.get("quick", True)),
              reference=_number(table, "reference", place), reference_source=_reference_source(table, place),
              aggregate=_aggregate(table, place), min_seeds=_min_seeds(table, place),
              condition=Condition.parse(table["where"], place) if "where" in table else None)
    _check_row_shape(row, place)
    return row


def _check_kind(table: dict[str, Any], place: str) -> str:
    kinds = [kind for kind, keys in CHECKS.items() if any(key in table for key in keys)]
    if len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise PrivbenchError(f"{place}: needs exactly one check, a tolerance or a shape fact (found: "
                             f"{found}); accepted: tolerance, below/above, order, monotone, "
                             "less_than/greater_than, spread, some_below/some_above")
    return kinds[0]


def _number(table: dict[str, Any], key: str, place: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivbenchError(f"{place}: '{key}' must be a number; got {value!r}")
    return float(value)


def _reference_source(table: dict[str, Any], place: str) -> str:
    """Where the authors' code's number comes from: required with ``reference``, only with it."""
    source = table.get("reference_source")
    if "reference" in table and (not isinstance(source, str) or not source.strip()):
        raise PrivbenchError(f"{place}: 'reference' needs a 'reference_source' (where the authors' "
                             "code's number comes from)")
    if source is not None and "reference" not in table:
        raise PrivbenchError(f"{place}: 'reference_source' without a 'reference' number")
    return source or ""


def _aggregate(table: dict[str, Any], place: str) -> str:
    aggregate = table.get("aggregate", "mean")
    if aggregate not in AGGREGATES:
        raise PrivbenchError(f"{place}: bad aggregate {aggregate!r}; accepted: " + ", ".join(AGGREGATES))
    return aggregate


def _min_seeds(table: dict[str, Any], place: str) -> int:
    count = table.get("min_seeds", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PrivbenchError(f"{place}: 'min_seeds' must be an integer >= 1; got {count!r}")
    return count


def _check_row_shape(row: Row, place: str) -> None:
    """The keys a row's check needs are there, and no point list where one point is meant."""
    spec = row.spec
    points = "across" in spec or "over" in spec
    if "across" in spec and "over" in spec:
        raise PrivbenchError(f"{place}: give 'across' (a list of settings) or 'over' (a swept "
                             "parameter), not both")
    for key in ("tolerance", "slack", "margin", "spread", "below", "above", "some_below", "some_above"):
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
    if row.check == "some" and not points:
        raise PrivbenchError(f"{place}: 'some_below' / 'some_above' need 'across' or 'over', the points "
                             "to search")
    if row.condition is not None and row.check != "some":
        raise PrivbenchError(f"{place}: 'where' goes only with some_below / some_above")
    if row.check == "compare" and points:
        raise PrivbenchError(f"{place}: less_than / greater_than compare two single settings")
    direction = spec.get("order", spec.get("monotone"))
    if row.check in ("order", "monotone") and direction not in DIRECTIONS:
        raise PrivbenchError(f"{place}: bad direction {direction!r}; accepted: " + ", ".join(DIRECTIONS))
    if "over" in spec:
        over_parameter(spec["over"], place)
    if "across" in spec:
        _check_across(spec, place)
    if row.check == "compare":
        Setting.parse(spec.get("less_than", spec.get("greater_than")), place)
    if "other_metric" in spec and row.check != "compare":
        raise PrivbenchError(f"{place}: 'other_metric' goes only with less_than / greater_than")


def _check_across(spec: dict[str, Any], place: str) -> None:
    across = spec["across"]
    if not isinstance(across, list) or len(across) < 2:
        raise PrivbenchError(f"{place}: 'across' needs a list of at least two settings")
    for entry in across:
        Setting.parse(entry, place)
    values = spec.get("values")
    if values is not None and (not isinstance(values, list) or len(values) != len(across)):
        raise PrivbenchError(f"{place}: 'values' needs one published value per 'across' entry")


def over_parameter(text: Any, place: str) -> tuple[str, str]:
    """``over = "defense.lam"`` as (kind, parameter name)."""
    kind, _, name = str(text).partition(".")
    if kind not in KINDS or not name:
        raise PrivbenchError(f"{place}: bad 'over' {text!r}; accepted: KIND.PARAMETER with KIND one of "
                             + ", ".join(KINDS) + ", e.g. \"defense.lam\"")
    return kind, name
