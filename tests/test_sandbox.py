"""The sandbox a party's child enters: each test forks, lets the child narrow itself and probe what
it can still reach, and reads the child's findings back over a pipe."""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import signal
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import skimage.metrics
import torch
import torch._dynamo  # noqa: F401 - the zygote imports it too (torch's optimisers do, lazily)

from privbench.parties.sandbox import SandboxReport, enter_sandbox, make_non_dumpable

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox is entered in a fork")

REPO = Path(__file__).resolve().parents[1]
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


def in_child(probe, *args):
    """Fork; the child runs ``probe(*args)`` and pickles back what it returns (or the exception)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_end)
        signal.alarm(20)  # a hung probe dies, and the parent reads end of file
        try:
            outcome = ("ok", probe(*args))
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            outcome = ("error", f"{type(error).__name__}: {error}")
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    assert data, "the child died without reporting"
    kind, value = pickle.loads(data)
    assert kind == "ok", value
    return value


def denied(action) -> str:
    """What an attempt at ``action()`` gave: ``denied``, ``allowed`` or the unexpected error."""
    try:
        action()
    except PermissionError:
        return "denied"
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return "allowed"


def read(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def require_landlock(report: SandboxReport) -> None:
    if not report.files_restricted:
        pytest.skip(f"Landlock not enforced here: {report.note}")


@pytest.fixture
def workdir(tmp_path) -> str:
    path = tmp_path / "work"
    path.mkdir(mode=0o700)
    return str(path)


def test_the_child_keeps_only_its_workdir_a_bare_environment_and_no_stdin(workdir, monkeypatch):
    monkeypatch.setenv("PRIVBENCH_SECRET", "the store's password")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def probe():
        typed_read, typed_write = os.pipe()  # pytest's fd 0 is /dev/null already: give it something
        os.write(typed_write, b"typed")
        os.close(typed_write)
        os.dup2(typed_read, 0)
        sys.stdin = io.StringIO("typed")
        enter_sandbox(workdir, restrict_files=False)
        return {"cwd": os.getcwd(), "environ": dict(os.environ), "tempdir": tempfile.gettempdir(),
                "stdin": sys.stdin.read(), "fd0": os.read(0, 10)}

    seen = in_child(probe)
    assert seen["cwd"] == workdir
    assert not [name for name in seen["environ"] if name.startswith("PRIVBENCH_")]
    assert seen["environ"]["HOME"] == seen["environ"]["TMPDIR"] == seen["tempdir"] == workdir
    assert seen["environ"]["OMP_NUM_THREADS"] == "1"
    kept = {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG"}
    assert all(name in kept or name.startswith(("LC_", "OPENBLAS_")) for name in seen["environ"])
    assert seen["stdin"] == "" and seen["fd0"] == b""


@pytest.mark.skipif(sys.platform != "linux", reason="read from /proc/self/stat")
def test_the_environment_block_from_exec_is_wiped(workdir):
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end: the fork inherits them
    if b"PATH=" not in ctypes.string_at(start, end - start):
        pytest.skip("this process started without PATH in its environment")

    def probe():
        enter_sandbox(workdir, restrict_files=False)
        return ctypes.string_at(start, end - start)

    assert set(in_child(probe)) == {0}


def test_files_outside_workdir_and_the_python_installation_are_unreadable(tmp_path, workdir, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the workdir")
    # An imported package that holds an excluded data directory and, contrived but the worst case,
    # the zygote's working directory (a project that imports its own package, projpkg).
    library = tmp_path / "lib" / "libpkg"
    project = library / "project"
    for directory in (library / "data", project / "projpkg"):
        directory.mkdir(parents=True)
    (library / "__init__.py").write_text("")
    (library / "notes.txt").write_text("a package file")
    (library / "data" / "store.db").write_text("excluded")
    (project / "projpkg" / "__init__.py").write_text("")
    (project / "inside.txt").write_text("in the project, not in a package")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(library.parent))
    monkeypatch.delitem(sys.modules, "projpkg", raising=False)
    monkeypatch.delitem(sys.modules, "libpkg", raising=False)
    __import__("projpkg")
    __import__("libpkg")

    def probe():
        report = enter_sandbox(workdir, exclude=[str(library / "data")])
        mine = Path(workdir, "mine.txt")
        mine.write_text("written")
        return report, {
            "/etc/passwd": denied(lambda: read("/etc/passwd")),
            "/proc/1/fd": denied(lambda: os.listdir("/proc/1/fd")),
            "/proc/1/environ": denied(lambda: read("/proc/1/environ")),
            "tmp_path": denied(lambda: read(secret)),
            "listing tmp_path": denied(lambda: os.listdir(tmp_path)),
            "cwd": denied(lambda: read(project / "inside.txt")),
            "repository": denied(lambda: read(REPO / "pyproject.toml")),
            "excluded": denied(lambda: read(library / "data" / "store.db")),
            "package": denied(lambda: read(library / "notes.txt")),
            "package in cwd": denied(lambda: read(project / "projpkg" / "__init__.py")),
            "workdir": mine.read_text(),
            "/tmp": denied(lambda: tempfile.mkstemp(dir="/tmp")),
            "stdlib": denied(lambda: read(os.__file__)),
        }

    report, seen = in_child(probe)
    require_landlock(report)
    assert report.landlock_abi and report.non_dumpable
    for what in ("/etc/passwd", "/proc/1/fd", "/proc/1/environ", "tmp_path", "listing tmp_path", "cwd",
                 "repository", "excluded", "/tmp"):
        assert seen[what] == "denied", what
    for what in ("package", "package in cwd", "stdlib"):
        assert seen[what] == "allowed", what
    assert seen["workdir"] == "written"


def test_a_package_imported_after_the_zygote_is_readable_and_one_never_imported_is_not(
        tmp_path, workdir, monkeypatch):
    """The zygote remembers its readable roots and then only records the names of modules imported
    after it (``ImportRecorder``): a fork that imports a package before its sandbox can read that
    package, and a package it never imported stays closed."""
    for name in ("laterpkg", "neverpkg"):
        (tmp_path / "lib" / name).mkdir(parents=True)
        (tmp_path / "lib" / name / "__init__.py").write_text("")
        (tmp_path / "lib" / name / "notes.txt").write_text(name)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))

    def probe():
        from privbench.parties import sandbox
        sandbox.remember_readable_roots()  # what the zygote does, here in the fork
        __import__("laterpkg")
        report = enter_sandbox(workdir)
        return report, {name: denied(lambda name=name: read(tmp_path / "lib" / name / "notes.txt"))
                        for name in ("laterpkg", "neverpkg")}

    report, seen = in_child(probe)
    require_landlock(report)
    assert seen == {"laterpkg": "allowed", "neverpkg": "denied"}


def test_the_zygote_asks_the_landlock_abi_once_and_its_forks_inherit_the_answer(workdir):
    """The first Landlock call runs ``ldconfig -p`` (ctypes' find_library); asked in the zygote, a
    fork answers from its copy of the cache and starts no process."""
    from privbench.parties import sandbox

    def probe():
        sandbox.remember_readable_roots()
        import subprocess
        started = []
        real = subprocess.Popen.__init__
        subprocess.Popen.__init__ = lambda self, *a, **k: started.append(a) or real(self, *a, **k)
        try:
            report = enter_sandbox(workdir)
        finally:
            subprocess.Popen.__init__ = real
        return report, started, sandbox._landlock_abi.cache_info().hits

    report, started, hits = in_child(probe)
    require_landlock(report)
    assert started == [] and hits >= 1


def test_without_restrict_files_the_same_files_stay_readable(workdir):
    def probe():
        return enter_sandbox(workdir, restrict_files=False), denied(lambda: read("/etc/passwd"))

    report, seen = in_child(probe)
    assert not report.files_restricted and "restrict_files=False" in report.note
    assert seen == "allowed"


def test_the_child_talks_to_its_parent_but_signals_and_connects_to_no_one_else(workdir):
    mine, theirs = socket.socketpair()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0privbench-sandbox-test-{os.getpid()}")
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract.listen()
    parent = os.getpid()

    def connect(family, address):
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.connect(address)

    def probe():
        report = enter_sandbox(workdir)
        theirs.sendall(b"still talking")
        return report, {
            "signal the parent": denied(lambda: os.kill(parent, 0)),
            "signal itself": denied(lambda: os.kill(os.getpid(), 0)),
            "abstract socket": denied(lambda: connect(socket.AF_UNIX, abstract.getsockname())),
            "tcp": denied(lambda: connect(socket.AF_INET, tcp.getsockname())),
        }

    try:
        report, seen = in_child(probe)
        assert mine.recv(100) == b"still talking"
    finally:
        for sock in (mine, theirs, abstract, tcp):
            sock.close()
    require_landlock(report)
    assert seen["signal itself"] == "allowed"
    assert seen["tcp"] == "denied"
    if report.landlock_abi < 6:
        pytest.skip(f"Landlock ABI {report.landlock_abi} has no scopes (ABI 6)")
    assert seen["signal the parent"] == seen["abstract socket"] == "denied"


def torch_workload() -> dict:
    """A small conv net's step, a save and load, and the numpy, scipy and skimage calls plugins make."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    images, labels = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    optimiser.step()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    values = np.random.default_rng(0).random((16, 16))
    return {"loss": loss.item(), "weights": {name: tensor.numpy() for name, tensor in loaded.items()},
            "pearson": float(scipy.stats.pearsonr(values.ravel(), values.T.ravel())[0]),
            "ssim": float(skimage.metrics.structural_similarity(values, values.T, data_range=1.0))}


def test_torch_numpy_scipy_and_skimage_still_work(workdir):
    def probe():
        return enter_sandbox(workdir), torch_workload()

    report, inside = in_child(probe)
    expected = in_child(torch_workload)  # the same, unsandboxed
    assert inside["loss"] == pytest.approx(expected["loss"])
    assert inside["pearson"] == pytest.approx(expected["pearson"])
    assert inside["ssim"] == pytest.approx(expected["ssim"])
    for name, weights in expected["weights"].items():
        np.testing.assert_allclose(inside["weights"][name], weights, rtol=1e-6)
    require_landlock(report)  # and it ran under Landlock


def dumpable() -> int:
    return ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_DUMPABLE is Linux's")
def test_make_non_dumpable_clears_the_flag():
    def probe():
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # whatever pytest was
        return dumpable(), make_non_dumpable(), dumpable()

    assert in_child(probe) == (1, True, 0)


def as_nobody() -> None:
    """Root bypasses /proc's ownership checks: as root, become ``nobody`` for the probe."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # which, as a change of credentials, also cleared the dumpable flag


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_DUMPABLE is Linux's")
@pytest.mark.parametrize("non_dumpable", [False, True])
def test_a_non_dumpable_process_hides_its_environ_from_a_same_user_process(non_dumpable):
    ready_read, ready_write = os.pipe()
    done_read, done_write = os.pipe()
    target = os.fork()
    if target == 0:  # the target: same user as the prober, then waits to be probed
        try:
            as_nobody()
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            if non_dumpable:
                make_non_dumpable()
            os.write(ready_write, b"x")
            os.read(done_read, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"x"

        def probe():
            as_nobody()
            return denied(lambda: read(f"/proc/{target}/environ")), os.stat(f"/proc/{target}/environ").st_uid

        seen, owner = in_child(probe)
    finally:
        os.write(done_write, b"x")
        os.waitpid(target, 0)
        for fd in (ready_read, ready_write, done_read, done_write):
            os.close(fd)
    if non_dumpable:
        assert (seen, owner) == ("denied", 0)
    else:
        assert (seen, owner) == ("allowed", os.getuid() if os.getuid() else 65534)


def test_the_report_says_why_when_landlock_is_missing(workdir, monkeypatch):
    from privbench.parties import sandbox
    monkeypatch.setattr(sandbox, "AccessFS", None)

    def probe():
        return enter_sandbox(workdir), denied(lambda: read("/etc/passwd"))

    report, seen = in_child(probe)
    assert report.files_restricted is False and report.landlock_abi is None
    assert "not restricted" in report.note
    assert seen == "allowed"
