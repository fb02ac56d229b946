"""Child processes the benchmark starts (emulators, operators) and what it reads about them from /proc.

Every child runs in its own session (so a Ctrl-C typed at the terminal reaches only the benchmark, which
then stops them in order) and dies with the benchmark if the benchmark is killed outright (PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc: children then rely on the explicit stop in the benchmark's finally blocks
    _libc = None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # between fork and exec, in the child
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


class Child:
    """One child process with its output in a log file. stop() is safe to call repeatedly."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (as Kubernetes would send it), SIGKILL to the whole group after `grace` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            # Only while the leader is unreaped does its pid still name our group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float) -> None:
        """Until `url` answers 200; fails early, with the log, if the child dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout:.0f}s:\n{self.log_tail()}")


def python_child(name: str, module: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> Child:
    return Child(name, [sys.executable, "-m", module, *args], env, log_path)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The benchmark's environment minus anything that would change the operator's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIFLOW_", "ALIBABA_CLOUD_", "KUBECONFIG"))}
    env.update(PYTHONUNBUFFERED="1", ALIBABA_CLOUD_ECS_METADATA_DISABLED="true")
    env.update(extra)
    return env


@dataclass(frozen=True)
class ProcSample:
    at: float  # time.monotonic()
    cpu_seconds: float  # user + system, all threads
    rss_mib: float


def read_proc(pid: int) -> ProcSample | None:
    """CPU time and resident memory of one process, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            statm = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_pages = int(statm.split()[1])
    return ProcSample(time.monotonic(), (utime + stime) / CLOCK_TICKS, rss_pages * PAGE_KIB / 1024)
