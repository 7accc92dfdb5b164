#!/usr/bin/env bash
# Prepare, on a machine with a package registry, what benchmarks/gpu_check.sh needs on a GPU machine
# that has torch but no registry (issue 26's figures):
#   .whl/    the wheels privbench needs that such a machine lacks (SQLAlchemy, landlockpy), for
#            CPython 3.12 on x86-64 Linux;
#   .mnist/  real MNIST's four idx files, gzipped (torchvision's names), from DIR/MNIST/raw.
# Both folders are added to .git/info/exclude: they travel only when named (the device tool's
# `carry`), never in a commit.
#
# Usage, from the repository root:  bash benchmarks/prepare_gpu_check.sh DIR
#   DIR holds MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision's layout).
set -euo pipefail

mnist_dir=${1:?usage: bash benchmarks/prepare_gpu_check.sh DIR  (DIR/MNIST/raw holds the four MNIST idx files)}
raw="$mnist_dir/MNIST/raw"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
for name in "${files[@]}"; do
    [[ -f "$raw/$name" ]] || { echo "prepare_gpu_check: $raw/$name is missing (expected torchvision's MNIST idx files)" >&2; exit 2; }
done

for folder in .whl .mnist; do
    grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> .git/info/exclude
done

# The versions this environment runs, so the GPU machine runs the same code paths.
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "sqlalchemy==$(version sqlalchemy)" "landlockpy==$(version landlockpy)"

rm -rf .mnist && mkdir -p .mnist
for name in "${files[@]}"; do
    gzip -c "$raw/$name" > ".mnist/$name.gz"
done
du -sh .whl .mnist
echo "carry: [\".whl\", \".mnist\"]; command: bash benchmarks/gpu_check.sh"
