"""The benchmark's control-plane CPU quota holds a process to its share only while held (bench/cpu_share.py)."""

from __future__ import annotations

import subprocess
import time

import pytest
from bench.cpu_share import try_share
from bench.procs import read_proc


def _cores(pid: int, seconds: float = 1.5) -> float:
    before = read_proc(pid)
    time.sleep(seconds)
    after = read_proc(pid)
    assert before is not None and after is not None
    return (after.cpu_seconds - before.cpu_seconds) / seconds


def test_a_busy_process_gets_the_quota_while_held_and_the_whole_core_outside() -> None:
    share, why_not = try_share(0.3)
    if share is None:
        pytest.skip(f"no writable cgroup tree here: {why_not}")
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        share.add(busy.pid)
        free = _cores(busy.pid)
        throttled_before = share.throttling()
        with share.held():
            held = _cores(busy.pid)
        throttling = share.throttling().since(throttled_before)
        free_again = _cores(busy.pid)
    finally:
        busy.kill()
        busy.wait()
        share.close()
    # Ratios within this run: a noisy machine moves both sides alike.
    assert held < 0.6 * min(free, free_again), (free, held, free_again)
    assert throttling["throttled_share"] > 0.5, throttling
    assert not share.path.exists()
