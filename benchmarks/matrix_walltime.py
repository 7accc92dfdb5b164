"""Wall time of the default matrix and of its cached rerun, measured in one run on this machine.

Usage: ``python benchmarks/matrix_walltime.py [--device auto|cpu|cuda] [extra privbench matrix args]``

Each measurement runs ``privbench matrix`` as a fresh process in an empty temporary directory with
its own PRIVBENCH_HOME, so nothing is cached before the first run. The second run uses the same
store and cache: every cell is already finished, so it measures the cost of a resumed matrix.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_matrix(workdir: Path, args: list[str]) -> tuple[float, str]:
    """Seconds one ``privbench matrix`` process takes, start to exit, and its closing line."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "privbench", "matrix", "--quiet", *args],
                          cwd=workdir, env={**os.environ, "PRIVBENCH_HOME": str(workdir / "home"),
                                            "COLUMNS": "200"},
                          check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def main(args: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="privbench-bench-") as tmp:
        workdir = Path(tmp)
        first, first_line = timed_matrix(workdir, args)
        rerun, rerun_line = timed_matrix(workdir, args)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"first run: {first_line}")
    print(f"rerun:     {rerun_line}")
    print(f"default matrix, first run (nothing cached): {first:8.2f} s")
    print(f"default matrix, rerun (every cell stored):  {rerun:8.2f} s")
    print(f"rerun / first run:                          {rerun / first:8.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
