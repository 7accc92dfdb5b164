"""Running a reproduction: its [[matrix]] tables through the ordinary MatrixRunner (same store, same
cache), the stored outcomes of its cells, and ``privbench reproduce`` (``command``) with its preflight,
progress and summary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from privbench.errors import PrivbenchError, accepted
from privbench.matrix import parse_seeds
from privbench.plugins import Registry
from privbench.reproduce.checks import RowResult, evaluate
from privbench.reproduce.config import Reproduction, load, shipped
from privbench.reproduce.plan import FULL, Selection, matrix_configs, plan_cells, validate
from privbench.reproduce.table import listing, render
from privbench.schedule import CellPlan


def run(repro: Reproduction, registry: Registry, store, ctx, selection: Selection = FULL,
        executor: dict[str, Any] | None = None) -> list:
    """Run each [[matrix]] of the reproduction through the ordinary MatrixRunner (same store and
    cache; finished cells are skipped) and return the run reports."""
    from privbench.matrix import MatrixRunner
    runner = MatrixRunner(registry, store, ctx, **(executor or {}))
    return [runner.run(config) for config in matrix_configs(repro, registry, selection)]


def stored_outcomes(store, cells: Iterable[CellPlan]) -> dict[str, Any]:
    return {cell.key: cell for cell in store.cells({c.key for c in cells})}


# -- the command ----------------------------------------------------------------------------------------------

def command(name: str | None, *, list_only: bool, quick: bool, seeds: str | None,
            datasets: tuple[str, ...], fmt: str, db: str, device: str, cache_dir: str | None,
            data_dir: str | None, download: bool, quiet: bool, executor: dict[str, Any]) -> int:
    """``privbench reproduce``: list the configs, or run one and print it beside the paper; the exit
    status is 1 when a checked row does not hold."""
    import click
    if list_only:
        return _print_listing(fmt)
    if not name:
        raise PrivbenchError("name a reproduction; accepted: " + accepted(shipped())
                             + " (privbench reproduce --list describes them)")
    from privbench.plugins import load_registry
    repro = load(name)
    registry = load_registry()
    validate(repro, registry)
    selection = Selection(quick, tuple(parse_seeds(seeds)) if seeds else (), tuple(datasets))
    matrix_configs(repro, registry, selection)  # an unknown --dataset fails before anything runs
    store, reports = _run_with_progress(repro, registry, selection, db=db, device=device,
                                        cache_dir=cache_dir, data_dir=data_dir, download=download,
                                        quiet=quiet, executor=executor)
    cells = plan_cells(repro, registry, selection.everything())
    results = evaluate(repro, registry, stored_outcomes(store, cells), selection)
    text = render(repro, results, fmt, quick=quick, console=_stdout_console())
    if text is not None:
        click.echo(text, nl=not text.endswith("\n"))
    return _summary(repro, results, reports, store, fmt)


def _stdout_console():
    from privbench.progress import output_console
    return output_console()


def _print_listing(fmt: str) -> int:
    import click
    rows = listing()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["name"])
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        from rich.table import Table
        table = Table(title="shipped reproductions (privbench reproduce NAME [--quick])")
        for column in ("name", "paper", "dataset", "cost", "--quick"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["name"], row["paper"], row["dataset"], row["cost"], row["quick_cost"])
        _stdout_console().print(table)
    return 0


def _run_with_progress(repro: Reproduction, registry: Registry, selection: Selection, *, db: str,
                       device: str, cache_dir, data_dir, download: bool, quiet: bool,
                       executor: dict[str, Any]):
    """Check what the run needs (``privbench.preflight``, as ``privbench matrix`` does), then run
    the matrices with progress on stderr (stdout keeps the table, JSON or CSV)."""
    import click
    from rich.console import Console

    from privbench.artifacts import ArtifactCache
    from privbench.context import RunContext, default_cache_dir, privbench_home, resolve_device
    from privbench.progress import PlainProgress, RichProgress
    from privbench.store import Store
    ctx = RunContext(device=resolve_device(str(device)),
                     cache=ArtifactCache(cache_dir or default_cache_dir()),
                     data_dir=Path(data_dir) if data_dir else privbench_home() / "data",
                     download=download)
    loaded = _preflight(repro, registry, selection, ctx, db)
    store = Store(db)
    console = Console(stderr=True)
    progress = (RichProgress(console, disable=quiet) if quiet or console.is_terminal
                else PlainProgress(stream=console.file))
    with progress:
        try:
            reports = run(repro, registry, store, replace(ctx, progress=progress), selection,
                          {**executor, "datasets": loaded})
        except KeyboardInterrupt:
            progress.stop()
            click.echo("interrupted: every finished cell is kept in the store; rerun the same "
                       "command to go on", err=True)
            raise SystemExit(130) from None
    return store, reports


def _preflight(repro: Reproduction, registry: Registry, selection: Selection, ctx, db: str) -> dict:
    """Every problem of every [[matrix]] (a dataset not on disk, a store that cannot be written...)
    printed together before anything trains, exit status 2; else the datasets it loaded."""
    import click

    from privbench.preflight import preflight
    problems: list[str] = []
    loaded: dict = {}
    for config in matrix_configs(repro, registry, selection):
        found = preflight(registry, config, ctx, db)
        problems += [problem for problem in found.problems if problem not in problems]
        loaded.update(found.datasets)
    if problems:
        for problem in problems:
            click.echo(f"Error: {problem}", err=True)
        names = {name for config in matrix_configs(repro, registry) for name, _ in config.datasets}
        hint = (f"; --dataset NAME runs the part on one dataset (accepted: {accepted(names)})"
                if len(names) > 1 and not selection.datasets else "")
        click.echo(f"reproduction {repro.name}: {len(problems)} problem(s) found before the run "
                   f"started; nothing was trained or stored{hint}", err=True)
        raise SystemExit(2)
    return loaded


def _summary(repro: Reproduction, results: list[RowResult], reports: list, store, fmt: str) -> int:
    """One line per failed cell and per row that does not hold (stderr), then the exit status."""
    import click
    for report in reports:
        for outcome in report.failures:
            click.echo(f"failed cell: {outcome.dataset_spec} · {outcome.defense_spec} · "
                       f"{outcome.attack_spec} · seed {outcome.seed}: {outcome.reason}", err=True)
    failing = [r for r in results if r.holds is False]
    for result in failing:
        click.echo(f"does not hold: {result.row.where}: {result.why}", err=True)
    checked = sum(r.holds is not None for r in results)
    ran = sum(len(report.outcomes) for report in reports)
    skipped = sum(report.skipped for report in reports)
    click.echo(f"{repro.name}: {checked - len(failing)} of {checked} checked rows hold; "
               f"{ran} cells run, {skipped} already finished; results in {store.display_url}",
               err=fmt != "table")
    return 1 if failing else 0
