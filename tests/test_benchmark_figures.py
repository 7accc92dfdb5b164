"""The arithmetic behind ``benchmarks/run.py``'s figures: the occupancy sweep over a run's timeline
(start-up, underfull time, shut-down, critical-path fraction) and the split of the process run's
job-seconds (``--split``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("privbench_benchmark_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def job(started: float, finished: float, lock_wait_s: float = 0.0) -> dict:
    return {"stage": "cell", "started": started, "finished": finished, "lock_wait_s": lock_wait_s}


def test_occupancy_counts_start_up_lock_waits_single_jobs_and_shut_down(bench):
    # launched at 0, exited at 7; job B waits 0.5 s on a lock, job C starts as B ends
    run = bench.MatrixRun(seconds=7.0, peak=0, closing_line="", launched=0.0, exited=7.0,
                          jobs=[job(1, 5), job(2, 4, lock_wait_s=0.5), job(4, 6)])
    used = bench.occupancy(run, workers=2)
    assert used.startup_s == pytest.approx(1.0)
    assert used.underfull_s == pytest.approx(1.5 + 1.0)  # 1 to 2.5 (B waits) and 5 to 6 (C alone)
    assert used.shutdown_s == pytest.approx(1.0)
    assert used.job_s == pytest.approx(4.0 + 1.5 + 2.0)
    assert used.critical_path_fraction == pytest.approx(4.5 / 7.0)
    # with one worker nothing is underfull while a job works
    assert bench.occupancy(run, workers=1).underfull_s == pytest.approx(0.0)


def back_to_back(bench, seconds: float, *job_seconds: float):
    """A run of ``seconds`` whose jobs, lasting ``job_seconds``, run one after the other from 1 s."""
    jobs, moment = [], 1.0
    for length in job_seconds:
        jobs.append(job(moment, moment + length))
        moment += length
    return bench.MatrixRun(seconds=seconds, peak=0, closing_line="", launched=0.0, exited=seconds,
                           jobs=jobs)


def test_split_multiplies_back_to_the_job_seconds_ratio_and_gives_the_ceiling(bench):
    local = back_to_back(bench, 110.0, 60.0, 40.0)  # 100 job-s with torch's default threads
    narrow = back_to_back(bench, 125.0, 70.0, 50.0)  # 120 job-s on one thread: local gained 1.2x
    one_worker = back_to_back(bench, 130.0, 72.0, 54.0)  # 126 job-s in a worker: 1.05x
    process = back_to_back(bench, 80.0, 70.0, 68.6)  # 138.6 job-s, two workers at once: 1.1x
    split = bench.WorkSplit(local, narrow, one_worker, process, workers=2, threads=1)
    assert split.intra_op_gain == pytest.approx(1.2)
    assert split.worker_cost == pytest.approx(1.05)
    assert split.side_by_side == pytest.approx(1.1)
    assert split.intra_op_gain * split.worker_cost * split.side_by_side == pytest.approx(138.6 / 100)
    assert split.ceiling == pytest.approx(110.0 / (138.6 / 2))


def test_gpu_busy_share_is_read_from_nvidia_smi_lines_per_gpu(bench):
    assert bench.parse_utilisation("63\n 7 \n[N/A]\n") == [63.0, 7.0]
    sampler = bench.GpuBusy()
    sampler.samples = [[50.0, 10.0], [70.0, 30.0], [90.0, 20.0]]
    assert sampler.share() == pytest.approx([0.7, 0.2])
    assert bench.GpuBusy().share() == []  # no samples (no nvidia-smi): no figure
    assert bench.busy_text([0.7, 0.2]) == "   GPU busy 70 % / 20 %" and bench.busy_text(None) == ""


def test_each_figure_is_printed_as_soon_as_it_is_measured(bench, capsys):
    bench.measured("reproduce he2019-mnist", 38.04, [0.62], "he2019-mnist: 44 of 44 checked rows hold")
    bench.measured("default matrix, local, run 1", 12.0)
    printed = capsys.readouterr()
    assert printed.out == ""  # the summary owns standard output
    assert printed.err.splitlines() == [
        "measured: reproduce he2019-mnist: 38.0 s   GPU busy 62 %   he2019-mnist: 44 of 44 checked rows hold",
        "measured: default matrix, local, run 1: 12.0 s",
    ]


def test_the_gpu_check_scripts_parse_and_the_preparation_names_a_missing_folder(tmp_path):
    import subprocess
    scripts = Path(__file__).resolve().parents[1] / "benchmarks"
    for script in ("gpu_check.sh", "prepare_gpu_check.sh"):
        assert subprocess.run(["bash", "-n", str(scripts / script)]).returncode == 0, script
    shown = subprocess.run(["bash", str(scripts / "prepare_gpu_check.sh"), str(tmp_path)], cwd=tmp_path,
                           capture_output=True, text=True)
    assert shown.returncode == 2
    assert shown.stderr.strip() == (f"prepare_gpu_check: {tmp_path}/MNIST/raw/train-images-idx3-ubyte is missing "
                                    "(expected torchvision's MNIST idx files)")


def test_a_defense_that_fails_to_encode_leaves_the_others_figures(bench, monkeypatch, capsys):
    import privbench.plugins
    import privbench.testing
    real_registry, real_fitted = privbench.plugins.load_registry(), privbench.testing.FittedDefenses

    class TwoDefenses:
        def get(self, kind, name):
            return real_registry.get(kind, name)

        def all(self, kind):
            return [real_registry.get("defense", name) for name in ("identity", "noise")]

    class NoiseFails(real_fitted):
        def protection(self, scenario, call):
            if call.name == "noise":
                raise RuntimeError("Expected all tensors to be on the same device")
            return super().protection(scenario, call)

    def small_digits(registry, dataset, ctx, make_scenario):  # one-epoch digits for every dataset
        source = registry.get("dataset", "digits").cls.from_params({"target_epochs": 1, "limit": 400})
        return make_scenario(source, source.load(ctx), 0)

    monkeypatch.setattr(privbench.plugins, "load_registry", TwoDefenses)
    monkeypatch.setattr(privbench.testing, "FittedDefenses", NoiseFails)
    monkeypatch.setattr(bench, "_scenario", small_digits)
    costs = bench.encode_costs("cpu")
    assert set(costs["identity"]) == {"digits", "lfw-subset", "mnist-sized"}
    assert all(cost >= 0 for cost in costs["identity"].values())
    assert all(cost != cost for cost in costs["noise"].values())  # nan: not measured
    assert "encode cost of noise on digits (cpu) failed: RuntimeError: Expected all" in capsys.readouterr().err
