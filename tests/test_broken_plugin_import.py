"""A third-party plugin module that fails to import is listed as broken and blocks no run.

Each test writes throwaway plugin modules and a ``*.dist-info`` whose ``entry_points.txt`` serves
them as ``privbench`` entry points into a temporary directory, and runs privbench in a subprocess
with that directory on PYTHONPATH: nothing is installed into this environment, and the fork server
of ``--executor process`` (started once per process, with the entry points of its time) is the
subprocess's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from privbench.store import Store

DIST = "privbench-broken-test-plugin"

RAISES = 'raise RuntimeError("boom at import")\n'
BODIES = {  # entry point name -> (module, body); sorted by module, the working one comes last
    "raises": ("pbbroken_a_raises", RAISES),
    "exits": ("pbbroken_b_exits", "import sys\nsys.exit(3)\n"),
    "interrupts": ("pbbroken_c_interrupts", "raise KeyboardInterrupt\n"),
    "missing": ("pbbroken_d_missing", "import pbbroken_no_such_module\n"),
    "fine": ("pbbroken_z_fine", "VALUE = 1\n"),
}

PROBE = """\
import sys


def loaded(names):
    \"\"\"Which of ``names`` this process has imported, and what privbench.preload left out.\"\"\"
    preload = sys.modules.get("privbench.preload")
    return {name: name in sys.modules for name in names}, dict(getattr(preload, "FAILED", {}))
"""


def plugin_site(root: Path, plugins: dict[str, tuple[str, str]]) -> Path:
    """A directory to put on PYTHONPATH: each plugin module and a dist-info serving them."""
    root.mkdir(parents=True)
    for module, body in plugins.values():
        (root / f"{module}.py").write_text(body)
    (root / "pbprobe.py").write_text(PROBE)
    info = root / f"{DIST.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[privbench]\n" + "".join(f"{name} = {module}\n" for name, (module, _) in plugins.items()))
    return root


def environment(site: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ, PRIVBENCH_HOME=str(home), COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def privbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "privbench", *args], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_the_fork_server_outlives_plugins_that_fail_to_import_and_preloads_the_rest(tmp_path):
    """An exception, sys.exit, KeyboardInterrupt or ImportError while a plugin module is preloaded
    leaves that module out; the server still preloads torch and the modules after it, and forks."""
    site = plugin_site(tmp_path / "site", BODIES)
    script = textwrap.dedent("""
        from concurrent.futures import ProcessPoolExecutor
        from privbench.forkserver import process_context, start_fork_server
        import pbprobe
        start_fork_server()
        with ProcessPoolExecutor(1, mp_context=process_context()) as pool:
            print(repr(pool.submit(pbprobe.loaded, {names!r}).result(timeout=120)))
        """).format(names=["torch", "privbench.harness", *(m for m, _ in BODIES.values())])
    run = subprocess.run([sys.executable, "-c", script], env=environment(site, tmp_path / "home"),
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    loaded, failed = eval(run.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert loaded == {"torch": True, "privbench.harness": True, "pbbroken_a_raises": False,
                      "pbbroken_b_exits": False, "pbbroken_c_interrupts": False,
                      "pbbroken_d_missing": False, "pbbroken_z_fine": True}
    assert failed == {"pbbroken_a_raises": "RuntimeError: boom at import",
                      "pbbroken_b_exits": "SystemExit: 3",
                      "pbbroken_c_interrupts": "KeyboardInterrupt",
                      "pbbroken_d_missing": "ModuleNotFoundError: No module named "
                                            "'pbbroken_no_such_module'"}
    assert "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def raising_plugin_env(tmp_path_factory) -> dict[str, str]:
    """A plugin that raises RuntimeError at import; one PRIVBENCH_HOME (and cache) for the runs."""
    root = tmp_path_factory.mktemp("broken-plugin")
    return environment(plugin_site(root / "site", {"boom": ("pbbroken_boom", RAISES)}), root / "home")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "local"])
def test_a_plugin_that_fails_to_import_blocks_no_matrix(raising_plugin_env, executor, tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    run = privbench(raising_plugin_env, "matrix", "--executor", executor, "--workers", "2",
                    "--dataset", "digits:limit=200,target_epochs=1", "--defense", "identity",
                    "--attack", "rmle:iterations=5,images=10", "--db", db, "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "Aborted" not in run.stderr, run.stderr
    assert [(cell.defense, cell.attack, cell.status) for cell in Store(db).cells()] == [
        ("identity", "rmle", "done")]
    listing = privbench(raising_plugin_env, "list")
    assert listing.returncode == 0, listing.stderr
    assert (f"broken plugin: plugin 'boom' from {DIST} 1.0 failed to import: "
            "RuntimeError: boom at import") in listing.stdout
