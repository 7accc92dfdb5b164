"""A third-party package under tests/ adds a defense and an attack through the entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from privbench.cli import main
from privbench.plugins import load_registry

PACKAGE = "privbench-example-plugin"
SOURCE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module")
def installed_example_plugin():
    """The example package, found through its entry points on sys.path (tests/conftest.py puts it
    there with its metadata; it is never installed into the environment)."""
    return importlib.metadata.distribution(PACKAGE)


def test_third_party_plugins_are_listed_with_their_package(installed_example_plugin):
    result = CliRunner().invoke(main, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    defenses = {d["name"]: d for d in listing["defenses"]}
    attacks = {a["name"]: a for a in listing["attacks"]}
    assert defenses["box-blur"]["package"] == PACKAGE
    assert defenses["box-blur"]["version"] == installed_example_plugin.version
    assert attacks["linear-inversion"]["requires"] == ["query"]


def test_third_party_plugins_run_in_a_matrix(installed_example_plugin, tmp_path, shared_cache):
    from conftest import metrics_by_cell, run_matrix
    registry = load_registry()
    store, report = run_matrix(registry, f"sqlite:///{tmp_path / 'p.db'}", shared_cache,
                               defenses=[("box-blur", {"cell": [1, 4]})],
                               attacks=[("linear-inversion", {})])
    assert report.failures == []
    runs = metrics_by_cell(store)
    sharp = runs[("box-blur:cell=1", "linear-inversion", 0)]
    blurred = runs[("box-blur:cell=4", "linear-inversion", 0)]
    assert sharp["attack.psnr"] > blurred["attack.psnr"]
    assert store.runs()[-1].versions[PACKAGE] == installed_example_plugin.version


def test_the_example_plugins_metadata_matches_its_pyproject():
    """The metadata the tests find it by says what its pyproject says (name, version, entry points)."""
    import tomllib
    project = tomllib.loads((SOURCE / "pyproject.toml").read_text())["project"]
    [info] = SOURCE.glob("*.dist-info")
    metadata = (info / "METADATA").read_text()
    assert f"Name: {project['name']}" in metadata and f"Version: {project['version']}" in metadata
    points = (info / "entry_points.txt").read_text().split()
    assert points[0] == "[privbench]"
    assert {f"{k}={v}" for k, v in project["entry-points"]["privbench"].items()} == {"".join(points[1:])}


def test_the_test_suite_installs_no_plugin_into_the_environment():
    """Outside the tests' sys.path the environment has no example plugin: a user's later
    `privbench matrix` runs only what they installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import importlib.metadata as m, sys\n"
             "names = {d.metadata['Name'] for d in m.distributions()}\n"
             "sys.exit(1 if 'privbench-example-plugin' in names else 0)")
    assert subprocess.run([sys.executable, "-c", probe], env=env, cwd=SOURCE.parent.parent).returncode == 0
    listed = subprocess.run([sys.executable, "-m", "privbench", "list", "--format", "json"], env=env,
                            capture_output=True, text=True, cwd=SOURCE.parent.parent)
    assert listed.returncode == 0 and "box-blur" not in listed.stdout
