"""Small statistics helpers (no numpy: the numbers are few and the rules must be obvious)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.procs import ProcSample


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): always a value that was measured."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def lag_summary(lags: Sequence[float], late: int) -> dict[str, float | int | None]:
    """`late`: changes not seen by the end of the window (already counted in `lags` at their lower bound)."""
    return {
        "n": len(lags),
        "p50": _round(percentile(lags, 50)),
        "p99": _round(percentile(lags, 99)),
        "max": _round(max(lags) if lags else None),
        "mean": _round(sum(lags) / len(lags) if lags else None),
        "late": late,
    }


def cpu_and_rss(samples: Sequence[ProcSample], peak_window: float = 5.0) -> dict[str, float | None]:
    """Mean CPU (cores) and RSS over the samples; peak CPU over any `peak_window` seconds; peak RSS."""
    if len(samples) < 2:
        return {"cpu_mean": None, "cpu_peak": None, "rss_mean_mib": None, "rss_peak_mib": None}
    first, last = samples[0], samples[-1]
    span = last.at - first.at
    cpu_mean = (last.cpu_seconds - first.cpu_seconds) / span if span > 0 else None
    peak = 0.0
    j = 0
    for i, start in enumerate(samples):
        j = max(j, i)
        while j + 1 < len(samples) and samples[j].at - start.at < peak_window:
            j += 1
        if samples[j].at - start.at >= peak_window * 0.8:
            peak = max(peak, (samples[j].cpu_seconds - start.cpu_seconds) / (samples[j].at - start.at))
    return {
        "cpu_mean": _round(cpu_mean, 3),
        "cpu_peak": _round(peak, 3),
        "rss_mean_mib": _round(sum(s.rss_mib for s in samples) / len(samples), 1),
        "rss_peak_mib": _round(max(s.rss_mib for s in samples), 1),
    }


def ratio(ours: float | None, naive: float | None) -> float | None:
    if ours is None or naive is None or naive == 0:
        return None
    return _round(ours / naive, 3)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
