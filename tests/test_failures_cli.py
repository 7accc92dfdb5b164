"""Plugin development: results --failures shows every failed cell's traceback, --fail-fast stops."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FAST_DIGITS
from plugins_for_tests import EdgeCasePlugins

from privbench.cli import main
from privbench.context import RunContext
from privbench.matrix import FailFast, MatrixConfig, MatrixRunner
from privbench.plugins import load_registry
from privbench.store import Store
from privbench.testing import KIT_SECRET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge_registry():
    return load_registry(extra_plugins=[EdgeCasePlugins()])


def test_results_failures_prints_the_reason_and_the_traceback(edge_registry, tmp_path, shared_cache):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    config = MatrixConfig(datasets=[FAST_DIGITS], defenses=[("identity", {})],
                          attacks=[("crashing", {}), ("counting", {})])
    MatrixRunner(edge_registry, Store(db), RunContext(cache=shared_cache, secret=KIT_SECRET)).run(config)
    text = CliRunner().invoke(main, ["results", "--db", db, "--failures"]).stdout
    assert "failed: digits" in text and "crashing" in text
    assert "RuntimeError: the attack broke on purpose" in text and "Traceback" in text
    assert "counting" not in text and "1 failed cell(s)" in text
    rows = json.loads(CliRunner().invoke(main, ["results", "--db", db, "--failures",
                                                "--format", "json"]).stdout)
    assert [row["attack"] for row in rows] == ["crashing"] and "Traceback" in rows[0]["error"]


def test_fail_fast_stops_at_the_first_failed_cell_and_keeps_it(edge_registry, tmp_path, shared_cache):
    store = Store(f"sqlite:///{tmp_path / 'ff.db'}")
    config = MatrixConfig(datasets=[FAST_DIGITS], defenses=[("identity", {})],
                          attacks=[("crashing", {}), ("counting", {})])
    runner = MatrixRunner(edge_registry, store, RunContext(cache=shared_cache, secret=KIT_SECRET), fail_fast=True)
    with pytest.raises(FailFast) as stopped:
        runner.run(config)
    assert stopped.value.outcome.attack == "crashing"
    statuses = {cell.attack: cell.status for cell in store.cells()}
    assert statuses["crashing"] == "failed"
    assert store.runs()[-1].status == "stopped-at-failure"
