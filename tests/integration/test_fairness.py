"""One namespace flooding PAI with polls does not hold another namespace's polls (bench/fairness.py, small)."""

from __future__ import annotations

from pathlib import Path

from bench.fairness import QUIET_NS, run_fairness


def test_a_quiet_namespace_waits_far_less_than_one_interval_with_the_fair_limiter(tmp_path: Path) -> None:
    interval, window = 5.0, 6.0
    # 200 unbatchable runs every 5 s ask 40 calls a second of a 20 qps limit: the flood alone fills the queue.
    result = run_fairness(flood=200, quiet=5, interval=interval, qps=20, seconds=window, latency=0.02, workdir=tmp_path)
    fifo, fair = result["fifo"][QUIET_NS], result["fair"][QUIET_NS]
    assert fair["polls"], result
    # First come, first served: the quiet namespace queues behind the flood (the comparison can fail); on a loaded
    # machine it may get no call at all within the window, that is, it waited all of it...
    fifo_worst = fifo["worst_delay_s"] if fifo["polls"] else window
    assert fifo_worst > interval / 4, result
    # ...shared fairly, its polls leave within a small part of the interval, many times sooner.
    assert fair["worst_delay_s"] < interval / 10, result
    assert fifo_worst / max(fair["worst_delay_s"], 1e-3) > 5, result
