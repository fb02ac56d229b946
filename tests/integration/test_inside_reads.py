"""runs/inside_reads.py against the emulator through the real door and client: progress of active runs, failure
details and outputs once at the end, nothing for runs that do not want it, and the priced budget holding."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from tests.integration.conftest import ACCESS_KEY
from tests.unit.test_scheduler import FakeKube

from paiflow_emulator import Emulator
from paiflow_operator.access.view import AccessView
from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.conditions import Event
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.runs.inside_reads import InsideReader
from paiflow_operator.runs.tracked import Key, Tracked
from paiflow_operator.settings import Settings

SHARE = "eyJ0-inside-share-token-93af"
NODES: list[dict[str, Any]] = [
    {"name": "prepare", "duration": 10, "logs": ["reading"]},
    {
        "name": "train",
        "start": 10,
        "duration": 20,
        "fail": True,
        "logs": [[1, "epoch 1"], [2, f"url?TokenId={SHARE}"], [3, "\x1b[31mCUDA error: out of memory\x1b[0m"]],
        "outputs": [{"name": "model", "type": "Model", "info": {"uri": "oss://b/model/"}}],
    },
]


class Harness:
    def __init__(self, emulator: Emulator, settings: Settings) -> None:
        self.emulator = emulator
        self.kube = FakeKube()
        self.kube.secrets[("ns", "share")] = {"token": SHARE.encode()}
        self.client = PaiClient(endpoint_override=emulator.url)
        self.access = PaiAccess(
            settings, self.client, self.kube, StaticCredentialSource(*ACCESS_KEY), policies=AccessView(allow_all=True)
        )
        self.runs: dict[Key, Tracked] = {}
        self.writes: list[tuple[Key, dict[str, Any], list[Event]]] = []
        self.backlog = 0  # status writes still to come, as the runs' sync reports them
        self.reader = InsideReader(
            settings, self.access, self.runs.get, self.write, workers=2, backlog=lambda: self.backlog
        )

    async def write(self, tracked: Tracked, patch: dict[str, Any], events: list[Event]) -> None:
        self.writes.append((tracked.key, patch, events))
        tracked.status = {**tracked.status, **patch}

    def track(self, name: str, run_id: str, run_status: str, **spec: Any) -> Tracked:
        tracked = Tracked(
            "ns",
            name,
            f"uid-{name}",
            1,
            PaiPipelineRunSpec(pipelineRunId=run_id, **spec),
            {"runStatus": run_status, "nodeId": "node-root", "pipelineRunId": run_id},
        )
        self.runs[tracked.key] = tracked
        self.reader.note(tracked)
        return tracked

    async def until(self, check: Callable[[], Any], within: float = 10) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if got := check():
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out: {check}")


@pytest.fixture
async def harness(emulator: Emulator) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        h = Harness(emulator, Settings(**{"qps": 100, "burst": 100, "inside_qps_share": 0.5, **settings}))
        h.reader.start()
        made.append(h)
        return h

    yield make
    for h in made:
        await h.reader.stop()
        await h.client.aclose()


def add(emulator: Emulator, run_id: str, age: float, end: list[Any], **extra: Any) -> None:
    emulator.load_scenario(
        {
            "runs": [
                {
                    "id": run_id,
                    "nodeId": "node-root",
                    "age": age,
                    "timeline": [["Running", 30], end],
                    "nodes": NODES,
                    **extra,
                }
            ]
        }
    )


async def test_progress_of_a_running_run_then_the_failure_once_at_its_end(
    emulator: Emulator, harness: Callable[..., Harness]
) -> None:
    add(emulator, "flow-fails", 15, ["Failed", None, "train failed"], shareToken=SHARE)
    h = harness(progress_interval=timedelta(seconds=0.2))
    tracked = h.track("fails", "flow-fails", "Running", tokenSecretRef={"name": "share"})
    await h.until(lambda: h.writes)
    _, patch, events = h.writes[0]
    assert patch["progress"] == "1/2" and events == []
    assert [n["name"] for n in patch["nodes"]["running"]] == ["train"]

    # Nothing new in PAI: progress reads go on at their cadence, and write nothing.
    calls = emulator.counters.snapshot().actions.get("GetPipelineRunNode", 0)
    await h.until(lambda: emulator.counters.snapshot().actions.get("GetPipelineRunNode", 0) >= calls + 2)
    assert len(h.writes) == 1

    emulator.advance(30)  # the run has failed; status polling wrote that
    tracked.status = {**tracked.status, "runStatus": "Failed"}
    h.reader.note(tracked)
    await h.until(lambda: len(h.writes) == 2)
    _, end, events = h.writes[1]
    assert end["progress"] == "2/2" and end["nodes"]["final"] is True
    failure = end["failure"]
    assert failure["node"] == "train" and failure["logTruncated"] is False
    assert failure["logTail"] == "epoch 1\nurl?TokenId=<redacted>\nCUDA error: out of memory"
    assert [(e.type, e.reason) for e in events] == [("Warning", "NodeFailed")]
    assert "train" in events[0].message and "CUDA error" in events[0].message
    assert "outputs" not in end

    # Once: the ended run is read no more.
    actions = dict(emulator.counters.snapshot().actions)
    await asyncio.sleep(0.5)
    assert emulator.counters.snapshot().actions == actions
    assert actions["ListPipelineRunNodeLogs"] == 1 and "ListPipelineRunNodeOutputs" not in actions


async def test_a_run_ending_while_its_progress_is_read_gets_its_end_read(
    emulator: Emulator, harness: Callable[..., Harness]
) -> None:
    """The progress read in flight when the run ends neither displaces the end read nor writes after it."""
    add(emulator, "flow-ends", 15, ["Failed", None, "train failed"], shareToken=SHARE)
    h = harness(progress_interval=timedelta(seconds=0.2))
    tracked = h.track("ends", "flow-ends", "Running", tokenSecretRef={"name": "share"})
    await h.until(lambda: h.writes)

    slow = emulator.add_fault("latency", action="GetPipelineRunNode", count=1, delay=1.0)
    await h.until(lambda: slow.hits >= 1)  # a progress read is now in flight
    emulator.advance(30)
    tracked.status = {**tracked.status, "runStatus": "Failed"}
    h.reader.note(tracked)
    await h.until(lambda: len(h.writes) == 2)
    _, end, events = h.writes[1]
    assert end["nodes"]["final"] is True and end["failure"]["node"] == "train"
    assert [e.reason for e in events] == ["NodeFailed"]
    await asyncio.sleep(1.5)  # the slow progress answer has come back meanwhile: it wrote nothing
    assert len(h.writes) == 2


async def test_outputs_of_a_succeeded_run(emulator: Emulator, harness: Callable[..., Harness]) -> None:
    nodes = [dict(NODES[0]), {**NODES[1], "fail": False}]
    add(emulator, "flow-ok", 100, ["Succeeded", None], nodes=nodes)
    h = harness()
    h.track("ok", "flow-ok", "Succeeded")
    await h.until(lambda: h.writes)
    _, end, events = h.writes[0]
    assert end["outputs"] == [
        {
            "name": "model",
            "type": "Model",
            "nodeId": end["outputs"][0]["nodeId"],
            "node": "train",
            "uri": "oss://b/model/",
            "createdAt": end["outputs"][0]["createdAt"],
        }
    ]
    assert "failure" not in end and events == []
    assert emulator.counters.snapshot().actions == {"GetPipelineRunNode": 1, "ListPipelineRunNodeOutputs": 1}


async def test_nothing_for_runs_that_do_not_want_it(emulator: Emulator, harness: Callable[..., Harness]) -> None:
    add(emulator, "flow-imported", 15, ["Succeeded", None])
    h = harness(progress_interval=timedelta(seconds=0.1))
    h.track("imported", "flow-imported", "Running", inside=False)
    h.track("waiting", "flow-imported", "Initialized")
    ended = h.track("ended", "flow-imported", "Succeeded")
    ended.status["nodes"] = {"total": 2, "final": True}  # read before a restart
    h.reader.note(ended)
    await asyncio.sleep(0.5)
    assert emulator.counters.snapshot().total == 0 and h.writes == []


async def test_the_budget_holds_however_many_runs_are_active(
    emulator: Emulator, harness: Callable[..., Harness]
) -> None:
    for i in range(60):
        add(emulator, f"flow-many-{i}", 15, ["Succeeded", None])
    # 4 priced calls a second at most (a fifth of 20), 2 at once.
    h = harness(qps=20, burst=20, inside_qps_share=0.2, inside_burst=2, progress_interval=timedelta(seconds=1))
    started = time.monotonic()
    for i in range(60):
        h.track(f"r{i}", f"flow-many-{i}", "Running")
    await asyncio.sleep(1.5)
    elapsed = time.monotonic() - started
    priced = emulator.counters.snapshot().actions.get("GetPipelineRunNode", 0)
    assert 0 < priced <= 2 + 4 * elapsed + 1  # burst + rate x time (+1: a call in flight at the edge)
    assert h.reader.oldest_progress_age() is not None


async def test_reads_wait_while_status_writes_are_still_to_come(
    emulator: Emulator, harness: Callable[..., Harness]
) -> None:
    """Statuses first: while a burst's rows wait for their writes, no read inside a run goes to PAI (its write
    and Events would queue among the statuses); once the backlog is written, the end read goes as usual."""
    nodes = [dict(NODES[0]), {**NODES[1], "fail": False}]
    add(emulator, "flow-held", 100, ["Succeeded", None], nodes=nodes)
    h = harness()
    h.backlog = 5_000
    h.track("held", "flow-held", "Succeeded")
    await asyncio.sleep(1.2)  # two looks at the backlog
    assert emulator.counters.snapshot().total == 0 and h.writes == []
    h.backlog = 0
    await h.until(lambda: h.writes)
    assert h.writes[0][1]["nodes"]["final"] is True
