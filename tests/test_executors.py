"""The executors: local, process and Ray give the same numbers, and shared artifacts train once."""

from __future__ import annotations

import math

import pytest

from privbench.artifacts import ArtifactCache
from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.executors import make_executor
from privbench.harness import Harness
from privbench.matrix import MatrixRunner
from privbench.schedule import MatrixConfig
from privbench.store import Store
from privbench.testing import KIT_SECRET

SMALL = MatrixConfig(
    datasets=[("digits", {"limit": 400, "target_epochs": 4, "target": "digit"})],
    defenses=[("identity", {}), ("noise", {"scale": 0.5}), ("disguised-nets", {})],
    attacks=[("inverse-network", {"epochs": 2}), ("examiner", {"epochs": 3}),
             ("class-membership", {"held_out": 3})],
    seeds=[0, 1])


def run_with(executor: str, tmp_path, registry, **options):
    """The small matrix through ``executor`` with its own cache (everything trains afresh)."""
    store = Store(f"sqlite:///{tmp_path / (executor + '.db')}")
    ctx = RunContext(cache=ArtifactCache(tmp_path / f"cache-{executor}"), secret=KIT_SECRET)
    report = MatrixRunner(registry, store, ctx, executor=executor, threads=1, **options).run(SMALL)
    assert report.failures == [], [f.reason for f in report.failures]
    return store, report


def comparable(store: Store) -> dict:
    """{cell key: (status, metrics without timings)}."""
    return {c.key: (c.status, {m.name: m.value for m in c.metrics if not m.name.startswith("cost.")})
            for c in store.cells()}


def assert_same_numbers(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key, (status, metrics) in left.items():
        assert right[key][0] == status, key
        assert right[key][1].keys() == metrics.keys(), key
        for name, value in metrics.items():
            assert math.isclose(right[key][1][name], value, rel_tol=1e-4, abs_tol=1e-5), (key, name)


@pytest.fixture(scope="module")
def local_run(registry, tmp_path_factory):
    return run_with("local", tmp_path_factory.mktemp("local"), registry)


def test_local_run_covers_done_and_not_applicable_cells(local_run):
    store, report = local_run
    statuses = [c.status for c in store.cells()]
    assert len(statuses) == report.planned == 18
    assert statuses.count("done") == 18  # digits target=digit: every attack applies


def test_process_executor_gives_the_local_numbers(local_run, registry, tmp_path):
    store, report = run_with("process", tmp_path, registry, workers=2)
    assert_same_numbers(comparable(local_run[0]), comparable(store))
    (run,) = store.runs()
    assert run.config["executor"] == "process" and run.config["workers"] == 2
    # what the equal numbers rest on: both runs' processes summed with one torch thread
    assert run.config["torch_threads"] == local_run[0].runs()[0].config["torch_threads"] == 1


def test_ray_executor_gives_the_local_numbers(local_run, registry, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is part of dev: pip install -e '.[dev]'")
    store, _ = run_with("ray", tmp_path, registry, workers=2)
    assert_same_numbers(comparable(local_run[0]), comparable(store))


def test_shared_artifacts_are_trained_once_per_key(local_run, registry, tmp_path):
    """A process run into a cache the local run filled trains nothing: every artifact loads."""
    cache_dir = next(tmp_path.parent.glob("local*/cache-local"), None)
    assert cache_dir is not None
    before = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.pt")}
    store = Store(f"sqlite:///{tmp_path / 'again.db'}")
    ctx = RunContext(cache=ArtifactCache(cache_dir), secret=KIT_SECRET)
    MatrixRunner(registry, store, ctx, executor="process", workers=2, threads=1).run(SMALL)
    after = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.pt")}
    assert after == before  # no artifact rewritten, none added
    assert_same_numbers(comparable(local_run[0]), comparable(store))


def test_bad_executor_settings_are_one_line_errors():
    worker = Harness(RunContext(cache=ArtifactCache(None), secret=KIT_SECRET))
    with pytest.raises(PrivbenchError, match="unknown executor 'threads'; accepted: local, process, ray"):
        make_executor("threads", worker)
    with pytest.raises(PrivbenchError, match="--workers must be at least 1"):
        make_executor("process", worker, workers=0)
    with pytest.raises(PrivbenchError, match="give it a --cache-dir"):
        make_executor("process", worker, workers=1)


def run_with_a_dying_attack(tmp_path, *, trust_plugins: bool):
    """identity x (an attack whose process dies, a counting attack) with one worker process."""
    from plugins_for_tests import EdgeCasePlugins

    from privbench.plugins import load_registry
    registry = load_registry(extra_plugins=[EdgeCasePlugins()])
    config = MatrixConfig(datasets=[("digits", {"limit": 300, "target_epochs": 2})],
                          defenses=[("identity", {})],
                          attacks=[("kills-its-process", {}), ("counting", {})], seeds=[0])
    store = Store(f"sqlite:///{tmp_path / 'dies.db'}")
    ctx = RunContext(cache=ArtifactCache(tmp_path / "cache"), secret=KIT_SECRET, trust_plugins=trust_plugins)
    report = MatrixRunner(registry, store, ctx, executor="process", workers=1, threads=1).run(config)
    return store, report, {c.attack_spec: (c.status, c.reason) for c in store.cells()}


def test_a_worker_process_that_dies_fails_its_cells_and_the_run_goes_on(tmp_path):
    """With --trust-plugins the attack runs in the worker, so its exit kills the worker."""
    store, report, statuses = run_with_a_dying_attack(tmp_path, trust_plugins=True)  # the run returns
    assert set(statuses) == {"kills-its-process", "counting"}
    assert statuses["kills-its-process"][0] == "failed"
    assert "BrokenProcessPool" in statuses["kills-its-process"][1]
    assert statuses["counting"][0] == "done"  # ran on a fresh pool after the first one broke
    assert len(report.failures) == 1 and store.runs()[-1].status == "finished-with-failures"


def test_an_attack_process_that_dies_fails_its_cell_and_leaves_the_worker(tmp_path):
    """Isolated, the attack's own process dies: the worker, its pool and the other cell go on."""
    _, report, statuses = run_with_a_dying_attack(tmp_path, trust_plugins=False)
    assert statuses["kills-its-process"] == (
        "failed", "attack 'kills-its-process': its process exited before it returned a result")
    assert statuses["counting"][0] == "done"
    assert len(report.failures) == 1
