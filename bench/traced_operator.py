"""The operator under tracemalloc, for `python -m bench.run --trace-memory`: where its memory goes.

Runs `python -m paiflow_operator` in this process with tracemalloc on; each SIGUSR1 writes what is held now,
grouped by the operator's (or a library's) line that allocated it, to $PAIFLOW_BENCH_TRACE_DIR/NN-<phase>.txt
(the phase read from $PAIFLOW_BENCH_TRACE_DIR/phase). Bench-only: timings under tracemalloc are not the
operator's, so a traced run measures memory and nothing else.
"""

from __future__ import annotations

import gc
import linecache
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

# Frames kept per allocation: enough to reach the operator's own line from a library's; more is much slower.
FRAMES = int(os.environ.get("PAIFLOW_BENCH_TRACE_FRAMES", "6"))
TOP = 60
PACKAGE_MARK = "paiflow_operator"


def _where(trace: tracemalloc.Traceback) -> str:
    """The innermost frame of the operator's own code (else of the innermost frame): who asked for it."""
    for frame in trace:  # most recent first
        if PACKAGE_MARK in frame.filename:
            return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
    frame = trace[0]
    return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"


def dump(directory: Path, count: int) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    totals: dict[str, list[int]] = {}
    for stat in snapshot.statistics("traceback"):
        key = _where(stat.traceback)
        held = totals.setdefault(key, [0, 0])
        held[0] += stat.size
        held[1] += stat.count
    phase_file = directory / "phase"
    phase = phase_file.read_text().strip() if phase_file.exists() else "now"
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next((line.split()[1] for line in status if line.startswith("VmRSS")), "0")
    traced, peak = tracemalloc.get_traced_memory()
    lines = [f"# {phase}: traced {traced / 2**20:.1f} MiB (peak {peak / 2**20:.1f}), VmRSS {int(rss) / 1024:.1f} MiB"]
    for key, (size, blocks) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:TOP]:
        path, _, lineno = key.rpartition(":")
        source = linecache.getline(path if path.startswith("/") else "", int(lineno)).strip()
        lines.append(f"{size / 2**20:8.2f} MiB {blocks:9,d} blocks  {key}  {source[:90]}")
    (directory / f"{count:02d}-{phase}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    directory = Path(os.environ.get("PAIFLOW_BENCH_TRACE_DIR", "."))
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    dumps = [0]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dumps[0] += 1
        dump(directory, dumps[0])

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = ["paiflow-operator"]
    from paiflow_operator.__main__ import main as operator_main

    return operator_main()


if __name__ == "__main__":
    sys.exit(main())
