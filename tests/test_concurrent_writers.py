"""Several writers in one store at once, on SQLite and on PostgreSQL: two `privbench matrix`
processes with overlapping cells, stores opened on a fresh database at the same moment, and one cell
saved by several writers at once. PostgreSQL follows the skip / require rule of test_postgres.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from test_postgres import fresh_database, outcome

from privbench.params import parse_spec
from privbench.schedule import MatrixConfig, plan
from privbench.store import Store

DATASET = "digits:limit=300,target_epochs=3"
BOTH = ["--defense", "identity", "--defense", "noise", "--attack", "inverse-network:epochs=2"]
SECOND_ONLY = ["--attack", "attribute-inference:epochs=2"]
SEEDS = [0, 1]
WRITERS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty store URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with fresh_database("writers") as url:
        yield url


def planned_keys(registry, *option_lists: list[str]) -> set[str]:
    """The cell keys `privbench matrix` plans for each option list, together."""
    keys: set[str] = set()
    for options in option_lists:
        pairs = list(zip(options[::2], options[1::2], strict=True))
        config = MatrixConfig(datasets=[parse_spec(DATASET)], seeds=SEEDS,
                              defenses=[parse_spec(v) for k, v in pairs if k == "--defense"],
                              attacks=[parse_spec(v) for k, v in pairs if k == "--attack"])
        keys |= {cell.key for cell in plan(registry, config)}
    return keys


def run_at_once(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str]]:
    """Start every command before waiting for any; (exit code, output) of each."""
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for command in commands]
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        return [(process.returncode, output) for process, output in zip(processes, outputs, strict=True)]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def cell_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as connection:
        return dict(connection.execute(text("select key, count(*) from cells group by key")).all())


def test_two_matrix_processes_with_overlapping_cells_store_each_cell_once(db_url, registry, tmp_path):
    env = {**os.environ, "PRIVBENCH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    matrix = [sys.executable, "-m", "privbench", "matrix", "--db", db_url, "--dataset", DATASET,
              "--seeds", ",".join(map(str, SEEDS)), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    finished = run_at_once([matrix + BOTH, matrix + BOTH + SECOND_ONLY], env)
    assert [code for code, _ in finished] == [0, 0], "\n\n".join(output for _, output in finished)
    store = Store(db_url)
    expected = planned_keys(registry, BOTH, BOTH + SECOND_ONLY)
    assert len(expected) == 8
    assert cell_counts(store) == dict.fromkeys(expected, 1)  # none missing, none twice
    cells = store.cells()
    assert {cell.status for cell in cells} == {"done"}
    assert all(cell.metrics for cell in cells)
    with store.engine.connect() as connection:  # a replaced cell leaves no metrics or artifacts behind
        for table in ("metrics", "artifacts"):
            orphans = f"select count(*) from {table} where cell_id not in (select id from cells)"
            assert connection.execute(text(orphans)).scalar() == 0
    first, second = store.runs()
    assert first.status == second.status == "finished"
    assert first.started_at < second.finished_at and second.started_at < first.finished_at  # overlapped
    for _, output in finished:  # each ran its cells itself (a replaced cell keeps the later run's id)
        assert re.search(r"\d+ cells: \d+ already finished, [1-9]\d* run", output), output
    store.close()


def at_once(work, count: int = WRITERS) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` threads released together; the exceptions they raised."""
    barrier, errors = threading.Barrier(count), []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except Exception as error:  # reported by the test
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_stores_opened_at_once_on_a_fresh_database_share_one_schema(db_url):
    stores: list[Store] = []
    assert at_once(lambda _: stores.append(Store(db_url))) == []
    with stores[0].engine.connect() as connection:
        assert connection.execute(text("select key, value from schema_info")).all() == [("version", "1")]
    for store in stores:
        store.close()


def test_one_cell_saved_by_several_writers_at_once_is_stored_once_whole(db_url):
    stores = [Store(db_url) for _ in range(WRITERS)]
    run = stores[0].start_run({}, {}, "host")

    def save(i: int) -> None:
        stores[i].save_cell(run, outcome("same-key", metrics={"a": i, "b": i, "c": i}))

    assert at_once(save) == []
    assert cell_counts(stores[0]) == {"same-key": 1}
    [cell] = stores[0].cells()
    values = {m.name: m.value for m in cell.metrics}
    assert set(values) == {"a", "b", "c"} and len(set(values.values())) == 1  # one writer's, whole
    with stores[0].engine.connect() as connection:
        assert connection.execute(text("select count(*) from metrics")).scalar() == 3
    for store in stores:
        store.close()
