"""Executors: where the jobs of a matrix run (``--executor local|process|ray``).

All three run the same jobs (``privbench.worker``) in the same stage order: a (dataset, seed) is
prepared and its target model trained before any of its defenses is fitted, and a defense is
fitted once, before any of its cells runs, so no worker waits for, or repeats, another's training.
Shared artifacts that an attack trains on the way (the examiner's raw-image classifier, a defense
refitted with classes held out) are built under a file lock in the cache: once, never twice at
the same time. Results come back to the calling process, which alone writes the store.

- ``local``: the jobs run one after the other in this process, depth first (a defense's cells
  right after its fit), with the run's progress bars for every training loop.
- ``process``: N worker processes on this machine (``concurrent.futures`` with the ``spawn``
  start method, safe with torch), each with ``threads`` torch threads.
- ``ray``: each job is a Ray task on a running cluster (``--ray-address``) or on a local one
  started with N CPUs; with ``--device cuda`` every task asks Ray for one GPU. Workers on other
  machines need privbench and the plugins installed and the cache directory on shared storage.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator

from privbench.errors import PrivbenchError
from privbench.worker import CellWorker, Job, JobResult, WorkerSettings, failed_job, run_job_in_this_process

EXECUTORS = ("local", "process", "ray")

Expand = Callable[[JobResult], list[Job]]


def default_threads(workers: int) -> int:
    """Torch threads per worker: the machine's cores shared out, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, workers))


class LocalExecutor:
    """Runs every job in the calling process, depth first."""

    name = "local"
    workers = 1

    def __init__(self, worker: CellWorker) -> None:
        self.worker = worker

    def run(self, jobs: Iterable[Job], expand: Expand) -> Iterator[JobResult]:
        stack = list(reversed(list(jobs)))
        while stack:
            result = self.worker.do(stack.pop())
            yield result
            stack.extend(reversed(expand(result)))

    def running(self) -> int:
        return 1

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Runs jobs in ``workers`` spawned processes; dependent jobs are submitted as results arrive."""

    name = "process"

    def __init__(self, settings: WorkerSettings, workers: int) -> None:
        if settings.cache_dir is None:
            raise PrivbenchError("--executor process shares trained artifacts through the cache; "
                                 "give it a --cache-dir (or leave the default)")
        self.settings, self.workers = settings, workers
        self.pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self.in_flight: dict[futures.Future, Job] = {}

    def run(self, jobs: Iterable[Job], expand: Expand) -> Iterator[JobResult]:
        for job in jobs:
            self._submit(job)
        while self.in_flight:
            done, _ = futures.wait(self.in_flight, return_when=futures.FIRST_COMPLETED)
            for future in done:
                job = self.in_flight.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # the worker process died or the job did not pickle
                    result = failed_job(job, error, self.settings.device)
                yield result
                for follow_up in expand(result):
                    self._submit(follow_up)

    def _submit(self, job: Job) -> None:
        self.in_flight[self.pool.submit(run_job_in_this_process, self.settings, job)] = job

    def running(self) -> int:
        return min(self.workers, len(self.in_flight))

    def close(self) -> None:
        for future in self.in_flight:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs jobs as Ray tasks on a cluster (one GPU per task with ``--device cuda``)."""

    name = "ray"

    def __init__(self, settings: WorkerSettings, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise PrivbenchError("--executor ray needs Ray: pip install 'privbench[ray]'") from None
        if settings.cache_dir is None:
            raise PrivbenchError("--executor ray shares trained artifacts through the cache; "
                                 "give it a --cache-dir on storage every node can reach")
        self.ray, self.settings, self.workers = ray, settings, workers
        self.started_here = not ray.is_initialized()
        if self.started_here:
            options = {"address": address} if address else {"num_cpus": workers}
            ray.init(**options, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        gpus = 1 if settings.device.startswith("cuda") else 0
        self.task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(run_job_in_this_process)
        self.in_flight: dict = {}

    def run(self, jobs: Iterable[Job], expand: Expand) -> Iterator[JobResult]:
        for job in jobs:
            self._submit(job)
        while self.in_flight:
            done, _ = self.ray.wait(list(self.in_flight), num_returns=1)
            for ref in done:
                job = self.in_flight.pop(ref)
                try:
                    result = self.ray.get(ref)
                except Exception as error:  # the task's worker died, or Ray could not run it
                    result = failed_job(job, error, self.settings.device)
                yield result
                for follow_up in expand(result):
                    self._submit(follow_up)

    def _submit(self, job: Job) -> None:
        self.in_flight[self.task.remote(self.settings, job)] = job

    def running(self) -> int:
        return min(self.workers, len(self.in_flight))

    def close(self) -> None:
        for ref in self.in_flight:
            self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()


def make_executor(name: str, worker: CellWorker, *, workers: int | None = None,
                  threads: int | None = None, ray_address: str | None = None):
    """The executor called ``name``; ``workers`` defaults to the machine's cores."""
    if name not in EXECUTORS:
        raise PrivbenchError(f"unknown executor '{name}'; accepted: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise PrivbenchError(f"--workers must be at least 1; got {workers}")
    if name == "local":
        if threads:
            import torch
            torch.set_num_threads(threads)
        return LocalExecutor(worker)
    count = workers or default_threads(1)
    settings = WorkerSettings.of(worker.ctx, threads or default_threads(count))
    if name == "process":
        return ProcessExecutor(settings, count)
    return RayExecutor(settings, count, ray_address)
