"""Untrusted plugin code cannot see the truth, game the score or stall a run.

``tests/cheaters`` is a third-party package written to win the leaderboard by any means: an attack
for each route (the view's attributes and closures, the garbage collector, stack frames, files, the
public seed, patching privbench and torch, torch's global switches), a two-faced defense, a fit that
peeks, an attack that sleeps, one that calls ``sys.exit`` and one that raises ``KeyboardInterrupt``,
and a module that raises on import. Each cheat reports ``attack.cheat_found`` when its route
worked; its twin with ``cheat=false`` is the honest attack it falls back to.

The package is found through its entry points on ``PYTHONPATH`` in a subprocess, never installed
into this environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privbench.store import Store

pytestmark = pytest.mark.slow

CHEATERS = Path(__file__).parent / "cheaters"
DATASET = "digits:limit=400,target_epochs=2"
ROUTES = ("cheat-attributes", "cheat-gc", "cheat-frames", "cheat-files", "cheat-patch")


def matrix_config(path: Path, attacks: list[str], *, timeout: float,
                  defenses=("identity", "two-faced", "peeking-fit"), tables: str = "") -> Path:
    """A TOML matrix of the cheaters; ``tables``: further [[attack]] tables (a TOML file, since a
    cheat's parameters may hold commas and paths)."""
    quoted = ", ".join(f'"{name}"' for name in attacks)
    path.write_text(f'datasets = ["{DATASET}"]\n'
                    f'defenses = [{", ".join(chr(34) + d + chr(34) for d in defenses)}]\n'
                    f"cell_timeout = {timeout}\nattacks = [{quoted}]\n{tables}")
    return path


def files_tables(db: Path, home: Path) -> str:
    """The files cheat, told where the store and the cache are, and its honest twin."""
    return (f'[[attack]]\nname = "cheat-files"\npaths = "{db};{home}"\n'
            '[[attack]]\nname = "cheat-files"\ncheat = false\n')


def run_privbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRIVBENCH_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(CHEATERS), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "privbench.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


def cells_of(db: Path) -> dict[tuple[str, str, bool], object]:
    """(defense spec, attack name, whether it cheats) -> the stored cell."""
    store = Store(f"sqlite:///{db}", create=False)
    try:
        return {(cell.defense_spec, cell.attack, cell.attack_params.get("cheat", True)): cell
                for cell in store.cells()}
    finally:
        store.close()


def metrics(cell) -> dict[str, float]:
    return {metric.name: metric.value for metric in cell.metrics}


DEFENSES = ("identity", "two-faced", "peeking-fit")
FAILING = ("cheat-globals", "exiter", "interrupter")


@pytest.fixture(scope="module", params=["local", "process", "ray"])
def cheated_run(request, tmp_path_factory):
    """The cheaters' matrix under one executor: its exit, its output and its stored cells."""
    if request.param == "ray":
        pytest.importorskip("ray", reason="the ray extra is part of dev: pip install -e '.[dev]'")
    tmp_path = tmp_path_factory.mktemp(f"cheaters-{request.param}")
    db, home = tmp_path / "cheated.db", tmp_path / "home"
    memory_routes = [route for route in ROUTES if route != "cheat-files"]
    attacks = [*memory_routes, *(f"{route}:cheat=false" for route in memory_routes), *FAILING,
               "inverse-network:epochs=2"]
    config = matrix_config(tmp_path / "matrix.toml", attacks, timeout=120, tables=files_tables(db, home))
    done = run_privbench(tmp_path, "matrix", "-c", str(config), "--db", f"sqlite:///{db}", "--quiet",
                         "--executor", request.param, "--workers", "2")
    return done, cells_of(db)


def test_the_run_goes_on_past_every_cheat_and_exits_non_zero(cheated_run):
    done, cells = cheated_run
    assert done.returncode == 1, done.stderr[-3000:]
    assert "broken plugin: plugin 'broken'" in done.stderr  # listed, and it blocked nothing
    assert len(cells) == len(DEFENSES) * (2 * len(ROUTES) + len(FAILING) + 1)  # every cell stored
    failed = {key for key, cell in cells.items() if cell.status != "done"}
    assert failed == {(defense, attack, True) for defense in DEFENSES for attack in FAILING}, \
        [(key, cells[key].reason) for key in failed]


def test_sys_exit_and_keyboard_interrupt_fail_their_cell_with_one_line(cheated_run):
    _, cells = cheated_run
    assert "SystemExit: plugin code called sys.exit(0)" in cells[("identity", "exiter", True)].reason
    assert "KeyboardInterrupt raised by plugin code" in cells[("identity", "interrupter", True)].reason
    reason = cells[("identity", "cheat-globals", True)].reason
    assert "changed torch's global state" in reason and "grad_mode True -> False" in reason


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_reaches_the_truth_and_no_cheat_scores_better_than_its_honest_twin(cheated_run, route):
    _, cells = cheated_run
    for defense in DEFENSES:
        cheat = metrics(cells[(defense, route, True)])
        honest = metrics(cells[(defense, route, False)])
        assert cheat["attack.cheat_found"] == 0.0, f"{route} reached the harness against {defense}"
        assert cheat["privacy.score"] == pytest.approx(honest["privacy.score"], abs=1e-9)
        assert cheat["attack.ssim"] == pytest.approx(honest["attack.ssim"], abs=1e-9)
        assert cheat["attack.ssim"] < 0.9  # the patched scorer's 1.000 never reached the harness


def test_a_two_faced_defense_is_measured_on_what_the_attacker_sees(cheated_run):
    _, cells = cheated_run
    two_faced = metrics(cells[("two-faced", "inverse-network", True)])
    identity = metrics(cells[("identity", "inverse-network", True)])
    assert two_faced["utility.accuracy"] == pytest.approx(identity["utility.accuracy"], abs=1e-9)
    assert two_faced["privacy.score"] <= identity["privacy.score"] + 0.05  # nothing hidden from it


def test_a_peeking_fit_finds_nothing(cheated_run):
    _, cells = cheated_run
    peeked = [metrics(cell)["defense.peeked"] for (defense, _, _), cell in cells.items()
              if defense == "peeking-fit" and cell.status == "done"]
    assert peeked and set(peeked) == {0.0}


def test_the_public_seed_rebuilds_nothing(tmp_path):
    """The seed cheat predicts the private digit of each observed image from the split it rebuilt
    from the public seed. Without the secret that split is the run's and it scores 1.0 (next test);
    with it, the labels belong to other images: chance is 0.1 on ten classes (0.16 is the highest
    seen here, on 80 test images), far from anything learned."""
    db = tmp_path / "seed.db"
    tables = f'[[attack]]\nname = "cheat-seed"\ndataset = "{DATASET}"\n'
    config = matrix_config(tmp_path / "m.toml", [], timeout=120, defenses=("identity",), tables=tables)
    config.write_text(config.read_text().replace("attacks = []\n", ""))
    done = run_privbench(tmp_path, "matrix", "-c", str(config), "--db", f"sqlite:///{db}", "--quiet")
    cells = cells_of(db)
    assert done.returncode == 0, done.stderr[-2000:]
    assert metrics(cells[("identity", "cheat-seed", True)])["attack.accuracy"] < 0.3


def test_the_seed_cheat_is_real_without_a_secret():
    """Through a harness whose streams come from the seed alone (no secret), the same cheat reads
    every test label: the secret, not the cheat's weakness, is what stops it."""
    import importlib

    from privbench.context import RunContext
    from privbench.harness import Harness
    from privbench.testing import run_cell
    sys.path.insert(0, str(CHEATERS))
    try:
        cheaters = importlib.import_module("privbench_cheaters")
        runner = Harness(RunContext(secret=None, trust_plugins=True))
        found = run_cell("identity", cheaters.CheatSeed, attack_params={"dataset": DATASET},
                         dataset_params={"limit": 400, "target_epochs": 2}, runner=runner)
    finally:
        sys.path.remove(str(CHEATERS))
    assert found["attack.accuracy"] == 1.0


def test_a_sleeping_attack_is_timed_out_and_the_run_goes_on(tmp_path):
    db = tmp_path / "sleep.db"
    config = matrix_config(tmp_path / "m.toml", ["sleeper", "inverse-network:epochs=1"], timeout=8,
                           defenses=("identity",))
    started = time.monotonic()
    done = run_privbench(tmp_path, "matrix", "-c", str(config), "--db", f"sqlite:///{db}", "--quiet")
    elapsed = time.monotonic() - started
    cells = cells_of(db)
    assert done.returncode == 1
    sleeper = cells[("identity", "sleeper", True)]
    assert sleeper.status == "timed-out" and "past its limit of 8 s" in sleeper.reason
    assert cells[("identity", "inverse-network", True)].status == "done"
    assert elapsed < 8 + 60  # the limit, plus start-up and the other cell


def test_the_cheats_are_real_when_plugins_are_trusted(tmp_path):
    """With --trust-plugins (one process, no isolation) the in-memory routes reach the truth: the
    isolation, not the cheats' weakness, is what stops them."""
    db = tmp_path / "trusted.db"
    config = matrix_config(tmp_path / "m.toml", ["cheat-attributes", "cheat-gc", "cheat-frames"],
                           timeout=120, defenses=("identity",))
    done = run_privbench(tmp_path, "matrix", "-c", str(config), "--db", f"sqlite:///{db}", "--quiet",
                         "--trust-plugins")
    cells = cells_of(db)
    assert done.returncode == 0, done.stderr[-2000:]
    for route in ("cheat-attributes", "cheat-gc", "cheat-frames"):
        found = metrics(cells[("identity", route, True)])
        assert found["attack.cheat_found"] == 1.0 and found["attack.ssim"] > 0.99, route
    store = Store(f"sqlite:///{db}", create=False)
    assert store.runs()[-1].config["isolation"].startswith("trusted")
    store.close()


@pytest.fixture()
def cheaters():
    """The cheaters' module, imported in this process (for the conformance kit's own checks)."""
    import importlib
    sys.path.insert(0, str(CHEATERS))
    try:
        yield importlib.import_module("privbench_cheaters")
    finally:
        sys.path.remove(str(CHEATERS))


def test_the_kit_catches_an_attack_that_reads_the_harness(cheaters):
    import gc

    from privbench.testing import check_no_decoy_match
    kwargs = {"defense": "identity", "dataset_params": {"limit": 400, "target_epochs": 2}}
    gc.collect()  # earlier tests' unreachable harnesses would otherwise be the first the cheat finds
    with pytest.raises(AssertionError, match="decoy test images"):
        check_no_decoy_match(cheaters.CheatGc, dict(kwargs), trust_plugins=True)
    check_no_decoy_match(cheaters.CheatGc, dict(kwargs))  # isolated, the cheat finds nothing to copy


def test_the_kit_catches_a_defense_that_answers_queries_differently(cheaters):
    from privbench.testing import check_defense
    with pytest.raises(AssertionError, match="encode differently as the owner's and as queries"):
        check_defense(cheaters.TwoFaced, trust_plugins=True)
    check_defense(cheaters.TwoFaced)  # isolated, every batch is the first of its process
