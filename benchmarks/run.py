"""privbench's performance figures, all measured in one run on this machine.

Usage (from the repository root, in the project's environment)::

    python benchmarks/run.py                       # CPU: local vs process executor, rerun, encode costs
    python benchmarks/run.py --device cuda         # the same on a GPU (encode costs timed on it too)
    python benchmarks/run.py --device cuda --mnist DIR   # and He et al.'s MNIST reproduction, timed
    python benchmarks/run.py --workers 4 -- --seeds 0,1   # more workers; after --, extra matrix args
    python benchmarks/run.py --repeat 3            # every first run 3 times: each figure and the median
    python benchmarks/run.py --split               # also split the process run's extra job-seconds
    python benchmarks/run.py --inverse-network DIR # only He et al.'s MNIST conv1 inverse-network cell

Prints:
1. the default matrix's wall time with ``--executor local``;
2. the same with ``--executor process --workers N`` and the speed-up local / process;
3. the cached rerun of (1) and its ratio to the first run;
4. the dry run's estimate for an empty store beside the local run's wall time, and their ratio
   (the cost hints' calibration; a drift shows here);
5. per defense, the encode cost in ms per image for a batch of 256 images of each offline dataset
   (``digits`` 8x8 grey, ``lfw-subset`` 25x25 grey, a 28x28 batch the size of MNIST);
6. the peak memory of each matrix run: the whole process tree's proportional set size (PSS), so a
   page shared by several processes (torch's libraries in every worker) counts once;
7. where the process run's wall time went, from its ``--timeline``: start-up before the first job,
   time with fewer jobs working than workers, shut-down after the last, and their sum's share of
   the wall time (the critical-path fraction), beside the jobs' summed working seconds in the local
   and the process run, their ratio (above 1 by as much as a job on one torch thread beside another
   worker is slower than on the local run's two threads alone), and the speed-up the process run
   would give with its workers busy from launch to exit (the local run's wall time / the process
   run's job-seconds per worker).

With ``--split`` it also runs ``--executor local --threads T`` and ``--executor process --workers 1
--threads T`` once each (T: the torch threads of each process-run worker, the machine's cores shared
out) and splits the ratio of item 7 in three: what the local run gains from its extra torch threads
(job-seconds with T threads / with torch's default), what running a job in a worker process costs
(one worker / the local run, both with T threads), and how much slower N workers side by side run
their jobs than one worker alone (N workers / one worker); with the ceiling those leave.

With ``--inverse-network DIR`` (real MNIST under DIR, e.g. from ../shared/data/real_mnist.py) it
only times He et al.'s MNIST conv1 inverse-network cell: the owner's 8,000 training images ("same
set"), the mirrored decoder, 50 epochs; it prints the run's wall time, the attack's own time
(``cost.attack_s``) and the reconstruction's PSNR and SSIM.

With ``--device cuda`` every timed run also samples the GPU's busy share (``nvidia-smi``'s
utilisation, every half second, averaged over the run, per GPU), the process runs leave the
worker count to privbench (from the GPUs' memory and the host's cores) unless ``--workers`` is
given, and with ``--mnist DIR`` (real MNIST under DIR) the wall time and busy share of ``privbench
reproduce he2019-mnist`` are printed too.

With ``--repeat N`` the local and the process first runs are each made N times (alternating, each in
a fresh directory); every time is printed and the ratios use the medians, so the spread of a shared
or noisy machine shows.

Each matrix run is a fresh ``privbench matrix`` process in its own empty PRIVBENCH_HOME, so nothing
is cached before a first run; the two first runs do not share a cache either.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

BATCH = 256
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def proportional_bytes(pid: int) -> int:
    """A process's proportional set size (PSS): its private pages plus its share of the pages it
    shares with other processes (torch's libraries are mapped by every worker). Summed over a process
    tree, PSS counts each physical page once; RSS would count a shared library once per process.
    Falls back to RSS where smaps_rollup is missing."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def child_pids(pid: int) -> list[int]:
    """The direct children of a process: /proc/PID/task/*/children where the kernel has it, else a
    scan of every process's parent in /proc."""
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except FileNotFoundError:
        pass
    except OSError:
        return []
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
        except OSError:
            continue
    return children


def tree_memory_bytes(root_pid: int) -> int:
    """Memory of a process and all its descendants (sum of PSS), from /proc (Linux)."""
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += proportional_bytes(pid)
        stack.extend(child_pids(pid))
    return total


class PeakMemory(threading.Thread):
    """Samples the process tree's memory (PSS) and keeps the peak.

    Reading a torch process's PSS makes the kernel walk its page tables (about 15 ms of CPU each),
    CPU the timed run then lacks. The sampler waits 20 times as long as its last sample took between
    samples (at least 0.1 s), so it never takes more than 5% of one core: with a process tree of four
    torch processes that is about one sample a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.thread_time()
            self.peak = max(self.peak, tree_memory_bytes(self.pid))
            self.stopped.wait(max(0.1, 20 * (time.thread_time() - started)))


def parse_utilisation(text: str) -> list[float]:
    """Per-GPU utilisation (%) from ``nvidia-smi --query-gpu=utilization.gpu
    --format=csv,noheader,nounits``: one line per GPU; a line that is not a number (``[N/A]``) is
    left out."""
    values = []
    for line in text.splitlines():
        try:
            values.append(float(line.strip()))
        except ValueError:
            continue
    return values


class GpuBusy(threading.Thread):
    """Samples ``nvidia-smi``'s GPU utilisation (the share of time a kernel ran) every ``every``
    seconds while a timed run goes on; ``share()`` is the mean over the samples, per GPU, in [0, 1].
    Without ``nvidia-smi`` it samples nothing and ``share()`` is empty."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.stopped = every, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                shown = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return
            values = parse_utilisation(shown)
            if values:
                self.samples.append(values)
            self.stopped.wait(self.every)

    def share(self) -> list[float]:
        if not self.samples:
            return []
        gpus = min(len(sample) for sample in self.samples)
        return [sum(sample[g] for sample in self.samples) / len(self.samples) / 100 for g in range(gpus)]


@dataclass
class MatrixRun:
    """One timed ``privbench matrix`` process: wall seconds, peak memory, its closing line, and its
    jobs (from ``--timeline``) with the wall-clock span of the process; on a GPU its busy share."""

    seconds: float
    peak: int
    closing_line: str
    jobs: list[dict]
    launched: float
    exited: float
    gpu_busy: list[float] | None = None


def busy_text(shares: list[float] | None) -> str:
    """``GPU busy 63 %`` (one figure per GPU), or nothing off a GPU."""
    if not shares:
        return ""
    return "   GPU busy " + " / ".join(f"{100 * share:.0f} %" for share in shares)


def measured(label: str, seconds: float, busy: list[float] | None = None, detail: str = "") -> None:
    """One figure as soon as it is measured (standard error, flushed): a run stopped at a time limit
    still leaves the figures it reached (the summary below is printed only at the end)."""
    extra = f"   {detail}" if detail else ""
    print(f"measured: {label}: {seconds:.1f} s{busy_text(busy)}{extra}", file=sys.stderr, flush=True)


def fresh_home(workdir: Path) -> dict[str, str]:
    """The environment of a timed privbench process: its own PRIVBENCH_HOME under ``workdir`` (so
    nothing is cached before it) and wide lines."""
    return {**os.environ, "PRIVBENCH_HOME": str(workdir / "home"), "COLUMNS": "200"}


def timed_matrix(workdir: Path, args: list[str], label: str) -> MatrixRun:
    """One ``privbench matrix`` process run in ``workdir``, timed, with its job timeline; its time
    is reported at once under ``label`` (``measured``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    timeline = workdir / "timeline.jsonl"
    env = fresh_home(workdir)
    launched, started = time.time(), time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "privbench", "matrix", "--quiet",
                                "--timeline", str(timeline), *args],
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    sampler, busy = PeakMemory(process.pid), GpuBusy() if any(a.startswith("cuda") for a in args) else None
    for thread in (sampler, busy):
        if thread is not None:
            thread.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    exited = time.time()
    for thread in (sampler, busy):
        if thread is not None:
            thread.stopped.set()
            thread.join()
    if process.returncode not in (0, 1):  # 1: some cell failed, still a finished run
        raise SystemExit(f"privbench matrix {' '.join(args)} exited {process.returncode}:\n{stderr}")
    share = busy.share() if busy is not None else None
    measured(label, seconds, share)
    lines = [json.loads(line) for line in timeline.read_text().splitlines()]
    jobs = [line for line in lines if "stage" in line and "started" in line]
    summary = [line for line in stdout.splitlines() if re.match(r"\d+ cells?: ", line)]
    return MatrixRun(seconds, sampler.peak, (summary or stdout.strip().splitlines())[-1], jobs, launched,
                     exited, share)


def timed_reproduction(workdir: Path, name: str, data_dir: str, device: str) -> tuple[float, list[float]]:
    """Wall seconds and GPU busy share of ``privbench reproduce NAME`` on real data under
    ``data_dir``, from an empty PRIVBENCH_HOME (the target model is trained in the run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = fresh_home(workdir)
    busy = GpuBusy()
    busy.start()
    started = time.perf_counter()
    shown = subprocess.run([sys.executable, "-m", "privbench", "reproduce", name, "--data-dir", data_dir,
                            "--device", device, "--db", str(workdir / "reproduce.db"), "--quiet"],
                           cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    busy.stopped.set()
    busy.join()
    if shown.returncode not in (0, 1):  # 1: some row did not hold, still a finished run
        raise SystemExit(f"privbench reproduce {name} exited {shown.returncode}:\n{shown.stderr}")
    share = busy.share()
    outcome = shown.stdout.strip().splitlines()[-1:] or [""]
    measured(f"reproduce {name}", seconds, share, outcome[0])
    return seconds, share


def dry_run_estimate(workdir: Path, args: list[str]) -> float:
    """The seconds ``privbench matrix --dry-run`` estimates for ``args`` in an empty store (its cost
    hints at their calibrated seconds per unit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = fresh_home(workdir)
    shown = subprocess.run([sys.executable, "-m", "privbench", "matrix", "--dry-run", *args], cwd=workdir,
                           env=env, capture_output=True, text=True, check=True).stdout
    minutes = re.search(r"estimated time for the pending cells: about ([0-9.]+) min", shown)
    if minutes is None:
        raise SystemExit(f"privbench matrix --dry-run printed no estimate:\n{shown}")
    return float(minutes.group(1)) * 60


@dataclass
class Occupancy:
    """Where the wall time of a parallel run went, from its job timeline.

    A job counts as working from its start plus the seconds it waited for another process's
    artifact (``lock_wait_s``: such waits come first in a job) to its end. ``critical_path_s`` is
    the time fewer than ``workers`` jobs were working: the process starting up before the first
    job, gaps while only one job could run, and the time after the last job ended."""

    wall_s: float
    startup_s: float  # launch -> first job starts working
    underfull_s: float  # between the first job and the last: fewer than `workers` jobs working
    shutdown_s: float  # last job ends -> the process has exited and its output pipe closed
    job_s: float  # sum of the jobs' working seconds

    @property
    def critical_path_s(self) -> float:
        return self.startup_s + self.underfull_s + self.shutdown_s

    @property
    def critical_path_fraction(self) -> float:
        return self.critical_path_s / self.wall_s


def occupancy(run: MatrixRun, workers: int) -> Occupancy:
    """Sweep the jobs' working intervals and add up the time fewer than ``workers`` overlap."""
    spans = [(job["started"] + job["lock_wait_s"], job["finished"]) for job in run.jobs]
    spans = [(start, max(start, end)) for start, end in spans]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    underfull, working, previous = 0.0, 0, first
    for moment, change in events:
        if working < workers:
            underfull += moment - previous
        working, previous = working + change, moment
    return Occupancy(wall_s=run.exited - run.launched, startup_s=first - run.launched,
                     underfull_s=underfull, shutdown_s=run.exited - last,
                     job_s=sum(e - s for s, e in spans))


INVERSE_NETWORK_CELL = [
    "--dataset", "mnist:target=digit,owner_fraction=0.8,aux_fraction=0.1,target_epochs=10",
    "--defense", "split:layer=conv1", "--attack", "inverse-network:data=same-set,epochs=50",
]


def job_seconds(run: MatrixRun) -> float:
    """The jobs' summed working seconds of a run."""
    return occupancy(run, 1).job_s


def busy_speed_up(local: MatrixRun, process: MatrixRun, workers: int) -> float:
    """The speed-up a process run would give with its workers busy from launch to exit: the local
    run's wall time over the process run's job-seconds per worker."""
    return local.seconds / (job_seconds(process) / workers)


def inverse_network_cell(data_dir: str, device: str) -> None:
    """Time He et al.'s MNIST conv1 inverse-network cell and print its figures."""
    import json
    with tempfile.TemporaryDirectory(prefix="privbench-bench-") as tmp:
        db = Path(tmp) / "inverse.db"
        run = timed_matrix(Path(tmp), ["--device", device, "--data-dir", data_dir,
                                       "--db", str(db), *INVERSE_NETWORK_CELL], "inverse-network cell")
        seconds, peak = run.seconds, run.peak
        shown = subprocess.run([sys.executable, "-m", "privbench", "results", "--db", str(db),
                                "--cells", "--format", "json"], capture_output=True, text=True,
                               check=True).stdout
    (cell,) = json.loads(shown)
    metrics = cell["metrics"]
    print(f"MNIST conv1 inverse-network cell ({' '.join(INVERSE_NETWORK_CELL)}):")
    print(f"  wall time of the run (target model, fit, attack): {seconds:8.1f} s")
    print(f"  attack time (cost.attack_s):{'':22s}{metrics['cost.attack_s']:8.1f} s")
    print(f"  attack.psnr / attack.ssim:{'':24s}{metrics['attack.psnr']:8.2f} dB / "
          f"{metrics['attack.ssim']:.3f}")
    print(f"  peak memory (PSS):{'':32s}{peak / 2**30:8.3f} GiB")


def encode_costs(device: str) -> dict[str, dict[str, float]]:
    """{defense: {dataset: ms per image}} encoding a batch of 256 images (after one warm-up call)."""
    import torch

    from privbench.artifacts import ArtifactCache
    from privbench.context import RunContext
    from privbench.datasets import make_scenario
    from privbench.harness import Harness
    from privbench.parties.child import one_line
    from privbench.plugins import load_registry
    from privbench.testing import FittedDefenses, call_of
    registry = load_registry()
    ctx = RunContext(device=torch.device(device), cache=ArtifactCache(None))
    artifacts = FittedDefenses(Harness(ctx))  # fitted in defenders' processes, timed here
    costs: dict[str, dict[str, float]] = {}
    for dataset in ("digits", "lfw-subset", "mnist-sized"):
        scenario = _scenario(registry, dataset, ctx, make_scenario)
        for item in registry.all("defense"):
            try:
                protection, _ = artifacts.protection(scenario, call_of(item.cls))
                encoder = protection.encoder.to(ctx.device).eval()
                batch = scenario.images("test")[:BATCH].to(ctx.device)
                batch = batch.repeat(-(-BATCH // len(batch)), 1, 1, 1)[:BATCH]
                cost = _time_encoder(encoder, batch)
            except Exception as error:  # one defense failing on this device leaves the others' figures
                print(f"encode cost of {item.name} on {dataset} ({device}) failed: {one_line(error)}",
                      file=sys.stderr, flush=True)
                cost = float("nan")
            costs.setdefault(item.name, {})[dataset] = cost
    return costs


def _scenario(registry, dataset: str, ctx, make_scenario):
    """A scenario of ``dataset``; ``mnist-sized`` is digits upsampled to 28x28 (MNIST's size, offline)."""
    if dataset == "mnist-sized":
        source = registry.get("dataset", "digits").cls.from_params({"resize": 28, "target_epochs": 5})
    else:
        source = registry.get("dataset", dataset).cls.from_params({"target_epochs": 5})
    return make_scenario(source, source.load(ctx), 0)


def _time_encoder(encoder, batch, repeats: int = 20) -> float:
    """Median milliseconds per image of ``encoder(batch)``."""
    import torch
    with torch.no_grad():
        encoder(batch)  # warm-up (lazy initialisation, CUDA kernels)
        times = []
        for _ in range(repeats):
            if batch.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            encoder(batch)
            if batch.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    times.sort()
    return 1000 * times[len(times) // 2] / len(batch)


def print_occupancy(local_runs: list[MatrixRun], process_runs: list[MatrixRun], workers: int) -> None:
    """Where each run's wall time went: the critical-path fraction of the process runs (the share of
    the wall time when fewer than ``workers`` jobs worked) and its parts, and the jobs' working
    seconds summed, in the local run (whose jobs use every core's torch threads) and the process
    run (one core's threads each)."""
    print(f"where the wall time went (process runs: {workers} workers):")
    print(f"  {'run':10s}{'wall s':>9s}{'startup':>9s}{'underfull':>10s}{'shutdown':>9s}"
          f"{'critical path':>15s}{'job-s local':>13s}{'job-s process':>15s}")
    fractions, pairs = [], list(zip(local_runs, process_runs, strict=True))
    for number, (local, parallel) in enumerate(pairs):
        used = occupancy(parallel, workers)
        fractions.append(used.critical_path_fraction)
        print(f"  {'#' + str(number + 1):10s}{used.wall_s:9.1f}{used.startup_s:9.1f}"
              f"{used.underfull_s:10.1f}{used.shutdown_s:9.1f}{used.critical_path_fraction:15.3f}"
              f"{job_seconds(local):13.1f}{used.job_s:15.1f}")
    print(f"critical-path fraction of the process run (median):{'':5s}{median(fractions):8.3f}")
    print(f"work of the process run's jobs / the local run's (median):"
          f"{median(job_seconds(p) / job_seconds(a) for a, p in pairs):7.2f}")
    print(f"speed-up with no start-up, idle or shut-down time (median):"
          f"{median(busy_speed_up(a, p, workers) for a, p in pairs):6.2f} x")


@dataclass
class WorkSplit:
    """The process run's job-seconds over the local run's, as the product of three measured ratios.

    ``local`` runs with torch's default threads, ``local_narrow`` and ``one_worker`` with the
    threads a worker of the process run gets, ``workers`` of which make up ``process``."""

    local: MatrixRun
    local_narrow: MatrixRun
    one_worker: MatrixRun
    process: MatrixRun
    workers: int
    threads: int  # torch threads of each worker of the process run

    @property
    def intra_op_gain(self) -> float:
        """How much faster the local run's jobs are with every core's torch threads."""
        return job_seconds(self.local_narrow) / job_seconds(self.local)

    @property
    def worker_cost(self) -> float:
        """A job in a worker process against the same job in the calling process."""
        return job_seconds(self.one_worker) / job_seconds(self.local_narrow)

    @property
    def side_by_side(self) -> float:
        """How much slower the jobs run with ``workers`` workers busy at once than with one."""
        return job_seconds(self.process) / job_seconds(self.one_worker)

    @property
    def ceiling(self) -> float:
        """The speed-up had the workers been busy from launch to exit."""
        return busy_speed_up(self.local, self.process, self.workers)


def measure_split(tmp: Path, common: list[str], local: MatrixRun, process: MatrixRun,
                  workers: int) -> WorkSplit:
    """Run the two narrow runs of ``--split`` (one each) beside the given local and process runs."""
    from privbench.devices import threads_per_process
    threads = threads_per_process(workers)  # what each worker of the process run gets
    narrow = timed_matrix(tmp / "split-local", [*common, "--executor", "local", "--threads", str(threads)],
                          f"default matrix, local, {threads} thread(s)")
    one = timed_matrix(tmp / "split-process", [*common, "--executor", "process", "--workers", "1",
                                               "--threads", str(threads)],
                       f"default matrix, process, 1 worker, {threads} thread(s)")
    return WorkSplit(local, narrow, one, process, workers, threads)


def print_split(split: WorkSplit) -> None:
    threads = f"{split.threads} thread" + ("s" if split.threads > 1 else "")
    rows = [("local, torch's default threads (last local run)", split.local),
            (f"local --threads {split.threads}", split.local_narrow),
            (f"process --workers 1 --threads {split.threads}", split.one_worker),
            (f"process --workers {split.workers} (last process run)", split.process)]
    print("the process run's job-seconds split (--split, one run each):")
    print(f"  {'run':48s}{'wall s':>9s}{'job-s':>9s}")
    for name, run in rows:
        print(f"  {name:48s}{run.seconds:9.1f}{job_seconds(run):9.1f}")
    ratios = [(f"intra-op gain of the local run (job-s {threads} / default)", split.intra_op_gain),
              (f"cost of a worker process (1 worker / local, {threads})", split.worker_cost),
              (f"slow-down of {split.workers} workers side by side ({split.workers} workers / 1)",
               split.side_by_side)]
    for name, value in ratios:
        print(f"{name:60s}{value:8.2f}")
    print(f"{'ceiling: local wall / (process job-s / workers)':60s}{split.ceiling:8.2f} x")


def started_workers(run: MatrixRun) -> int:
    """How many worker processes a process run used: the distinct worker pids of its timeline."""
    return max(1, len({job["pid"] for job in run.jobs if "pid" in job}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers of the process run (default: 2 on the CPU, privbench's choice on a GPU)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="make each first run this many times and use the medians (default 1)")
    parser.add_argument("--split", action="store_true",
                        help="also run local and one-worker runs with a worker's threads and split "
                             "the process run's extra job-seconds")
    parser.add_argument("--inverse-network", metavar="DIR",
                        help="only time the MNIST conv1 inverse-network cell on real MNIST under DIR")
    parser.add_argument("--mnist", metavar="DIR",
                        help="also time `privbench reproduce he2019-mnist` on real MNIST under DIR")
    parser.add_argument("matrix_args", nargs="*", help="extra `privbench matrix` arguments, after --")
    options = parser.parse_args()
    if options.inverse_network:
        inverse_network_cell(options.inverse_network, options.device)
        return
    on_gpu = options.device.startswith("cuda")
    if options.workers is None and not on_gpu:
        options.workers = 2
    common = ["--device", options.device, *options.matrix_args]
    process_args = [*common, "--executor", "process",
                    *(["--workers", str(options.workers)] if options.workers else [])]
    local_runs, process_runs = [], []
    with tempfile.TemporaryDirectory(prefix="privbench-bench-") as tmp:
        estimate = dry_run_estimate(Path(tmp) / "dry-run", common)
        for attempt in range(options.repeat):
            local_runs.append(timed_matrix(Path(tmp) / f"local-{attempt}", common,
                                           f"default matrix, local, run {attempt + 1}"))
            process_runs.append(timed_matrix(Path(tmp) / f"process-{attempt}", process_args,
                                             f"default matrix, process, run {attempt + 1}"))
        rerun = timed_matrix(Path(tmp) / "local-0", common, "default matrix, local, cached rerun")
        workers = options.workers or started_workers(process_runs[-1])
        split = (measure_split(Path(tmp), common, local_runs[-1], process_runs[-1], workers)
                 if options.split else None)
        reproduction = (timed_reproduction(Path(tmp) / "he2019-mnist", "he2019-mnist", options.mnist,
                                           options.device) if options.mnist else None)
    costs = encode_costs("cuda" if options.device == "cuda" else "cpu")
    local, process = median(r.seconds for r in local_runs), median(r.seconds for r in process_runs)
    from privbench.devices import host_cores
    cores = host_cores()
    print(f"machine: {platform.node()}, {cores} CPU cores, Python {platform.python_version()}, "
          f"device {options.device}")
    print(f"local run:   {local_runs[0].closing_line}")
    print(f"process run: {process_runs[0].closing_line}")
    print(f"rerun:       {rerun.closing_line}")
    print()
    runs = f"median of {options.repeat}" if options.repeat > 1 else "one run"
    print(f"default matrix, --executor local ({runs}):{'':10s}{local:8.2f} s   "
          + " ".join(f"{r.seconds:.1f}" for r in local_runs) + busy_text(local_runs[-1].gpu_busy))
    print(f"default matrix, --executor process --workers {workers} ({runs}):"
          f"{process:8.2f} s   " + " ".join(f"{r.seconds:.1f}" for r in process_runs)
          + busy_text(process_runs[-1].gpu_busy))
    if reproduction is not None:
        print(f"reproduce he2019-mnist (real MNIST, empty cache):{'':7s}{reproduction[0]:8.2f} s"
              + busy_text(reproduction[1]))
    print(f"speed-up local / process:{'':31s}{local / process:8.2f} x   "
          + " ".join(f"{a.seconds / b.seconds:.2f}"
                     for a, b in zip(local_runs, process_runs, strict=True)))
    print(f"dry-run estimate for an empty store (cost hints):{'':7s}{estimate:8.2f} s   "
          f"estimate / local run: {estimate / local:.2f}")
    print(f"cached rerun (every cell stored):{'':23s}{rerun.seconds:8.2f} s")
    print(f"rerun / first local run:{'':32s}{rerun.seconds / local:8.3f}")
    print(f"peak memory, local run (PSS, process tree):{'':12s}"
          f"{max(r.peak for r in local_runs) / 2**30:8.3f} GiB")
    print(f"peak memory, process run (PSS, parent + workers):{'':6s}"
          f"{max(r.peak for r in process_runs) / 2**30:8.3f} GiB")
    print(f"peak memory, rerun (PSS):{'':31s}{rerun.peak / 2**30:8.3f} GiB")
    print()
    print_occupancy(local_runs, process_runs, workers)
    print()
    if split is not None:
        print_split(split)
        print()
    datasets = list(next(iter(costs.values())))
    print(f"encode cost, ms per image, batch of {BATCH} ({options.device}):")
    print(f"  {'defense':18s}" + "".join(f"{d:>14s}" for d in datasets))
    for defense, row in costs.items():
        print(f"  {defense:18s}" + "".join(f"{row[d]:14.4f}" for d in datasets))


if __name__ == "__main__":
    main()
