"""The launcher inside the real scheduler, against fakes of PAI and the API server on a fake clock: the order of
its writes and calls, and that no path creates a second run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.unit.test_scheduler import FakeKube, FakePai, Harness, Key

from paiflow_operator.api.runs import FINALIZER, PaiPipelineRunSpec, without_launch_payload
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.credentials import CredentialSource
from paiflow_operator.pai.errors import BadRequestError, PaiError, ThrottledError, TransportError
from paiflow_operator.pai.models import Acknowledged, CreatedRun, PipelineRun, RunList
from paiflow_operator.replicas.sharding import StaticShards
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.settings import Settings

WORKSPACE = "ws-1"


class LaunchPai(FakePai):
    """PAI for launches: runs made unstarted wait in Initialized for StartPipelineRun; ListPipelineRuns pages and
    shows a created run only ``lag`` seconds (fake clock) after its creation."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.names: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.created_at: dict[str, float] = {}
        self.deleted: set[str] = set()
        self.started: list[str] = []
        self.log: list[str] = []
        self.lag = 0.0
        self.create_errors: list[tuple[PaiError, bool]] = []  # (error, whether PAI made the run anyway)
        self.start_errors: list[tuple[PaiError, bool]] = []  # (error, whether PAI started the run anyway)
        self.no_confirm: list[bool] = []

    async def get_pipeline_run(self, run_id: str, **kwargs: Any) -> PipelineRun:
        self.log.append(f"get {run_id}")
        run = await super().get_pipeline_run(run_id, **kwargs)
        return run.model_copy(update={"name": self.names.get(run_id), "source_id": self.sources.get(run_id)})

    async def list_pipeline_runs(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str | None = None,
        page_number: int = 1,
        page_size: int = 50,
        name: str | None = None,
        source_id: str | None = None,
        **kwargs: Any,
    ) -> RunList:
        self.log.append("list")
        visible = [
            rid
            for rid in self.names
            if rid not in self.deleted
            and self.clock() >= self.created_at[rid] + self.lag
            and (not name or name in self.names[rid])
            and (not source_id or self.sources[rid] == source_id)
        ]
        page = visible[(page_number - 1) * page_size : page_number * page_size]
        rows = [
            {"PipelineRunId": rid, "Status": self.states[rid], "Name": self.names[rid], "SourceId": self.sources[rid]}
            for rid in page
        ]
        return RunList.model_validate({"RequestId": "r", "TotalCount": len(visible), "PipelineRuns": rows})

    def make(self, name: str, source: str, status: str = "Initialized") -> str:
        run_id = f"flow-{len(self.names) + 1}"
        self.names[run_id], self.sources[run_id], self.created_at[run_id] = name, source, self.clock()
        self.add(run_id, status, WORKSPACE)
        return run_id

    async def create_pipeline_run(
        self, *, name: str, workspace_id: str, source_id: str | None = None, no_confirm_required: bool = True, **_: Any
    ) -> CreatedRun:
        self.log.append("create")
        self.no_confirm.append(no_confirm_required)
        error, made = self.create_errors.pop(0) if self.create_errors else (None, True)
        run_id = f"flow-{len(self.names) + 1}"
        if made:
            run_id = self.make(name, source_id or "", "Running" if no_confirm_required else "Initialized")
        if error is not None:
            raise error
        return CreatedRun.model_validate({"RequestId": "r", "PipelineRunId": run_id})

    async def start_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        self.log.append(f"start {run_id}")
        error, done = self.start_errors.pop(0) if self.start_errors else (None, True)
        if done:
            if self.states.get(run_id) != "Initialized" or run_id in self.deleted:
                raise BadRequestError("not startable", code="PipelineRunStatusInvalid")
            self.states[run_id] = "Running"
            self.started.append(run_id)
        if error is not None:
            raise error
        return Acknowledged.model_validate({"RequestId": "r"})

    async def delete_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        self.log.append(f"delete {run_id}")
        if self.states.get(run_id) not in ("Initialized", "Terminated", "Succeeded", "Failed"):
            raise BadRequestError("not deletable", code="PipelineRunStatusInvalid")
        self.deleted.add(run_id)
        return Acknowledged.model_validate({"RequestId": "r"})

    async def terminate_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        self.log.append(f"terminate {run_id}")
        self.states[run_id] = "Terminating"
        return Acknowledged.model_validate({"RequestId": "r"})

    def calls_but_polls(self) -> list[str]:
        """The log without GetPipelineRun (the scheduler polls with it; the launcher's own reads are asserted apart)."""
        return [c for c in self.log if not c.startswith("get ")]

    def started_runs(self) -> list[str]:
        return [rid for rid in self.names if rid not in self.deleted and self.states[rid] != "Initialized"]


class LaunchKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.finalizers: dict[Key, list[str]] = {}
        self.log: list[str] = []

    async def patch_status(  # type: ignore[override]
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if resource_version is not None and resource_version != str(self.resource_version):
            raise KubeError(409, "Conflict", "the object has been modified")
        if "launch" in patch:
            self.log.append(f"status {patch['launch'].get('phase')}")
        return await super().patch_status(namespace, name, patch)

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        self.log.append(f"finalizers {finalizers}")
        self.finalizers[(namespace, name)] = finalizers
        self.resource_version += 1
        return {"metadata": {"finalizers": finalizers, "resourceVersion": str(self.resource_version)}}

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        raise KubeError(404, "NotFound", "no")


class LaunchHarness(Harness):
    pai: LaunchPai
    kube: LaunchKube

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        super().__init__(settings, rng)
        self.deleting: set[Key] = set()

    def make_pai(self) -> LaunchPai:
        return LaunchPai(self.clock)

    def make_kube(self) -> LaunchKube:
        return LaunchKube()

    def make_launcher(self) -> Launcher:
        ownership = StaticShards(self.settings.shard_count, self.settings.shard_index)
        return Launcher(self.settings, self.access, self.writer, self.kube, ownership, wallclock=self.clock.wall)

    def body(self, key: Key, *, uid: str | None = None) -> dict[str, Any]:
        body = super().body(key, uid=uid)
        body["metadata"]["finalizers"] = self.kube.finalizers.get(key, [])
        if key in self.deleting:
            body["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
        return body

    def launch(self, name: str, **spec: Any) -> Key:
        key = ("team-a", name)
        self.specs[key] = {"launch": {"workspaceId": WORKSPACE, "pipelineId": "pipeline-1"}, **spec}
        self.generations[key] = 1
        self.sched.observe(self.body(key), "ADDED")
        return key

    def echo(self, key: Key) -> None:
        """The watch event of the last write."""
        self.sched.observe(self.body(key), "MODIFIED")

    def status(self, key: Key) -> dict[str, Any]:
        return self.kube.status.get(key, {})


Factory = Callable[..., Awaitable[LaunchHarness]]


@pytest.fixture
async def harness() -> AsyncIterator[Factory]:
    made: list[LaunchHarness] = []

    async def make(**settings: Any) -> LaunchHarness:
        defaults: dict[str, Any] = {
            "qps": 1000,
            "burst": 1000,
            "initial_jitter": "0s",
            "error_grace": "0s",
            "circuit_failures": 1_000_000,
            "backoff_base": "1s",
            "backoff_max": "2s",
            # No node, log or output reads (issue 19): these tests count the launch's PAI calls.
            "inside": False,
        }
        h = LaunchHarness(Settings(**{**defaults, **settings}), random.Random(7))
        await h.start()
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()


async def test_launch_claims_creates_unstarted_records_then_starts_in_two_calls(harness: Factory) -> None:
    h = await harness()
    key = h.launch("train")
    await h.advance(0.1)
    assert h.kube.log[:3] == ["status Creating", "status Recorded", "status Started"]
    # No lookup (no create of unknown outcome exists); then the first poll, as for any followed run.
    assert h.pai.log == ["create", "start flow-1", "get flow-1"]
    assert h.pai.no_confirm == [False]
    status = h.status(key)
    assert status["pipelineRunId"] == "flow-1" and status["launch"]["phase"] == "Started"
    assert h.pai.names["flow-1"].endswith("uid-team-a-train") and h.pai.sources["flow-1"] == "uid-team-a-train"
    for _ in range(5):
        h.echo(key)
        await h.advance(30)
    assert h.pai.log.count("create") == 1 and h.pai.started == ["flow-1"]
    assert [e.reason for _, e in h.kube.events if e.reason in ("Creating", "Created", "Started")] == [
        "Creating",
        "Created",
        "Started",
    ]


async def test_a_launched_manifest_and_arguments_are_not_kept_in_memory_after_the_create(harness: Factory) -> None:
    h = await harness()
    manifest = "apiVersion: core/v1\nkind: Pipeline\n" + "# padding\n" * 10_000
    arguments = {"arguments": {"parameters": [{"name": "blob", "value": "x" * 50_000}]}}
    key = ("team-a", "inline")
    h.specs[key] = {"launch": {"workspaceId": WORKSPACE, "manifest": manifest, "arguments": arguments}}
    h.generations[key] = 1
    h.sched.observe(h.body(key), "ADDED")
    assert h.tracked(key).spec.launch is not None and h.tracked(key).spec.launch.manifest == manifest
    await h.advance(0.1)
    assert h.pai.calls_but_polls() == ["create", "start flow-1"] and h.status(key)["pipelineRunId"] == "flow-1"
    h.echo(key)  # the watch brings the object with its run id in status
    launch = h.tracked(key).spec.launch
    assert launch is not None and launch.manifest == "" and launch.arguments is None
    # Polls and a restart's first look go on without it, and nothing is created again.
    await h.advance(30)
    h.sched.forget(key)
    h.sched.observe(h.body(key), "ADDED")
    await h.advance(30)
    assert h.pai.log.count("create") == 1 and len(h.pai.gets("flow-1")) >= 2
    assert h.tracked(key).spec.launch is not None and h.tracked(key).spec.launch.manifest == ""


def test_the_launch_payload_is_kept_until_the_run_exists_and_the_spec_stays_valid() -> None:
    spec = {"launch": {"workspaceId": WORKSPACE, "manifest": "m" * 1000, "arguments": {"a": 1}}}
    assert without_launch_payload(spec, {}) is spec, "needed for the create (and a create whose outcome is unknown)"
    slim = without_launch_payload(spec, {"pipelineRunId": "flow-1"})
    assert slim["launch"] == {"workspaceId": WORKSPACE, "manifest": ""}
    assert PaiPipelineRunSpec.model_validate(slim).launch is not None  # a hand-over re-reads it
    by_id = {"launch": {"workspaceId": WORKSPACE, "pipelineId": "p-1"}}
    assert without_launch_payload(by_id, {"pipelineRunId": "flow-1"}) is by_id


async def test_a_lost_create_answer_is_adopted_once_listed_never_created_again(harness: Factory) -> None:
    h = await harness(launch_settle_time="60s")
    h.pai.create_errors.append((TransportError("CreatePipelineRun: timed out"), True))
    key = h.launch("lost")
    await h.advance(0.1)
    assert h.pai.log == ["create"] and "pipelineRunId" not in h.status(key)
    ready = next(c for c in h.status(key)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "CreateUnconfirmed"
    await h.advance_in_steps(50, 5)  # backoff retries come and go, but the create may still be in flight
    assert h.pai.log == ["create"]
    await h.advance_in_steps(15, 5)
    assert h.pai.log[:4] == ["create", "list", "get flow-1", "start flow-1"]  # the adopted run is read back first
    status = h.status(key)
    assert status["pipelineRunId"] == "flow-1" and status["launch"]["phase"] == "Started"
    assert status["launch"]["unconfirmed"] == 0
    assert [e.reason for _, e in h.kube.events if e.reason == "Adopted"] == ["Adopted"]


async def test_a_run_listed_later_than_the_settle_time_is_a_second_run_never_started_and_deleted(
    harness: Factory,
) -> None:
    """PAI lists a new run only 3x the settle time after creating it: the lookup misses the first run, a second one
    is created and started, and the first (never started) is deleted by a sweep once PAI lists it."""
    h = await harness(launch_settle_time="10s", launch_orphan_window="10m")
    h.pai.lag = 30
    h.pai.create_errors.append((TransportError("CreatePipelineRun: timed out"), True))
    key = h.launch("slow-list")
    await h.advance_in_steps(12, 1)
    assert h.pai.calls_but_polls() == ["create", "list", "create", "start flow-2"]
    status = h.status(key)
    assert status["pipelineRunId"] == "flow-2" and status["launch"]["unconfirmed"] == 1
    assert h.pai.started_runs() == ["flow-2"]
    h.echo(key)
    await h.advance_in_steps(60, 1)
    assert "delete flow-1" in h.pai.log and h.pai.deleted == {"flow-1"}
    assert h.pai.started == ["flow-2"]
    assert h.status(key)["launch"]["unconfirmed"] == 0
    assert [e.reason for _, e in h.kube.events if e.reason == "DuplicateDeleted"] == ["DuplicateDeleted"]
    lists = h.pai.log.count("list")
    await h.advance_in_steps(600, 10)
    assert h.pai.log.count("list") == lists  # all accounted for: no more sweeps


async def test_a_start_whose_answer_was_lost_is_checked_not_repeated(harness: Factory) -> None:
    h = await harness()
    h.pai.start_errors.append((TransportError("StartPipelineRun: timed out"), True))
    key = h.launch("start-lost")
    await h.advance(0.1)
    assert h.status(key)["launch"]["phase"] == "Recorded"
    await h.advance_in_steps(5, 1)
    # After the lost answer the launcher reads the run back: PAI shows it running, so it is not started again.
    assert h.pai.log[:3] == ["create", "start flow-1", "get flow-1"] and h.pai.log.count("start flow-1") == 1
    assert h.status(key)["launch"]["phase"] == "Started" and h.pai.started == ["flow-1"]


async def test_a_recorded_run_that_is_not_this_resources_is_never_started(harness: Factory) -> None:
    h = await harness()
    foreign = h.pai.make("someone-else", "another-uid")
    key = h.launch("forged")
    h.kube.status[key] = {"pipelineRunId": foreign, "launch": {"phase": "Recorded", "runName": "x"}}
    h.echo(key)
    await h.advance(0.1)
    assert h.pai.log == [f"get {foreign}"] and h.pai.started == []
    ready = next(c for c in h.status(key)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "StartRefused" and "ForeignRun" in ready["message"]


async def test_a_throttled_create_made_nothing_and_is_retried_at_once(harness: Factory) -> None:
    h = await harness(launch_settle_time="60s")
    h.pai.create_errors.append((ThrottledError("slow down", code="Throttling.User"), False))
    key = h.launch("busy")
    await h.advance(0.1)
    assert h.status(key)["launch"]["phase"] == "Refused"
    await h.advance_in_steps(4, 1)  # backoff (1-2s), no settle wait and no lookup: PAI said no
    assert h.pai.calls_but_polls() == ["create", "create", "start flow-1"]
    assert h.status(key)["pipelineRunId"] == "flow-1" and len(h.pai.names) == 1


async def test_a_suspended_launch_makes_no_call_and_does_not_spin(harness: Factory) -> None:
    h = await harness()
    key = h.launch("held", suspend=True)
    await h.advance_in_steps(60, 5)  # settle() would fail if the scheduler kept rescheduling it
    assert h.pai.log == [] and "launch" not in h.status(key)
    assert h.tracked(key).due is None
    h.update_spec(key, suspend=False)
    await h.advance(0.1)
    assert h.pai.calls_but_polls() == ["create", "start flow-1"]


async def test_terminate_policy_finalizes_first_and_a_delete_terminates_then_lets_go(harness: Factory) -> None:
    h = await harness()
    key = h.launch("stop", deletionPolicy="Terminate")
    await h.advance(0.1)
    assert h.kube.log[0] == f"finalizers {[FINALIZER]}", h.kube.log  # before anything is created
    assert h.kube.log[1:4] == ["status Creating", "status Recorded", "status Started"]
    h.echo(key)
    h.deleting.add(key)
    h.echo(key)
    await h.advance(0.1)
    assert h.pai.log[-1] == "terminate flow-1"
    assert h.kube.finalizers[key] == []
    assert h.pai.log.count("create") == 1


async def test_retain_policy_never_finalizes(harness: Factory) -> None:
    h = await harness()
    key = h.launch("keep")
    await h.advance(0.1)
    h.deleting.add(key)
    h.echo(key)
    await h.advance(1)
    assert key not in h.kube.finalizers and not any(e.startswith("terminate") for e in h.pai.log)


async def test_terminate_set_before_the_run_was_created_creates_nothing(harness: Factory) -> None:
    h = await harness()
    key = h.launch("never", terminate=True, deletionPolicy="Terminate")
    await h.advance(0.1)
    await h.advance_in_steps(30, 5)
    assert h.pai.log == [] and h.status(key)["launch"]["phase"] == "Cancelled"
    assert key not in h.kube.finalizers or h.kube.finalizers[key] == []


async def test_terminate_while_a_create_is_unconfirmed_finds_and_terminates_that_run(harness: Factory) -> None:
    h = await harness(launch_settle_time="10s")
    h.pai.create_errors.append((TransportError("CreatePipelineRun: timed out"), True))
    key = h.launch("late")
    await h.advance(0.1)
    h.update_spec(key, terminate=True)
    await h.advance_in_steps(12, 1)
    # What the lost create made was never started: it is deleted, and nothing is started.
    assert h.pai.log == ["create", "list", "delete flow-1"]
    assert h.status(key)["launch"]["phase"] == "Cancelled" and h.pai.started == []


async def test_a_claim_is_conditional_on_the_object_decided_on_not_on_what_the_watch_brought_meanwhile(
    harness: Factory,
) -> None:
    """Two replicas in a rolling update: while this one waits for the door's slot and token, the other claims and
    the watch brings that claim. This one's claim must fail (409), not succeed on top of the newer object: else
    both create, and the other's record fails, leaving its run unrecorded and unaccounted for."""
    h = await harness()
    key = h.launch("raced")
    tokens = 0
    real_acquire = h.access.limiter.acquire

    async def other_replica_claims_first(tenant: str = "", weight: float = 1.0) -> None:
        nonlocal tokens
        tokens += 1
        if tokens == 1:
            claimed = {"phase": "Creating", "runName": "x", "claimedAt": "2024-05-01T12:00:00Z", "attempts": 1}
            await h.kube.patch_status(*key, {"launch": claimed})
            h.echo(key)  # the watch delivers it before our claim is written
        await real_acquire(tenant, weight)

    h.access.limiter.acquire = other_replica_claims_first  # type: ignore[method-assign]
    await h.advance(0.1)
    assert "create" not in h.pai.log, h.pai.log
    assert h.status(key)["launch"]["runName"] == "x"  # the other replica's claim stands
