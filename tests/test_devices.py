"""How a run shares out the machine (``privbench.devices``, issue 26): threads per process, workers
per GPU, a GPU per worker, Ray's GPU shares, the dry run's line, and device-resident training that
leaves every CPU result as it was."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from torch import nn

from privbench import devices, executors, harness
from privbench.devices import (
    GPU_HOST_THREADS,
    WORKER_GPU_BYTES,
    describe_workers,
    gpu_workers,
    threads_per_process,
    worker_device,
)
from privbench.schedule import Job
from privbench.training import TrainingContext, apply, eval_batch_size, fit, resident

GIB = 2**30


def test_threads_share_the_cores_and_a_gpu_process_keeps_few():
    assert threads_per_process(1, cores=16) == 16
    assert threads_per_process(4, cores=16) == 4
    assert threads_per_process(3, cores=2) == 1  # never below one
    assert threads_per_process(1, cuda=True, cores=16) == GPU_HOST_THREADS
    assert threads_per_process(16, cuda=True, cores=16) == 1


def test_gpu_workers_are_bounded_by_memory_and_by_the_cores_that_feed_them():
    # one H200-like GPU, 16 cores: the cores allow 8 workers, the memory many more
    assert gpu_workers([139 * GIB], cores=16) == 16 // GPU_HOST_THREADS
    # little free memory: as many as it holds, at least one
    assert gpu_workers([2 * WORKER_GPU_BYTES + 1], cores=64) == 2
    assert gpu_workers([WORKER_GPU_BYTES // 2], cores=64) == 1
    # two GPUs share the host's cores: 16 cores -> 8 per GPU -> 4 workers each
    assert gpu_workers([80 * GIB, 80 * GIB], cores=16) == 8
    assert gpu_workers([], cores=16) == 1


def test_each_worker_takes_its_own_gpu_in_turn():
    assert [worker_device("cuda", k, 2) for k in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_device("cuda", 3, 1) == "cuda"
    assert worker_device("cuda:1", 0, 2) == "cuda:1"  # a named GPU stays
    assert worker_device("cpu", 5, 0) == "cpu"


def test_pool_initializer_numbers_workers_and_gives_each_its_gpu(monkeypatch):
    """``warm_up`` takes the next number from the shared counter: the k-th worker gets GPU k mod n."""
    monkeypatch.setattr(harness, "_WORKER_DEVICE", None)
    numbering = multiprocessing.get_context("spawn").Value("i", 0)
    settings = harness.WorkerSettings(device="cuda", trust_plugins=True)  # trusted: no zygote here
    seen = []
    for _ in range(3):
        harness.warm_up(settings, numbering, gpus=2)
        seen.append(harness._WORKER_DEVICE)
    assert seen == ["cuda:0", "cuda:1", "cuda:0"] and numbering.value == 3
    monkeypatch.setattr(harness, "_WORKER_DEVICE", "cpu")  # what context() then builds on
    assert harness.WorkerSettings(device="cuda").context(None).device == torch.device("cpu")


def test_process_executor_on_a_gpu_takes_its_worker_count_from_the_gpus(monkeypatch):
    monkeypatch.setattr(executors, "visible_gpu_memory", lambda device="cuda": [40 * GIB])
    monkeypatch.setattr(executors, "host_cores", lambda: 12)
    assert executors.workers_for("cuda") == 12 // GPU_HOST_THREADS
    assert executors.workers_for("cpu") == 12


def test_ray_asks_for_a_whole_gpu_to_train_and_a_share_to_run_a_cell():
    assert executors.ray_gpu_share(Job("defense", ())) == 1.0
    assert executors.ray_gpu_share(Job("cell", ())) == devices.RAY_CELL_GPU_SHARE < 1


def test_the_dry_run_says_how_many_workers_and_from_what():
    line = describe_workers("cuda", None, [80 * GIB], cores=16)
    assert "8 worker(s) from the GPUs' free memory and the host's cores" in line
    assert "80.0 GiB free" in line and "2 torch thread(s) each" in line
    assert "3 worker(s) from --workers" in describe_workers("cpu", 3, [], cores=2)
    assert describe_workers("cpu", None, [], cores=2).startswith("executor: process, 2 worker(s) from the host's cores")


def test_resident_data_is_the_same_tensors_on_the_cpu():
    """On the CPU ``resident`` copies nothing, so every CPU training loop is what it was."""
    x, y = torch.rand(5, 3), torch.arange(5)
    moved = resident("cpu", x, y)
    assert moved[0] is x and moved[1] is y


def test_evaluation_batches_are_large_on_a_gpu_and_do_not_change_outputs():
    assert eval_batch_size("cpu") == 512 and eval_batch_size("cuda") > 512
    ctx = TrainingContext(torch.device("cpu"), None, 0)
    torch.manual_seed(0)
    model, inputs = nn.Linear(4, 3), torch.rand(1100, 4)
    whole = apply(model, inputs, ctx, batch_size=2000)
    assert torch.allclose(apply(model, inputs, ctx), whole, atol=1e-6)
    assert torch.allclose(apply(model, inputs, ctx, batch_size=7), whole, atol=1e-6)


def test_fit_trains_the_same_model_whatever_the_batches_live_on():
    """Resident data changes where a batch is read from, not which batch: two fits from the same
    seed end on the same weights."""
    class Silent:
        def task(self, *args, **kwargs):
            import contextlib
            return contextlib.nullcontext(lambda: None)

    ctx = TrainingContext(torch.device("cpu"), Silent(), 3)
    inputs, targets = torch.rand(70, 4), torch.randint(0, 3, (70,))
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = fit(nn.Linear(4, 3), inputs, targets, nn.functional.cross_entropy, ctx, epochs=2,
                    description="t", batch_size=16)
        weights.append(model.weight.detach().clone())
    assert torch.equal(*weights)
    assert not torch.equal(weights[0], torch.zeros_like(weights[0]))


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_dry_run_with_cuda_and_no_gpu_says_the_run_would_stop(device, monkeypatch):
    from privbench import dryrun
    monkeypatch.setattr(devices, "visible_gpu_memory", lambda device="cuda": [])
    assert "torch sees no GPU" in dryrun.executor_line("process", None, device)
