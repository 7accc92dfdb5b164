"""The results store: SQLAlchemy 2.0 typed models and queries.

SQLite (``privbench.db`` in the working directory) by default, with WAL and a busy timeout so
readers and a writer can share it; ``--db`` takes any SQLAlchemy URL (a plain path means a SQLite
file), e.g. ``postgresql+psycopg://user:password@host/db``. A schema version is recorded and checked
on open. Several processes may write into one store at once: creating a fresh store and saving the
same cell from two runs are both safe against the race (the later commit of a cell wins).

Each store keeps one run secret (``Store.run_secret``): 128 random bits from ``secrets``, drawn on
first use (a store made by an older privbench gets one then) and kept in a table of its own,
``store_secrets``, apart from the public ``schema_info``. The random streams of every cell are
derived from it (``privbench.streams``); it is never written to the runs, the cells, a log or an
export (``cell_as_dict`` and ``summarize`` read the cells only).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from privbench.errors import PrivbenchError

SCHEMA_VERSION = 1
DEFAULT_DB = "sqlite:///privbench.db"
FINISHED = ("done", "not-applicable")
# Another process creating the same fresh store, or committing the same cell key, makes a statement
# collide; it is retried this many times (the other side has committed by then).
ATTEMPTS = 8
SECRET_BITS = 128
RUN_SECRET = "run"  # the key of the run secret's row in store_secrets


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "schema_info"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class StoreSecret(Base):
    """The store's private values: the run secret. Never exported, logged or shown."""

    __tablename__ = "store_secrets"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    def __repr__(self) -> str:
        return f"StoreSecret(key={self.key!r})"


class Run(Base):
    """One invocation of the matrix."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(32), default="running")
    config: Mapped[dict] = mapped_column(JSON)
    versions: Mapped[dict] = mapped_column(JSON)
    host: Mapped[str] = mapped_column(String(256))


class Cell(Base):
    """One (dataset, defense + params, attack + params, seed) of the matrix and its outcome."""

    __tablename__ = "cells"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    dataset: Mapped[str] = mapped_column(String(128))
    dataset_spec: Mapped[str] = mapped_column(Text)
    dataset_params: Mapped[dict] = mapped_column(JSON)
    defense: Mapped[str] = mapped_column(String(128))
    defense_spec: Mapped[str] = mapped_column(Text)
    defense_params: Mapped[dict] = mapped_column(JSON)
    attack: Mapped[str] = mapped_column(String(128))
    attack_spec: Mapped[str] = mapped_column(Text)
    attack_params: Mapped[dict] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    threat_model: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))  # done | failed | timed-out | not-applicable | interrupted
    reason: Mapped[str | None] = mapped_column(Text)  # why not applicable, or the one-line error
    error: Mapped[str | None] = mapped_column(Text)  # the traceback of a failed cell
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime)
    duration_s: Mapped[float] = mapped_column(Float)
    metrics: Mapped[list[Metric]] = relationship(cascade="all, delete-orphan", lazy="selectin")
    artifacts: Mapped[list[StoredArtifact]] = relationship(cascade="all, delete-orphan")


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("cell_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)


class StoredArtifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    media_type: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass
class CellOutcome:
    """What the matrix hands the store for one finished cell."""

    key: str
    dataset: str
    dataset_spec: str
    dataset_params: dict
    defense: str
    defense_spec: str
    defense_params: dict
    attack: str
    attack_spec: str
    attack_params: dict
    seed: int
    threat_model: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime
    device: str = "cpu"
    reason: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # privbench.core.Artifact


def normalize_url(url: str) -> str:
    """A plain path means a SQLite file; anything with '://' is a SQLAlchemy URL."""
    return url if "://" in url else f"sqlite:///{url}"


def display_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def existing_store(url: str) -> Store:
    """Open a store that must already exist (for reading): a missing SQLite file or a database without
    privbench's tables is a one-line error instead of a silently created empty store."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return Store(url)  # Store reports the bad URL
    path = parsed.database
    if parsed.get_backend_name() == "sqlite" and path and path != ":memory:" and not Path(path).exists():
        raise PrivbenchError(f"no privbench store at {path!r}; run `privbench matrix` first or pass "
                             "--db with the file or SQLAlchemy URL of an existing store")
    return Store(url, create=False)


def _one_line(error: DBAPIError) -> str:
    """The driver's message on one line (psycopg's span several)."""
    return " ".join(str(error.orig).split())


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL waits for other writers
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """Open the results database at ``url``, creating its tables unless ``create`` is false."""

    def __init__(self, url: str = DEFAULT_DB, *, create: bool = True) -> None:
        self._run_secret: int | None = None  # read or drawn on first use (run_secret)
        self.url = normalize_url(url)
        self.display_url = display_url(self.url)
        try:
            self.engine = create_engine(self.url)
        except (ArgumentError, NoSuchModuleError, ImportError) as error:
            raise PrivbenchError(f"cannot use database URL {self.display_url!r} ({error}); accepted: "
                                 "a file path or a SQLAlchemy URL such as sqlite:///privbench.db "
                                 "or postgresql+psycopg://user@host/db") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._connect_once()
            self._retried(self._create_or_check_schema, create)
        except DBAPIError as error:
            self.engine.dispose()
            raise PrivbenchError(f"cannot open database {self.display_url!r}: {_one_line(error)}") from None

    def close(self) -> None:
        """Close the pooled connections (a server may then drop the database)."""
        self.engine.dispose()

    def _connect_once(self) -> None:
        """Open one connection: an unreachable server or a wrong password fails here, at once. On
        SQLite the first connection also switches a fresh file to WAL, which another process doing
        the same can refuse with "database is locked" without waiting: that is retried."""
        def connect() -> None:
            with self.engine.connect():
                pass
        if self.engine.dialect.name == "sqlite":
            self._retried(connect, errors=(OperationalError,))
        else:
            connect()

    @staticmethod
    def _retried(operation, *args, errors=(DBAPIError,)):
        """Run ``operation``, again (after a growing, jittered pause) when it collides with another
        process doing the same."""
        for attempt in range(ATTEMPTS):
            try:
                return operation(*args)
            except errors:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * 2 ** attempt * (1 + random.random()))

    def _create_or_check_schema(self, create: bool) -> None:
        """Create the tables and the version row, or check them. Two processes creating one fresh
        store collide in CREATE TABLE or in the version row's insert; the loser is retried."""
        existing = set(inspect(self.engine).get_table_names())
        if existing and "schema_info" not in existing:
            raise PrivbenchError(f"database {self.display_url!r} has tables but is not a privbench "
                                 "store; use another --db")
        if not existing and not create:
            raise PrivbenchError(f"no privbench store in {self.display_url!r}; run `privbench matrix "
                                 "--db` with it first or pass --db with an existing store")
        # schema_info first: a store half-created by another process is never taken for a foreign one
        SchemaInfo.__table__.create(self.engine, checkfirst=True)
        Base.metadata.create_all(self.engine)
        with Session(self.engine) as session, session.begin():
            info = session.get(SchemaInfo, "version")
            if info is None:
                session.add(SchemaInfo(key="version", value=str(SCHEMA_VERSION)))
            elif info.value != str(SCHEMA_VERSION):
                raise PrivbenchError(
                    f"database {self.display_url!r} has privbench schema version {info.value}; this "
                    f"privbench reads version {SCHEMA_VERSION}: use a new --db or the matching privbench")

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def run_secret(self) -> int:
        """The store's run secret (``SECRET_BITS`` random bits), drawn once per store and the same
        for every later run and every process that opens it. Writers drawing it at once race in an
        insert-if-absent: the first commit wins and every writer then reads that one back."""
        if self._run_secret is None:
            try:
                self._run_secret = self._retried(self._read_or_draw_secret)
            except DBAPIError as error:
                raise PrivbenchError(f"cannot read the run secret of {self.display_url!r}: "
                                     f"{_one_line(error)}") from None
        return self._run_secret

    def _read_or_draw_secret(self) -> int:
        stored = self._stored_secret()
        if stored is None:
            try:
                with self.session() as session, session.begin():
                    session.add(StoreSecret(key=RUN_SECRET, value=f"{secrets.randbits(SECRET_BITS):x}"))
            except IntegrityError:
                pass  # another writer's secret was committed first: it is the store's
            stored = self._stored_secret()
        if stored is None:
            raise PrivbenchError(f"the run secret of {self.display_url!r} could not be stored")
        try:
            return int(stored, 16)
        except ValueError:
            raise PrivbenchError(f"the run secret of {self.display_url!r} is corrupt (not hexadecimal); "
                                 "use a new --db") from None

    def _stored_secret(self) -> str | None:
        with self.session() as session:
            row = session.get(StoreSecret, RUN_SECRET)
            return None if row is None else row.value

    def start_run(self, config: dict, versions: dict, host: str) -> int:
        with self.session() as session, session.begin():
            run = Run(config=config, versions=versions, host=host)
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, status: str) -> None:
        with self.session() as session, session.begin():
            run = session.get(Run, run_id)
            run.status, run.finished_at = status, utcnow()

    def finished_keys(self) -> set[str]:
        """Keys of cells that need no rerun: done or not applicable (failed cells are retried)."""
        with self.session() as session:
            return set(session.scalars(select(Cell.key).where(Cell.status.in_(FINISHED))))

    def save_cell(self, run_id: int, outcome: CellOutcome) -> None:
        """Commit one cell with its metrics and artifacts, replacing any earlier outcome of its key
        (a failed attempt, or the same cell saved by a concurrent run: the later commit wins).

        Writers of one key take turns: SQLite lets one writer in at a time; on PostgreSQL a lock on
        the key is held until the commit. Where neither holds (another server database), an insert
        that collides with a concurrent commit of the key is retried."""
        _check_lengths(outcome)
        self._retried(self._replace_cell, run_id, outcome, errors=(IntegrityError,))

    def _replace_cell(self, run_id: int, outcome: CellOutcome) -> None:
        with self.session() as session, session.begin():
            if self.engine.dialect.name == "postgresql":
                session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(outcome.key, 0))))
            session.execute(delete(Cell).where(Cell.key == outcome.key))
            values = {k: _without_nul(v) for k, v in vars(outcome).items()
                      if k not in ("metrics", "artifacts")}
            duration = (outcome.finished_at - outcome.started_at).total_seconds()
            cell = Cell(run_id=run_id, duration_s=duration, **values)
            cell.metrics = [Metric(name=k, value=float(v)) for k, v in sorted(outcome.metrics.items())]
            cell.artifacts = [StoredArtifact(name=a.name, media_type=a.media_type, data=a.data)
                              for a in outcome.artifacts]
            session.add(cell)

    def cells(self, keys: set[str] | None = None) -> list[Cell]:
        with self.session() as session:
            query = select(Cell).order_by(Cell.dataset_spec, Cell.defense_spec, Cell.attack_spec,
                                          Cell.seed)
            cells = list(session.scalars(query))
        return [c for c in cells if keys is None or c.key in keys]

    def runs(self) -> list[Run]:
        with self.session() as session:
            return list(session.scalars(select(Run).order_by(Run.id)))

    def artifact(self, cell_id: int, name: str) -> StoredArtifact | None:
        with self.session() as session:
            return session.scalars(select(StoredArtifact).where(
                StoredArtifact.cell_id == cell_id, StoredArtifact.name == name)).first()


def _check_lengths(outcome: CellOutcome) -> None:
    """PostgreSQL refuses a string longer than its column where SQLite keeps it: refuse it on every
    backend, with its name, so a run that works on one works on the other."""
    columns = Cell.__table__.c
    values = [(columns[k], v) for k, v in vars(outcome).items() if k in columns]
    values += [(Metric.__table__.c.name, name) for name in outcome.metrics]
    values += [(StoredArtifact.__table__.c[k], getattr(a, k)) for a in outcome.artifacts
               for k in ("name", "media_type")]
    for column, value in values:
        length = getattr(column.type, "length", None)
        if length and isinstance(value, str) and len(value) > length:
            raise PrivbenchError(f"{column.table.name}.{column.name} {value[:length]!r}... is longer than "
                                 f"the {length} characters the store allows")


def _without_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters (an exception message might): escape them."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


def cell_as_dict(cell: Cell) -> dict[str, Any]:
    """A cell as plain JSON-able data, metrics included, artifacts by name."""
    return {
        "key": cell.key, "run_id": cell.run_id, "dataset": cell.dataset_spec,
        "defense": cell.defense_spec, "attack": cell.attack_spec, "seed": cell.seed,
        "threat_model": cell.threat_model, "status": cell.status, "reason": cell.reason,
        "device": cell.device, "duration_s": round(cell.duration_s, 3),
        "metrics": {m.name: m.value for m in cell.metrics},
    }


def summarize(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per (dataset, defense + params, attack + params): each metric's mean, std, n."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.dataset_spec, cell.defense_spec, cell.attack_spec), []).append(cell)
    rows = []
    for (dataset, defense, attack), members in groups.items():
        done = [c for c in members if c.status == "done"]
        values: dict[str, list[float]] = {}
        for cell in done:
            for metric in cell.metrics:
                values.setdefault(metric.name, []).append(metric.value)
        rows.append({
            "dataset": dataset, "defense": defense, "attack": attack,
            "threat_model": members[0].threat_model,
            "seeds": sorted(c.seed for c in members),
            "status": _group_status(members),
            "reason": next((c.reason for c in members if c.reason), None),
            "metrics": {name: {"mean": statistics.fmean(v),  # the sample std: undefined for one seed
                               "std": statistics.stdev(v) if len(v) > 1 else None, "n": len(v)}
                        for name, v in sorted(values.items())},
        })
    return rows


def _group_status(cells: list[Cell]) -> str:
    statuses = {c.status for c in cells}
    return statuses.pop() if len(statuses) == 1 else "mixed(" + ",".join(sorted(statuses)) + ")"


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
