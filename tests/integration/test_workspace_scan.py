"""Workspace scans against the emulator over real sockets: the real PaiClient, Scheduler and WorkspaceScanner,
with the API server replaced by an in-memory fake that counts writes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.integration.conftest import ACCESS_KEY

from paiflow_emulator import Emulator, Timeline
from paiflow_operator.access.view import AccessView
from paiflow_operator.conditions import Event
from paiflow_operator.kube import KubeError, ObjectRef
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.runs.scheduler import Scheduler
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings
from paiflow_operator.workspaces.scanner import WorkspaceScanner, next_slot

# Unit tests of the door and what uses it: every namespace allowed (policies: tests/unit/test_access_*.py).
ALLOW_ALL = AccessView(allow_all=True)

_uids = itertools.count(1)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch: maps merge key by key, null removes."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = merge_patch({}, value) if isinstance(value, dict) else value
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.workspace_status: dict[str, Any] = {}
        self.writes: list[tuple[str, str]] = []  # (verb, name)

    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise KubeError(409, "AlreadyExists", "taken")
        obj = {**body, "metadata": {**body["metadata"], "uid": f"uid-{next(_uids)}", "generation": 1}}
        self.objects[key] = obj
        self.writes.append(("create", key[1]))
        return obj

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        self.objects.pop((namespace, name))
        self.writes.append(("delete", name))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        obj = self.objects[(namespace, name)]
        obj["status"] = merge_patch(obj.get("status") or {}, patch)
        self.writes.append(("status", name))
        return obj

    async def patch_workspace_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.workspace_status = merge_patch(self.workspace_status, patch)
        self.writes.append(("workspace-status", name))
        return {"status": self.workspace_status}

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None:
        pass

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        raise KubeError(404, "NotFound", "no secrets here")

    def count(self, verb: str) -> int:
        return sum(1 for v, _ in self.writes if v == verb)


@pytest.fixture
async def parts(emulator: Emulator) -> AsyncIterator[tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner]]:
    settings = Settings(
        endpoint_override=emulator.url, workspace_page_size=10, workspace_create_qps=1000, workspace_create_burst=1000
    )
    client = PaiClient(endpoint_override=emulator.url)
    kube = FakeKube()
    creds = StaticCredentialSource(*ACCESS_KEY)
    # The scan compares PAI's times with the wall clock: the emulator's run clock is frozen in 2023.
    wall = datetime.fromtimestamp(emulator.clock.now(), tz=UTC)
    access = PaiAccess(settings, client, kube, creds, policies=ALLOW_ALL)
    scheduler = Scheduler(settings, access, RunWriter(kube, wallclock=lambda: wall), wallclock=lambda: wall)
    scanner = WorkspaceScanner(settings, access, kube, scheduler.scans, scheduler.ownership, wallclock=lambda: wall)
    try:
        yield emulator, kube, scheduler, scanner
    finally:
        await scanner.stop()
        await scheduler.stop()
        await client.aclose()


def workspace(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": "prod", "uid": "uid-ws", "generation": 1},
        "spec": {"workspaceId": "ws-1", **spec},
    }


async def settle(scheduler: Scheduler) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not any(t.busy for t in scheduler.runs.values()):
            return


async def test_import_creates_and_writes_first_status_from_rows(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    emu, kube, scheduler, scanner = parts
    for i in range(25):
        emu.add_run(Timeline.running_forever(), age=60 + i, workspace_id="ws-1", run_id=f"flow-{i:03d}")
    emu.add_run(Timeline.running_forever(), age=60, workspace_id="ws-2", run_id="flow-elsewhere")
    emu.reset_counters()
    scanner.observe_workspace(workspace(), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()  # driven by hand below
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert kube.count("create") == 25 and kube.count("status") == 25
    assert all(o["status"]["runStatus"] == "Running" for o in kube.objects.values())
    counters = emu.counters.snapshot(include_runs=False).to_json()
    # 3 pages of 10 plus one closing look at page 1; no GetPipelineRun at all.
    assert counters["actions"] == {"ListPipelineRuns": 4}
    assert kube.workspace_status["imported"] == 25

    # Nothing changed: the next scan writes nothing.
    before = len(kube.writes)
    for obj in kube.objects.values():
        scheduler.observe(obj, "MODIFIED")
        scanner.observe_run(obj, "MODIFIED")
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert kube.writes[before:] == []


async def test_a_first_scan_writes_each_pages_runs_before_it_reads_the_next_page_and_each_once(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    """A first sync of thousands of hand-written runs starts writing after one page per workspace: runs never
    shown take their row as its page arrives, and the scan's end does not hand them the same row again."""
    emu, kube, scheduler, scanner = parts
    for i in range(25):
        emu.add_run(Timeline.running_forever(), age=60 + i, workspace_id="ws-1", run_id=f"flow-{i:03d}")
        body = {
            "metadata": {"namespace": "team-a", "name": f"mine-{i}", "uid": f"uid-mine-{i}", "generation": 1},
            "spec": {"pipelineRunId": f"flow-{i:03d}", "workspaceId": "ws-1"},
        }
        kube.objects[("team-a", f"mine-{i}")] = body
        scheduler.observe(body, "ADDED")
    emu.reset_counters()
    written_at_fetch: list[int] = []
    list_pipeline_runs = scanner.access.list_pipeline_runs

    async def counting(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)  # a page's round trip: the rows handed over meanwhile are written
        written_at_fetch.append(kube.count("status"))
        return await list_pipeline_runs(*args, **kwargs)

    scanner.access.list_pipeline_runs = counting  # type: ignore[method-assign]
    scanner.observe_workspace(workspace(maxRuns=0), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()  # driven by hand below
    await scanner.scan_once(watched)
    await settle(scheduler)
    # Pages 1-3 of 10 and page 1 again; the first page's ten runs were written before page 3 was asked for.
    assert emu.counters.snapshot(include_runs=False).to_json()["actions"] == {"ListPipelineRuns": 4}
    assert written_at_fetch[0] == 0 and written_at_fetch[2] >= 10
    assert kube.count("status") == 25
    assert all(o["status"]["runStatus"] == "Running" for o in kube.objects.values())


@pytest.mark.parametrize("mode", ["transition", "read"])
async def test_changes_reach_runs_through_the_scan_without_get_pipeline_run(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner], mode: str
) -> None:
    emu, kube, scheduler, scanner = parts
    emu.modified_time = mode
    for i in range(5):
        emu.add_run(Timeline.running_forever(), age=60 + i, workspace_id="ws-1", run_id=f"flow-{i:03d}")
    scanner.observe_workspace(workspace(), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()
    await scanner.scan_once(watched)
    await settle(scheduler)
    for obj in kube.objects.values():
        scheduler.observe(obj, "MODIFIED")
    emu.transition("flow-002", ("Succeeded", None))
    emu.advance(5)
    emu.reset_counters()
    writes = len(kube.writes)
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert kube.objects[("team-a", "flow-002")]["status"]["runStatus"] == "Succeeded"
    # One status write for the one real change; "read" mode moves every running run's GmtModifiedTime.
    assert [w for w in kube.writes[writes:] if w[0] == "status"] == [("status", "flow-002")]
    assert emu.counters.snapshot(include_runs=False).to_json()["actions"] == {"ListPipelineRuns": 1}


async def test_workspace_counts_are_the_runs_current_states_and_add_up_to_runs(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    """As `make demo` showed it: 4 imported runs, all ended, were counted {Failed: 1, Running: 2, Succeeded: 3}
    because a merge patch of the new counts kept the old Running key beside them."""
    emu, kube, scheduler, scanner = parts
    for i in range(4):
        emu.add_run(Timeline.running_forever(), age=60 + i, workspace_id="ws-1", run_id=f"flow-c{i}")
    scanner.observe_workspace(workspace(), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert (kube.workspace_status["runs"], kube.workspace_status["counts"]) == (4, {"Running": 4})
    for i, end in enumerate(["Succeeded", "Succeeded", "Succeeded", "Failed"]):
        emu.transition(f"flow-c{i}", (end, None))
    emu.advance(5)
    for obj in kube.objects.values():
        scheduler.observe(obj, "MODIFIED")
        scanner.observe_run(obj, "MODIFIED")
    await scanner.scan_once(watched)
    await settle(scheduler)
    status = kube.workspace_status
    assert status["counts"] == {"Succeeded": 3, "Failed": 1}
    assert sum(status["counts"].values()) == status["runs"] == 4


async def test_pai_errors_show_as_conditions_and_keep_the_last_good_status(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    emu, kube, _scheduler, scanner = parts
    emu.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-e1")
    scanner.observe_workspace(workspace(), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()
    await scanner.scan_once(watched)
    assert kube.workspace_status["imported"] == 1
    emu.add_fault("bad_credentials", action="ListPipelineRuns")
    await scanner.scan_once(watched)
    conditions = {c["type"]: c for c in kube.workspace_status["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Stalled"]["status"] == "True"
    assert kube.workspace_status["imported"] == 1 and kube.workspace_status["runs"] == 1
    emu.clear_faults()
    emu.add_fault("unavailable", action="ListPipelineRuns")
    await scanner.scan_once(watched)
    conditions = {c["type"]: c for c in kube.workspace_status["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Stalled"]["status"] == "False"
    emu.clear_faults()
    await scanner.scan_once(watched)
    conditions = {c["type"]: c for c in kube.workspace_status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["reason"] == "Scanned"


async def test_a_workspace_with_a_missing_secret_is_stalled_and_names_it(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    emu, kube, _scheduler, scanner = parts
    scanner.observe_workspace(workspace(credentialsSecretRef={"name": "pai-keys"}), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()
    await scanner.scan_once(watched)
    ready = {c["type"]: c for c in kube.workspace_status["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "SecretNotFound"
    assert "team-a/pai-keys" in ready["message"]
    assert emu.counters.snapshot(include_runs=False).to_json()["total"] == 0


async def test_only_the_replica_that_owns_the_workspace_scans_it(emulator: Emulator) -> None:
    from paiflow_operator.replicas.sharding import StaticShards

    settings = Settings(endpoint_override=emulator.url, workspace_scan_interval="1s")
    client = PaiClient(endpoint_override=emulator.url)
    creds = StaticCredentialSource(*ACCESS_KEY)
    emulator.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-o1")
    wall = datetime.fromtimestamp(emulator.clock.now(), tz=UTC)
    replicas = []
    for index in range(2):
        kube = FakeKube()
        access = PaiAccess(settings, client, kube, creds, policies=ALLOW_ALL)
        scheduler = Scheduler(
            settings,
            access,
            RunWriter(kube, wallclock=lambda: wall),
            ownership=StaticShards(2, index),
            wallclock=lambda: wall,
        )
        scanner = WorkspaceScanner(settings, access, kube, scheduler.scans, scheduler.ownership, wallclock=lambda: wall)
        scanner.observe_workspace(workspace(), "ADDED")
        replicas.append((kube, scheduler, scanner))
    try:
        await asyncio.sleep(0.5)
        creators = [i for i, (kube, _, _) in enumerate(replicas) if kube.count("create")]
        owner = next(i for i, (_, sched, _) in enumerate(replicas) if sched.owns("uid-ws"))
        assert creators == [owner]
        assert emulator.counters.snapshot(include_runs=False).to_json()["actions"] == {"ListPipelineRuns": 1}
    finally:
        for _, scheduler, scanner in replicas:
            await scanner.stop()
            await scheduler.stop()
        await client.aclose()


async def test_a_suspended_workspace_is_not_scanned_and_says_so(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    emu, kube, _scheduler, scanner = parts
    emu.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-s1")
    scanner.observe_workspace(workspace(suspend=True), "ADDED")
    await asyncio.sleep(0.3)
    assert emu.counters.snapshot(include_runs=False).to_json()["total"] == 0
    assert kube.count("create") == 0
    ready = {c["type"]: c for c in kube.workspace_status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")
    writes = len(kube.writes)
    await asyncio.sleep(0.2)
    assert len(kube.writes) == writes


async def test_a_status_filter_picks_imports_but_the_scan_still_sees_them_end(
    parts: tuple[Emulator, FakeKube, Scheduler, WorkspaceScanner],
) -> None:
    emu, kube, scheduler, scanner = parts
    emu.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-run")
    emu.add_run(Timeline.of(("Failed", None, "x")), age=60, workspace_id="ws-1", run_id="flow-failed")
    scanner.observe_workspace(workspace(filters={"statuses": ["Running"]}), "ADDED")
    watched = scanner.workspaces[("team-a", "prod")]
    assert watched.task is not None
    watched.task.cancel()
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert [name for (_, name) in kube.objects] == ["flow-run"]
    scheduler.observe(kube.objects[("team-a", "flow-run")], "MODIFIED")
    emu.transition("flow-run", ("Succeeded", None))
    emu.advance(5)
    await scanner.scan_once(watched)
    await settle(scheduler)
    assert kube.objects[("team-a", "flow-run")]["status"]["runStatus"] == "Succeeded"
    assert emu.counters.calls_for("flow-run", "GetPipelineRun") == 0


@pytest.mark.parametrize("in_first_scan", [False, True])
async def test_new_hand_written_runs_take_the_last_scans_row_or_bring_the_next_scan_forward(
    emulator: Emulator, in_first_scan: bool
) -> None:
    """A run listed after its workspace's scan takes the row that scan read (one call in all); a run PAI did not
    have then brings the next scan forward (a second call) rather than wait the interval."""
    # A scan interval far longer than the test: only the hurry can make the second scan happen.
    settings = Settings(endpoint_override=emulator.url, workspace_scan_interval="1h", workspace_page_size=10)
    client = PaiClient(endpoint_override=emulator.url)
    kube = FakeKube()
    wall = datetime.fromtimestamp(emulator.clock.now(), tz=UTC)
    access = PaiAccess(settings, client, kube, StaticCredentialSource(*ACCESS_KEY), policies=ALLOW_ALL)
    scheduler = Scheduler(settings, access, RunWriter(kube, wallclock=lambda: wall), wallclock=lambda: wall)
    scanner = WorkspaceScanner(settings, access, kube, scheduler.scans, scheduler.ownership, wallclock=lambda: wall)
    try:
        if in_first_scan:
            emulator.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-h1")
        scanner.observe_workspace(workspace(maxRuns=0), "ADDED")
        await asyncio.sleep(0.3)  # the first scan: nothing to feed, nothing to import
        if not in_first_scan:
            emulator.add_run(Timeline.running_forever(), age=60, workspace_id="ws-1", run_id="flow-h1")
        body = {
            "metadata": {"namespace": "team-a", "name": "mine", "uid": "uid-mine", "generation": 1},
            "spec": {"pipelineRunId": "flow-h1", "workspaceId": "ws-1"},
        }
        kube.objects[("team-a", "mine")] = body
        scheduler.observe(body, "ADDED")
        scanner.observe_run(body, "ADDED")
        await asyncio.sleep(1.6)
        await settle(scheduler)
        assert kube.objects[("team-a", "mine")]["status"]["runStatus"] == "Running"
        calls = emulator.counters.snapshot(include_runs=False).to_json()["actions"]
        assert calls == {"ListPipelineRuns": 1 if in_first_scan else 2}
    finally:
        await scanner.stop()
        await scheduler.stop()
        await client.aclose()


def test_workspaces_scan_at_their_own_phase_of_the_interval() -> None:
    """Workspaces listed together scanned in step for good: a mass change then reached the writes all at once,
    once per interval (nothing shown for the first 20 s of a mass finish at 10,000 runs). Each scans at its own
    phase, at least half an interval after the last scan and at most one and a half."""
    interval = 30.0
    phases = set()
    for i in range(200):
        uid = f"uid-{i}"
        for now in (0.0, 7.5, 29.9, 1234.5):
            wait = next_slot(now, interval, uid)
            assert interval / 2 <= wait < 1.5 * interval
        phases.add(round((1234.5 + next_slot(1234.5, interval, uid)) % interval))
        # The same phase whenever it is asked: a hurried scan does not move it.
        apart = ((100.0 + next_slot(100.0, interval, uid)) - (3.0 + next_slot(3.0, interval, uid))) / interval
        assert apart == pytest.approx(round(apart))
    assert len(phases) >= 25  # spread over the interval, not in step
