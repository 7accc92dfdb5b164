"""How a run shares out the machine: torch threads per process, workers per GPU, a GPU per worker.

- **Threads.** Every process that runs jobs (the local run, each worker) sets torch's intra-op
  threads from the cores it owns: the host's cores shared out over its workers. A process that
  drives a GPU keeps at most ``GPU_HOST_THREADS``: LeNet-sized work on a GPU is bound by kernel
  launches, and more host threads only spin (on one H200 with 16 cores the default matrix used 12x
  more CPU time than wall time with torch's default of one thread per core).
- **Workers on GPUs.** ``--executor process --device cuda`` without ``--workers`` runs
  ``gpu_workers`` workers: on each visible GPU as many as its free memory holds at
  ``WORKER_GPU_BYTES`` each, and no more than that GPU's share of the host's cores feeds at
  ``GPU_HOST_THREADS`` each; at least one per GPU.
- **A GPU per worker.** With several GPUs, worker k uses ``cuda:(k mod gpus)``: one worker group
  per GPU. A party process of that worker gets the same device.
- **Ray.** A Ray task asks for a whole GPU to train a shared artifact (target model, defense fit)
  and for ``RAY_CELL_GPU_SHARE`` of one to run a cell, whose attack is small.

The GPU figures are read from torch (``torch.cuda.mem_get_info``) in the run's own process, which
the party processes never fork from (they fork from a zygote that has not touched CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# Host threads a GPU-driving process keeps (it launches kernels; its CPU work is Python and small
# tensor bookkeeping). Not yet measured on a GPU: --threads overrides it.
GPU_HOST_THREADS = 2

# GPU memory one worker is given: its own CUDA context and those of its party processes (a service
# and an attacker can run at once, each with a context of roughly 0.5 GiB), the device-resident data
# of one scenario (real MNIST: 60,000 x 784 float32 = 0.19 GiB) and LeNet-sized models.
WORKER_GPU_BYTES = 3 * 2**30

# The share of a GPU a Ray task running one cell asks for.
RAY_CELL_GPU_SHARE = 0.25


def host_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_process(processes: int, *, cuda: bool = False, cores: int | None = None) -> int:
    """Torch intra-op threads for each of ``processes`` processes sharing the host: its cores shared
    out, at least one; at most ``GPU_HOST_THREADS`` for a process that drives a GPU."""
    share = max(1, (cores or host_cores()) // max(1, processes))
    return min(share, GPU_HOST_THREADS) if cuda else share


def gpu_workers(free_bytes: Sequence[int], cores: int) -> int:
    """How many workers ``--executor process --device cuda`` runs when ``--workers`` is not given,
    for GPUs with ``free_bytes`` of free memory each and ``cores`` host cores (module docstring)."""
    if not free_bytes:
        return 1
    cores_per_gpu = max(1, cores // len(free_bytes))
    fed = max(1, cores_per_gpu // GPU_HOST_THREADS)
    return sum(max(1, min(free // WORKER_GPU_BYTES, fed)) for free in free_bytes)


def default_workers(cuda: bool, free_bytes: Sequence[int], cores: int) -> int:
    """Workers when ``--workers`` is not given: ``gpu_workers`` on a GPU, else one per core."""
    return gpu_workers(free_bytes, cores) if cuda else cores


def visible_gpu_memory(device: str = "cuda") -> list[int]:
    """Free bytes on each GPU the run's ``device`` uses: every one torch sees for ``cuda``, the named
    one for ``cuda:N``; empty without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return []
    _, _, index = device.partition(":")
    indices = [int(index)] if index else range(torch.cuda.device_count())
    return [torch.cuda.mem_get_info(number)[0] for number in indices]


def worker_device(device: str, worker_number: int, gpus: int) -> str:
    """The device of worker ``worker_number`` (0, 1, ...): ``cuda`` becomes ``cuda:(k mod gpus)``
    with several GPUs; a named GPU (``cuda:1``) or the CPU stays as given."""
    if device == "cuda" and gpus > 1:
        return f"cuda:{worker_number % gpus}"
    return device


def describe_workers(device: str, workers: int | None, free_bytes: Sequence[int], cores: int) -> str:
    """The dry run's line on ``--executor process``: how many workers, their threads and GPUs."""
    cuda = device.split(":", 1)[0] == "cuda"
    count = workers or default_workers(cuda, free_bytes, cores)
    origin = "--workers" if workers else ("the GPUs' free memory and the host's cores" if cuda
                                          else "the host's cores")
    threads = threads_per_process(count, cuda=cuda, cores=cores)
    where = (f" on {len(free_bytes)} GPU(s) ({', '.join(f'{free / 2**30:.1f} GiB free' for free in free_bytes)})"
             if cuda else "")
    return f"executor: process, {count} worker(s) from {origin}{where}, {threads} torch thread(s) each"
