"""PaiWorkspace end to end: the shipped operator imports a PAI workspace into the real API server, where
kube-controller-manager's garbage collector is real too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.e2e.conftest import Runs, wait_for
from tests.support.operator_process import OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

GET = "GetPipelineRun"
STATUS = "ListPipelineRunsStatus"


@pytest.fixture
def ws_id() -> str:
    return f"ws{uuid.uuid4().hex[:10]}"


@pytest.fixture
def modified_time(emulator: Emulator) -> Iterator[Emulator]:
    """Lets a test switch the emulator's GmtModifiedTime behaviour; the shared emulator gets it back."""
    yield emulator
    emulator.modified_time = "transition"
    emulator.list_hook = None


def apply_workspace(runs: Runs, name: str, workspace_id: str, **spec: Any) -> None:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiWorkspace",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {"workspaceId": workspace_id, **spec},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def workspace(runs: Runs, name: str) -> dict[str, Any]:
    out = runs.cp.kubectl("get", "paiworkspace", name, "-n", runs.namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def listed(runs: Runs, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", "paipipelineruns", "-n", runs.namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    items: list[dict[str, Any]] = json.loads(runs.cp.kubectl(*args).stdout)["items"]
    return items


def test_import_with_filters_cap_and_hand_written_runs_left_alone(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, ws_id: str
) -> None:
    sdk = [
        emulator.add_run(Timeline.running_forever(), age=100 + i, workspace_id=ws_id, source_type="SDK").run_id
        for i in range(4)
    ]
    designer = emulator.add_run(Timeline.running_forever(), age=50, workspace_id=ws_id, source_type="DESIGNER")
    old = emulator.add_run(Timeline.running_forever(), age=3 * 86400, workspace_id=ws_id, source_type="SDK")
    # A person already follows sdk[0] (the newest) by hand, under a name of their own.
    runs.apply("mine", sdk[0], pollInterval="5s")
    runs.wait_status("mine", "Running")
    hand_before = runs.get("mine")

    apply_workspace(runs, "prod", ws_id, filters={"sourceType": "SDK"}, maxRuns=2, template={"labels": {"team": "ml"}})

    def imported() -> list[dict[str, Any]] | None:
        items = listed(runs, "paiflow-operator.dev/workspace=prod")
        return items if len(items) == 2 and all((i.get("status") or {}).get("runStatus") for i in items) else None

    items = wait_for(imported, 30, what="two imported runs with a status")
    # The cap keeps the newest runs in scope that nobody follows yet: sdk[1] and sdk[2].
    assert sorted(i["spec"]["pipelineRunId"] for i in items) == sorted(sdk[1:3])
    ws = workspace(runs, "prod")
    for item in items:
        meta = item["metadata"]
        assert meta["name"] == item["spec"]["pipelineRunId"]
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("PaiWorkspace", "prod", ws["metadata"]["uid"])
        assert meta["labels"]["team"] == "ml" and meta["labels"]["paiflow-operator.dev/source-type"] == "SDK"
        assert item["status"]["runStatus"] == "Running" and item["spec"]["workspaceId"] == ws_id
        # The first status came from the scan's row, not from a GetPipelineRun per run.
        assert emulator.counters.calls_for(item["spec"]["pipelineRunId"], GET) == 0
    assert designer.run_id not in {i["spec"]["pipelineRunId"] for i in listed(runs)}
    assert old.run_id not in {i["spec"]["pipelineRunId"] for i in listed(runs)}

    status = wait_for(lambda: (s := workspace(runs, "prod").get("status") or {}).get("imported") == 2 and s, 15)
    assert status["runs"] == 2 and status["counts"] == {"Running": 2} and status["skipped"] == 1
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and "maxRuns (2) reached" in ready["message"]
    assert status["observedGeneration"] == 1 and status["lastScanTime"]

    # The hand-written resource is neither copied, nor taken over, nor changed but for its status.
    hand = runs.get("mine")
    assert "ownerReferences" not in hand["metadata"] and hand["spec"] == hand_before["spec"]
    assert hand["metadata"].get("labels") == hand_before["metadata"].get("labels")

    table = runs.cp.kubectl("get", "paiws", "-n", runs.namespace).stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "WORKSPACE", "RUNS", "RUNNING", "IMPORTED", "READY"]
    assert table[1].split()[:6] == ["prod", ws_id, "2", "2", "2", "True"]

    # Raising the cap imports the rest at the next scan.
    apply_workspace(runs, "prod", ws_id, filters={"sourceType": "SDK"}, maxRuns=10, template={"labels": {"team": "ml"}})
    wait_for(lambda: len(listed(runs, "paiflow-operator.dev/workspace=prod")) == 3, 20, what="the third import")


def test_ttl_then_deleting_the_workspace_collects_its_runs(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, ws_id: str
) -> None:
    short = emulator.add_run(Timeline.of(("Running", 4), ("Succeeded", None)), age=1, workspace_id=ws_id).run_id
    long = emulator.add_run(Timeline.running_forever(), age=2, workspace_id=ws_id).run_id
    hand_id = emulator.add_run(Timeline.of(("Running", 1), ("Succeeded", None)), age=3, workspace_id=ws_id).run_id
    runs.apply("by-hand", hand_id, workspaceId=ws_id)
    apply_workspace(runs, "ttl", ws_id, ttlAfterFinished="3s")
    wait_for(lambda: runs.status(long).get("runStatus") == "Running" if _exists(runs, long) else None, 30)
    # The short run ends (at ~3 s of age), shows Succeeded, then goes 3 s later.
    wait_for(lambda: not _exists(runs, short), 40, what=f"{short} deleted after ttlAfterFinished")
    status = wait_for(lambda: (s := workspace(runs, "ttl").get("status") or {}).get("deleted") == 1 and s, 15)
    assert status["imported"] == 2
    # Not imported twice after its deletion, though PAI still lists it.
    assert not _exists(runs, short)
    runs.wait_status("by-hand", "Succeeded")

    runs.cp.kubectl("delete", "paiworkspace", "ttl", "-n", runs.namespace)
    # kube-controller-manager's garbage collector removes what the workspace owned; hand-written runs stay.
    wait_for(lambda: not _exists(runs, long), 60, what="garbage collection of the imported run")
    assert runs.status("by-hand")["runStatus"] == "Succeeded"


def _exists(runs: Runs, name: str) -> bool:
    out = runs.cp.kubectl("get", "ppr", name, "-n", runs.namespace, "--ignore-not-found", "-o", "name")
    return bool(out.stdout.strip())


def test_a_run_changing_between_two_pages_of_a_scan_is_seen(
    operator: OperatorProcess, modified_time: Emulator, runs: Runs, ws_id: str
) -> None:
    emulator = modified_time
    # Modified within the scan overlap of each other, so every scan pages through all three pages.
    ids = [emulator.add_run(Timeline.running_forever(), age=10 + i / 10, workspace_id=ws_id).run_id for i in range(12)]
    apply_workspace(runs, "paged", ws_id)
    for rid in ids:
        wait_for(lambda rid=rid: _exists(runs, rid) and runs.status(rid).get("runStatus") == "Running", 30)
    # ids[7] sits on page 2 (pages of 5, newest modification first). Just before some scan reads page 2,
    # it ends, which moves it to the top of page 1: a scan that only paged forward would miss it.
    moved: list[str] = []

    def hook(query: Any) -> None:
        if query.get("WorkspaceId") == ws_id and query.get("PageNumber") == "2" and not moved:
            emulator.transition(ids[7], ("Succeeded", None))
            moved.append(ids[7])

    emulator.reset_counters()
    emulator.list_hook = hook
    wait_for(lambda: moved, 15, what="a scan reaching page 2")
    runs.wait_status(ids[7], "Succeeded", timeout=15)
    # Seen by the scan itself: the safety net would have fetched the details with a GetPipelineRun.
    assert emulator.counters.calls_for(ids[7], GET) == 0


@pytest.mark.parametrize("mode", ["transition", "read", "never"])
def test_gmt_modified_time_behaviours_and_the_safety_net(
    operator: OperatorProcess, modified_time: Emulator, runs: Runs, ws_id: str, mode: str
) -> None:
    emulator = modified_time
    emulator.modified_time = mode
    # Five newer runs fill page 1, so rid (on page 2) is only read again if its GmtModifiedTime moves.
    newer = [emulator.add_run(Timeline.running_forever(), age=5 + i, workspace_id=ws_id).run_id for i in range(5)]
    other = newer[0]
    rid = emulator.add_run(Timeline.running_forever(), age=60, workspace_id=ws_id).run_id
    apply_workspace(runs, "modes", ws_id)
    for name in (rid, *newer):
        wait_for(lambda name=name: _exists(runs, name) and runs.status(name).get("runStatus") == "Running", 30)
    rv_other = runs.get(other)["metadata"]["resourceVersion"]
    emulator.reset_counters()
    emulator.transition(rid, ("Failed", None, "boom"))
    started = _now()
    status = runs.wait_status(rid, "Failed", timeout=20)
    took = _now() - started
    assert status["message"] == "boom"
    if mode == "never":
        # PAI did not move GmtModifiedTime: the scan cannot see the change; the safety net's poll (every 6 s
        # here; a batched status query, or a GetPipelineRun for a batch of one) does.
        assert emulator.counters.calls_for(rid, STATUS) + emulator.counters.calls_for(rid, GET) >= 1
        assert emulator.counters.calls_for(rid, GET) <= 1
        assert took <= 6 + 5
    else:
        assert emulator.counters.calls_for(rid, GET) == 0, f"found by the scan in {took:.1f}s"
    # "read": GmtModifiedTime moves on every read of the other, still running run: that costs no write.
    assert runs.get(other)["metadata"]["resourceVersion"] == rv_other


def _now() -> float:
    import time

    return time.monotonic()
