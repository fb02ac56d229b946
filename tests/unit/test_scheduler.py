"""The poll scheduler against in-memory PAI and Kubernetes fakes and a fake clock.

The real `Scheduler.run()` loop runs in a task; tests move the fake clock and wake the loop, so a day of
polling takes milliseconds and every due time is exact.
"""

from __future__ import annotations

import asyncio
import json
import random
import types
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paiflow_operator.access.view import AccessView
from paiflow_operator.conditions import Event
from paiflow_operator.guards import ratelimit
from paiflow_operator.guards.ratelimit import TokenBucket
from paiflow_operator.kube import FIELD_MANAGER, KubeError, ObjectRef
from paiflow_operator.pai.credentials import Credentials, CredentialSource, StaticCredentialSource
from paiflow_operator.pai.errors import NotFoundError, PaiError, ServerError, ThrottledError
from paiflow_operator.pai.models import PipelineRun, RunStatusList
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.scheduler import Key, Scheduler, Tracked
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings

# Unit tests of the door and what uses it: every namespace allowed (policies: tests/unit/test_access_*.py).
ALLOW_ALL = AccessView(allow_all=True)

SAMPLE_PATH = Path(__file__).parent / "data" / "get_pipeline_run_sample.json"
EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DEFAULT_KEYS = StaticCredentialSource("LTAIoperator", "operator-secret")


@pytest.fixture(autouse=True)
def _no_paiflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read PAIFLOW_* from the environment: a developer's shell must not change these tests.
    import os

    for name in list(os.environ):
        if name.startswith("PAIFLOW_"):
            monkeypatch.delenv(name)


# ---- fakes ----------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)


class MaxRandom(random.Random):
    """Jitter always at its upper bound, so delays can be asserted exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass(frozen=True)
class Call:
    action: str  # "get" or "list"
    run_ids: tuple[str, ...]
    region: str
    workspace: str | None
    credentials: Credentials
    at: float


class FakePai:
    """PAI with programmable run states and errors; every call is recorded with its credentials."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.states: dict[str, str] = {}
        self.workspaces: dict[str, str] = {}
        self.errors: dict[str, PaiError] = {}
        # When set, every ListPipelineRunsStatus fails with it.
        self.list_error: PaiError | None = None
        self.calls: list[Call] = []
        # When set, get_pipeline_run waits for it: a PAI call whose answer is still in flight.
        self.gate: asyncio.Event | None = None
        # When set, every call of any kind fails with it: PAI is down.
        self.down: PaiError | None = None

    def add(self, run_id: str, status: str = "Running", workspace: str = "ws-1") -> None:
        self.states[run_id] = status
        self.workspaces[run_id] = workspace

    async def get_pipeline_run(
        self,
        run_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        verbose: bool = False,
        manifest_type: str | None = None,
        token_id: str | None = None,
    ) -> PipelineRun:
        creds = await credentials.get()
        self.calls.append(Call("get", (run_id,), region, None, creds, self.clock()))
        # PAI answers as of the call; a gate holds that answer on its way back.
        status = self.states.get(run_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.down is not None:
            raise self.down
        if run_id in self.errors:
            raise self.errors[run_id]
        if run_id not in self.states:
            raise NotFoundError(f"pipeline run {run_id} not found", code="PipelineRunNotFound", http_status=404)
        wire = json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))
        wire.update(
            PipelineRunId=run_id,
            Status=status,
            WorkspaceId=self.workspaces[run_id],
            Duration=int(self.clock()),
            RequestId=f"req-{len(self.calls)}",
        )
        return PipelineRun.from_wire(wire)

    async def list_pipeline_runs_status(
        self, workspace_id: str, run_ids: Sequence[str], *, region: str, credentials: CredentialSource
    ) -> RunStatusList:
        creds = await credentials.get()
        self.calls.append(Call("list", tuple(run_ids), region, workspace_id, creds, self.clock()))
        if self.down is not None:
            raise self.down
        if self.list_error is not None:
            raise self.list_error
        rows = [
            {"PipelineRunId": rid, "Status": self.states[rid]}
            for rid in run_ids
            if rid in self.states and self.workspaces[rid] == workspace_id
        ]
        return RunStatusList.model_validate({"RequestId": "req-list", "PipelineRuns": rows})

    def gets(self, run_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.action == "get" and (run_id is None or c.run_ids == (run_id,))]

    def lists(self) -> list[Call]:
        return [c for c in self.calls if c.action == "list"]


class FakeKube:
    """The API server as far as the scheduler sees it: status merge patches, Events, Secret reads."""

    def __init__(self) -> None:
        self.status: dict[Key, dict[str, Any]] = {}
        self.patches: list[tuple[Key, dict[str, Any]]] = []
        self.events: list[tuple[ObjectRef, Event]] = []
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.forbidden: set[tuple[str, str]] = set()
        self.secret_reads: list[tuple[str, str]] = []
        self.resource_version = 100
        # Who last set status.runStatus, as the API server's managedFields would say.
        self.runstatus_manager: dict[Key, str] = {}
        # Status writes of these objects are refused (an admission policy, etcd's size limit): the error to raise.
        self.refuse: dict[Key, KubeError] = {}
        self.refused: list[Key] = []
        # Who last set some of status.conditions (managedFields), when not the operator.
        self.conditions_manager: dict[Key, str] = {}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, name)
        refusal = self.refuse.get(key)
        if refusal is not None and (refusal.status != 500 or "runStatus" in patch):
            self.refused.append(key)
            raise refusal
        self.patches.append((key, patch))
        if "runStatus" in patch:
            self.runstatus_manager[key] = FIELD_MANAGER
        if "conditions" in patch:
            self.conditions_manager.pop(key, None)
        current = dict(self.status.get(key, {}))
        for field, value in patch.items():
            if value is None:
                current.pop(field, None)
            else:
                current[field] = value
        self.status[key] = current
        self.resource_version += 1
        return {"status": current, "metadata": {"resourceVersion": str(self.resource_version)}}

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None:
        self.events.append((ref, event))

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        self.secret_reads.append((namespace, name))
        if (namespace, name) in self.forbidden:
            raise KubeError(403, "Forbidden", "secrets is forbidden")
        if (namespace, name) not in self.secrets:
            raise KubeError(404, "NotFound", f'secrets "{name}" not found')
        return dict(self.secrets[(namespace, name)])

    def patches_for(self, key: Key) -> list[dict[str, Any]]:
        return [p for k, p in self.patches if k == key]


# ---- harness ------------------------------------------------------------------------------------------


class Harness:
    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.clock = FakeClock()
        self.pai = self.make_pai()
        self.kube = self.make_kube()
        self.settings = settings
        self.access = PaiAccess(settings, self.pai, self.kube, DEFAULT_KEYS, clock=self.clock, policies=ALLOW_ALL)
        self.writer = RunWriter(self.kube, wallclock=self.clock.wall)
        self.sched = Scheduler(
            settings,
            self.access,
            self.writer,
            launcher=self.make_launcher(),
            rng=rng,
            clock=self.clock,
            wallclock=self.clock.wall,
        )
        self.generations: dict[Key, int] = {}
        self.specs: dict[Key, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def make_pai(self) -> Any:
        return FakePai(self.clock)

    def make_kube(self) -> Any:
        return FakeKube()

    def make_launcher(self) -> Launcher | None:
        return None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.sched.run())
        await self.settle()

    async def close(self) -> None:
        await self.sched.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def body(self, key: Key, *, uid: str | None = None) -> dict[str, Any]:
        """The object as a watch event would carry it: spec, generation, and the status PAI-side writes left."""
        manager = self.kube.runstatus_manager.get(key)
        managed = [{"manager": manager, "subresource": "status", "fieldsV1": {"f:status": {"f:runStatus": {}}}}]
        if key in self.kube.conditions_manager:
            fields = {"f:status": {"f:conditions": {'k:{"type":"Succeeded"}': {"f:status": {}}}}}
            managed.append({"manager": self.kube.conditions_manager[key], "subresource": "status", "fieldsV1": fields})
        return {
            "metadata": {
                "namespace": key[0],
                "name": key[1],
                "uid": uid or f"uid-{key[0]}-{key[1]}",
                "generation": self.generations[key],
                "resourceVersion": str(self.kube.resource_version),
                "managedFields": [m for m in managed if m["manager"]],
            },
            "spec": self.specs[key],
            "status": self.kube.status.get(key, {}),
        }

    def create(
        self,
        name: str,
        run_id: str | None = None,
        *,
        namespace: str = "team-a",
        status: dict[str, Any] | None = None,
        generation: int = 1,
        status_by: str = FIELD_MANAGER,
        **spec: Any,
    ) -> Key:
        key = (namespace, name)
        self.specs[key] = {"pipelineRunId": run_id or name, **spec}
        self.generations[key] = generation
        if status is not None:
            self.kube.status[key] = status
            if "runStatus" in status:
                self.kube.runstatus_manager[key] = status_by
        self.sched.observe(self.body(key), "ADDED")
        return key

    def update_spec(self, key: Key, **spec: Any) -> None:
        self.specs[key] = {**self.specs[key], **spec}
        self.generations[key] += 1
        self.sched.observe(self.body(key), "MODIFIED")

    def delete(self, key: Key) -> None:
        self.sched.observe(self.body(key), "DELETED")

    def tracked(self, key: Key) -> Tracked:
        return self.sched.runs[key]

    def delay(self, key: Key) -> float | None:
        """Seconds until the next poll of `key`, or None when it is not scheduled at all."""
        due = self.tracked(key).due
        return None if due is None else due - self.clock()

    async def settle(self) -> None:
        # The fakes never block, so a bounded number of loop turns lets every spawned sync finish.
        for turn in range(2000):
            await asyncio.sleep(0)
            if turn > 20 and not self.sched.sync.tasks:
                return
        raise AssertionError("scheduler tasks did not settle")

    async def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        self.sched.due.wake.set()
        await self.settle()

    async def advance_in_steps(self, total: float, step: float) -> None:
        for _ in range(round(total / step)):
            await self.advance(step)


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness() -> AsyncIterator[HarnessFactory]:
    made: list[Harness] = []

    async def make(rng: random.Random | None = None, **settings: Any) -> Harness:
        # No error grace and no circuit breaker unless a test asks: most tests look at one error at a time.
        defaults: dict[str, Any] = {
            "qps": 1000,
            "burst": 1000,
            "initial_jitter": "0s",
            "error_grace": "0s",
            "circuit_failures": 1_000_000,
        }
        h = Harness(Settings(**{**defaults, **settings}), rng or random.Random(7))
        await h.start()
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()


# ---- first poll, finished runs, terminal runs, spec changes, deletion ---------------------------------------


async def test_new_resource_is_polled_once_within_the_initial_jitter(harness: HarnessFactory) -> None:
    h = await harness(rng=random.Random(1), initial_jitter="5s")
    keys = [h.create(f"run-{i}") for i in range(20)]
    for key in keys:
        h.pai.add(key[1])
    delays = [h.delay(key) for key in keys]
    assert all(d is not None and 0 <= d <= 5 for d in delays)
    assert len(set(delays)) == len(delays), "first polls should be spread over the window, not stacked"
    for second in range(1, 6):
        await h.advance(1)
        # Exactly the runs whose jittered first poll has come are asked, each once.
        assert len(h.pai.gets()) == sum(1 for d in delays if d is not None and d <= second)
    assert sorted(c.run_ids[0] for c in h.pai.gets()) == sorted(k[1] for k in keys)
    await h.advance(20)  # well inside the 30 s poll interval: nobody is polled twice
    assert len(h.pai.calls) == 20


@pytest.mark.parametrize("status", ["Succeeded", "Failed", "Terminated", "Skipped"])
async def test_finished_resource_seen_at_startup_gets_no_pai_call(harness: HarnessFactory, status: str) -> None:
    h = await harness(initial_jitter="5s")
    h.pai.add("done", status)
    h.create("done", status={"runStatus": status, "observedGeneration": 3, "workspaceId": "ws-1"}, generation=3)
    await h.advance_in_steps(3600, 60)
    assert h.pai.calls == []
    assert h.kube.patches == []
    assert h.tracked(("team-a", "done")).due is None


async def test_terminal_resource_of_an_older_generation_is_polled_once(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("done", "Succeeded")
    h.create("done", status={"runStatus": "Succeeded", "observedGeneration": 2}, generation=3)
    await h.advance_in_steps(3600, 60)
    assert len(h.pai.calls) == 1
    assert h.kube.status[("team-a", "done")]["observedGeneration"] == 3


async def test_run_reaching_a_terminal_state_is_not_polled_again(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Running")
    key = h.create("r1")
    await h.advance(0)
    await h.advance(h.delay(key) or 0)
    assert len(h.pai.calls) == 2
    h.pai.states["r1"] = "Succeeded"
    await h.advance(h.delay(key) or 0)
    assert len(h.pai.calls) == 3
    assert h.kube.status[key]["runStatus"] == "Succeeded"
    await h.advance_in_steps(6 * 3600, 300)
    assert len(h.pai.calls) == 3
    assert h.delay(key) is None


async def test_spec_change_on_a_finished_run_polls_once_more(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Failed")
    key = h.create("r1")
    await h.advance(0)
    assert len(h.pai.calls) == 1
    h.update_spec(key, verbose=True)
    await h.advance(0)
    assert len(h.pai.calls) == 2
    assert h.kube.status[key]["observedGeneration"] == 2
    assert "manifest" in h.kube.status[key]
    await h.advance_in_steps(3600, 60)
    assert len(h.pai.calls) == 2


async def test_watch_event_without_a_spec_change_does_not_poll(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Running")
    key = h.create("r1")
    await h.advance(0)
    # Our own status write comes back through the watch: it must not cause a poll.
    for _ in range(5):
        h.sched.observe(h.body(key), "MODIFIED")
    await h.advance(1)
    assert len(h.pai.calls) == 1


async def test_deleted_resource_is_no_longer_polled(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Running")
    key = h.create("r1")
    await h.advance(0)
    h.delete(key)
    await h.advance_in_steps(3600, 30)
    assert len(h.pai.calls) == 1
    assert key not in h.sched.runs


async def test_in_flight_result_for_a_deleted_resource_writes_nothing(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Running")
    h.pai.gate = asyncio.Event()
    key = h.create("r1")
    h.sched.due.wake.set()
    for _ in range(50):  # let the poll start and block inside PAI
        await asyncio.sleep(0)
    assert len(h.pai.calls) == 1
    h.delete(key)
    h.pai.gate.set()
    await h.settle()
    assert h.kube.patches == []
    assert h.kube.events == []


async def test_in_flight_result_for_a_recreated_resource_writes_nothing(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Running")
    h.pai.gate = asyncio.Event()
    key = h.create("r1")
    h.sched.due.wake.set()
    for _ in range(50):
        await asyncio.sleep(0)
    # Deleted and created again under the same name while PAI answered: a different object (uid).
    h.sched.observe(h.body(key, uid="uid-second"), "ADDED")
    assert h.tracked(key).uid == "uid-second"
    h.pai.gate.set()
    await h.settle()
    # Both answers arrive; only the new object's own first poll may write.
    assert len(h.pai.calls) == 2
    assert len(h.kube.patches) == 1
    assert h.kube.events and all(ref.uid == "uid-second" for ref, _ in h.kube.events)


# ---- batching -------------------------------------------------------------------------------------------------


async def _polled_once(h: Harness, names: Sequence[str], workspace: str = "ws-1", **spec: Any) -> list[Key]:
    keys = []
    for name in names:
        h.pai.add(name, "Running", workspace)
        keys.append(h.create(name, **spec))
    await h.advance(0)
    return keys


async def test_runs_of_one_workspace_share_one_status_query(harness: HarnessFactory) -> None:
    h = await harness(batch_size=3)
    keys = await _polled_once(h, ["a", "b", "c"])
    # A new resource has no status yet: its first look is a GetPipelineRun of its own.
    assert sorted(c.run_ids[0] for c in h.pai.calls) == ["a", "b", "c"]
    h.pai.calls.clear()

    await h.advance(h.delay(keys[0]) or 0)
    assert [(c.action, sorted(c.run_ids), c.workspace, c.region) for c in h.pai.calls] == [
        ("list", ["a", "b", "c"], "ws-1", "cn-hangzhou")
    ]
    h.pai.calls.clear()

    h.pai.states["b"] = "Failed"
    await h.advance(h.delay(keys[0]) or 0)
    assert [c.action for c in h.pai.lists()] == ["list"]
    assert [c.run_ids for c in h.pai.gets()] == [("b",)], "only the changed run needs its details"
    assert h.kube.status[keys[1]]["runStatus"] == "Failed"
    h.pai.calls.clear()

    await h.advance(h.delay(keys[0]) or 0)
    assert [sorted(c.run_ids) for c in h.pai.calls] == [["a", "c"]]


@pytest.mark.parametrize(
    ("error", "asks_each_run"),
    [
        (NotFoundError("workspace not found", code="WorkspaceNotFound", http_status=404), True),
        (ThrottledError("slow down", code="Throttling.User", http_status=400), False),
    ],
)
async def test_a_failed_status_query_falls_back_to_each_run_only_when_it_says_nothing_about_them(
    harness: HarnessFactory, error: PaiError, asks_each_run: bool
) -> None:
    h = await harness(batch_size=3)
    keys = await _polled_once(h, ["a", "b", "c"])
    h.pai.calls.clear()
    h.pai.list_error = error
    await h.advance(h.delay(keys[0]) or 0)
    assert len(h.pai.lists()) == 1
    if asks_each_run:
        # A wrong workspace must not mark every run RunNotFound: each is asked on its own and stays Ready.
        assert sorted(c.run_ids[0] for c in h.pai.gets()) == ["a", "b", "c"]
        for key in keys:
            ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "True"
    else:
        assert h.pai.gets() == []
        for key in keys:
            ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "Throttled")


async def test_batches_hold_at_most_batch_size_ids_and_split_by_workspace(harness: HarnessFactory) -> None:
    h = await harness(batch_size=2)
    await _polled_once(h, ["a1", "a2", "a3", "a4", "a5"], "ws-a")
    await _polled_once(h, ["b1", "b2"], "ws-b")
    h.pai.calls.clear()
    await h.advance(45)  # each batch's first beat falls within [interval/2, 1.5 * interval)
    lists = h.pai.lists()
    assert lists and all(len(c.run_ids) <= 2 for c in lists)
    for call in lists:
        assert {h.pai.workspaces[rid] for rid in call.run_ids} == {call.workspace}, "one workspace per query"
    # Every run is asked about exactly once; 5 runs in chunks of 2 leave one to go alone by GetPipelineRun.
    asked = [rid for c in h.pai.calls for rid in c.run_ids]
    assert sorted(asked) == ["a1", "a2", "a3", "a4", "a5", "b1", "b2"]
    assert (len(lists), len(h.pai.gets())) == (3, 1)


async def test_runs_due_within_the_batch_window_are_pulled_into_one_query(harness: HarnessFactory) -> None:
    h = await harness(batch_window="2s")
    keys = await _polled_once(h, ["a", "b", "c"])
    h.pai.calls.clear()
    now = h.clock()
    for key, offset in zip(keys, (30.0, 31.5, 40.0), strict=True):
        h.sched.due.schedule(h.tracked(key), now + offset)
    await h.advance(30)
    assert [sorted(c.run_ids) for c in h.pai.calls] == [["a", "b"]]
    await h.advance(10)
    assert [sorted(c.run_ids) for c in h.pai.calls] == [["a", "b"], ["c"]]


async def test_batch_members_get_details_again_after_the_refresh_interval(harness: HarnessFactory) -> None:
    h = await harness(detail_refresh_interval="5m")
    await _polled_once(h, ["a", "b"])
    h.pai.calls.clear()
    await h.advance_in_steps(240, 40)
    assert h.pai.gets() == []
    await h.advance_in_steps(120, 40)
    assert sorted(c.run_ids[0] for c in h.pai.gets()) == ["a", "b"]


async def test_batch_never_mixes_credentials(harness: HarnessFactory) -> None:
    h = await harness()
    # One Secret with two key pairs: two resources pick different pairs from it.
    h.kube.secrets[("team-a", "keys")] = {
        "idA": b"LTAIa",
        "secretA": b"sa",
        "idB": b"LTAIb",
        "secretB": b"sb",
    }
    h.pai.add("ra")
    h.pai.add("rb")
    h.create("ra", credentialsSecretRef={"name": "keys", "accessKeyIdKey": "idA", "accessKeySecretKey": "secretA"})
    h.create("rb", credentialsSecretRef={"name": "keys", "accessKeyIdKey": "idB", "accessKeySecretKey": "secretB"})
    h.pai.add("rd")
    h.create("rd")  # the operator's own credentials
    await h.advance(0)
    await h.advance_in_steps(300, 35)
    expected = {"ra": "LTAIa", "rb": "LTAIb", "rd": "LTAIoperator"}
    assert len(h.pai.calls) > 3
    for call in h.pai.calls:
        for rid in call.run_ids:
            assert call.credentials.access_key_id == expected[rid], (call.action, call.run_ids)


# ---- rate limit ------------------------------------------------------------------------------------------------


async def test_token_bucket_never_exceeds_rate_times_elapsed_plus_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        # Waiting moves the fake clock by exactly the requested time.
        clock.t += delay
        await real_sleep(0)

    # Only the rate-limit module sees the fake sleep; the event loop itself keeps the real one.
    monkeypatch.setattr(ratelimit, "asyncio", types.SimpleNamespace(Lock=asyncio.Lock, sleep=fake_sleep))
    rate, burst = 4.0, 3
    bucket = TokenBucket(rate, burst, clock)
    stamps: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        stamps.append(clock())

    await asyncio.gather(*(take() for _ in range(41)))
    stamps.sort()
    # In every window [t_i, t_j] at most rate * (t_j - t_i) + burst calls start.
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            assert j - i + 1 <= rate * (stamps[j] - stamps[i]) + burst + 1e-9, (i, j)
    assert stamps[:burst] == [0.0] * burst
    # ...and the limiter is not stricter than asked: 38 calls beyond the burst take 38 / rate seconds.
    assert stamps[-1] == pytest.approx((41 - burst) / rate)


async def test_every_pai_call_takes_a_token_from_the_global_bucket(harness: HarnessFactory) -> None:
    h = await harness(batch_size=3)
    taken: list[float] = []
    bucket = h.access.limiter
    real_acquire = bucket.acquire

    async def counting_acquire(*args: Any) -> None:
        await real_acquire(*args)
        taken.append(h.clock())

    bucket.acquire = counting_acquire  # type: ignore[method-assign]
    await _polled_once(h, ["a", "b", "c", "d"])
    h.pai.states["b"] = "Succeeded"
    await h.advance_in_steps(350, 35)
    assert h.pai.lists() and h.pai.gets(), "both kinds of call must be covered"
    # The bucket's bound (tested above) only holds if no call path skips it.
    assert len(taken) == len(h.pai.calls)


async def test_batched_runs_share_a_beat_one_interval_apart_and_batches_differ_in_phase(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    keys = {ws: await _polled_once(h, [f"{ws}-{i}" for i in range(5)], ws) for ws in ("ws-a", "ws-b", "ws-c")}
    await h.advance(45)
    dues = {ws: {h.tracked(k).due for k in ks} for ws, ks in keys.items()}
    # One due time per batch, so each batch costs one status query per interval...
    assert all(len(d) == 1 for d in dues.values()), dues
    # ...and the batches do not all poll at the same moment.
    assert len({d.pop() for d in dues.values()}) == 3
    first = h.tracked(keys["ws-a"][0]).due
    assert first is not None
    await h.advance(first - h.clock() + 0.001)
    assert h.tracked(keys["ws-a"][0]).due == pytest.approx(first + 30)
    h.pai.calls.clear()
    await h.advance_in_steps(300, 1)
    lists = h.pai.lists()
    # Three batches, ten intervals: one query per batch per interval, never more.
    assert 27 <= len(lists) <= 30 and not h.pai.gets(), [c.run_ids for c in h.pai.calls]


# ---- retries -------------------------------------------------------------------------------------------------


async def test_transient_errors_back_off_exponentially_up_to_the_cap(harness: HarnessFactory) -> None:
    h = await harness(rng=MaxRandom(), backoff_base="5s", backoff_max="40s")
    h.pai.add("r1")
    h.pai.errors["r1"] = ServerError("boom", http_status=500)
    key = h.create("r1")
    delays = []
    for _ in range(6):
        await h.advance(h.delay(key) or 0)
        delays.append(h.delay(key))
    assert delays == [5, 10, 20, 40, 40, 40]
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ServerError")
    # Recovery resets the attempt counter: the next failure starts from the base again.
    del h.pai.errors["r1"]
    await h.advance(40)
    # Back on its batch's beat: within [interval/2, 1.5 * interval).
    assert 15 <= (h.delay(key) or 0) < 45
    h.pai.errors["r1"] = ServerError("boom again")
    await h.advance(h.delay(key) or 0)
    assert h.delay(key) == 5


@pytest.mark.parametrize("seed", range(5))
async def test_backoff_jitter_stays_between_half_and_full_delay(harness: HarnessFactory, seed: int) -> None:
    h = await harness(rng=random.Random(seed), backoff_base="4s", backoff_max="32s")
    h.pai.add("r1")
    h.pai.errors["r1"] = ServerError("boom")
    key = h.create("r1")
    for full in (4, 8, 16, 32, 32):
        await h.advance(h.delay(key) or 0)
        delay = h.delay(key)
        assert delay is not None and full / 2 <= delay <= full


async def test_not_found_waits_the_slow_retry_interval(harness: HarnessFactory) -> None:
    h = await harness(rng=MaxRandom(), slow_retry_interval="5m", backoff_base="5s")
    key = h.create("missing")  # PAI does not know this run
    await h.advance(0)
    for _ in range(3):
        assert h.delay(key) == 300, "not found needs a human: no fast exponential retries"
        await h.advance(300)
    assert len(h.pai.calls) == 4
    status = h.kube.status[key]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Ready"] == ("False", "RunNotFound")
    assert conditions["Stalled"] == ("True", "RunNotFound")
    assert [e.reason for _, e in h.kube.events] == ["RunNotFound"]


async def test_runs_polled_alone_keep_the_interval_within_five_percent(harness: HarnessFactory) -> None:
    h = await harness(rng=random.Random(3), batch_status=False)
    keys = [h.create(f"r{i}", pollInterval="1m") for i in range(30)]
    for key in keys:
        h.pai.add(key[1])
    await h.advance(0)
    delays = [h.delay(key) for key in keys]
    assert all(d is not None and 57 <= d <= 63 for d in delays)


# ---- credentials ---------------------------------------------------------------------------------------------


async def test_credentials_secret_is_read_from_the_resource_namespace_only(harness: HarnessFactory) -> None:
    h = await harness()
    h.kube.secrets[("team-a", "pai-keys")] = {"accessKeyId": b"LTAIteamA\n", "accessKeySecret": b"secret-a"}
    h.kube.secrets[("paiflow-system", "pai-keys")] = {"accessKeyId": b"LTAIsystem", "accessKeySecret": b"s"}
    h.pai.add("r1")
    h.create("r1", namespace="team-a", credentialsSecretRef={"name": "pai-keys"})
    await h.advance(0)
    assert set(h.kube.secret_reads) == {("team-a", "pai-keys")}
    (call,) = h.pai.calls
    assert call.credentials.access_key_id == "LTAIteamA"
    assert call.credentials.security_token is None


async def test_sts_token_is_passed_when_the_secret_has_one(harness: HarnessFactory) -> None:
    h = await harness()
    h.kube.secrets[("team-a", "sts")] = {"accessKeyId": b"STS.x", "accessKeySecret": b"s", "securityToken": b"tok"}
    h.pai.add("r1")
    h.create("r1", credentialsSecretRef={"name": "sts"})
    await h.advance(0)
    assert h.pai.calls[0].credentials.security_token == "tok"


@pytest.mark.parametrize(
    ("secrets", "forbidden", "reason"),
    [
        # The Secret exists, but in another namespace: it must not be found.
        ({("other", "pai-keys"): {"accessKeyId": b"x", "accessKeySecret": b"y"}}, set(), "SecretNotFound"),
        ({("team-a", "pai-keys"): {"accessKeyId": b"x"}}, set(), "SecretKeyMissing"),
        ({("team-a", "pai-keys"): {"accessKeyId": b"x", "accessKeySecret": b""}}, set(), "SecretKeyMissing"),
        ({}, {("team-a", "pai-keys")}, "SecretForbidden"),
    ],
    ids=["not-found", "key-missing", "key-empty", "forbidden"],
)
async def test_secret_problems_become_conditions_without_pai_calls(
    harness: HarnessFactory,
    secrets: dict[tuple[str, str], dict[str, bytes]],
    forbidden: set[tuple[str, str]],
    reason: str,
) -> None:
    h = await harness(rng=MaxRandom(), slow_retry_interval="5m")
    h.kube.secrets.update(secrets)
    h.kube.forbidden |= forbidden
    h.pai.add("r1")
    key = h.create("r1", credentialsSecretRef={"name": "pai-keys"})
    await h.advance(0)
    assert h.pai.calls == []
    assert set(h.kube.secret_reads) == {("team-a", "pai-keys")}
    conditions = {c["type"]: (c["status"], c["reason"]) for c in h.kube.status[key]["conditions"]}
    assert conditions["Ready"] == ("False", reason)
    assert conditions["Stalled"] == ("True", reason)
    assert h.delay(key) == 300
    assert [(e.type, e.reason) for _, e in h.kube.events] == [("Warning", reason)]


async def test_secret_created_later_is_picked_up_after_the_cache_ttl(harness: HarnessFactory) -> None:
    h = await harness(rng=MaxRandom(), slow_retry_interval="2m", secret_cache_ttl="60s")
    h.pai.add("r1")
    key = h.create("r1", credentialsSecretRef={"name": "pai-keys"})
    await h.advance(0)
    h.kube.secrets[("team-a", "pai-keys")] = {"accessKeyId": b"LTAIlate", "accessKeySecret": b"s"}
    await h.advance(120)
    assert [c.credentials.access_key_id for c in h.pai.calls] == ["LTAIlate"]
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert [e.reason for _, e in h.kube.events] == ["SecretNotFound", "Running", "Recovered"]


async def test_suspended_resource_makes_no_pai_call(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1")
    key = h.create("r1", suspend=True)
    await h.advance_in_steps(600, 60)
    assert h.pai.calls == []
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")
    h.update_spec(key, suspend=False)
    await h.advance(0)
    assert len(h.pai.calls) == 1


# ---- sharding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_shards_split_uids_with_no_overlap_and_no_gap(count: int) -> None:
    uids = [f"{i:08x}-5f1c-4c1e-9d7a-{i * 7919:012x}" for i in range(3000)]
    owners: dict[str, list[int]] = {uid: [] for uid in uids}
    for index in range(count):
        settings = Settings(shard_count=count, shard_index=index)
        kube = FakeKube()
        sched = Scheduler(
            settings, PaiAccess(settings, FakePai(FakeClock()), kube, DEFAULT_KEYS, policies=ALLOW_ALL), RunWriter(kube)
        )
        for uid in uids:
            if sched.owns(uid):
                owners[uid].append(index)
    assert all(len(indexes) == 1 for indexes in owners.values())
    counts = [sum(1 for ix in owners.values() if ix == [i]) for i in range(count)]
    assert min(counts) > len(uids) / count * 0.8, f"shards are badly unbalanced: {counts}"
    # The assignment is a pure function of the uid, so every replica agrees without talking.
    assert all(owners[uid] == [zlib.crc32(uid.encode()) % count] for uid in uids)


async def test_scheduler_ignores_resources_of_other_shards(harness: HarnessFactory) -> None:
    h0 = await harness(shard_count=2, shard_index=0)
    h1 = await harness(shard_count=2, shard_index=1)
    names = [f"r{i}" for i in range(40)]
    for h in (h0, h1):
        for name in names:
            h.pai.add(name)
            h.create(name)
        await h.advance(0)
    polled0 = {c.run_ids[0] for c in h0.pai.calls}
    polled1 = {c.run_ids[0] for c in h1.pai.calls}
    assert polled0 and polled1
    assert polled0.isdisjoint(polled1)
    assert polled0 | polled1 == set(names)


# ---- a PAI outage that affects every run: circuit breaker and error grace ------------------------------------


def _ready(h: Harness, key: Key) -> tuple[str, str]:
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["reason"]


@pytest.mark.parametrize(("outage", "writes_per_run"), [(60, 0), (300, 2)])
async def test_an_outage_of_every_run_costs_probes_not_calls_and_bounded_writes_and_events(
    harness: HarnessFactory, outage: int, writes_per_run: int
) -> None:
    h = await harness(batch_size=10, error_grace="90s", circuit_failures=5)
    names = [f"r{i}" for i in range(60)]
    for i, name in enumerate(names):
        h.pai.add(name, "Running", f"ws-{i % 6}")
        h.create(name, workspaceId=f"ws-{i % 6}")
    await h.advance_in_steps(120, 5)  # first look, then batched polls on their beats
    keys = [("team-a", n) for n in names]
    assert all(_ready(h, k) == ("True", "Synced") for k in keys)
    h.pai.calls.clear()
    h.kube.patches.clear()
    h.kube.events.clear()

    h.pai.down = ServerError("boom", http_status=503)
    await h.advance_in_steps(outage, 1)
    calls_during = len(h.pai.calls)
    # Six batches per interval would be 2 calls a minute each; held runs make only the probes' calls.
    assert calls_during <= 5 + outage / 5 + 1, calls_during
    assert h.sched.breaker.is_open("cn-hangzhou")

    h.pai.down = None
    await h.advance_in_steps(45, 1)  # within one interval of PAI's return (30 s) plus the probe (<= 15 s)
    assert not h.sched.breaker.is_open("cn-hangzhou")
    assert all(_ready(h, k) == ("True", "Synced") for k in keys)
    writes = {k: len(h.kube.patches_for(k)) for k in keys}
    assert max(writes.values()) <= writes_per_run, writes
    if writes_per_run:
        # The outage showed (Ready=False, PaiUnavailable) once, and recovery once: one Event per namespace each.
        assert min(writes.values()) == writes_per_run
        reasons = [e.reason for _, e in h.kube.events]
        assert len(reasons) <= 2, reasons
    else:
        assert h.kube.events == []
    # Every run was read again after PAI's return.
    polled_after = {rid for c in h.pai.calls if c.at > outage for rid in c.run_ids}
    assert polled_after >= set(names) - {c.run_ids[0] for c in h.pai.gets()}


async def test_a_single_failing_run_does_not_open_the_circuit(harness: HarnessFactory) -> None:
    h = await harness(circuit_failures=3, error_grace="0s", batch_status=False)
    for name in ("ok1", "ok2", "bad"):
        h.pai.add(name)
        h.create(name)
    h.pai.errors["bad"] = ServerError("boom", http_status=500)
    await h.advance_in_steps(600, 5)
    assert not h.sched.breaker.is_open("cn-hangzhou")
    assert _ready(h, ("team-a", "bad")) == ("False", "ServerError")
    assert len(h.pai.gets("ok1")) >= 15


async def test_one_tenants_throttled_keys_hold_only_that_tenants_polls(harness: HarnessFactory) -> None:
    """The circuit is per region and identity: team-b's keys throttled by PAI open team-b's circuit only."""
    h = await harness(circuit_failures=3, error_grace="0s", batch_status=False)
    h.kube.secrets[("team-b", "keys")] = {"accessKeyId": b"LTAIteamB", "accessKeySecret": b"sb"}
    throttled = [h.create(f"b{i}", namespace="team-b", credentialsSecretRef={"name": "keys"}) for i in range(4)]
    for _, name in throttled:
        h.pai.add(name)
        h.pai.errors[name] = ThrottledError("Throttling.User", http_status=429)
    fine = [h.create(f"a{i}", namespace="team-a") for i in range(2)]
    for _, name in fine:
        h.pai.add(name)
    await h.advance_in_steps(600, 5)
    circuit_b = h.sched.sync.circuit(h.tracked(throttled[0]))
    assert circuit_b.identity != "operator" and "LTAI" not in circuit_b.identity, circuit_b
    assert h.sched.breaker.is_open(circuit_b)
    assert not h.sched.breaker.is_open(h.sched.sync.circuit(h.tracked(fine[0])))
    # team-a is polled on its 30 s interval throughout; team-b costs a probe now and then, not a call per run.
    for _, name in fine:
        assert len(h.pai.gets(name)) >= 600 / 30 - 1, name
    calls_b = sum(len(h.pai.gets(name)) for _, name in throttled)
    assert calls_b <= len(throttled) + 600 / 5, calls_b
    assert _ready(h, fine[0]) == ("True", "Synced")


async def test_one_objects_refused_status_writes_hold_no_other_write(harness: HarnessFactory) -> None:
    h = await harness(batch_status=False)
    names = ["bad", *(f"ok{i}" for i in range(5))]
    for name in names:
        h.pai.add(name)
    bad = ("team-a", "bad")
    h.kube.refuse[bad] = KubeError(
        403, "Forbidden", "ValidatingAdmissionPolicy 'freeze' with binding 'freeze' denied request: frozen"
    )
    keys = [h.create(name) for name in names]
    await h.advance_in_steps(300, 5)
    for key in keys[1:]:
        assert _ready(h, key) == ("True", "Synced"), key
    assert h.writer.gate.is_open and h.writer.gate.closed_count == 0
    # The refused object retries on its own backoff, and says so once with an Event (no status can be written).
    assert 3 <= len(h.kube.refused) <= 10, len(h.kube.refused)
    refusals = [e for ref, e in h.kube.events if (ref.namespace, ref.name) == bad]
    assert [e.reason for e in refusals] == ["StatusWriteRefused"], refusals
    assert "denied request" in refusals[0].message
    # Once the policy is lifted, its status is written at its next retry.
    del h.kube.refuse[bad]
    await h.advance_in_steps(600, 5)
    assert _ready(h, bad) == ("True", "Synced")


async def test_a_status_too_large_for_etcd_is_shown_as_a_condition(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("big")
    key = h.create("big")
    # etcd refuses the object with PAI's answer in it (the refusal hits writes that carry runStatus).
    h.kube.refuse[key] = KubeError(500, "InternalError", "etcdserver: request is too large")
    await h.advance(0)
    assert _ready(h, key) == ("False", "MalformedResponse")
    assert "could not be stored" in h.kube.status[key]["conditions"][0]["message"]
    assert h.writer.gate.is_open


async def _restarted(harness: HarnessFactory, h: Harness, key: Key) -> Harness:
    """A new operator process that finds the object as the old one (and anyone since) left it."""
    restarted = await harness()
    restarted.specs, restarted.generations = h.specs, h.generations
    restarted.kube.status[key] = h.kube.status[key]
    for managers in ("runstatus_manager", "conditions_manager"):
        if key in getattr(h.kube, managers):
            getattr(restarted.kube, managers)[key] = getattr(h.kube, managers)[key]
    restarted.sched.observe(restarted.body(key), "ADDED")
    return restarted


def _essence(conditions: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    # lastTransitionTime of a condition flipped by the forger and back is the time of the restore.
    return [(c["type"], c["status"], c["reason"], c["message"]) for c in conditions]


def _forge_conditions(h: Harness, key: Key) -> None:
    """Someone with access to the status subresource marks a failed run Succeeded (a merge patch replaces the list)."""
    forged = [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "all good",
               "lastTransitionTime": "2030-01-01T00:00:00Z"}]  # fmt: skip
    h.kube.status[key] = {**h.kube.status[key], "conditions": forged}
    h.kube.conditions_manager[key] = "kubectl-patch"


async def test_forged_conditions_of_a_finished_run_are_restored_without_a_pai_call(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Failed")
    key = h.create("r1")
    await h.advance(0)
    good = h.kube.status[key]["conditions"]
    assert _ready(h, key) == ("True", "Synced") and len(h.pai.calls) == 1
    _forge_conditions(h, key)
    h.sched.observe(h.body(key), "MODIFIED")
    await h.advance(1)
    assert _essence(h.kube.status[key]["conditions"]) == _essence(good), "put back as the operator wrote them"
    assert len(h.pai.calls) == 1, "no PAI call: the conditions follow from runStatus"
    assert [e.reason for _, e in h.kube.events][-1] == "ConditionsRestored"
    # The echo of our own write changes nothing, and the run stays finished.
    writes = len(h.kube.patches)
    h.sched.observe(h.body(key), "MODIFIED")
    await h.advance_in_steps(600, 60)
    assert len(h.kube.patches) == writes and len(h.pai.calls) == 1


async def test_conditions_forged_while_the_operator_was_down_are_restored_at_start_up(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    h.pai.add("r1", "Failed")
    key = h.create("r1")
    await h.advance(0)
    good = h.kube.status[key]["conditions"]
    _forge_conditions(h, key)
    restarted = await _restarted(harness, h, key)
    await restarted.advance(1)
    assert _essence(restarted.kube.status[key]["conditions"]) == _essence(good)
    assert restarted.pai.calls == []


async def test_conditions_the_operator_wrote_itself_are_left_alone(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("r1", "Succeeded")
    key = h.create("r1")
    await h.advance(0)
    writes = len(h.kube.patches)
    restarted = await _restarted(harness, h, key)
    await restarted.advance(60)
    assert restarted.kube.patches == [] and restarted.pai.calls == [] and writes


async def test_a_status_unknown_to_the_operator_that_does_not_change_costs_no_detail_call(
    harness: HarnessFactory,
) -> None:
    h = await harness(batch_size=3)
    keys = await _polled_once(h, ["a", "b"])
    h.pai.states["a"] = "WaitingForGPU"
    await h.advance_in_steps(120, 5)
    gets_after_change = len(h.pai.gets("a"))
    await h.advance_in_steps(600, 5)
    assert len(h.pai.gets("a")) == gets_after_change
    assert h.kube.status[keys[0]]["runStatus"] == "WaitingForGPU"
    assert h.pai.lists()


async def test_two_resources_following_one_run_ask_for_it_once_per_batch(harness: HarnessFactory) -> None:
    h = await harness(batch_size=10)
    h.pai.add("shared")
    h.create("one", "shared")
    h.create("two", "shared")
    h.pai.add("other")
    h.create("other")
    await h.advance_in_steps(120, 5)
    lists = h.pai.lists()
    assert lists
    assert all(len(c.run_ids) == len(set(c.run_ids)) for c in lists)


# ---- trusting a terminal status ------------------------------------------------------------------------------


async def test_a_forged_terminal_status_seen_at_startup_is_confirmed_once_and_corrected(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    h.pai.add("forged", "Running")
    forged = {"runStatus": "Succeeded", "observedGeneration": 1, "workspaceId": "ws-1"}
    key = h.create("forged", status=forged, status_by="kubectl-patch")
    await h.advance_in_steps(60, 5)
    assert h.pai.gets("forged"), "a status the operator did not write must be confirmed with PAI"
    assert h.kube.status[key]["runStatus"] == "Running"


async def test_a_true_terminal_status_written_by_someone_else_costs_one_call_then_none(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    h.pai.add("done", "Succeeded")
    status = {"runStatus": "Succeeded", "observedGeneration": 1, "workspaceId": "ws-1"}
    h.create("done", status=status, status_by="kubectl-patch")
    await h.advance_in_steps(3600, 60)
    assert len(h.pai.calls) == 1


async def test_a_status_edit_of_a_finished_run_is_corrected(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("done", "Failed")
    key = h.create("done")
    await h.advance_in_steps(60, 5)
    assert h.kube.status[key]["runStatus"] == "Failed"
    calls = len(h.pai.calls)
    await h.advance_in_steps(600, 60)
    assert len(h.pai.calls) == calls  # finished: no more calls
    # Someone rewrites the status; the watch brings the edit.
    h.kube.status[key] = {**h.kube.status[key], "runStatus": "Succeeded"}
    h.kube.runstatus_manager[key] = "kubectl-edit"
    h.kube.resource_version += 1
    h.sched.observe(h.body(key), "MODIFIED")
    await h.advance_in_steps(30, 5)
    assert len(h.pai.calls) == calls + 1
    assert h.kube.status[key]["runStatus"] == "Failed"


# ---- what the API server will not store, and Secrets whose bytes cannot be used -----------------------------


async def test_an_answer_the_api_server_refuses_to_store_shows_as_malformed(harness: HarnessFactory) -> None:
    h = await harness()
    h.pai.add("big")
    real_patch = h.kube.patch_status

    async def refuse_run_fields(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if "runStatus" in patch:
            raise KubeError(422, "Invalid", "status.name: Too long: may not be longer than 1048576")
        return await real_patch(namespace, name, patch)

    h.kube.patch_status = refuse_run_fields  # type: ignore[method-assign]
    key = h.create("big")
    await h.advance_in_steps(10, 5)
    assert _ready(h, key) == ("False", "MalformedResponse")
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    assert "could not be stored" in ready["message"] and "status.name" in ready["message"]


@pytest.mark.parametrize(
    "token", [b"CAIS-p1\nSEKRIT-p2", b"\xff\xfeSEKRIT", "SEKRIT-ü".encode(), b"-----BEGIN KEY-----\nSEKRIT\n"]
)
async def test_secret_values_that_cannot_be_used_become_a_condition_never_quoted(
    harness: HarnessFactory, token: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    h = await harness()
    h.kube.secrets[("team-a", "creds")] = {"accessKeyId": b"LTAIx", "accessKeySecret": b"s", "securityToken": token}
    h.pai.add("r")
    key = h.create("r", credentialsSecretRef={"name": "creds"})
    await h.advance_in_steps(30, 5)
    assert _ready(h, key) == ("False", "SecretValueInvalid")
    assert h.pai.calls == []
    everything = json.dumps(h.kube.status[key]) + repr(h.kube.events) + caplog.text
    assert "SEKRIT" not in everything and "Traceback" not in caplog.text


# ---- freshness as the metrics see it -------------------------------------------------------------------------


async def test_runs_waiting_for_a_call_count_as_active_for_the_oldest_status_age(harness: HarnessFactory) -> None:
    h = await harness(batch_status=False)
    for name in ("a", "b"):
        h.pai.add(name)
        h.create(name)
    await h.advance(0)
    h.pai.gate = asyncio.Event()  # the next calls stay in flight, as behind a rate limit or a slow PAI
    h.clock.t += 40
    h.sched.due.wake.set()
    for _ in range(50):
        await asyncio.sleep(0)
    snapshot = list(h.sched.snapshot())
    assert len(snapshot) == 2 and all(run.active for run in snapshot)
    assert all(h.tracked(k).busy for k in h.sched.runs)
    h.pai.gate.set()
    await h.settle()
    h.pai.gate = None
    h.pai.states["a"] = "Succeeded"
    await h.advance(40)
    by_status = {run.run_status: run.active for run in h.sched.snapshot()}
    assert by_status == {"Succeeded": False, "Running": True}


async def test_the_circuit_state_is_a_metric(harness: HarnessFactory) -> None:
    from prometheus_client import REGISTRY

    h = await harness(batch_status=False, error_grace="1h", circuit_failures=3)
    for name in ("a", "b", "c"):
        h.pai.add(name)
        h.create(name)
    await h.advance(0)
    h.pai.down = ServerError("boom", http_status=503)
    await h.advance_in_steps(90, 1)
    assert REGISTRY.get_sample_value("paiflow_pai_circuit_open", {"region": "cn-hangzhou"}) == 1
    h.pai.down = None
    await h.advance_in_steps(30, 1)
    assert REGISTRY.get_sample_value("paiflow_pai_circuit_open", {"region": "cn-hangzhou"}) == 0
