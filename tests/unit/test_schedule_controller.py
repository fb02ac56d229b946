"""The schedule controller's I/O around the plan: one create per slot (409 = already made), Replace, history,
status written only when it changed, the test clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paiflow_operator.conditions import Event
from paiflow_operator.kube import KubeError, ObjectRef
from paiflow_operator.schedules.controller import ScheduleController, run_body, schedule_time
from paiflow_operator.settings import Settings

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[Event] = []

    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.objects:
            raise KubeError(409, "AlreadyExists", f"{name} already exists")
        made = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
        self.objects[name] = made
        return made

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", name))
        self.objects.pop(name, None)

    async def patch_run_spec(self, namespace: str, name: str, patch: dict[str, Any], uid: str) -> dict[str, Any]:
        self.calls.append(("terminate", name))
        return {}

    async def patch_schedule_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.status_patches.append(patch)
        return {}

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None:
        self.events.append(event)


def schedule_body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ml",
            "name": "s",
            "uid": "sched-uid",
            "generation": 1,
            "creationTimestamp": "2026-03-01T10:00:00Z",
        },
        "spec": {
            "schedule": "* * * * *",
            "runTemplate": {
                "metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
                "spec": {"launch": {"workspaceId": "1", "pipelineId": "p"}},
            },
            **spec,
        },
    }


async def controller(kube: FakeKube, now: list[datetime], **spec: Any) -> tuple[ScheduleController, Any]:
    c = ScheduleController(Settings(), kube, lambda uid: True, wallclock=lambda: now[0])
    c.observe_schedule(schedule_body(**spec), "ADDED")
    watched = c.schedules[("ml", "s")]
    assert watched.task is not None
    watched.task.cancel()  # driven by hand here
    await asyncio.gather(watched.task, return_exceptions=True)
    return c, watched


async def test_one_create_per_slot_and_a_409_is_already_made() -> None:
    kube, now = FakeKube(), [T0 + timedelta(minutes=1, seconds=5)]
    c, w = await controller(kube, now)
    wait = await c.reconcile(w)
    assert kube.calls == [("create", f"s-{int((T0 + timedelta(minutes=1)).timestamp()) // 60}")]
    assert 0 < wait <= 55
    made = next(iter(kube.objects.values()))
    assert made["metadata"]["labels"] == {"team": "ml", "paiflow-operator.dev/schedule": "s"}
    assert made["metadata"]["annotations"]["paiflow-operator.dev/scheduled-at"] == "2026-03-01T10:01:00Z"
    assert made["metadata"]["ownerReferences"][0]["uid"] == "sched-uid"
    assert kube.status_patches[-1]["lastScheduleTime"] == "2026-03-01T10:01:00Z"
    # A restarted replica with no status and no run in its index: the create answers 409, and that is fine.
    kube2 = FakeKube()
    kube2.objects = dict(kube.objects)
    c2, w2 = await controller(kube2, now)
    await c2.reconcile(w2)
    assert [call[0] for call in kube2.calls] == ["create"] and len(kube2.objects) == 1
    assert kube2.status_patches[-1]["lastScheduleTime"] == "2026-03-01T10:01:00Z"
    assert "SuccessfulCreate" not in [e.reason for e in kube2.events]


async def test_status_is_written_only_when_it_changed() -> None:
    kube, now = FakeKube(), [T0 + timedelta(seconds=30)]
    c, w = await controller(kube, now)
    await c.reconcile(w)
    w.status = {**w.status, **kube.status_patches[-1]}
    await c.reconcile(w)
    assert len(kube.status_patches) == 1 and not kube.calls


async def test_a_refused_create_is_not_recorded() -> None:
    kube, now = FakeKube(), [T0 + timedelta(minutes=1)]

    async def refuse(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise KubeError(403, "Forbidden", "no")

    kube.create_run = refuse  # type: ignore[method-assign]
    c, w = await controller(kube, now)
    with pytest.raises(KubeError):
        await c.reconcile(w)
    assert not kube.status_patches  # the slot stays owed; the loop retries with backoff


def test_the_test_clock_maps_every_time_alike() -> None:
    settings = Settings(schedule_clock_rate=60, schedule_clock_anchor=T0)
    at = schedule_time(settings)
    assert at(T0) == T0 and at(T0 + timedelta(seconds=1)) == T0 + timedelta(minutes=1)
    assert schedule_time(Settings())(T0) == T0


def test_run_body_keeps_the_template_spec_as_written() -> None:
    body = schedule_body()
    made = run_body("ml", body["metadata"], body["spec"]["runTemplate"], T0)
    assert made["spec"] == {"launch": {"workspaceId": "1", "pipelineId": "p"}}
    assert made["metadata"]["ownerReferences"][0]["controller"] is True
