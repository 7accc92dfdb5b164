"""Shared fixtures: tiny digits scenarios, a fresh registry, a matrix run into a temporary store."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from privbench.artifacts import ArtifactCache
from privbench.context import RunContext
from privbench.matrix import MatrixConfig, MatrixRunner
from privbench.plugins import load_registry
from privbench.store import Store
from privbench.testing import KIT_SECRET

# The example third-party plugin (tests/example_plugin) is found through its entry points, from the
# metadata beside its module, on sys.path for this session and on PYTHONPATH for the processes the
# tests start: never installed, so the test command leaves the user's environment as it was.
EXAMPLE_PLUGIN = Path(__file__).parent / "example_plugin"
if str(EXAMPLE_PLUGIN) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_PLUGIN))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLE_PLUGIN), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()

# Few epochs keep every end-to-end test at seconds on 2 CPU cores.
FAST_DIGITS = ("digits", {"target_epochs": 15})


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Keep PRIVBENCH_HOME (cache, data) out of the user's home; one per session, shared."""
    home = tmp_path_factory.getbasetemp() / "privbench-home"
    monkeypatch.setenv("PRIVBENCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> ArtifactCache:
    """One artifact cache for the session, so each target model trains once."""
    return ArtifactCache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def registry():
    return load_registry()


def run_matrix(registry, db_url: str, cache: ArtifactCache, *, datasets=(FAST_DIGITS,),
               defenses=(), attacks=(), seeds=(0,), trust_plugins=False):
    """Run a matrix into ``db_url`` and return (store, report)."""
    store = Store(db_url)
    config = MatrixConfig(datasets=list(datasets), defenses=list(defenses), attacks=list(attacks),
                          seeds=list(seeds))
    ctx = RunContext(cache=cache, secret=KIT_SECRET, trust_plugins=trust_plugins)
    report = MatrixRunner(registry, store, ctx).run(config)
    return store, report


def metrics_by_cell(store: Store) -> dict[tuple[str, str, int], dict[str, float]]:
    """{(defense spec, attack spec, seed): metrics} of the done cells."""
    return {(c.defense_spec, c.attack_spec, c.seed): {m.name: m.value for m in c.metrics}
            for c in store.cells() if c.status == "done"}


@pytest.fixture(scope="session")
def behaviour_run(registry, shared_cache, tmp_path_factory):
    """One matrix shared by the behaviour tests: identity and weak / strong noise on digits."""
    db = tmp_path_factory.mktemp("behaviour") / "privbench.db"
    store, report = run_matrix(
        registry, f"sqlite:///{db}", shared_cache,
        defenses=[("identity", {}), ("noise", {"scale": [0.05, 2.0]})],
        attacks=[("inverse-network", {"epochs": 30}), ("attribute-inference", {"epochs": 15})])
    return store, report, metrics_by_cell(store)
