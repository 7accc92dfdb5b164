"""The results store: schema version, URLs, replacing failed cells."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from privbench.errors import PrivbenchError
from privbench.store import Store


def test_a_plain_path_is_a_sqlite_file_in_wal_mode(tmp_path):
    store = Store(str(tmp_path / "x.db"))
    assert store.url == f"sqlite:///{tmp_path / 'x.db'}"
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_schema_version_is_recorded_and_checked(tmp_path):
    path = tmp_path / "v.db"
    Store(str(path))
    with sqlite3.connect(path) as connection:
        assert connection.execute("select value from schema_info").fetchone() == ("1",)
        connection.execute("update schema_info set value = '99'")
    with pytest.raises(PrivbenchError, match="schema version 99"):
        Store(str(path))


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("create table people (name text)")
    with pytest.raises(PrivbenchError, match="not a privbench store"):
        Store(str(path))


def test_a_bad_url_is_a_one_line_error():
    with pytest.raises(PrivbenchError, match="cannot use database URL 'nosuchdb://x'") as error:
        Store("nosuchdb://x")
    assert "\n" not in error.value.message
