"""Memory per run: held by the scheduler (runs this replica polls) vs by the hand-over store (the others' runs).

    python -m bench.handover_memory [N]

Each replica of k keeps N/k runs in the scheduler and the other N(k-1)/k in handover.Handover's store, so a
hand-over needs no relist. Statuses are what the operator writes for a real GetPipelineRun answer
(tests/unit/data/get_pipeline_run_sample.json). Python heap measured with tracemalloc, not RSS.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from paiflow_operator.access.view import AccessView
from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.replicas.handover import Handover
from paiflow_operator.runs.reconcile import Policy, reconcile
from paiflow_operator.runs.scheduler import Scheduler
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings

# Unit tests of the door and what uses it: every namespace allowed (policies: tests/unit/test_access_*.py).
ALLOW_ALL = AccessView(allow_all=True)

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "unit" / "data" / "get_pipeline_run_sample.json"


class Fixed:
    def __init__(self, owns: bool) -> None:
        self.value = owns

    def owns(self, uid: str) -> bool:
        return self.value


def measure(n: int, owned: bool, status: dict[str, Any]) -> float:
    gc.collect()
    tracemalloc.start()
    ownership = Fixed(owned)
    # observe() never calls PAI or Kubernetes: no clients needed.
    access = PaiAccess(
        Settings(), cast(Any, None), cast(Any, None), StaticCredentialSource("a", "b"), policies=ALLOW_ALL
    )
    scheduler = Scheduler(
        Settings(),
        access,
        RunWriter(cast(Any, None)),
        rng=random.Random(1),
        ownership=ownership,
    )
    handover = Handover(scheduler, ownership)
    for i in range(n):
        meta: dict[str, Any] = {
            "namespace": f"ns{i % 10}",
            "name": f"run-{i:05d}",
            "uid": f"{i:08x}-5f1c-4c1e-9d7a-{i:012x}",
        }
        meta |= {"generation": 1, "resourceVersion": str(100_000 + i)}
        spec = {"pipelineRunId": f"flow-{i:020d}", "workspaceId": "2001"}
        handover.observe({"metadata": meta, "spec": spec, "status": json.loads(json.dumps(status))}, None)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(scheduler.runs if owned else handover.others) == n
    return held


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 10_000
    run = PipelineRun.from_wire(json.loads(SAMPLE.read_text(encoding="utf-8")))
    spec = PaiPipelineRunSpec(pipelineRunId="flow-j94y0000000000lf7a", workspaceId="2001")
    status = reconcile(spec, 1, {}, run, datetime.now(UTC), Policy(timedelta(hours=1), 64 * 1024)).patch or {}
    print(f"status as JSON: {len(json.dumps(status, separators=(',', ':')))} bytes")
    polled, stored = measure(n, True, status), measure(n, False, status)
    print(f"N={n:,} in the scheduler: {polled / 2**20:.1f} MiB ({polled / n:,.0f} B/run)")
    print(f"N={n:,} in the hand-over store: {stored / 2**20:.1f} MiB ({stored / n:,.0f} B/run)")
    for k in (1, 2, 3, 5):
        mine = n / k
        print(f"  {k} replica(s): {(mine * polled / n + (n - mine) * stored / n) / 2**20:.1f} MiB each")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
