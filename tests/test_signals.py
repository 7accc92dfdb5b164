"""Ctrl-C and SIGTERM stop a real run within seconds, keep what finished, record the running cells as
interrupted and say how to resume (issue: operations)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from privbench.store import Store

LONG_CELL = ["--dataset", "digits:limit=300,target_epochs=1", "--defense", "identity",
             "--attack", "examiner:epochs=1", "--attack", "inverse-network:epochs=100000"]


def start(tmp_path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PRIVBENCH_HOME": str(tmp_path / "home")}
    return subprocess.Popen([sys.executable, "-m", "privbench", "matrix", "--device", "cpu",
                             "--db", str(tmp_path / "s.db"), *LONG_CELL, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the run never printed {text!r}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_local_run_and_records_the_running_cell(tmp_path, signum):
    process = start(tmp_path)
    wait_for_line(process, "start: inverse-network")  # the long cell is running
    sent = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 130, stderr
    assert "interrupted: every finished cell is kept in the store; 1 running cell(s) recorded as " \
           "interrupted (identity · inverse-network:epochs=100000 · seed 0); rerun the same " \
           "command to go on" in stderr
    statuses = {c.attack_spec: c.status for c in Store(str(tmp_path / "s.db"), create=False).cells()}
    assert statuses == {"examiner:epochs=1": "done", "inverse-network:epochs=100000": "interrupted"}


def test_sigterm_stops_a_process_executor_run_within_seconds(tmp_path):
    process = start(tmp_path, "--executor", "process", "--workers", "2")
    deadline = time.monotonic() + 120
    db = tmp_path / "s.db"
    while time.monotonic() < deadline:  # the examiner cell done: the long cell is running or next
        time.sleep(0.5)
        if db.exists() and any(c.status == "done" for c in Store(str(db), create=False).cells()):
            break
    time.sleep(1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 130, stderr
    assert "rerun the same command to go on" in stderr
    statuses = {c.attack_spec: c.status for c in Store(str(db), create=False).cells()}
    assert statuses == {"examiner:epochs=1": "done", "inverse-network:epochs=100000": "interrupted"}
