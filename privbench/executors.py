"""Executors: where the jobs of a matrix run (``--executor local|process|ray``).

All three run the same jobs (``privbench.schedule``) through the same harness
(``privbench.harness``): per (dataset, seed) one job trains the target model and one job per defense
fits it, and a defense's cells start only once it is fitted, so no cell repeats a fit. Every shared
artifact (target model, fitted defense, the examiner's raw-image classifier, a defense refitted with
classes held out) is built under a file lock in the cache: once, never twice at the same time; a job
that needs one being built waits and then loads it. Parallel executors start earlier stages first
and, among cells, first the one that opens each attack on a (dataset, seed) (it builds the attack's
own artifacts), then the longest (``cost_hint``). Results come back to the calling process, which
alone writes the store.

- ``local``: the jobs run one after the other in this process, depth first (a defense's cells
  right after its fit), with the run's progress bars for every training loop.
- ``process``: N worker processes on this machine (``concurrent.futures``), forked from a fork
  server that imported torch and the plugins once (``privbench.forkserver``; spawned for a CUDA
  device or where there is no fork server), each with ``threads`` torch threads; on a log (no TTY)
  each worker prints its own training lines. With ``--device cuda`` and no ``--workers``, N comes
  from the GPUs' free memory and the host's cores, and worker k uses GPU k mod the GPUs
  (``privbench.devices``).
- ``ray``: each job is a Ray task on a running cluster (``--ray-address``) or on a local one
  started with N CPUs; with ``--device cuda`` a task asks Ray for a whole GPU to train a shared
  artifact and for a quarter of one to run a cell. Workers on other machines need privbench and
  the plugins installed and the cache directory on shared storage.
"""

from __future__ import annotations

import concurrent.futures as futures
import heapq
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool

from privbench.devices import RAY_CELL_GPU_SHARE, default_workers, host_cores, threads_per_process, visible_gpu_memory
from privbench.errors import PrivbenchError
from privbench.forkserver import is_cuda, process_context
from privbench.harness import Harness, WorkerSettings, failed_job, run_job_in_this_process, warm_up
from privbench.schedule import Job, JobResult, attack_on_scenario, priority

EXECUTORS = ("local", "process", "ray")

Expand = Callable[[JobResult], list[Job]]


class LocalExecutor:
    """Runs every job in the calling process, depth first."""

    name = "local"
    workers = 1

    def __init__(self, worker: Harness) -> None:
        import torch
        self.worker = worker
        self.threads = torch.get_num_threads()  # its parties' too: the run's record of them
        self.current: Job | None = None
        self.on_change: Callable[[], None] = lambda: None  # set by the caller: refresh progress

    def run(self, jobs: Iterable[Job], expand: Expand) -> Iterator[JobResult]:
        stack = list(reversed(list(jobs)))
        while stack:
            self.current = stack.pop()
            self.on_change()
            result = self.worker.do(self.current)
            self.current = None
            yield result
            stack.extend(reversed(expand(result)))

    def running(self) -> dict[str, int]:
        return {self.current.stage: 1} if self.current else {}

    def running_jobs(self) -> list[Job]:
        return [self.current] if self.current else []

    def close(self, abort: bool = False) -> None:
        pass


class DispatchingExecutor:
    """Keeps at most ``workers`` jobs running and starts the most urgent waiting job when one ends.

    Subclasses say how to start a job (``_start`` -> handle), wait for some (``_wait``) and fetch a
    result (``_result``)."""

    name = "dispatching"

    def __init__(self, settings: WorkerSettings, workers: int, secret: int | None = None) -> None:
        self.settings, self.workers = settings, workers
        self.threads = settings.threads  # torch threads of each worker and its parties
        self.secret = secret  # the run secret travels with each job (never in a worker's settings)
        self.waiting: list[tuple[tuple, int, Job]] = []  # (priority, arrival, job)
        self.in_flight: dict = {}
        self.not_started: list[JobResult] = []  # jobs the executor could not even start
        self.submitted = 0
        self.opened: set[tuple] = set()  # (dataset, seed, attack) that already have a cell queued
        self.on_change: Callable[[], None] = lambda: None  # set by the caller: refresh progress

    def run(self, jobs: Iterable[Job], expand: Expand) -> Iterator[JobResult]:
        self._queue(jobs)
        while self.in_flight or self.not_started:
            while self.not_started:
                yield self.not_started.pop(0)
            for handle in self._wait() if self.in_flight else []:
                job = self.in_flight.pop(handle)
                try:
                    result = self._result(handle)
                except Exception as error:  # the worker died, or the job could not be sent
                    result = failed_job(job, error, self.settings.device)
                self._queue(expand(result))
                yield result

    def _queue(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            opens = job.stage == "cell" and attack_on_scenario(job) not in self.opened
            if opens:
                self.opened.add(attack_on_scenario(job))
            heapq.heappush(self.waiting, (priority(job, opens), self.submitted, job))
            self.submitted += 1
        while self.waiting and len(self.in_flight) < self.workers:
            job = heapq.heappop(self.waiting)[2]
            try:
                self.in_flight[self._start(job)] = job
            except Exception as error:  # e.g. a broken process pool: the job's cells fail, run goes on
                self.not_started.append(failed_job(job, error, self.settings.device))
        self.on_change()

    def running(self) -> dict[str, int]:
        """How many jobs of each stage are running now."""
        stages: dict[str, int] = {}
        for job in self.in_flight.values():
            stages[job.stage] = stages.get(job.stage, 0) + 1
        return stages

    def running_jobs(self) -> list[Job]:
        return list(self.in_flight.values())

    def _start(self, job: Job):  # pragma: no cover - abstract
        raise NotImplementedError

    def _wait(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def _result(self, handle) -> JobResult:  # pragma: no cover - abstract
        raise NotImplementedError


class ProcessExecutor(DispatchingExecutor):
    """Runs jobs in ``workers`` processes on this machine (``privbench.forkserver``)."""

    name = "process"

    def __init__(self, settings: WorkerSettings, workers: int, secret: int | None = None) -> None:
        if settings.cache_dir is None:
            raise PrivbenchError("--executor process shares trained artifacts through the cache; "
                                 "give it a --cache-dir (or leave the default)")
        super().__init__(settings, workers, secret)
        self.pool = self._new_pool()

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        context = process_context(self.settings.device)
        numbering = context.Value("i", 0)  # each worker takes the next number: its GPU (devices.py)
        gpus = len(visible_gpu_memory(self.settings.device)) if is_cuda(self.settings.device) else 0
        pool = futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=warm_up,
                                           initargs=(self.settings, numbering, gpus))
        for _ in range(self.workers):  # start every worker now: they import torch meanwhile
            pool.submit(int)
        return pool

    def _start(self, job: Job) -> futures.Future:
        try:
            return self.pool.submit(run_job_in_this_process, self.settings, job, self.secret)
        except BrokenProcessPool:  # a worker died (its jobs failed already): go on with a new pool
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(run_job_in_this_process, self.settings, job, self.secret)

    def _wait(self) -> list:
        done, _ = futures.wait(self.in_flight, return_when=futures.FIRST_COMPLETED)
        return list(done)

    def _result(self, handle: futures.Future) -> JobResult:
        return handle.result()

    def close(self, abort: bool = False) -> None:
        """Wait for the workers to exit; ``abort`` (Ctrl-C, SIGTERM) terminates them at once
        instead of letting their running jobs finish."""
        for future in self.in_flight:
            future.cancel()
        if abort:
            for process in list((self.pool._processes or {}).values()):  # no public way to stop them
                process.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


class RayExecutor(DispatchingExecutor):
    """Runs jobs as Ray tasks on a cluster (one GPU per task with ``--device cuda``)."""

    name = "ray"

    def __init__(self, settings: WorkerSettings, workers: int | None, address: str | None,
                 secret: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise PrivbenchError("--executor ray needs Ray: pip install 'privbench[ray]'") from None
        if settings.cache_dir is None:
            raise PrivbenchError("--executor ray shares trained artifacts through the cache; "
                                 "give it a --cache-dir on storage every node can reach")
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            options = {"address": address} if address else {"num_cpus": workers or host_cores()}
            ray.init(**options, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        super().__init__(settings, workers, secret)
        self.cuda = is_cuda(settings.device)
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_job_in_this_process)

    def _start(self, job: Job):
        task = self.task.options(num_gpus=ray_gpu_share(job)) if self.cuda else self.task
        return task.remote(self.settings, job, self.secret)

    def _wait(self) -> list:
        done, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        return done

    def _result(self, handle) -> JobResult:
        return self.ray.get(handle)

    def close(self, abort: bool = False) -> None:
        for ref in self.in_flight:
            self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()


def ray_gpu_share(job: Job) -> float:
    """The GPUs a Ray task asks for: one to train a shared artifact, ``RAY_CELL_GPU_SHARE`` of one
    for a cell."""
    return RAY_CELL_GPU_SHARE if job.stage == "cell" else 1.0


def workers_for(device: str) -> int:
    """Workers when ``--workers`` is not given, for this machine (``privbench.devices.default_workers``)."""
    cuda = is_cuda(device)
    return default_workers(cuda, visible_gpu_memory(device) if cuda else [], host_cores())


def make_executor(name: str, worker: Harness, *, workers: int | None = None,
                  threads: int | None = None, ray_address: str | None = None):
    """The executor called ``name``; ``workers`` defaults to ``default_workers``, ``threads`` to the
    host's cores shared out over the workers (``privbench.devices.threads_per_process``)."""
    if name not in EXECUTORS:
        raise PrivbenchError(f"unknown executor '{name}'; accepted: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise PrivbenchError(f"--workers must be at least 1; got {workers}")
    device = str(worker.ctx.device)
    if name == "local":  # on the CPU, torch's own default (one thread per physical core) unless given
        if threads or is_cuda(device):
            import torch
            torch.set_num_threads(threads or threads_per_process(1, cuda=True))
        return LocalExecutor(worker)
    count = workers or workers_for(device)
    settings = WorkerSettings.of(worker.ctx, threads or threads_per_process(count, cuda=is_cuda(device)))
    if name == "process":
        return ProcessExecutor(settings, count, worker.ctx.secret)
    return RayExecutor(settings, workers, ray_address, worker.ctx.secret)
