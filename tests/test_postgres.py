"""PostgreSQL as the store: schema, cells, and every command run against it.

The server comes from PRIVBENCH_TEST_POSTGRES_URL (a postgresql+psycopg:// URL of a role that may
create databases; .ci/run sets it up). Without it these tests skip, unless PRIVBENCH_REQUIRE_POSTGRES=1
(as in CI): then they fail, so CI never silently skips them. Every test works in a database of its own,
created here under a unique name and dropped afterwards, so reruns start clean.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from privbench.cli import main
from privbench.core import Artifact
from privbench.errors import PrivbenchError
from privbench.store import CellOutcome, Store, summarize

URL_VARIABLE = "PRIVBENCH_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "PRIVBENCH_REQUIRE_POSTGRES"
MATRIX = ["--dataset", "digits:limit=300,target_epochs=3", "--defense", "identity", "--defense", "noise",
          "--attack", "inverse-network:epochs=2", "--attack", "attribute-inference:epochs=2",
          "--seeds", "0,1", "--quiet"]


def postgres_server_url() -> str:
    """The test server's URL; skip without one, or fail where PostgreSQL is required."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    reason = f"{URL_VARIABLE} is not set (a postgresql+psycopg:// URL of a role that may create databases)"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new, uniquely named database on the test server, dropped afterwards; yields its URL."""
    server = make_url(postgres_server_url())
    name = f"privbench_test_{label}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("store") as url:
        yield url


def outcome(key: str = "k1", *, seed: int = 0, status: str = "done", metrics=None, artifacts=(),
            **changes) -> CellOutcome:
    """A stored outcome as the matrix hands it over, with small defaults."""
    started = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    return CellOutcome(
        key=key, dataset="digits", dataset_spec="digits", dataset_params={"limit": 300, "tasks": ["a", "b"]},
        defense="noise", defense_spec="noise:scale=0.5", defense_params={"scale": 0.5},
        attack="inverse-network", attack_spec="inverse-network", attack_params={"epochs": 2},
        seed=seed, threat_model="black-box", status=status, started_at=started,
        finished_at=started + dt.timedelta(seconds=1.5), metrics=dict(metrics or {}),
        artifacts=list(artifacts), **changes)


def test_schema_is_created_with_postgres_types_and_its_version_checked(pg_url):
    store = Store(pg_url)
    columns = {c["name"]: str(c["type"]) for c in inspect(store.engine).get_columns("cells")}
    assert columns["dataset_params"] == "JSON" and columns["started_at"].startswith("TIMESTAMP")
    assert str(next(c["type"] for c in inspect(store.engine).get_columns("artifacts")
                    if c["name"] == "data")) == "BYTEA"
    with store.engine.begin() as connection:
        assert connection.execute(text("select value from schema_info")).all() == [("1",)]
        connection.execute(text("update schema_info set value = '99'"))
    store.close()
    with pytest.raises(PrivbenchError, match="schema version 99") as error:
        Store(pg_url)
    assert ":***@" in error.value.message and "\n" not in error.value.message


def test_a_database_with_other_tables_is_refused(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("create table people (name text)"))
    engine.dispose()
    with pytest.raises(PrivbenchError, match="not a privbench store"):
        Store(pg_url)


def test_save_cell_round_trips_and_replaces_a_failed_cell(pg_url):
    store = Store(pg_url)
    run = store.start_run({"argv": ["privbench", "matrix"]}, {"privbench": "0.1.0"}, "host")
    store.save_cell(run, outcome(status="failed", reason="RuntimeError: boom\x00", error="Traceback ..."))
    assert store.finished_keys() == set()
    png = bytes(range(256)) * 4
    store.save_cell(run, outcome(metrics={"attack.ssim": 0.25, "privacy.score": 0.75},
                                 artifacts=[Artifact("reconstruction.png", "image/png", png)]))
    [cell] = store.cells()
    assert (cell.status, cell.reason, cell.error) == ("done", None, None)
    assert {m.name: m.value for m in cell.metrics} == {"attack.ssim": 0.25, "privacy.score": 0.75}
    assert cell.dataset_params == {"limit": 300, "tasks": ["a", "b"]} and cell.duration_s == 1.5
    assert cell.started_at == dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert store.artifact(cell.id, "reconstruction.png").data == png
    assert store.finished_keys() == {"k1"}
    with store.engine.connect() as connection:  # the failed attempt's rows are gone with it
        assert connection.execute(text("select count(*) from metrics")).scalar() == 2
        assert connection.execute(text("select count(*) from cells")).scalar() == 1
    store.finish_run(run, "finished")
    assert store.runs()[0].status == "finished" and store.runs()[0].finished_at is not None


def test_a_string_too_long_for_its_column_is_a_one_line_error(pg_url):
    store = Store(pg_url)
    run = store.start_run({}, {}, "host")
    with pytest.raises(PrivbenchError, match="metrics.name 'xxx.*is longer than the 128 characters"):
        store.save_cell(run, outcome(metrics={"x" * 129: 1.0}))
    assert store.cells() == []


def test_summarize_cells_read_back_from_postgres(pg_url):
    store = Store(pg_url)
    run = store.start_run({}, {}, "host")
    for seed, ssim in ((0, 0.2), (1, 0.4)):
        store.save_cell(run, outcome(f"k{seed}", seed=seed, metrics={"attack.ssim": ssim}))
    [row] = summarize(store.cells())
    assert row["seeds"] == [0, 1] and row["status"] == "done"
    assert row["metrics"]["attack.ssim"]["mean"] == pytest.approx(0.3)
    assert row["metrics"]["attack.ssim"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert row["metrics"]["attack.ssim"]["n"] == 2


def test_reading_commands_refuse_a_database_without_a_store(pg_url):
    result = CliRunner().invoke(main, ["results", "--db", pg_url])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no privbench store in 'postgresql+psycopg://")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_server_is_a_one_line_error_without_the_password():
    with pytest.raises(PrivbenchError, match="cannot open database 'postgresql") as error:
        Store("postgresql+psycopg://someone:secret@127.0.0.1:9/nowhere")
    assert "secret" not in error.value.message and "\n" not in error.value.message


@pytest.fixture(scope="module")
def matrix_url(tmp_path_factory) -> Iterator[str]:
    """A small real matrix (identity, noise x two attacks x two seeds) run into PostgreSQL by the CLI."""
    with fresh_database("matrix") as url:
        result = CliRunner().invoke(main, ["matrix", "--db", url, *MATRIX])
        assert result.exit_code == 0, result.output
        assert "8 cells: 0 already finished, 8 run" in result.stdout
        yield url


def test_matrix_into_postgres_then_a_rerun_skips_every_cell(matrix_url):
    result = CliRunner().invoke(main, ["matrix", "--db", matrix_url, *MATRIX])
    assert result.exit_code == 0, result.output
    assert "8 cells: 8 already finished, 0 run" in result.stdout


def test_results_from_postgres_as_json(matrix_url):
    result = CliRunner().invoke(main, ["results", "--db", matrix_url, "--format", "json", "--cells"])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)
    assert len(cells) == 8 and {c["status"] for c in cells} == {"done"}
    assert {(c["defense"], c["attack"], c["seed"]) for c in cells} == {
        (defense, attack, seed) for defense in ("identity", "noise")
        for attack in ("inverse-network:epochs=2", "attribute-inference:epochs=2") for seed in (0, 1)}
    for cell in cells:
        assert 0 <= cell["metrics"]["utility.accuracy"] <= 1 and "privacy.score" in cell["metrics"]
    rows = json.loads(CliRunner().invoke(main, ["results", "--db", matrix_url, "--format", "json"]).stdout)
    assert len(rows) == 4 and all(row["seeds"] == [0, 1] for row in rows)
    assert all(row["metrics"]["privacy.score"]["n"] == 2 for row in rows)


def test_leaderboard_from_postgres(matrix_url, tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "--db", matrix_url, "-o", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    index = tmp_path / "site" / "index.html"
    assert index.is_file() and "digits" in index.read_text()
    assert list((tmp_path / "site" / "img").glob("*.png"))  # reconstruction artifacts read from bytea
