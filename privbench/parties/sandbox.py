"""What a party's child process may still do once it has narrowed itself.

Each untrusted party (a defense's fit, an attack's run) runs in a child forked from a zygote that
has imported torch and the plugins but holds no data. First thing after the fork, the child calls
``enter_sandbox(workdir)``, which, in this order:

- computes what the child may read (below), while the zygote's working directory is still known;
- points standard input at ``/dev/null`` (``sys.stdin`` reads end of file at once);
- bares the environment: only ``PATH``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, the thread counts
  (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_*``), ``CUDA_VISIBLE_DEVICES`` and
  ``CUBLAS_WORKSPACE_CONFIG`` (which deterministic CUDA needs) stay, so every ``PRIVBENCH_*`` goes;
  ``HOME``, ``TMPDIR`` and ``tempfile.tempdir`` become ``workdir``. On Linux it also zeroes the
  environment block the kernel copied at exec, which ``os.environ`` no longer points into but which
  stayed readable in the process's own memory and in ``/proc/PID/environ``;
- changes directory to ``workdir`` (an empty 0700 directory the caller made);
- makes the process non-dumpable (``make_non_dumpable``);
- restricts files, network and IPC with Landlock, where the kernel has it.

Landlock (Linux >= 5.13; ABI 7 on the machine this was written on) is allow-list only. Reads (and
execution) stay allowed beneath: the Python installation (``sys.prefix``, ``sys.base_prefix``, their
exec twins, sysconfig's library directories), every ``site-packages``/``dist-packages`` on
``sys.path``, the top-level package (or lone module file) of every module in ``sys.modules``, the
system library directories, ``/etc/ld.so.cache``, ``/etc/localtime``, ``/usr/share/zoneinfo``,
``/dev/urandom``, ``/dev/random``, ``/dev/zero``, and what torch, numpy and joblib read at run time
(seen with strace): ``/proc/cpuinfo``, ``/sys/devices/system/cpu`` and the cgroup CPU quota files.
The child may also read its own ``/proc/PID``. Reads and writes are allowed in ``workdir`` (no
execution, no device nodes there) and on ``/dev/null``. With an NVIDIA GPU (``/dev/nvidiactl``
exists), the device nodes ``/dev/nvidia*`` (read, write, ioctl), ``/proc/driver/nvidia*``,
``/run/nvidia-persistenced``, ``/sys/bus/pci`` and ``/sys/devices`` are readable too, and the
child's own ``/proc/PID`` writable (CUDA names its threads through ``/proc/PID/task/TID/comm``);
these come from other projects' CUDA sandboxes and were not tried on a GPU here. Everything else is
denied: ``/etc/passwd``, other processes' ``/proc`` entries, the project directory,
``~/.privbench``, the store, the cache.

Two fences keep an allowed directory from opening too much. No directory that is, or holds, the
zygote's working directory (the project) or a path in ``exclude`` (the store, cache and data
directories) is allowed whole: its entries are allowed one by one instead, less the fenced branch
(symbolic links among them are skipped, their targets are judged where they live). The fenced
working directory's own contents stay closed, except packages imported from it (``privbench`` of an
editable install), which are allowed by name. Exclude whole directories: a SQLite store's ``-wal``
and ``-journal`` siblings are separate paths.

Landlock also denies TCP bind and connect (``restrict_network``) and, from ABI 6, scopes signals and
abstract unix sockets: the child can signal or connect only to itself and the processes it starts.
File descriptors it already holds (the pipe or socket pair to its parent) keep working.

Not enforced: Landlock does not cover ``stat``, ``readlink``, ``chmod``, ``chown``, ``utime`` or
extended attributes (the child still sees which paths exist, and, as the same user, could change
their modes), nor UDP before ABI 10, pathname unix sockets before ABI 9, System V IPC or POSIX
message queues; ``/dev/shm`` is denied, so torch's shared-memory tensors (``DataLoader`` workers) and
multiprocessing's locks fail. The command line (``sys.argv``, ``/proc/PID/cmdline``) is left as it
is. Anything plugin code did at import time in the zygote, before the fork, ran unsandboxed and could
have changed what this module computes (``sys.modules``, ``sys.path``, the module itself). Landlock
applies to the calling thread and the threads and processes it starts afterwards: call this before
starting threads. Where Landlock is missing (other systems, kernels without it, ``landlockpy`` not
installed) or the ruleset fails, files are not restricted and ``SandboxReport.note`` says why. On
systems other than Linux only standard input, the environment and the working directory are
narrowed; non-dumpability is a documented no-op there.

Landlock comes from ``landlockpy`` (0BSD, no dependencies): it knows every ABI up to 11, drops what
the running kernel lacks, and has scopes and network rules; ``landlock`` (1.0.0.dev5, alpha) has
neither scopes nor network rules and reads a stale ``errno`` as failure.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import glob
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

try:
    from landlockpy import AccessFS, AccessNet, Ruleset, Scope, abi_version
except ImportError:  # not Linux, or not installed: files stay unrestricted (see enter_sandbox)
    AccessFS = None

KEPT_VARIABLES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                            "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG"})
KEPT_PREFIXES = ("LC_", "OPENBLAS_")

SYSTEM_READABLE = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                   "/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom", "/dev/random", "/dev/zero",
                   "/proc/cpuinfo", "/sys/devices/system/cpu", "/sys/fs/cgroup/cpu.max",
                   "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
NVIDIA_READABLE = ("/proc/driver/nvidia", "/proc/driver/nvidia-uvm", "/run/nvidia-persistenced",
                   "/sys/bus/pci", "/sys/devices")

PR_SET_DUMPABLE = 4
_pinned: list[int] = []  # keeps the child's /proc/PID dentry, hence its Landlock rule, alive


@dataclasses.dataclass(frozen=True)
class SandboxReport:
    """What ``enter_sandbox`` enforced, for the caller to record."""

    landlock_abi: int | None  # the kernel's Landlock ABI version; None where there is no Landlock
    files_restricted: bool  # whether the Landlock ruleset is in force
    non_dumpable: bool
    note: str  # what Landlock enforced, or why it did not


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)`` on Linux; returns True when applied, False elsewhere (a no-op).

    A non-dumpable process leaves no core dump, cannot be ptrace-attached by another process of the
    same user, and its ``/proc/PID/{mem,environ,fd,cwd,...}`` become root's, unreadable to them."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) == 0


def enter_sandbox(workdir: str, *, restrict_files: bool = True, exclude: Sequence[str] = (),
                  restrict_network: bool = True) -> SandboxReport:
    """Narrow this freshly forked process to ``workdir`` (see the module docstring for what is
    enforced where). ``exclude``: paths never to make readable, even beneath an allowed directory.
    ``restrict_network``: with Landlock, deny TCP bind and connect too."""
    workdir = os.path.realpath(workdir)
    fences = {os.path.realpath(path) for path in exclude}
    project = os.path.realpath(os.getcwd())
    readable = _outermost(_readable_roots(), fences | {project}) if restrict_files else []
    _no_stdin()
    _bare_environment(workdir)
    os.chdir(workdir)
    non_dumpable = make_non_dumpable()
    abi, why = _landlock_abi()
    if why is None and not restrict_files:
        why = "restrict_files=False"
    if why is None:
        try:
            rules = _landlock(workdir, readable, fences, project, restrict_network)
        except OSError as error:  # LandlockError is one
            why = f"Landlock failed: {error}"
        else:
            network = ", TCP bind/connect denied" if restrict_network else ""
            scopes = ", signals and abstract unix sockets scoped" if abi >= 6 else ""
            return SandboxReport(abi, True, non_dumpable,
                                 f"Landlock ABI {abi}: {rules} rules, workdir writable{network}{scopes}")
    return SandboxReport(abi, False, non_dumpable, f"files not restricted: {why}")


@functools.cache
def _landlock_abi() -> tuple[int | None, str | None]:
    """The kernel's Landlock ABI version, or None and why there is none. Asked once, in the zygote
    (``remember_readable_roots``): the first Landlock call loads libc through
    ``ctypes.util.find_library``, which runs ``ldconfig -p`` in a subprocess, and a fork of the
    zygote inherits both the answer and the loaded libc (it cost every party process a fork and
    exec, ~10 ms)."""
    if sys.platform != "linux":
        return None, f"Landlock is Linux-only, this is {sys.platform}"
    if AccessFS is None:
        return None, "landlockpy is not installed"
    try:
        abi = abi_version()
    except OSError as error:
        return None, f"Landlock ABI unknown: {error}"
    return (abi, None) if abi else (None, "the kernel has no Landlock (it needs Linux >= 5.13, landlock in its LSMs)")


def _no_stdin() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    if fd != 0:
        os.dup2(fd, 0)
        os.close(fd)
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # never closed: fd 0


def _bare_environment(workdir: str) -> None:
    kept = {name: value for name, value in os.environ.items()
            if name in KEPT_VARIABLES or name.startswith(KEPT_PREFIXES)}
    os.environ.clear()  # also clears posix.environ, the same dict, and unsets each in libc
    os.environ.update(kept, HOME=workdir, TMPDIR=workdir)
    tempfile.tempdir = workdir
    try:  # the exec-time block: fields 50 and 51 (env_start, env_end) of /proc/self/stat
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        start, end = int(fields[47]), int(fields[48])
    except (OSError, IndexError, ValueError):  # not Linux, or no /proc
        return
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


class ImportRecorder:
    """A ``sys.meta_path`` entry that finds nothing and notes the name of every module the import
    system looks for (it asks only for modules not yet imported). Installed in the zygote after its
    readable roots are remembered, it lets a fork name the modules imported since without walking
    ``sys.modules``: reading each of the zygote's thousands of entries touches their reference
    counts, and each page so touched is copied after the fork (~10 ms per party process)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name, path=None, target=None):
        self.names.append(name)
        return None


def _readable_roots() -> list[str]:
    """The Python installation, site-packages and imported packages, as real paths (the zygote's
    share, computed once by ``remember_readable_roots``, plus the modules imported since)."""
    roots, recorder = _REMEMBERED.get("roots", frozenset()), _REMEMBERED.get("recorder")
    if not roots:
        paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        paths.update(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
        paths.update(entry for entry in sys.path
                     if os.path.basename(entry) in ("site-packages", "dist-packages"))
    else:
        paths = set()
    for name in set(recorder.names) if recorder is not None else list(sys.modules):
        module = sys.modules.get(name)
        if module is None:
            continue
        top = sys.modules.get(name.partition(".")[0]) or module
        where = getattr(top, "__path__", None) or [getattr(top, "__file__", None)]
        paths.update(path for path in where if isinstance(path, str) and path)
    return sorted(set(roots) | {os.path.realpath(path) for path in paths})


def _outermost(roots: list[str], fenced: set[str]) -> list[str]:
    """``roots`` less those beneath another root that holds no fenced path (one rule covers them):
    site-packages and each package in it were a rule apiece."""
    whole = [root for root in roots if not any(_beneath(fence, root) for fence in fenced)]
    return [root for root in roots
            if not any(parent != root and _beneath(root, parent) for parent in whole)]


_REMEMBERED: dict[str, Any] = {}


def remember_readable_roots() -> None:
    """Compute the readable roots once, in the zygote, so that each fork only adds what it imported
    itself (resolving every path again took most of a party's sandbox time)."""
    _REMEMBERED.clear()
    _REMEMBERED.update(roots=frozenset(_readable_roots()), recorder=ImportRecorder())
    sys.meta_path.insert(0, _REMEMBERED["recorder"])
    _landlock_abi()


def _landlock(workdir: str, readable: Iterable[str], fences: set[str], project: str,
              restrict_network: bool) -> int:
    """Build and enforce the ruleset; returns how many rules it holds."""
    read = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    device = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV
    nvidia = os.path.exists("/dev/nvidiactl")
    own = AccessFS.READ_FILE | AccessFS.READ_DIR | (AccessFS.WRITE_FILE if nvidia else AccessFS.NONE)
    granted = [(path, read) for path in (*readable, *SYSTEM_READABLE, *(NVIDIA_READABLE if nvidia else ()))]
    granted += [(path, device) for path in glob.glob("/dev/nvidia*")]
    granted += [("/dev/null", AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.TRUNCATE),
                (f"/proc/{os.getpid()}", own)]
    scoped = Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET
    with Ruleset(handled_net=None if restrict_network else AccessNet.NONE, scoped=scoped) as ruleset:
        rules = sum(_grant(ruleset, os.path.realpath(path), access, fences, project) for path, access in granted)
        # All of workdir, less execution and device nodes (root could mknod a disk there and read it).
        rules += _allow(ruleset, workdir, ruleset.handled_fs & ~(AccessFS.EXECUTE | AccessFS.MAKE_CHAR
                                                                 | AccessFS.MAKE_BLOCK | AccessFS.IOCTL_DEV))
        _pinned.append(os.open(f"/proc/{os.getpid()}", os.O_PATH | os.O_CLOEXEC))
        ruleset.restrict()
    return rules


def _beneath(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _grant(ruleset: Ruleset, path: str, access: AccessFS, fences: set[str], project: str) -> int:
    """Allow ``path``; where it holds a fenced path, allow its entries instead, less that branch.
    Returns how many rules that took."""
    if path == project or any(_beneath(path, fence) for fence in fences):
        return 0
    if not any(_beneath(fence, path) for fence in (*fences, project)):
        return _allow(ruleset, path, access)
    try:
        with os.scandir(path) as scan:
            entries = [entry.path for entry in scan if not entry.is_symlink()]
    except OSError:
        return 0
    return sum(_grant(ruleset, entry, access, fences, project) for entry in entries)


def _allow(ruleset: Ruleset, path: str, access: AccessFS) -> int:
    """One rule (a file takes only file rights); a path that is missing or unreachable stays denied."""
    if not os.path.isdir(path):
        access &= AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.TRUNCATE | AccessFS.EXECUTE \
            | AccessFS.IOCTL_DEV
    try:
        ruleset.allow_path(path, access)
    except OSError:
        return 0
    return 1
