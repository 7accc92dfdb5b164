"""privbench's performance figures, all measured in one run on this machine.

Usage (from the repository root, in the project's environment)::

    python benchmarks/run.py                       # CPU: local vs process executor, rerun, encode costs
    python benchmarks/run.py --device cuda         # the same on a GPU (encode costs timed on it too)
    python benchmarks/run.py --workers 4 -- --seeds 0,1   # more workers; after --, extra matrix args

Prints:
1. the default matrix's wall time with ``--executor local``;
2. the same with ``--executor process --workers N`` and the speed-up local / process;
3. the cached rerun of (1) and its ratio to the first run;
4. per defense, the encode cost in ms per image for a batch of 256 images of each offline dataset
   (``digits`` 8x8 grey, ``lfw-subset`` 25x25 grey, a 28x28 batch the size of MNIST);
5. the peak memory (resident set, the whole process tree) of each matrix run.

Each matrix run is a fresh ``privbench matrix`` process in its own empty PRIVBENCH_HOME, so nothing
is cached before a first run; the two first runs do not share a cache either.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BATCH = 256
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * PAGE
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory(threading.Thread):
    """Samples the process tree's resident memory every 0.1 s and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self.stopped.wait(0.1)


def timed_matrix(workdir: Path, args: list[str]) -> tuple[float, int, str]:
    """(seconds, peak bytes, closing line) of one ``privbench matrix`` process run in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PRIVBENCH_HOME": str(workdir / "home"), "COLUMNS": "200"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "privbench", "matrix", "--quiet", *args],
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    sampler = PeakMemory(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()
    if process.returncode not in (0, 1):  # 1: some cell failed, still a finished run
        raise SystemExit(f"privbench matrix {' '.join(args)} exited {process.returncode}:\n{stderr}")
    return seconds, sampler.peak, stdout.strip().splitlines()[-1]


def encode_costs(device: str) -> dict[str, dict[str, float]]:
    """{defense: {dataset: ms per image}} encoding a batch of 256 images (after one warm-up call)."""
    import torch

    from privbench.context import ArtifactCache, RunContext
    from privbench.datasets import make_scenario
    from privbench.plugins import load_registry
    from privbench.training import seed_everything
    registry = load_registry()
    ctx = RunContext(device=torch.device(device), cache=ArtifactCache(None))
    costs: dict[str, dict[str, float]] = {}
    for dataset in ("digits", "lfw-subset", "mnist-sized"):
        scenario = _scenario(registry, dataset, ctx, make_scenario)
        for item in registry.all("defense"):
            defense = item.cls.from_params({})
            seed_everything(0)
            encoder = defense.fit(scenario, ctx).encoder.to(ctx.device).eval()
            batch = scenario.images("test")[:BATCH].to(ctx.device)
            batch = batch.repeat(-(-BATCH // len(batch)), 1, 1, 1)[:BATCH]
            costs.setdefault(item.name, {})[dataset] = _time_encoder(encoder, batch)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the process run (default 2)")
    parser.add_argument("matrix_args", nargs="*", help="extra `privbench matrix` arguments, after --")
    options = parser.parse_args()
    common = ["--device", options.device, *options.matrix_args]
    with tempfile.TemporaryDirectory(prefix="privbench-bench-") as tmp:
        local, local_peak, local_line = timed_matrix(Path(tmp) / "local", common)
        rerun, rerun_peak, rerun_line = timed_matrix(Path(tmp) / "local", common)
        process, process_peak, process_line = timed_matrix(
            Path(tmp) / "process", [*common, "--executor", "process", "--workers", str(options.workers)])
    costs = encode_costs("cuda" if options.device == "cuda" else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.node()}, {cores} CPU cores, Python {platform.python_version()}, "
          f"device {options.device}")
    print(f"local run:   {local_line}")
    print(f"process run: {process_line}")
    print(f"rerun:       {rerun_line}")
    print()
    print(f"default matrix, --executor local:                       {local:8.2f} s")
    print(f"default matrix, --executor process --workers {options.workers}:         {process:8.2f} s")
    print(f"speed-up local / process:                               {local / process:8.2f} x")
    print(f"cached rerun (every cell stored):                       {rerun:8.2f} s")
    print(f"rerun / first run:                                      {rerun / local:8.3f}")
    print(f"peak memory, local run (process tree):                  {local_peak / 2**30:8.3f} GiB")
    print(f"peak memory, process run (parent + workers):            {process_peak / 2**30:8.3f} GiB")
    print(f"peak memory, rerun:                                     {rerun_peak / 2**30:8.3f} GiB")
    print()
    datasets = list(next(iter(costs.values())))
    print(f"encode cost, ms per image, batch of {BATCH} ({options.device}):")
    print(f"  {'defense':18s}" + "".join(f"{d:>14s}" for d in datasets))
    for defense, row in costs.items():
        print(f"  {defense:18s}" + "".join(f"{row[d]:14.4f}" for d in datasets))


if __name__ == "__main__":
    main()
