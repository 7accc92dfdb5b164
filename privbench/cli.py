"""The ``privbench`` command line: ``list``, ``matrix``, ``results``, ``leaderboard``, ``reproduce``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import shlex
import signal
import sys
import threading

import click

FORMATS = ("table", "csv", "json")
WIDE_LISTING = 120  # narrower terminals (and logs) get privbench list as one block per plugin


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="privbench")
def main() -> None:
    """privbench: the defense x attack matrix for data sent to untrusted ML parties."""


def _registry():
    from privbench.plugins import load_registry
    return load_registry()


def _console():
    from privbench.progress import output_console
    return output_console()


@main.command("list")
@click.argument("kind", required=False,
                type=click.Choice(["datasets", "defenses", "attacks"], case_sensitive=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def list_command(kind: str | None, fmt: str) -> None:
    """List the registered datasets, defenses and attacks (all three without KIND)."""
    registry = _registry()
    kinds = [kind[:-1]] if kind else ["dataset", "defense", "attack"]
    listing = {k + "s": [_describe(item) for item in registry.all(k)] for k in kinds}
    if fmt == "json":  # "problems": one line per plugin (or class) skipped while loading
        click.echo(json.dumps({**listing, "problems": registry.problems}, indent=2, default=str))
        return
    from rich.table import Table

    from privbench.datasets import DatasetSource
    common = [p.name for p in DatasetSource.parameters()]
    console = _console()
    if not console.is_terminal or console.width < WIDE_LISTING:
        _list_blocks(listing, common, console.width if console.is_terminal else WIDE_LISTING)
        for problem in registry.problems:
            click.echo(f"broken plugin: {problem}")
        return
    for title, items in listing.items():
        caption = ("every dataset also takes the scenario options " + ", ".join(common)
                   if title == "datasets" else None)
        table = Table(title=title, caption=caption)
        table.add_column("name", no_wrap=True)
        for column in ("summary", "access", "parameters", "package"):
            table.add_column(column, overflow="fold")
        for item in items:
            params = ", ".join(f"{p['name']}={p['default']}" for p in item["parameters"]
                               if title != "datasets" or p["name"] not in common)
            access = item.get("access", "").replace("-", "\u2011")  # never wrap "query-free" at its hyphen
            table.add_row(item["name"], item["summary"], access, params,
                          f"{item['package']} {item['version']}")
        console.print(table)
    for problem in registry.problems:  # after the listing; click.echo: one line each, never wrapped
        click.echo(f"broken plugin: {problem}")


def _list_blocks(listing: dict, common: list[str], width: int) -> None:
    """``privbench list`` for a log or a narrow terminal, where a five-column table would squeeze
    every word into its own line: one block per plugin, each field on its own wrapped lines."""
    import textwrap
    width = max(width, 40)
    for title, items in listing.items():
        click.echo(title)
        if title == "datasets":
            click.echo(textwrap.fill("every dataset also takes the scenario options "
                                     + ", ".join(common), width, initial_indent="  ",
                                     subsequent_indent="  "))
        for item in items:
            params = ", ".join(f"{p['name']}={p['default']}" for p in item["parameters"]
                               if title != "datasets" or p["name"] not in common)
            click.echo(f"  {item['name']} ({item['package']} {item['version']})")
            for label, text in (("summary", item["summary"]), ("access", item.get("access", "")),
                                ("parameters", params)):
                if text:
                    click.echo(textwrap.fill(f"{label}: {text}", width, initial_indent="    ",
                                             subsequent_indent="      ", break_on_hyphens=False))
        click.echo()


def _describe(item) -> dict:
    """A registered plugin as JSON-able data for ``privbench list``."""
    from privbench.scoring import PRIVACY_MAPPINGS
    cls = item.cls
    info = {"name": item.name, "summary": cls.summary, "package": item.package,
            "version": item.version, "parameters": [p.as_dict() for p in cls.parameters()]}
    if item.kind == "attack":
        info["threat_model"] = cls.threat_model
        info["requires"] = sorted(cls.requires)
        info["access"] = f"{cls.threat_model}; needs " + (", ".join(sorted(cls.requires))
                                                          or "no access beyond the observed data and aux images")
        info["produces"] = cls.produces
        info["privacy_mapping"] = PRIVACY_MAPPINGS[cls.produces]
    elif item.kind == "defense":
        info["gives"] = sorted(cls.gives)
        info["claims"] = sorted(cls.claims)
        claims = ", ".join(sorted(cls.claims)) or "nothing (ranked over every threat model)"
        info["access"] = "gives " + ", ".join(sorted(cls.gives)) + "; claims " + claims
    else:
        info["tasks"] = {t.name: t.description for t in cls.tasks}
        info["default_target"], info["default_private"] = cls.default_target, cls.default_private
        info["access"] = "tasks: " + ", ".join(t.name for t in cls.tasks)
    return info


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML matrix config; a list value is a sweep.")
@click.option("--dataset", "datasets", multiple=True, metavar="SPEC",
              help="NAME or NAME:key=value,... (repeatable). Default: digits.")
@click.option("--defense", "defenses", multiple=True, metavar="SPEC",
              help="NAME or NAME:key=value,... (repeatable). Default: every registered defense.")
@click.option("--attack", "attacks", multiple=True, metavar="SPEC",
              help="NAME or NAME:key=value,... (repeatable). Default: every registered attack.")
@click.option("--seeds", default=None, help="Comma-separated seeds.  [default: 0]")
@click.option("--db", default=None, help="SQLAlchemy URL or SQLite path.  [default: privbench.db]")
@click.option("--device", default=None, help="auto, cpu or cuda.  [default: auto]")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Shared artifacts.  [default: $PRIVBENCH_HOME/cache]")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Where torchvision datasets live.  [default: $PRIVBENCH_HOME/data]")
@click.option("--download/--no-download", default=None,
              help="Let torchvision download missing datasets (needs internet).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--executor", default=None, type=click.Choice(["local", "process", "ray"]),
              help="Where cells run: this process, N worker processes, or Ray tasks.  [default: local]")
@click.option("--workers", type=int, default=None,
              help="Worker processes or Ray CPUs.  [default: the machine's cores]")
@click.option("--threads", type=int, default=None,
              help="Torch threads per worker.  [default: cores / workers]")
@click.option("--ray-address", default=None, help="Address of a running Ray cluster.  [default: start a local one]")
@click.option("--leaderboard", "leaderboard_dir", default=None, type=click.Path(file_okay=False),
              help="Render the leaderboard of the whole store into DIR at the end of the run.")
@click.option("--fail-fast", is_flag=True,
              help="Stop at the first failed cell and print its traceback (for plugin development).")
@click.option("--timeline", default=None, type=click.Path(dir_okay=False),
              help="Write every job's start, end, process and CPU time to this file (JSON lines).")
@click.option("--dry-run", is_flag=True,
              help="Print the plan, the shared artifacts to train, the cells already stored and a "
                   "cost estimate; train nothing.")
@click.option("--cell-timeout", type=float, default=None, metavar="SECONDS",
              help="Kill a party process past this wall time and store its cell as timed-out; "
                   "0: no limit.  [default: from the cell's cost hint, at least 30 min]")
@click.option("--trust-plugins", is_flag=True, default=None,
              help="Run plugin code in this process, without isolation or time limits (plugin "
                   "development only; the run is stored as trusted).")
def matrix(config_file, datasets, defenses, attacks, seeds, db, device, cache_dir, data_dir,
           download, quiet, executor, workers, threads, ray_address, leaderboard_dir, fail_fast,
           timeline, dry_run, cell_timeout, trust_plugins) -> None:
    """Run the defense x attack matrix and store every cell."""
    from privbench.forkserver import start_fork_server
    if not trust_plugins or executor == "process":
        # before this process imports torch: the fork server (the parties' zygote, the process
        # executor's workers) imports it meanwhile; a trusted local run needs none (a trusted
        # process run started it late, and its workers' first job waited 5 s longer)
        start_fork_server()
    from privbench.matrix import MatrixConfig, entries_from_config, parse_seeds, read_config_file
    from privbench.params import parse_spec
    file_config = read_config_file(config_file) if config_file else {}

    def pick(cli_value, key, default):
        return cli_value if cli_value is not None else file_config.get(key, default)

    config = MatrixConfig(
        datasets=[parse_spec(s) for s in datasets] or entries_from_config(file_config, "dataset"),
        defenses=[parse_spec(s) for s in defenses] or entries_from_config(file_config, "defense"),
        attacks=[parse_spec(s) for s in attacks] or entries_from_config(file_config, "attack"),
        seeds=parse_seeds(pick(seeds, "seeds", "0")))
    if dry_run:
        from privbench.dryrun import describe, executor_line
        running = executor_line(pick(executor, "executor", "local"), pick(workers, "workers", None),
                                str(pick(device, "device", "auto")))
        for line in describe(_registry(), config, pick(db, "db", "privbench.db"), running):
            click.echo(line)
        return
    _run_matrix(config, db=pick(db, "db", "privbench.db"), device=pick(device, "device", "auto"),
                cache_dir=pick(cache_dir, "cache_dir", None), data_dir=pick(data_dir, "data_dir", None),
                download=bool(pick(download, "download", False)), quiet=quiet,
                leaderboard_dir=pick(leaderboard_dir, "leaderboard", None),
                executor={"executor": pick(executor, "executor", "local"),
                          "workers": pick(workers, "workers", None),
                          "threads": pick(threads, "threads", None),
                          "ray_address": pick(ray_address, "ray_address", None),
                          "fail_fast": fail_fast, "timeline": timeline},
                isolation={"trust_plugins": bool(pick(trust_plugins, "trust_plugins", False)),
                           "cell_timeout": _cell_timeout(pick(cell_timeout, "cell_timeout", None))})


def _cell_timeout(value) -> float | None:
    """``--cell-timeout``: None (from the cost hints), 0 (none) or a positive number of seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        from privbench.errors import PrivbenchError
        raise PrivbenchError(f"bad --cell-timeout {value!r}; accepted: seconds > 0, or 0 for no limit")
    return seconds


def _run_matrix(config, *, db, device, cache_dir, data_dir, download, quiet, leaderboard_dir,
                executor, isolation=None) -> None:
    from pathlib import Path

    from privbench.artifacts import ArtifactCache
    from privbench.context import RunContext, default_cache_dir, privbench_home
    from privbench.forkserver import stop_fork_server
    from privbench.matrix import FailFast, MatrixRunner, plan
    from privbench.store import Store
    registry = _registry()
    for problem in registry.problems:  # a broken plugin the matrix does not use blocks nothing
        click.echo(f"broken plugin: {problem}", err=True)
    plan(registry, config)  # validate every name and parameter before touching the store
    ctx = RunContext(cache=ArtifactCache(cache_dir or default_cache_dir()),
                     data_dir=Path(data_dir) if data_dir else privbench_home() / "data",
                     download=download, **(isolation or {}))
    ctx, checked = _preflight(registry, config, ctx, device, db, executor.get("timeline"))
    store = Store(db)
    ctx = dataclasses.replace(ctx, secret=store.run_secret())
    console = _console()
    with _progress(console, quiet) as progress:
        ctx = dataclasses.replace(ctx, progress=progress)
        runner = MatrixRunner(registry, store, ctx, datasets=checked.datasets, **executor)
        try:
            with _sigterm_interrupts():
                try:
                    report = runner.run(config)
                finally:  # no more workers to start: the fork server exits while this one reports
                    stop_fork_server()
        except KeyboardInterrupt:
            progress.stop()
            stopped = "; ".join(f"{o.defense_spec} · {o.attack_spec} · seed {o.seed}"
                                for o in runner.interrupted)
            click.echo(f"interrupted: every finished cell is kept in the store; "
                       f"{len(runner.interrupted)} running cell(s) recorded as interrupted"
                       + (f" ({stopped})" if stopped else "")
                       + "; rerun the same command to go on", err=True)
            sys.exit(130)
        except FailFast as stop:
            progress.stop()
            failed = stop.outcome
            click.echo((failed.error or "").rstrip(), err=True)
            click.echo(f"failed (--fail-fast): {failed.dataset_spec} · {failed.defense_spec} · "
                       f"{failed.attack_spec} · seed {failed.seed}: {failed.reason}; the run stopped "
                       "there, every finished cell is kept in the store", err=True)
            sys.exit(1)
    from privbench.store import summarize
    _print_table(console, summarize(store.cells(report.keys)))
    console.print(f"{_count(report.planned, 'cell')}: {report.skipped} already finished, "
                  f"{len(report.outcomes)} run in {report.wall_s:.1f} s; results in {store.display_url}")
    if leaderboard_dir:  # rendered before the exit status, so failed cells show on the page too
        _render_leaderboard(store, leaderboard_dir)
    else:
        db_option = "" if db == "privbench.db" else f" --db {shlex.quote(db)}"
        console.print(f"leaderboard: privbench leaderboard{db_option} -o site   (writes "
                      f"{Path('site', 'index.html').resolve()}; or add --leaderboard DIR to this command)",
                      soft_wrap=True)
    if report.failures:
        for outcome in report.failures:
            click.echo(f"failed: {outcome.dataset_spec} · {outcome.defense_spec} · "
                       f"{outcome.attack_spec} · seed {outcome.seed}: {outcome.reason}", err=True)
        sys.exit(1)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (kill, a CI timeout, a scheduler) stops the run the way Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress(console, quiet: bool):
    """Rich bars on a terminal; plain timestamped lines when the output is a log (no TTY);
    nothing with --quiet."""
    from privbench.progress import PlainProgress, RichProgress
    if quiet or console.is_terminal:
        return RichProgress(console, disable=quiet)
    return PlainProgress()


def _preflight(registry, config, ctx, device: str, db: str, timeline: str | None = None):
    """Check what the run needs before anything trains or touches the store (privbench.preflight):
    every problem is printed as one line, all together, and the command exits 2."""
    from privbench.context import resolve_device
    from privbench.errors import PrivbenchError
    from privbench.preflight import preflight
    problems = []
    try:
        ctx = dataclasses.replace(ctx, device=resolve_device(str(device)))
    except PrivbenchError as error:
        problems.append(error.format_message())
    checked = preflight(registry, config, ctx, db, timeline)
    problems += checked.problems
    if problems:
        for problem in problems:
            click.echo(f"Error: {problem}", err=True)
        if len(problems) > 1:
            click.echo(f"{len(problems)} problems found before the run started; nothing was "
                       "trained or stored", err=True)
        sys.exit(2)
    return ctx, checked


def _render_leaderboard(store, out_dir: str, utility_budget: float | None = None) -> None:
    from leaderboard import DEFAULT_UTILITY_BUDGET, render_site
    budget = DEFAULT_UTILITY_BUDGET if utility_budget is None else utility_budget
    index = render_site(store, out_dir, utility_budget=budget)
    click.echo(f"leaderboard: {index} (open it in a browser; it needs no network)")


@main.command()
@click.option("--db", default="privbench.db", show_default=True,
              help="SQLAlchemy URL or SQLite path of the store to render.")
@click.option("-o", "--output", "out_dir", default="site", show_default=True,
              type=click.Path(file_okay=False), help="Folder the static site is written to.")
@click.option("--utility-budget", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="utility.drop a defense may cost and still be ranked among the first; defenses "
                   "over it are ranked below, marked.")
def leaderboard(db: str, out_dir: str, utility_budget: float) -> None:
    """Render the static HTML leaderboard (one page per dataset, an index) from the store."""
    from privbench.store import existing_store
    _render_leaderboard(existing_store(db), out_dir, utility_budget)


def _print_table(console, rows: list[dict],
                 title: str = "results: mean ± std over seeds (n = number of seeds)",
                 per_cell: bool = False) -> None:
    """The results table: utility, privacy score and the attack's raw metric, mean ± std; with
    ``per_cell``, one cell per row and its seed instead of n."""
    from rich.table import Table
    table = Table(title=title)
    from privbench.metrics import unit
    for column in ("dataset", "defense", "attack", "threat model", "seed" if per_cell else "n",
                   "utility.accuracy", "privacy.score", "attack (raw)"):
        table.add_column(f"{column} {unit(column)}".strip(), overflow="fold")
    for row in rows:
        metrics = row["metrics"]
        n = str(row["seed"]) if per_cell else str(len(row["seeds"]))
        if row["status"] != "done":
            status = f"[yellow]{row['status']}[/]: {row['reason'] or ''}"
            table.add_row(row["dataset"], row["defense"], row["attack"], row["threat_model"], n,
                          _mean_std(metrics.get("utility.accuracy")), "", status)
            continue
        table.add_row(row["dataset"], row["defense"], row["attack"], row["threat_model"], n,
                      _mean_std(metrics.get("utility.accuracy")),
                      _mean_std(metrics.get("privacy.score")), _raw_attack(metrics))
    console.print(table)


def _raw_attack(metrics: dict) -> str:
    """The attack's own metric in words: SSIM / PSNR for reconstructions, accuracy vs chance."""
    parts = []
    if "attack.ssim" in metrics:
        parts.append(f"SSIM {_mean_std(metrics['attack.ssim'])}")
    if "attack.psnr" in metrics:
        parts.append(f"PSNR {_mean_std(metrics['attack.psnr'], 1)} dB")
    if "attack.accuracy" in metrics:
        parts.append(f"acc {_mean_std(metrics['attack.accuracy'])}")
    if "attack.chance" in metrics:
        parts.append(f"chance {_mean_std(metrics['attack.chance'])}")
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    """'1 cell', '2 cells'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _mean_std(stat: dict | None, digits: int = 3) -> str:
    if stat is None:
        return "—"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


@main.command()
@click.option("--db", default="privbench.db", show_default=True,
              help="SQLAlchemy URL or SQLite path.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--cells", "per_cell", is_flag=True, help="One row per cell (every seed) instead.")
@click.option("--failures", is_flag=True,
              help="Only the failed and timed-out cells, each with its reason and traceback.")
def results(db: str, fmt: str, per_cell: bool, failures: bool) -> None:
    """Show stored results: per (dataset, defense, attack), each metric's mean and std over seeds."""
    from privbench.store import cell_as_dict, existing_store, summarize
    store = existing_store(db)
    cells = store.cells()
    if failures:
        _print_failures([{**cell_as_dict(c), "error": c.error} for c in cells
                         if c.status in ("failed", "timed-out")], fmt)
        return
    rows = [cell_as_dict(c) for c in cells] if per_cell else summarize(cells)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        click.echo(_as_csv(rows, per_cell), nl=False)
    elif per_cell:
        _print_table(_console(), [_cell_row(row) for row in rows], "results: one row per cell", per_cell=True)
    else:
        _print_table(_console(), rows)


def _print_failures(rows: list[dict], fmt: str) -> None:
    """The failed cells: what ran, the one-line reason and the whole traceback."""
    keep = ("dataset", "defense", "attack", "seed", "threat_model", "reason", "error")
    rows = [{key: row.get(key) for key in keep} for row in rows]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keep)
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    else:
        for row in rows:
            click.echo(f"failed: {row['dataset']} · {row['defense']} · {row['attack']} · seed "
                       f"{row['seed']}: {row['reason']}")
            click.echo((row["error"] or "").rstrip() + "\n")
        click.echo(f"{len(rows)} failed cell(s)")


def _cell_row(cell: dict) -> dict:
    """A single cell in the shape of a summary row (n = 1), for the per-cell table."""
    return {**cell, "seeds": [cell["seed"]],
            "metrics": {k: {"mean": v, "std": None, "n": 1} for k, v in cell["metrics"].items()}}


def _as_csv(rows: list[dict], per_cell: bool) -> str:
    """Long format: one line per (row, metric) with mean, std and n (or the cell's value)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if per_cell:
        writer.writerow(["dataset", "defense", "attack", "seed", "threat_model", "status", "metric",
                         "value"])
        for row in rows:
            for name, value in row["metrics"].items() or [("", "")]:
                writer.writerow([row["dataset"], row["defense"], row["attack"], row["seed"],
                                 row["threat_model"], row["status"], name, value])
        return buffer.getvalue()
    writer.writerow(["dataset", "defense", "attack", "threat_model", "status", "seeds", "metric",
                     "mean", "std", "n"])
    for row in rows:
        seeds = " ".join(map(str, row["seeds"]))
        for name, stat in row["metrics"].items() or [("", {"mean": "", "std": "", "n": 0})]:
            writer.writerow([row["dataset"], row["defense"], row["attack"], row["threat_model"],
                             row["status"], seeds, name, stat["mean"], stat["std"], stat["n"]])
    return buffer.getvalue()


@main.command()
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the shipped reproductions and their cost.")
@click.option("--quick", is_flag=True,
              help="Reduced run (fewer images / epochs, the config's [quick]); checks only shape facts.")
@click.option("--seeds", default=None, help="Comma-separated seeds.  [default: the config's]")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME",
              help="Only the config's matrices on this dataset (repeatable); rows about others are not checked.")
@click.option("--db", default="privbench.db", show_default=True, help="SQLAlchemy URL or SQLite path.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Shared artifacts.  [default: $PRIVBENCH_HOME/cache]")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Where torchvision datasets live.  [default: $PRIVBENCH_HOME/data]")
@click.option("--download/--no-download", default=False,
              help="Let torchvision download missing datasets (needs internet).")
@click.option("--executor", default="local", type=click.Choice(["local", "process", "ray"]),
              show_default=True, help="Where cells run, as for `privbench matrix`.")
@click.option("--workers", type=int, default=None, help="Worker processes or Ray CPUs.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def reproduce(name, list_only, quick, seeds, datasets, db, device, cache_dir, data_dir, download,
              executor, workers, fmt, quiet) -> None:
    """Run a paper's experiment (NAME: a shipped reproduction or a .toml file) through the matrix
    and print it beside the published numbers; exit status 1 when a checked row does not hold."""
    from privbench.forkserver import is_cuda, start_fork_server
    if executor == "process" and not is_cuda(device):
        start_fork_server()  # before this process imports torch, as `privbench matrix` does
    from privbench.reproduce import command
    sys.exit(command(name, list_only=list_only, quick=quick, seeds=seeds, datasets=datasets, fmt=fmt, db=db,
                     device=device, cache_dir=cache_dir, data_dir=data_dir, download=download,
                     quiet=quiet, executor={"executor": executor, "workers": workers}))


if __name__ == "__main__":  # pragma: no cover
    main()
