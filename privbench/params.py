"""Plugin parameters: declared as dataclass fields, parsed from ``name:key=value,...`` specs.

A plugin class is a dataclass; each field is a parameter with a type, a default and a help text
(``param(default, "help")``). The same declaration validates CLI specs and TOML configs and is what
``privbench list`` shows.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from privbench.errors import PrivbenchError, accepted

TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}


def param(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
          maximum: float | None = None, infinite: bool = False) -> Any:
    """Declare a plugin parameter (a dataclass field) with its help text and accepted values.

    A float parameter rejects NaN and infinities unless ``infinite`` says +inf is a meaningful
    setting (e.g. a differential-privacy epsilon of inf: no noise)."""
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                "infinite": infinite}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ParamInfo:
    """One declared parameter of a plugin, as ``privbench list`` shows it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    infinite: bool = False

    def describe_accepted(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        text = kind.get(self.type, self.type.__name__)
        if self.minimum is not None:
            text += f" >= {self.minimum}"
        if self.maximum is not None:
            text += f" <= {self.maximum}"
        if self.infinite:
            text += " (or inf)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.__name__, "default": self.default,
                "help": self.help, "accepted": self.describe_accepted()}


def parameters_of(cls: type) -> list[ParamInfo]:
    """The declared parameters of a plugin class, in declaration order."""
    hints = typing.get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = f.metadata
        infos.append(ParamInfo(f.name, hints[f.name], f.default, meta.get("help", ""),
                               meta.get("choices"), meta.get("minimum"), meta.get("maximum"),
                               meta.get("infinite", False)))
    return infos


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` into the name and its raw parameters."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise PrivbenchError(f"empty plugin name in spec {text!r}; expected NAME or NAME:key=value,...")
    raw: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise PrivbenchError(
                f"bad parameter {item!r} in spec {text!r}; expected key=value pairs separated by commas")
        raw[key.strip()] = value.strip()
    return name, raw


def coerce_value(owner: str, info: ParamInfo, value: Any) -> Any:
    """Convert a raw (string or TOML) value to the parameter's type, or fail with one line."""
    def bad() -> PrivbenchError:
        return PrivbenchError(
            f"{owner}: bad value {value!r} for parameter '{info.name}'; accepted: {info.describe_accepted()}")

    try:
        if info.type is bool:
            if isinstance(value, bool):
                converted = value
            elif str(value).lower() in TRUE_WORDS | FALSE_WORDS:
                converted = str(value).lower() in TRUE_WORDS
            else:
                raise bad()
        elif info.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise bad()
            converted = int(value)
        elif info.type is float:
            if isinstance(value, bool):
                raise bad()
            converted = float(value)
            if not math.isfinite(converted) and not (info.infinite and converted == math.inf):
                raise PrivbenchError(
                    f"{owner}: {info.name}={value} is not a finite number; "
                    f"accepted: {info.describe_accepted()}")
        else:
            converted = info.type(value)
    except (TypeError, ValueError):
        raise bad() from None
    if info.choices and converted not in info.choices:
        raise bad()
    if info.minimum is not None and converted < info.minimum:
        raise bad()
    if info.maximum is not None and converted > info.maximum:
        raise bad()
    return converted


def validate_params(owner: str, cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of ``cls`` with its value: the given ones coerced, the rest at defaults."""
    infos = {info.name: info for info in parameters_of(cls)}
    unknown = set(raw) - set(infos)
    if unknown:
        raise PrivbenchError(
            f"{owner}: unknown parameter '{sorted(unknown)[0]}'; accepted: {accepted(infos)}")
    return {name: coerce_value(owner, info, raw[name]) if name in raw else info.default
            for name, info in infos.items()}


def format_spec(name: str, params: dict[str, Any]) -> str:
    """The canonical spec text, ``name:key=value,...`` with keys sorted (``name`` alone if none)."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(params[k])}" for k in sorted(params))


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
