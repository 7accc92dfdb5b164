"""Matrix mechanics: sweeps, resume, failures, not-applicable cells, interruption, caching."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import FAST_DIGITS, metrics_by_cell, run_matrix
from plugins_for_tests import EdgeCasePlugins

from privbench.artifacts import ArtifactCache, SharedArtifacts
from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.matrix import MatrixRunner
from privbench.plugins import load_registry
from privbench.schedule import MatrixConfig, expand, plan
from privbench.store import Store
from privbench.testing import KIT_SECRET


@pytest.fixture(scope="module")
def edge_registry():
    return load_registry(extra_plugins=[EdgeCasePlugins()])


def test_default_plan_is_every_defense_by_every_attack_on_digits_seed_0(registry):
    cells = plan(registry, MatrixConfig())
    assert {c.dataset.name for c in cells} == {"digits"} and {c.seed for c in cells} == {0}
    pairs = {(c.defense.name, c.attack.name) for c in cells}
    assert pairs == {(d, a) for d in registry.names("defense") for a in registry.names("attack")}


def test_a_list_value_is_a_sweep_and_labels_show_only_changed_parameters(registry):
    calls = expand(registry, "defense", [("noise", {"scale": [0.1, 0.3, 1.0]})])
    assert [c.spec for c in calls] == ["noise:scale=0.1", "noise", "noise:scale=1.0"]
    assert all(c.params["distribution"] == "gaussian" for c in calls)


def test_cell_key_uses_full_parameters(registry):
    explicit = plan(registry, MatrixConfig(defenses=[("noise", {"scale": 0.3})],
                                           attacks=[("inverse-network", {})]))
    default = plan(registry, MatrixConfig(defenses=[("noise", {})],
                                          attacks=[("inverse-network", {})]))
    assert explicit[0].key == default[0].key
    other_seed = plan(registry, MatrixConfig(defenses=[("noise", {})],
                                             attacks=[("inverse-network", {})], seeds=[1]))
    assert other_seed[0].key != default[0].key
    newer = dataclasses.replace(default[0], attack=dataclasses.replace(default[0].attack, version="2.0"))
    assert newer.key != default[0].key  # a plugin's package version is part of the key


def test_unknown_names_fail_before_anything_runs(registry):
    with pytest.raises(PrivbenchError, match="unknown attack 'rmle2'; accepted:"):
        plan(registry, MatrixConfig(attacks=[("rmle2", {})]))


def test_failed_and_not_applicable_cells_are_stored_and_the_run_goes_on(edge_registry, tmp_path,
                                                                        shared_cache):
    store, report = run_matrix(edge_registry, f"sqlite:///{tmp_path / 'e.db'}", shared_cache,
                               defenses=[("identity", {}), ("sealed", {})],
                               attacks=[("crashing", {}), ("counting", {})])
    cells = {(c.defense, c.attack): c for c in store.cells()}
    crashed = cells[("identity", "crashing")]
    assert crashed.status == "failed"
    assert "RuntimeError: the attack broke on purpose" == crashed.reason
    assert "Traceback" in crashed.error and "plugins_for_tests.py" in crashed.error
    assert cells[("identity", "counting")].status == "done"
    sealed = cells[("sealed", "counting")]
    assert sealed.status == "not-applicable"
    assert sealed.reason == ("attack 'counting' needs query the encoder with inputs of the "
                             "attacker's choice; the sealed encoder answers no queries")
    assert len(report.failures) == 1
    assert store.runs()[-1].status == "finished-with-failures"


def test_rerun_skips_finished_cells_and_retries_failed_ones(edge_registry, tmp_path, shared_cache):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = dict(defenses=[("identity", {})], attacks=[("counting", {}), ("crashing", {})])
    _, first = run_matrix(edge_registry, url, shared_cache, **config)
    assert len(first.outcomes) == 2
    store, second = run_matrix(edge_registry, url, shared_cache, **config)
    assert second.skipped == 1
    assert [o.attack for o in second.outcomes] == ["crashing"]
    assert len(store.cells()) == 2  # the failed cell was replaced, not duplicated


def test_interruption_keeps_every_finished_cell(edge_registry, tmp_path, shared_cache):
    """A Ctrl-C while a cell runs (simulated in-process: with --trust-plugins a KeyboardInterrupt
    of the plugin's code is the run's; isolated, it would only fail its cell)."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    with pytest.raises(KeyboardInterrupt):
        run_matrix(edge_registry, url, shared_cache, defenses=[("identity", {})],
                   attacks=[("counting", {}), ("interrupting", {})], trust_plugins=True)
    store = Store(url)
    # the finished cell is kept; the one that was running is recorded as interrupted (rerun later)
    assert [(c.attack, c.status) for c in store.cells()] == [("counting", "done"),
                                                           ("interrupting", "interrupted")]
    assert "interrupting" not in {c.attack for c in store.cells() if c.key in store.finished_keys()}
    assert store.runs()[-1].status == "interrupted"


def test_target_model_is_trained_once_and_reused_from_the_cache(registry, tmp_path, monkeypatch):
    trained = []
    train_target = SharedArtifacts._train_target

    def counting_train_target(self, scenario):
        trained.append(scenario.seed)
        return train_target(self, scenario)

    monkeypatch.setattr(SharedArtifacts, "_train_target", counting_train_target)
    config = MatrixConfig(datasets=[("digits", {"target_epochs": 2})],
                          defenses=[("identity", {})], attacks=[("inverse-network", {"epochs": 1})])
    for db in ("a.db", "b.db"):  # a second run with a fresh store and cache object hits the disk cache
        context = RunContext(cache=ArtifactCache(tmp_path / "cache"), secret=KIT_SECRET)
        MatrixRunner(registry, Store(f"sqlite:///{tmp_path / db}"), context).run(config)
    assert trained == [0]
    assert len(list((tmp_path / "cache" / "target-model").glob("*.pt"))) == 1


def test_same_seed_gives_the_same_metrics(registry, tmp_path):
    config = dict(datasets=[("digits", {"target_epochs": 2})], defenses=[("noise", {})],
                  attacks=[("attribute-inference", {"epochs": 2})])
    results = []
    for name in ("x", "y"):
        store, _ = run_matrix(registry, f"sqlite:///{tmp_path / name}.db",
                              ArtifactCache(tmp_path / name), **config)
        results.append({m.name: m.value for m in store.cells()[0].metrics
                        if not m.name.startswith("cost.")})
    assert results[0] == results[1]


def test_trusted_and_isolated_parties_give_the_same_metrics(registry, tmp_path):
    """--trust-plugins changes where plugin code runs, not what it draws: a stochastic encoder
    (noise) queried in the middle of an attack that trains with random draws gives the same cell.
    (Before the trusted encoder followed the isolated sessions' seeds, the two differed.)"""
    config = dict(datasets=[("digits", {"target_epochs": 2})], defenses=[("noise", {"scale": 0.3})],
                  attacks=[("attribute-inference", {"epochs": 2}), ("known-plaintext", {})])
    results = []
    for trusted in (False, True):
        name = "trusted" if trusted else "isolated"
        store, _ = run_matrix(registry, f"sqlite:///{tmp_path / name}.db",
                              ArtifactCache(tmp_path / "cache"), trust_plugins=trusted, **config)
        results.append({key: {n: v for n, v in metrics.items() if not n.startswith("cost.")}
                        for key, metrics in metrics_by_cell(store).items()})
    assert len(results[0]) == 2 and results[0] == results[1]


def test_results_carry_mean_and_spread_across_seeds(registry, tmp_path, shared_cache):
    from privbench.store import summarize
    store, _ = run_matrix(registry, f"sqlite:///{tmp_path / 's.db'}", shared_cache,
                          datasets=[FAST_DIGITS], defenses=[("identity", {})],
                          attacks=[("attribute-inference", {"epochs": 3})], seeds=[0, 1])
    (row,) = summarize(store.cells())
    accuracy = row["metrics"]["attack.accuracy"]
    assert row["seeds"] == [0, 1] and accuracy["n"] == 2
    values = sorted(m.value for c in store.cells() for m in c.metrics if m.name == "attack.accuracy")
    assert accuracy["std"] > 0 and values[0] <= accuracy["mean"] <= values[1]


def test_every_bad_spec_is_reported_at_once(registry):
    """A misspelt defense, a bad attack parameter and a bad dataset value: three lines, one run of
    the planner, nothing trained."""
    config = MatrixConfig(datasets=[("digits", {"limit": -3})], defenses=[("idnetity", {})],
                          attacks=[("rmle", {"iterations": -5}), ("examiner", {})], seeds=[])
    with pytest.raises(PrivbenchError) as raised:
        plan(registry, config)
    lines = raised.value.format_message().splitlines()
    assert len(lines) == 4, lines
    assert "limit" in lines[0] and "unknown defense 'idnetity'" in lines[1]
    assert "iterations" in lines[2] and "no seeds given" in lines[3]


def test_the_cli_prints_every_spec_error(tmp_path):
    from click.testing import CliRunner

    from privbench.cli import main
    result = CliRunner().invoke(main, ["matrix", "--defense", "idnetity", "--attack", "rmle:iterations=-5",
                                       "--db", str(tmp_path / "x.db"), "--quiet"])
    assert result.exit_code == 2
    assert "unknown defense 'idnetity'" in result.output and "iterations" in result.output
    assert not (tmp_path / "x.db").exists()
