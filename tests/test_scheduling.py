"""How parallel executors order and start jobs: what runs first, and what need not wait."""

from __future__ import annotations

import sys

import pytest

from privbench.artifacts import ArtifactCache
from privbench.context import RunContext
from privbench.executors import DispatchingExecutor
from privbench.forkserver import preload_modules, process_context
from privbench.harness import Harness, WorkerSettings
from privbench.schedule import Job, JobResult, MatrixConfig, first_jobs, next_jobs, plan, priority
from privbench.testing import KIT_SECRET

DIGITS = ("digits", {"limit": 300, "target_epochs": 2, "target": "digit"})


def cells_of(registry, defenses, attacks):
    return plan(registry, MatrixConfig(datasets=[DIGITS], defenses=[(d, {}) for d in defenses],
                                       attacks=[(a, {}) for a in attacks]))


def test_target_model_first_then_defenses_that_do_not_need_it_then_costly_fits(registry):
    cells = cells_of(registry, ["identity", "dapter", "noise", "split", "disguised-nets"],
                     ["examiner"])
    order = sorted(first_jobs(cells), key=priority)
    labels = [job.stage if job.stage == "scenario" else job.cells[0].defense.name for job in order]
    assert labels[0] == "scenario"
    assert set(labels[1:3]) == {"noise", "disguised-nets"}  # they train their own server
    assert labels[3] == "dapter"  # needs the target model, and its U-Net is the costliest fit
    assert set(labels[4:]) == {"identity", "split"}


def test_longest_cells_start_first(registry):
    cells = cells_of(registry, ["identity", "dapter"], ["examiner", "inverse-network", "rmle"])
    order = sorted((Job("cell", (cell,)) for cell in cells), key=priority)
    names = [(job.cells[0].defense.name, job.cells[0].attack.name) for job in order]
    assert names[0] == ("dapter", "inverse-network")
    assert names.index(("identity", "inverse-network")) < names.index(("identity", "rmle"))
    assert names.index(("dapter", "rmle")) < names.index(("identity", "rmle"))
    assert names[-1] == ("identity", "examiner")


class RecordingExecutor(DispatchingExecutor):
    """A dispatcher with one slot that records the order it starts jobs in and runs nothing."""

    def __init__(self) -> None:
        super().__init__(WorkerSettings(), workers=1)
        self.started: list[Job] = []

    def _start(self, job: Job):
        self.started.append(job)
        return len(self.started)

    def _wait(self) -> list:
        return list(self.in_flight)[:1]

    def _result(self, handle) -> JobResult:  # a fitted defense lets all its cells go on
        job = self.started[handle - 1]
        return JobResult(job, ready=list(job.cells) if job.stage == "defense" else [])


def test_the_first_cell_of_each_attack_starts_before_the_attacks_other_cells(registry):
    """The examiner's first cell trains the raw-image classifiers every examiner cell loads: it
    starts among the first cells, not last (cheap), where a second worker would wait for it."""
    executor = RecordingExecutor()
    jobs = first_jobs(cells_of(registry, ["identity", "noise", "dapter"],
                               ["examiner", "inverse-network", "rmle"]))

    list(executor.run(jobs, next_jobs))
    cells = [(j.cells[0].defense.name, j.cells[0].attack.name) for j in executor.started
             if j.stage == "cell"]
    assert len(cells) == 9
    first_defense = cells[0][0]
    assert {attack for _, attack in cells[:3]} == {"examiner", "inverse-network", "rmle"}
    assert all(defense == first_defense for defense, _ in cells[:3])
    rest = [attack for _, attack in cells[3:]]  # the others by cost: the cheap examiner last
    assert rest.index("examiner") > max(i for i, a in enumerate(rest) if a == "inverse-network")


def test_a_defense_job_fits_without_the_target_model_when_its_defense_does_not_need_it(
        registry, tmp_path, monkeypatch):
    """The utility (which needs the target model) waits for the defense's first cell, so a defense
    that trains its own server fits while another worker still trains the target model."""
    worker = Harness(RunContext(cache=ArtifactCache(tmp_path / "cache"), secret=KIT_SECRET))

    def target_not_ready(scenario):
        raise RuntimeError("target model not trained yet")

    monkeypatch.setattr(worker.artifacts, "target_model", target_not_ready)
    jobs = {job.cells[0].defense.name: job
            for job in first_jobs(cells_of(registry, ["noise", "identity"], ["examiner"]))
            if job.stage == "defense"}
    noise = worker.do(jobs["noise"])
    assert noise.settled == [] and len(noise.ready) == 1  # fitted: its cell may start
    identity = worker.do(jobs["identity"])
    assert identity.ready == [] and identity.settled[0].status == "failed"
    assert "target model not trained yet" in identity.settled[0].reason


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_process_workers_fork_from_a_server_that_imported_torch_and_every_plugin():
    assert process_context().get_start_method() == "forkserver"
    assert process_context("cuda:0").get_start_method() == "spawn"  # CUDA workers stay spawned
    modules = preload_modules()
    assert {"torch", "torch._dynamo", "privbench.harness"} <= set(modules)
    assert {"privbench_plugins.noise", "privbench_plugins.dapter", "privbench_example"} <= set(modules)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_a_fresh_worker_has_what_its_first_job_imports_already(tmp_path):
    from plugins_for_tests import imported

    from privbench.executors import ProcessExecutor
    from privbench.harness import WorkerSettings
    executor = ProcessExecutor(WorkerSettings(cache_dir=str(tmp_path), threads=1), workers=1)
    try:
        modules = ["torch._dynamo", "sklearn.datasets", "privbench_plugins.dapter"]
        assert executor.pool.submit(imported, modules).result(timeout=120) == [True] * 3
    finally:
        executor.close()


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_the_fork_server_is_stopped_when_the_run_needs_no_more_workers(tmp_path):
    """Left alone it outlives the run and holds a log pipe open while it tears torch down; the
    command line stops it as soon as the matrix is done (in a subprocess: the test process keeps
    its own server)."""
    import subprocess
    script = """
import os, time
from multiprocessing import forkserver
from privbench.forkserver import start_fork_server, stop_fork_server
start_fork_server()
pid = forkserver._forkserver._forkserver_pid
stop_fork_server()
for _ in range(200):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print("stopped")
        break
    time.sleep(0.05)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "stopped", run.stderr


def test_only_the_fork_server_skips_the_interpreter_teardown_at_exit(monkeypatch):
    """``privbench.preload`` ends the fork server with ``os._exit`` after its exit handlers (its
    torch teardown took 1.3 s the run waited for); any other importer keeps the normal exit."""
    import atexit
    import os

    from privbench import preload
    registered = []
    monkeypatch.setattr(atexit, "register", lambda *call: registered.append(call))
    assert preload.exit_fast_in_fork_server() is False and registered == []
    # a function called main in multiprocessing/forkserver.py, as the server's import runs
    server_file = os.path.join(os.path.dirname(os.__file__), "multiprocessing", "forkserver.py")
    namespace = {"preload": preload}
    exec(compile("def main():\n    return preload.exit_fast_in_fork_server()\n", server_file, "exec"),
         namespace)
    assert namespace["main"]() is True and registered == [(os._exit, 0)]

