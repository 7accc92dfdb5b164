#!/usr/bin/env bash
# Issue 26's GPU figures in one prepared run, on a machine with an NVIDIA GPU and torch but no
# package registry. Prepare first, where a registry is reachable: bash benchmarks/prepare_gpu_check.sh DIR
# (wheels in .whl/, gzipped real MNIST in .mnist/), then run this from the repository root with both
# folders beside it.
#
# It installs privbench and the carried wheels into a scratch folder (no registry: --no-index,
# --no-deps), writes MNIST where torchvision reads it, and then, each step under its own time limit
# so that one slow step leaves the others' figures:
#   1. the GPU and the host (nvidia-smi, cores);
#   2. the tests marked `cuda` (a small matrix on the GPU against the CPU);
#   3. benchmarks/run.py --device cuda --mnist: the default matrix under both executors with the
#      GPU's busy share, and the wall time of `privbench reproduce he2019-mnist`.
# Logs go to $OUT (the device tool's folder that comes back), else to ./gpu-check-out.
#
# Environment: GPU_CHECK_DEVICE (default cuda), GPU_CHECK_SITE (default /tmp/privbench-site),
# GPU_CHECK_BENCH_S (default 420: the limit of step 3).
set -uo pipefail

out=${OUT:-./gpu-check-out}
site=${GPU_CHECK_SITE:-/tmp/privbench-site}
device=${GPU_CHECK_DEVICE:-cuda}
bench_s=${GPU_CHECK_BENCH_S:-420}
mkdir -p "$out"

step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "install into $site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "gpu_check: the carried wheels did not install (run benchmarks/prepare_gpu_check.sh first and carry .whl)"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$site" . \
    || { echo "gpu_check: privbench did not install from the working tree"; exit 1; }
export PYTHONPATH="$site" PATH="$site/bin:$PATH" PYTHONUNBUFFERED=1
python3 -c "import privbench, sqlalchemy, landlockpy" \
    || { echo "gpu_check: privbench or a carried wheel does not import from $site"; exit 1; }

step "real MNIST"
mnist=/tmp/privbench-mnist
mkdir -p "$mnist/MNIST/raw"
for archive in .mnist/*.gz; do
    gunzip -c "$archive" > "$mnist/MNIST/raw/$(basename "$archive" .gz)"
done
ls -l "$mnist/MNIST/raw"

step "GPU and host"
{ nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv; nproc;
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$out/host.txt"

step "tests marked cuda"
timeout 240 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.log"

step "benchmarks/run.py --device $device --mnist (limit ${bench_s} s)"
timeout "$bench_s" python3 benchmarks/run.py --device "$device" --mnist "$mnist" 2>&1 | tee "$out/benchmark.log"
echo "benchmark exit status: ${PIPESTATUS[0]}"
step "done"
