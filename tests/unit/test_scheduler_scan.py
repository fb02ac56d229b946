"""The scheduler's narrow entry for workspace scans: rows become observations, scanned runs poll slowly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.unit.test_scheduler import SAMPLE_PATH, Harness, HarnessFactory, harness

from paiflow_operator.pai.models import PipelineRun

__all__ = ["harness"]  # the fixture, imported for pytest

KEY = ("cn-hangzhou", "ws-1", ("team-a", "", "", "", ""))  # scans serve one namespace (policies differ)


def row(run_id: str, status: str, **extra: Any) -> PipelineRun:
    wire = json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))
    wire.update(PipelineRunId=run_id, Status=status, WorkspaceId="ws-1", **extra)
    wire.pop("Manifest", None)
    return PipelineRun.from_wire(wire)


def hold_writes(h: Harness, entered: list[tuple[str, str]] | None = None) -> asyncio.Event:
    """Status writes wait (as behind a burst) until the returned event is set; ``entered`` lists who began one."""
    held = asyncio.Event()
    patch_status = h.kube.patch_status

    async def slow_patch(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if entered is not None:
            entered.append((namespace, name))
        await held.wait()
        return await patch_status(namespace, name, patch)

    h.kube.patch_status = slow_patch  # type: ignore[method-assign]
    return held


async def test_rows_update_status_without_a_pai_call_and_unchanged_rows_write_nothing(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    key = h.create("a", "flow-a", workspaceId="ws-1")
    assert h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Running")}) == 1
    await h.settle()
    assert h.pai.calls == []
    assert h.kube.status[key]["runStatus"] == "Running"
    writes = len(h.kube.patches)
    h.sched.observe(h.body(key), "MODIFIED")
    # GmtModifiedTime moved, nothing else did: no write.
    h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Running", GmtModifiedTime="2099-01-01T00:00:00Z")})
    await h.settle()
    assert len(h.kube.patches) == writes
    h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Succeeded")})
    await h.settle()
    assert h.kube.status[key]["runStatus"] == "Succeeded" and len(h.kube.patches) == writes + 1
    assert h.pai.calls == []


async def test_rows_only_reach_runs_of_the_same_region_workspace_and_credentials(harness: HarnessFactory) -> None:
    h = await harness()
    other_ws = h.create("b", "flow-b", workspaceId="ws-2")
    other_creds = h.create("c", "flow-c", workspaceId="ws-1", credentialsSecretRef={"name": "keys"})
    shared = h.create("d", "flow-d", workspaceId="ws-1", tokenSecretRef={"name": "tok"})
    rows = {rid: row(rid, "Running") for rid in ("flow-b", "flow-c", "flow-d")}
    assert h.sched.scans.apply_rows(KEY, rows) == 0
    await h.settle()
    # (Their own polls find nothing in the fake PAI; what matters is that no row's status reached them.)
    assert all("runStatus" not in p for k in (other_ws, other_creds, shared) for p in h.kube.patches_for(k))


async def test_scanned_runs_poll_at_the_safety_net_interval(harness: HarnessFactory) -> None:
    h = await harness(workspace_safety_net_interval="5m")
    h.sched.scans.begin_scan(KEY, 30)
    h.pai.add("flow-a")
    key = h.create("a", "flow-a", workspaceId="ws-1")
    h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Running")})
    await h.settle()
    delay = h.delay(key)
    assert delay is not None and 150 <= delay <= 450  # a beat of the 5 min safety net, not 30 s
    h.sched.scans.end_scan(KEY)
    delay = h.delay(key)
    assert delay is not None and delay <= 2  # back to its own polls at once


async def test_new_runs_wait_for_the_scan_before_their_own_get(harness: HarnessFactory) -> None:
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    h.pai.add("flow-a")
    key = h.create("a", "flow-a", workspaceId="ws-1")
    assert h.sched.scans.unsynced(KEY) == 1
    delay = h.delay(key)
    assert delay is not None and delay >= 30
    await h.advance(20)
    assert h.pai.gets() == []
    # Without a scan the first poll is immediate (as before).
    late = h.create("b", "flow-b", workspaceId="ws-9")
    assert h.delay(late) == 0


async def test_verbose_runs_fetch_details_when_a_row_shows_a_change(harness: HarnessFactory) -> None:
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    h.pai.add("flow-v", "Succeeded")
    key = h.create("v", "flow-v", workspaceId="ws-1", verbose=True, status={"runStatus": "Running"})
    h.sched.scans.apply_rows(KEY, {"flow-v": row("flow-v", "Succeeded")})
    assert h.delay(key) == 0
    await h.advance(0)
    assert [c.run_ids for c in h.pai.gets()] == [("flow-v",)]


async def test_runs_seen_before_their_workspace_wait_for_its_scan_too(harness: HarnessFactory) -> None:
    h = await harness(initial_jitter="5s")
    key = h.create("a", "flow-a", workspaceId="ws-1")
    delay = h.delay(key)
    assert delay is not None and delay <= 5
    h.sched.scans.begin_scan(KEY, 30)
    delay = h.delay(key)
    assert delay is not None and delay >= 30


async def test_a_row_that_arrives_while_the_run_is_busy_is_not_left_to_the_safety_net(
    harness: HarnessFactory,
) -> None:
    """A mass finish left runs unseen for minutes: their row came while their own poll was in flight, was
    dropped, and the scan's cut-off then moved past it, so only the 5-minute safety net found the change."""
    h = await harness(workspace_safety_net_interval="5m")
    h.sched.scans.begin_scan(KEY, 30)
    h.pai.add("flow-a", "Running")
    key = h.create("a", "flow-a", workspaceId="ws-1", status={"runStatus": "Running"})
    h.pai.gate = asyncio.Event()
    h.clock.t += h.delay(key) or 0
    h.sched.due.wake.set()
    for _ in range(50):  # the run's own poll starts and blocks inside PAI
        await asyncio.sleep(0)
    assert h.tracked(key).busy
    h.pai.add("flow-a", "Succeeded")  # PAI moves on; the scan reads the change while the poll is in flight
    assert h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Succeeded")}) == 0
    h.pai.gate.set()
    await h.settle()
    await h.advance(1)
    await h.settle()
    assert h.kube.status[key]["runStatus"] == "Succeeded"


async def test_a_row_saying_what_the_write_in_flight_writes_costs_no_pai_call(harness: HarnessFactory) -> None:
    """In a mass finish thousands of writes wait their turn while the next scan reads the same rows again; each
    such row used to mark its run for another look, a GetPipelineRun per run once its write was done."""
    h = await harness(workspace_safety_net_interval="5m")
    h.sched.scans.begin_scan(KEY, 30)
    key = h.create("a", "flow-a", workspaceId="ws-1", status={"runStatus": "Running"})
    held = hold_writes(h)
    assert h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Succeeded")}) == 1
    for _ in range(20):
        await asyncio.sleep(0)
    assert h.tracked(key).busy and h.tracked(key).writing == "Succeeded"
    assert h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Succeeded")}) == 0  # the next scan, same row
    assert not h.tracked(key).rerun
    # A row saying something else still earns another look.
    assert h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Failed")}) == 0
    assert h.tracked(key).rerun
    h.tracked(key).rerun = False
    held.set()
    await h.settle()
    await h.advance(1)
    await h.settle()
    assert h.kube.status[key]["runStatus"] == "Succeeded" and h.pai.calls == []
    assert h.tracked(key).writing is None


async def test_thousands_of_rows_wait_in_a_queue_not_in_a_task_each_and_are_applied_in_order(
    harness: HarnessFactory,
) -> None:
    """A first sync's scans hand over every run's row within seconds while writes go at the API server's pace:
    a task per row held ~30 MiB more at 10,000 runs. A few appliers take the rows in the order they came."""
    h = await harness(kube_concurrency=4, workspace_safety_net_interval="5m")
    h.sched.scans.begin_scan(KEY, 30)
    keys = [h.create(f"r{i}", f"flow-{i}", workspaceId="ws-1") for i in range(300)]
    entered: list[tuple[str, str]] = []
    held = hold_writes(h, entered)
    rows = {f"flow-{i}": row(f"flow-{i}", "Running") for i in range(300)}
    assert h.sched.scans.apply_rows(KEY, rows) == 300
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(h.sched.sync.tasks) <= 8 and len(entered) == 8  # twice the write lane's width
    assert len(h.sched.sync.rows) == 300 - 8
    assert h.sched.inside.backlog() == 300 - 8  # reads inside runs wait for these writes (runs/inside_reads.py)
    held.set()
    await h.settle()
    assert all(h.kube.status[k]["runStatus"] == "Running" for k in keys)
    # In the order the rows came, give or take the eight applied at once.
    assert sorted(entered) == sorted(keys)
    assert all(abs(entered.index(k) - i) < 8 for i, k in enumerate(keys))
    assert h.sched.sync.row_appliers == 0 and not h.sched.sync.rows


async def test_a_run_the_watch_brings_after_the_scan_takes_its_row_from_that_scan(harness: HarnessFactory) -> None:
    """A first sync of 10,000 runs: the scans ran when ~4,000 were listed, and the rest waited 12-20 s for the
    next scan. A run listed later takes the row the last scan read for it, if that scan is at most an interval
    old; a run with a status already, or a row too old, waits as before."""
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    first = h.create("a", "flow-a", workspaceId="ws-1")
    rows = {rid: row(rid, "Running") for rid in ("flow-a", "flow-b", "flow-c", "flow-d")}
    assert h.sched.scans.apply_rows(KEY, rows) == 1
    listed_later = h.create("b", "flow-b", workspaceId="ws-1")
    other_workspace = h.create("c", "flow-c", workspaceId="ws-2")
    await h.settle()
    assert h.kube.status[first]["runStatus"] == "Running"
    assert h.kube.status[listed_later]["runStatus"] == "Running"
    assert "runStatus" not in h.kube.status.get(other_workspace, {})
    assert [c.run_ids for c in h.pai.calls] == [("flow-c",)]  # no scan answers for ws-2: its own poll
    await h.advance(31)  # the scan's rows are now older than its interval: the next scan answers
    h.pai.add("flow-d")
    too_late = h.create("d", "flow-d", workspaceId="ws-1")
    await h.settle()
    assert "runStatus" not in h.kube.status.get(too_late, {})
    delay = h.delay(too_late)
    assert delay is not None and delay > 0
    h.sched.scans.end_scan(KEY)
    assert KEY not in h.sched.scans.kept


async def test_a_run_handed_a_row_no_longer_calls_for_full_scans_while_its_write_waits(
    harness: HarnessFactory,
) -> None:
    """Runs never read from PAI make the next scan read the whole window. A run already handed a row waits for
    its write's turn, behind a burst: counting it made every scan of a first sync a full one."""
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    key = h.create("a", "flow-a", workspaceId="ws-1")
    assert h.sched.scans.unsynced(KEY) == 1
    held = hold_writes(h)
    h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Running")})
    for _ in range(20):
        await asyncio.sleep(0)
    assert h.sched.scans.unsynced(KEY) == 0 and "runStatus" not in h.kube.status.get(key, {})
    held.set()
    await h.settle()
    assert h.kube.status[key]["runStatus"] == "Running" and h.sched.scans.unsynced(KEY) == 0


async def test_a_change_the_safety_net_sees_first_is_left_to_the_scan_then_asked_for_if_it_never_comes(
    harness: HarnessFactory,
) -> None:
    """In a mass finish the safety net's batched query can see thousands of runs end before their workspace
    scan comes round: a GetPipelineRun each (582 in one run at 10,000) while the scan brings the same change
    with its details within an interval. The batch leaves it to the scan; if no row brings it, it asks."""
    h = await harness(workspace_safety_net_interval="5m", workspace_scan_interval="30s")
    h.sched.scans.begin_scan(KEY, 30)
    keys = {}
    for name in ("a", "b", "c"):
        h.pai.add(f"flow-{name}", "Running")
        keys[name] = h.create(name, f"flow-{name}", workspaceId="ws-1")
    h.sched.scans.apply_rows(KEY, {f"flow-{n}": row(f"flow-{n}", "Running") for n in keys})
    await h.settle()
    assert all(h.kube.status[k]["runStatus"] == "Running" for k in keys.values())
    for name in keys:
        h.pai.add(f"flow-{name}", "Succeeded")
    await h.advance_in_steps(460, 10)  # the safety net's batch comes round: it sees all three ended
    assert h.pai.lists() and h.pai.gets() == []
    assert all(h.kube.status[k]["runStatus"] == "Running" for k in keys.values())
    # The scan brings a's end; b's row is older than the batch's answer; c gets no row at all.
    h.sched.scans.apply_rows(KEY, {"flow-a": row("flow-a", "Succeeded"), "flow-b": row("flow-b", "Running")})
    await h.settle()
    assert h.kube.status[keys["a"]]["runStatus"] == "Succeeded" and h.pai.gets() == []
    await h.advance_in_steps(60, 5)  # past 1.5 scan intervals: b and c are asked for, once each
    assert sorted(c.run_ids for c in h.pai.gets()) == [("flow-b",), ("flow-c",)]
    assert all(h.kube.status[k]["runStatus"] == "Succeeded" for k in keys.values())


async def test_a_scan_can_wait_for_the_rows_it_handed_over_to_be_written(harness: HarnessFactory) -> None:
    """Scans are paced by the writes (workspaces/scanner.py): in a burst the next scan would only find the rows
    still waiting for their turn, and cost a page read and a workspace status write each time."""
    h = await harness(kube_concurrency=2)
    h.sched.scans.begin_scan(KEY, 30)
    keys = [h.create(f"r{i}", f"flow-{i}", workspaceId="ws-1") for i in range(10)]
    await h.sched.scans.rows_applied()  # nothing handed over: at once
    held = hold_writes(h)
    h.sched.scans.apply_rows(KEY, {f"flow-{i}": row(f"flow-{i}", "Running") for i in range(10)})
    waiting = asyncio.ensure_future(h.sched.scans.rows_applied())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not waiting.done()
    held.set()
    await asyncio.wait_for(waiting, 1)
    assert all(h.kube.status[k]["runStatus"] == "Running" for k in keys)


async def test_a_page_feeds_only_runs_never_shown_and_keeps_rows_for_runs_not_listed_yet(
    harness: HarnessFactory,
) -> None:
    """A first sync's writes start after one page per workspace: runs never read from PAI take their row as
    the page arrives. A run already shown waits for the whole scan (its newest row may come on the re-read page
    1), and a row for a run the watch has not brought yet is kept for it (feed_new)."""
    h = await harness()
    h.sched.scans.begin_scan(KEY, 30)
    fresh = h.create("a", "flow-a", workspaceId="ws-1")
    shown = h.create("b", "flow-b", workspaceId="ws-1")
    assert h.sched.scans.apply_rows(KEY, {"flow-b": row("flow-b", "Running")}) == 1
    await h.settle()
    assert h.kube.status[shown]["runStatus"] == "Running"
    writes = len(h.kube.patches)
    page = {rid: row(rid, "Succeeded") for rid in ("flow-a", "flow-b", "flow-c")}
    taken = h.sched.scans.apply_page(KEY, page)
    assert taken == {"flow-a": page["flow-a"]}
    await h.settle()
    assert h.kube.status[fresh]["runStatus"] == "Succeeded"
    assert h.kube.status[shown]["runStatus"] == "Running"  # not from a page: from the scan's end
    assert len(h.kube.patches) == writes + 1
    listed_later = h.create("c", "flow-c", workspaceId="ws-1")
    await h.settle()
    assert h.kube.status[listed_later]["runStatus"] == "Succeeded"
    assert h.pai.calls == []
