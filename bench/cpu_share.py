"""A fixed CPU share for the control plane, as if it had nodes of its own.

On a cluster the operator never shares the API server's cores; on this two-core machine it does, and the
write ratio of a mass finish (operator's status writes per second over a lean client's) then mostly measured
how much CPU the operator, the emulator and the benchmark's watch took from etcd and kube-apiserver, plus how
much the host drifted between the two measurements. With the control plane held to the same CPU quota while
the lean client measures the ceiling and while the operator writes, the ratio compares two clients feeding the
same control plane, which is the question the ratio asks.

A CFS quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`) on a cgroup of its own, made only when this process
may (root, a writable cgroup tree); otherwise the benchmark runs without one and its results say so. The
cgroup's throttling counters tell whether the control plane was at its quota, which it should be in both
phases for the ratio to mean what it says.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


@dataclass(frozen=True)
class Throttling:
    periods: int
    throttled_periods: int
    throttled_seconds: float

    def since(self, earlier: Throttling) -> dict[str, float]:
        periods = self.periods - earlier.periods
        throttled = self.throttled_periods - earlier.throttled_periods
        return {
            "periods": periods,
            "throttled_share": round(throttled / periods, 3) if periods else 0.0,
            "throttled_seconds": round(self.throttled_seconds - earlier.throttled_seconds, 2),
        }


class CpuShare:
    """A cgroup with a quota of `cores` cores that the added processes are in only while it is held.

    Outside the held phases the processes are back in their own cgroups: a cgroup of its own would weigh the
    whole control plane as one task against every thread outside it, which slows it even without a quota.
    """

    def __init__(self, cores: float, name: str = f"paiflow-bench-{os.getpid()}") -> None:
        self.cores = cores
        self._v2 = (ROOT / "cgroup.controllers").exists()
        self._tree = ROOT if self._v2 else ROOT / "cpu"
        self.path = self._tree / name
        self._homes: dict[int, Path] = {}  # pid -> the cgroup it came from

    def open(self) -> CpuShare:
        if self._v2:
            controllers = (ROOT / "cgroup.subtree_control").read_text().split()
            if "cpu" not in controllers:
                (ROOT / "cgroup.subtree_control").write_text("+cpu")
        self.path.mkdir()
        quota = int(self.cores * PERIOD_US)
        if self._v2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        return self

    def add(self, pid: int) -> None:
        self._homes[pid] = self._home_of(pid)

    def _home_of(self, pid: int) -> Path:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self._v2 and controllers == "") or (not self._v2 and "cpu" in controllers.split(",")):
                return self._tree / path.lstrip("/")
        raise OSError(f"no cpu cgroup for pid {pid}")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The added processes under the quota for the block: only the phases compared with each other."""
        # cgroup.procs moves every thread of a process at once.
        for pid in self._homes:
            (self.path / "cgroup.procs").write_text(str(pid))
        try:
            yield
        finally:
            self._send_home()

    def _send_home(self) -> None:
        for pid, home in self._homes.items():
            with contextlib.suppress(OSError):  # already gone
                (home / "cgroup.procs").write_text(str(pid))

    def throttling(self) -> Throttling:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        throttled = int(stat["throttled_usec"]) / 1e6 if self._v2 else int(stat["throttled_time"]) / 1e9
        return Throttling(int(stat["nr_periods"]), int(stat["nr_throttled"]), throttled)

    def close(self) -> None:
        self._send_home()
        with contextlib.suppress(OSError):
            self.path.rmdir()


def try_share(cores: float) -> tuple[CpuShare | None, str]:
    """A CpuShare of `cores`, or None and why not (not root, no cgroup tree, no cpu controller)."""
    share = CpuShare(cores)
    try:
        return share.open(), ""
    except OSError as exc:
        share.close()
        return None, f"{type(exc).__name__}: {exc.strerror or exc}"
