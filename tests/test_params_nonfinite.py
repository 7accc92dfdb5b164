"""NaN and infinities are refused for float parameters, from CLI specs and from TOML configs alike."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass

import pytest

from privbench.errors import PrivbenchError
from privbench.params import param, parse_spec, validate_params

OWNER = "defense 'noise'"


@dataclass
class Knobs:
    scale: float = param(0.5, "noise scale", minimum=0.0)
    ratio: float = param(0.5, "a ratio", minimum=0.0, maximum=1.0)
    free: float = param(1.0, "an unbounded float")
    epochs: int = param(3, "an integer", minimum=1)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity",
                                  "1e999"])
def test_non_finite_cli_values_are_refused_naming_plugin_parameter_and_accepted(text):
    name, raw = parse_spec(f"noise:scale={text}")
    with pytest.raises(PrivbenchError) as error:
        validate_params(OWNER, Knobs, raw)
    assert error.value.message == (
        f"defense 'noise': scale={text} is not a finite number; accepted: a number >= 0.0")


@pytest.mark.parametrize("key, accepted", [
    ("ratio", "a number >= 0.0 <= 1.0"), ("free", "a number")])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_toml_floats_are_refused(key, accepted, value):
    raw = tomllib.loads(f"{key} = {str(value).replace('+', '')}")
    assert not math.isfinite(raw[key])
    with pytest.raises(PrivbenchError) as error:
        validate_params(OWNER, Knobs, raw)
    message = error.value.message
    assert message.startswith(f"defense 'noise': {key}=")
    assert message.endswith(f"is not a finite number; accepted: {accepted}")
    assert "\n" not in message


def test_toml_nan_and_inf_literals_are_refused():
    raw = tomllib.loads("scale = nan\n")
    with pytest.raises(PrivbenchError, match=r"scale=nan is not a finite number; accepted: "):
        validate_params(OWNER, Knobs, raw)
    raw = tomllib.loads("free = -inf\n")
    with pytest.raises(PrivbenchError, match=r"free=-inf is not a finite number; accepted: a number$"):
        validate_params(OWNER, Knobs, raw)


@pytest.mark.parametrize("value", [math.nan, math.inf, "nan", "inf"])
def test_non_finite_values_for_integer_parameters_are_one_line_errors(value):
    with pytest.raises(PrivbenchError) as error:
        validate_params(OWNER, Knobs, {"epochs": value})
    assert error.value.message.startswith("defense 'noise': bad value ")
    assert "accepted: an integer >= 1" in error.value.message


@pytest.mark.parametrize("text, expected", [("0", 0.0), ("1e3", 1000.0), ("-2.5", -2.5),
                                            (1e308, 1e308)])
def test_finite_values_still_pass(text, expected):
    assert validate_params(OWNER, Knobs, {"free": text})["free"] == expected


def test_builtin_noise_refuses_nan_scale():
    from privbench_plugins.noise import Noise
    with pytest.raises(PrivbenchError) as error:
        Noise.from_params({"scale": "nan"})
    assert error.value.message == (
        "defense 'noise': scale=nan is not a finite number; accepted: a number >= 0.0")
