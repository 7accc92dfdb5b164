"""``privbench matrix --timeline FILE``: where a run's time went, job by job (issue: operations)."""

from __future__ import annotations

import json
import threading
import time

from click.testing import CliRunner

from privbench.artifacts import LOCK_WAIT_S, file_lock
from privbench.cli import main


def test_the_timeline_has_a_line_per_job_between_the_run_lines(tmp_path):
    timeline = tmp_path / "timeline.jsonl"
    result = CliRunner().invoke(main, [
        "matrix", "--quiet", "--device", "cpu", "--dataset", "digits:limit=300,target_epochs=2",
        "--defense", "identity", "--defense", "noise", "--attack", "examiner:epochs=2",
        "--db", str(tmp_path / "s.db"), "--timeline", str(timeline)],
        env={"PRIVBENCH_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    first, *jobs, last = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert first["run"] == 1 and first["executor"] == "local"
    assert last["status"] == "finished" and last["finished"] >= first["started"]
    assert [job["stage"] for job in jobs] == ["scenario", "defense", "cell", "defense", "cell"]
    for job in jobs:
        assert first["started"] <= job["started"] <= job["finished"] <= last["finished"]
        assert job["cpu_s"] >= 0 and job["lock_wait_s"] >= 0 and job["pid"] > 0
    assert jobs[0]["label"] == "digits:limit=300,target_epochs=2 · seed 0"
    assert [job["statuses"] for job in jobs if job["stage"] == "cell"] == [["done"], ["done"]]
    assert jobs[0]["cpu_s"] > 0  # the target model trained in that job


def test_time_spent_waiting_for_another_builder_is_counted(tmp_path):
    """A job that waits for an artifact another process is building is idle, not working; the
    timeline tells the two apart."""
    lock = tmp_path / "artifact.lock"
    held = threading.Event()

    def builder():
        with file_lock(lock):
            held.set()
            time.sleep(0.4)

    thread = threading.Thread(target=builder)
    thread.start()
    held.wait()
    before = LOCK_WAIT_S[0]
    with file_lock(lock):  # a second open file: flock makes it wait as another process would
        waited = LOCK_WAIT_S[0] - before
    thread.join()
    assert 0.2 < waited < 2.0


def test_a_timeline_in_a_missing_folder_is_one_line_before_anything_runs(tmp_path):
    db = tmp_path / "s.db"
    result = CliRunner().invoke(main, [
        "matrix", "--quiet", "--device", "cpu", "--defense", "identity", "--attack", "examiner",
        "--db", str(db), "--timeline", str(tmp_path / "missing" / "t.jsonl")],
        env={"PRIVBENCH_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: --timeline {tmp_path / 'missing' / 't.jsonl'}: its folder "
                                     f"{tmp_path / 'missing'} does not exist; create it or choose "
                                     "another path")
    assert not db.exists()
