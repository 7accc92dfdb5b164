"""Without a TTY (CI, nohup, a pipe) a run prints plain lines a log can read (issue: operations)."""

from __future__ import annotations

import io
import re
import time

import pytest
from click.testing import CliRunner
from rich.console import Console

from privbench.cli import _progress, main
from privbench.progress import PlainProgress, RichProgress


def test_a_run_without_a_tty_prints_a_line_per_training_and_per_cell(tmp_path):
    result = CliRunner().invoke(main, [
        "matrix", "--device", "cpu", "--dataset", "digits:limit=300,target_epochs=2",
        "--defense", "identity", "--defense", "noise", "--attack", "examiner:epochs=2",
        "--db", str(tmp_path / "s.db")], env={"PRIVBENCH_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(r"\[\d\d:\d\d\] start: target model \(lenet\)", line) for line in lines)
    assert any(re.fullmatch(r"\[\d\d:\d\d\] end: target model \(lenet\) \(\d+\.\d s\)", line)
               for line in lines)
    cells = [line for line in lines if " cell done in " in line]
    assert len(cells) == 2, lines
    assert re.fullmatch(r"\[\d\d:\d\d\] cell done in \d+\.\d s: digits:limit=300,target_epochs=2 · "
                        r"identity · examiner:epochs=2 · seed 0, privacy\.score \d\.\d{3}", cells[0])


def test_the_heartbeat_gives_cells_done_and_time_left():
    stream = io.StringIO()
    with PlainProgress(stream, heartbeat_s=0.05) as progress:
        overall = progress.add("matrix", total=4)
        progress.update(overall, completed=1)
        time.sleep(0.2)
    beats = [line for line in stream.getvalue().splitlines() if "progress:" in line]
    assert beats and re.search(r"progress: 1/4 cells, \d+ s elapsed, about \d+ s left", beats[-1])


def test_a_terminal_keeps_the_live_bars_and_quiet_prints_nothing():
    terminal = Console(file=io.StringIO(), force_terminal=True)
    piped = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(_progress(terminal, quiet=False), RichProgress)
    assert isinstance(_progress(piped, quiet=False), PlainProgress)
    assert isinstance(_progress(piped, quiet=True), RichProgress)  # disabled: prints nothing


def test_process_workers_print_their_training_lines_into_the_same_log(tmp_path):
    """With --executor process the target model and the defense fits train in worker processes;
    their start/end lines reach the run's log, each naming its worker and written whole."""
    import os
    import subprocess
    import sys
    run = subprocess.run(
        [sys.executable, "-m", "privbench", "matrix", "--device", "cpu", "--executor", "process",
         "--workers", "2", "--dataset", "digits:limit=300,target_epochs=2", "--defense", "identity",
         "--defense", "noise", "--attack", "examiner:epochs=2", "--db", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PRIVBENCH_HOME": str(tmp_path / "home")})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    starts = [line for line in lines if re.fullmatch(
        r"\[\d\d:\d\d\] worker \d+: start: target model \(lenet\)", line)]
    ends = [line for line in lines if re.fullmatch(
        r"\[\d\d:\d\d\] worker \d+: end: examiner for \w+ on raw aux images \(\d+\.\d s\)", line)]
    assert len(starts) == 1 and ends, lines
    torn = [line for line in lines if re.search(r"worker \d+:", line) and not line.startswith("[")]
    assert not torn, torn
    assert len([line for line in lines if " cell done in " in line]) == 2


def test_tables_printed_to_a_log_keep_each_row_on_one_line(tmp_path):
    """On a pipe rich would fold the results table at 80 columns, a few letters per line."""
    result = CliRunner().invoke(main, [
        "matrix", "--quiet", "--device", "cpu", "--dataset", "digits:limit=300,target_epochs=2",
        "--defense", "identity", "--attack", "examiner:epochs=2", "--db", str(tmp_path / "s.db")],
        env={"PRIVBENCH_HOME": str(tmp_path / "home"), "COLUMNS": None})
    assert result.exit_code == 0, result.output
    row = [line for line in result.stdout.splitlines() if "examiner:epochs=2" in line]
    assert row and "digits:limit=300,target_epochs=2" in row[0] and "query-free" in row[0]
    listing = CliRunner().invoke(main, ["reproduce", "--list"], env={"COLUMNS": None})
    assert any("he2019-mnist" in line and "mnist" in line.split("he2019-mnist", 1)[1]
               for line in listing.stdout.splitlines())


def test_the_time_left_weighs_each_cell_by_its_expected_cost():
    """Longest cells run first: after the one heavy cell (90 of 100 expected seconds) finished in
    45 s, 5 s are left, where a count of cells (1 of 11 done) would say 450 s."""
    from privbench.dryrun import RunPace
    pace = RunPace({"heavy": 90.0, **{f"light{i}": 1.0 for i in range(10)}})
    assert pace.left_s(10.0) is None and pace.describe(10.0) == ""
    pace.finish("heavy")
    pace.finish("heavy")  # a cell counts once
    assert pace.left_s(45.0) == pytest.approx(5.0)
    for i in range(10):
        pace.finish(f"light{i}")
    assert pace.left_s(50.0) == 0.0


def test_the_heartbeat_prefers_the_runs_own_estimate():
    stream = io.StringIO()
    with PlainProgress(stream, heartbeat_s=0.05) as progress:
        overall = progress.add("matrix", total=11)
        progress.update(overall, completed=1, left="about 5 s left")
        time.sleep(0.2)
    beats = [line for line in stream.getvalue().splitlines() if "progress:" in line]
    assert beats and beats[-1].endswith("progress: 1/11 cells, 0 s elapsed, about 5 s left")
