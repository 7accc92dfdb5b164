"""Checks a run makes before anything trains or anything is written to the store.

A matrix can fail for reasons that have nothing to do with one cell: a torchvision dataset that is
not on disk, a cache or store that cannot be written, a database that does not answer, a device
that is not there, a defense whose parameters do not fit the dataset's images (a Disguised-Nets
block larger than the image). Found late, each of these fails every cell separately and floods
the log. ``preflight`` looks for all of them at once and returns one line per problem, naming what
was wrong and what is accepted or how to fix it; the command prints them together and exits 2.

The datasets are loaded here (the check that their files are present is that they load, and their
image shape is what ``Defense.check_data`` needs); ``Preflight.datasets`` hands the loaded data to
the run's own harness so that the main process does not read them twice.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError
from privbench.schedule import MatrixConfig, dataset_load_key, plan


@dataclass
class Preflight:
    """What the checks found: one line per problem, and the datasets they loaded (by load key)."""

    problems: list[str] = field(default_factory=list)
    datasets: dict[str, Any] = field(default_factory=dict)

    def add(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


def writable_folder(folder: Path, what: str) -> str | None:
    """None when files can be created in ``folder`` (made if missing), else the one-line reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".privbench-check-"):
            pass
    except OSError as error:
        return (f"{what} {folder} is not writable ({error.strerror or type(error).__name__}); "
                f"choose a folder you can write to")
    return None


def store_problem(url: str) -> str | None:
    """Whether the store at ``url`` can be opened for writing, without creating or changing it: a
    SQLite file's folder must exist and be writable (and the file itself, when it exists); any
    other database must accept a connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from privbench.store import display_url, normalize_url
    url = normalize_url(url)
    try:
        engine = create_engine(url)
    except (ArgumentError, SQLAlchemyError, ImportError) as error:
        return f"--db {display_url(url)}: not a database URL the store can open ({error})"
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            return None
        return writable_file(Path(database).expanduser().resolve(), "--db", "the store file")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"--db {display_url(url)}: cannot connect ({reason})"
    finally:
        engine.dispose()
    return None


def writable_file(path: Path, option: str, noun: str = "the file") -> str | None:
    """None when ``path`` can be written without creating folders (it is a writable file, or its
    folder exists and is writable), else the one-line reason naming ``option``."""
    if path.is_dir():
        return f"{option} {path}: is a folder; accepted: a file path"
    if path.exists():
        return None if os.access(path, os.W_OK) else (
            f"{option} {path}: {noun} is not writable; accepted: a file you can write")
    if not path.parent.is_dir():
        return f"{option} {path}: its folder {path.parent} does not exist; create it or choose another path"
    return None if os.access(path.parent, os.W_OK) else (
        f"{option} {path}: its folder {path.parent} is not writable; choose another path")


def timeline_problem(path: str | None) -> str | None:
    """``--timeline FILE`` must be a file this process can write (its folder must exist)."""
    return writable_file(Path(path).expanduser().resolve(), "--timeline") if path else None


def preflight(registry, config: MatrixConfig, ctx, db: str, timeline: str | None = None) -> Preflight:
    """Every problem that would stop the run's cells, found before anything trains.

    ``ctx`` is the run's RunContext (device already resolved, data folder, --download, cache)."""
    found = Preflight()
    cells = plan(registry, config)
    problem = timeline_problem(timeline)
    if problem:
        found.add(problem)
    if ctx.cache.root is not None:
        problem = writable_folder(Path(ctx.cache.root), "--cache-dir")
        if problem:
            found.add(problem)
    problem = store_problem(db)
    if problem:
        found.add(problem)
    for call in _unique(c.dataset for c in cells):
        _check_dataset(call, cells, ctx, found)
    for cell in {c.probes.spec: c for c in cells if c.probes}.values():
        _check_probes(cell, ctx, found)
    return found


def _check_probes(cell, ctx, found: Preflight) -> None:
    """A class-statistic attack's probe dataset must load too; the line says who needs it."""
    _load(cell.probes, ctx, found, f" (needed by attack '{cell.attack.spec}' as its out-of-training "
                                   "probe classes; out=held-out needs no other dataset)")


def _load(call, ctx, found: Preflight, needed_by: str = ""):
    """The dataset of ``call``, loaded once; None (and a problem line) when it does not load."""
    load_key = dataset_load_key(call)
    if load_key not in found.datasets:
        try:
            found.datasets[load_key] = call.instance.load(ctx)
        except PrivbenchError as error:
            found.add(f"{error}{needed_by}")
            return None
    return found.datasets[load_key]


def _unique(calls) -> list:
    seen: dict[str, Any] = {}
    for call in calls:
        seen.setdefault(call.spec, call)
    return list(seen.values())


def _check_dataset(call, cells, ctx, found: Preflight) -> None:
    """Load the dataset (its files must be there); then every defense on it must accept its images."""
    dataset = _load(call, ctx, found)
    if dataset is None:
        return
    facts = call.instance.facts(dataset.image_shape, dataset.tasks)
    for defense in _unique(c.defense for c in cells if c.dataset.spec == call.spec):
        refused = defense.instance.check_data(facts)
        if refused:
            found.add(f"{refused} (dataset {call.spec})")
