"""``privbench matrix --dry-run`` prints the plan and trains nothing (issue: operations)."""

from __future__ import annotations

from click.testing import CliRunner

from privbench.cli import main

DATA = "digits:limit=200,target_epochs=1"


def matrix(tmp_path, *args: str):
    return CliRunner().invoke(main, ["matrix", "--quiet", "--device", "cpu", "--dataset", DATA,
                                     "--db", str(tmp_path / "s.db"), *args],
                              env={"PRIVBENCH_HOME": str(tmp_path / "home")})


def test_a_dry_run_lists_the_plan_and_creates_nothing(tmp_path):
    result = matrix(tmp_path, "--dry-run", "--defense", "identity", "--defense", "noise",
                    "--attack", "examiner", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "plan: 4 cells, 0 already in the store, 4 to run"
    assert "2 target model(s), 4 defense fit(s)" in lines[1]
    assert sum(line.endswith(f"{DATA} · noise · examiner · seed 1") for line in lines) == 1
    assert "cost hints only (no past timings in the store)" in lines[-1]
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "home").exists()


def test_a_dry_run_marks_stored_cells_and_estimates_from_their_timings(tmp_path):
    assert matrix(tmp_path, "--defense", "identity", "--attack", "examiner:epochs=1").exit_code == 0
    result = matrix(tmp_path, "--dry-run", "--defense", "identity", "--defense", "noise",
                    "--attack", "examiner:epochs=1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "plan: 2 cells, 1 already in the store, 1 to run"
    assert any(line.strip().startswith("stored") and " · identity · " in line for line in lines)
    assert "fit: " in result.stdout and " · noise" in result.stdout
    assert "past timings in the store" in lines[-1]


def test_the_dry_run_says_what_the_executor_would_start(tmp_path):
    result = matrix(tmp_path, "--dry-run", "--defense", "identity", "--attack", "examiner",
                    "--executor", "process", "--workers", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "executor: process, 3 worker(s) from --workers, " in result.stdout
    local = matrix(tmp_path, "--dry-run", "--defense", "identity", "--attack", "examiner")
    assert "executor: local" in local.stdout.splitlines()
