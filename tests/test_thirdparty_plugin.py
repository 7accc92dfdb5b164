"""A third-party package under tests/ adds a defense and an attack through the entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
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
    """Install the example package into this environment (offline: no deps, no isolation)."""
    try:
        importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "-e", str(SOURCE)], check=True)
        importlib.invalidate_caches()
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
