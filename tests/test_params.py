"""Parameter specs: parsing, coercion, validation with one-line errors."""

from __future__ import annotations

import pytest

from privbench.errors import PrivbenchError
from privbench.params import format_spec, parse_spec
from privbench_plugins.noise import Noise


def test_parse_spec_splits_name_and_pairs():
    assert parse_spec("noise") == ("noise", {})
    assert parse_spec(" noise:scale=0.5, distribution=laplace ") == (
        "noise", {"scale": "0.5", "distribution": "laplace"})


@pytest.mark.parametrize("bad", ["noise:scale", "noise:=3", ":scale=1"])
def test_malformed_specs_are_one_line_errors(bad):
    with pytest.raises(PrivbenchError) as error:
        parse_spec(bad)
    assert "\n" not in error.value.message


def test_values_are_coerced_to_the_declared_types():
    noise = Noise.from_params({"scale": "0.25", "distribution": "laplace"})
    assert noise.scale == 0.25 and noise.distribution == "laplace"
    assert Noise.from_params({"scale": 1}).scale == 1.0


@pytest.mark.parametrize("raw, expected", [
    ({"scale": "loud"}, r"bad value 'loud' for parameter 'scale'; accepted: a number >= 0.0"),
    ({"scale": "-1"}, "accepted: a number >= 0.0"),
    ({"distribution": "cauchy"}, "accepted: one of gaussian, laplace"),
    ({"sigma": "1"}, "unknown parameter 'sigma'; accepted: distribution, scale"),
])
def test_bad_parameters_name_the_problem_and_what_is_accepted(raw, expected):
    with pytest.raises(PrivbenchError, match=expected):
        Noise.from_params(raw)


def test_format_spec_is_canonical():
    assert format_spec("noise", {"scale": 0.5, "distribution": "laplace"}) == \
        "noise:distribution=laplace,scale=0.5"
    assert format_spec("identity", {}) == "identity"
