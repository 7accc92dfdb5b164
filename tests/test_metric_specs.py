"""Metric specs: declared once, read by every report; the README's table is generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from privbench.errors import PrivbenchError
from privbench.metrics import METRICS, MetricSpec, check_values, markdown_table, register_metric, unit

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_carries_the_generated_metric_table():
    assert markdown_table() in (ROOT / "README.md").read_text(), \
        "README.md's metric table is out of date: run python -m privbench.metrics README.md"


def test_every_spec_has_a_unit_direction_and_meaning():
    for spec in METRICS.values():
        assert spec.better in ("higher", "lower", "none") and spec.meaning and spec.computed
    assert unit("attack.psnr") == "dB" and unit("no.such") == ""


def test_a_value_out_of_its_range_or_not_finite_is_refused():
    assert check_values({"privacy.score": 0.5}, "attack 'x'") == {"privacy.score": 0.5}
    for bad in (float("nan"), float("inf"), 1.5):
        with pytest.raises(PrivbenchError, match="privacy.score"):
            check_values({"privacy.score": bad}, "attack 'x'")
    with pytest.raises(PrivbenchError, match="no registered metric"):
        check_values({"attack.unknown": 1.0}, "attack 'x'")


def test_a_name_cannot_be_declared_twice_with_different_meanings():
    spec = MetricSpec("attack.test_only", "", "none", "a test metric", "by a test")
    register_metric(spec)
    register_metric(spec)  # the same spec again is fine (a plugin loaded twice)
    with pytest.raises(PrivbenchError, match="declared twice"):
        register_metric(MetricSpec("attack.test_only", "s", "none", "another", "by a test"))
    with pytest.raises(PrivbenchError, match="starts with one of"):
        register_metric(MetricSpec("speed", "", "none", "no kind", "x"))
    del METRICS["attack.test_only"]
