"""Inside a run, end to end: the operator as it ships against the real API server and the emulator shows a
multi-node run's progress moving (the PROGRESS column), a failed run's node and log tail in status, Event and
`kubectl describe`, and a succeeded run's outputs; runs that do not ask cost no priced call.

The shared test operator runs with PAIFLOW_INSIDE=false (other tests count calls per run), so these runs ask
with spec.inside: true, which also proves the per-run switch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.e2e.conftest import Runs, wait_for
from tests.support.operator_process import OperatorProcess

from paiflow_emulator.server import Emulator

pytestmark = pytest.mark.cluster

PRICED = ("GetPipelineRunNode", "ListPipelineRunNodeLogs", "ListPipelineRunNodeOutputs")


def priced_calls(emulator: Emulator, run_id: str) -> int:
    return sum(emulator.counters.calls_for(run_id, action) for action in PRICED)


def add(emulator: Emulator, run_id: str, running: float, end: list[Any], nodes: list[dict[str, Any]]) -> None:
    run = {"id": run_id, "timeline": [["Initialized", 1], ["Running", running], end], "nodes": nodes}
    emulator.load_scenario({"runs": [run]})


def test_progress_moves_through_a_multi_node_run(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: Callable[[], str]
) -> None:
    rid = run_id()
    model = {"name": "m", "type": "Model", "info": {"uri": "oss://b/m/"}}
    nodes = [
        {"name": "prepare", "duration": 4},
        {
            "name": "features",
            "children": [{"name": "a", "start": 4, "duration": 4}, {"name": "b", "start": 4, "duration": 6}],
        },
        {"name": "train", "start": 10, "duration": 5, "outputs": [model]},
    ]
    add(emulator, rid, 15, ["Succeeded", None], nodes)
    runs.apply("steps", rid, inside=True)
    seen: list[str] = []

    def column() -> str | None:
        header, row = runs.cp.kubectl("get", "ppr", "steps", "-n", runs.namespace).stdout.splitlines()[:2]
        # Cut at the column's position: empty cells (no progress yet) leave no word to split on.
        value = row[header.index("PROGRESS") : header.index("DURATION")].strip()
        if not seen or seen[-1] != value:
            seen.append(value)
        return value if value == "4/4" else None

    wait_for(column, 60, interval=0.5, what="PROGRESS to reach 4/4")
    assert len([v for v in seen if v.endswith("/4")]) >= 3, seen  # it moved: at least two values before 4/4

    def ended() -> dict[str, Any] | None:
        status = runs.status("steps")
        return status if (status.get("nodes") or {}).get("final") else None

    # 4/4 may come from a progress read just before the run's end is seen; the end read follows it.
    status = wait_for(ended, 30, what="the end read (nodes.final)")
    assert status["nodes"]["final"] is True and status["nodes"]["counts"]["succeeded"] == 4
    assert status["outputs"] == [
        {
            "name": "m",
            "type": "Model",
            "nodeId": status["outputs"][0]["nodeId"],
            "node": "train",
            "uri": "oss://b/m/",
            "createdAt": status["outputs"][0]["createdAt"],
        }
    ]
    uri = runs.cp.kubectl(
        "get", "ppr", "steps", "-n", runs.namespace, "-o", 'jsonpath={.status.outputs[?(@.type=="Model")].uri}'
    ).stdout
    assert uri == "oss://b/m/"


def test_a_failed_run_names_its_node_and_shows_its_log_tail(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: Callable[[], str]
) -> None:
    rid = run_id()
    nodes = [
        {"name": "extract", "duration": 2, "logs": ["3,120,044 rows"]},
        {
            "name": "transform",
            "start": 2,
            "duration": 3,
            "fail": True,
            "logs": [[1, "shuffle: 48 GiB"], [2, "java.lang.OutOfMemoryError"], [2.9, "Killed (exit code 137)"]],
        },
        {"name": "load", "start": 5, "duration": 2},
    ]
    add(emulator, rid, 5, ["Failed", None, "Node 'transform' exited with code 137"], nodes)
    runs.apply("etl", rid, inside=True)
    failure = wait_for(lambda: runs.status("etl").get("failure"), 60, what="status.failure")
    assert (failure["node"], failure["logTruncated"]) == ("transform", False)
    assert failure["logTail"] == "shuffle: 48 GiB\njava.lang.OutOfMemoryError\nKilled (exit code 137)"
    status = runs.status("etl")
    assert status["runStatus"] == "Failed" and status["progress"] == "3/3"
    assert status["nodes"]["counts"]["skipped"] == 1 and "outputs" not in status
    event = wait_for(
        lambda: next((e for e in runs.events("etl") if e["reason"] == "NodeFailed"), None), 30, what="NodeFailed"
    )
    assert event["type"] == "Warning" and "'transform'" in event["message"] and "exit code 137" in event["message"]
    described = runs.cp.kubectl("describe", "ppr", "etl", "-n", runs.namespace).stdout
    assert "NodeFailed" in described and "java.lang.OutOfMemoryError" in described

    # Once: the ended run costs no further priced call.
    calls = priced_calls(emulator, rid)
    assert emulator.counters.calls_for(rid, "ListPipelineRunNodeLogs") == 1  # the failed node's log, once
    wait_for(lambda: runs.status("etl").get("lastSyncTime"), 5)
    time.sleep(3)
    assert priced_calls(emulator, rid) == calls


def test_runs_that_do_not_ask_cost_no_priced_call(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: Callable[[], str]
) -> None:
    unset, off = run_id(), run_id()
    for rid in (unset, off):
        add(emulator, rid, 3, ["Succeeded", None], [{"name": "only", "duration": 3}])
    runs.apply("default-off", unset)  # PAIFLOW_INSIDE=false in the test operator
    runs.apply("opted-out", off, inside=False)
    runs.wait_status("default-off", "Succeeded", timeout=60)
    runs.wait_status("opted-out", "Succeeded", timeout=60)
    time.sleep(3)
    assert priced_calls(emulator, unset) == 0 and priced_calls(emulator, off) == 0
    assert "progress" not in runs.status("default-off")
