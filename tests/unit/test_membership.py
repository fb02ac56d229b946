"""Lease membership, rendezvous hashing and hand-over, against an in-memory Lease API and fake clocks.

Every replica has its own monotonic clock and its own wall clock (skewed on purpose): liveness must follow
only from Leases changing, timed on the observer's own clock, as in client-go's leader election.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.test_scheduler import DEFAULT_KEYS, FakeClock, FakeKube, FakePai

from paiflow_operator.access.view import AccessView
from paiflow_operator.kube import KubeError
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.replicas.handover import Handover
from paiflow_operator.replicas.membership import (
    LEAVING_ANNOTATION,
    LeaseMembership,
    Member,
    Observer,
    group_for,
    lease_name,
)
from paiflow_operator.replicas.sharding import StaticShards, rendezvous_owner
from paiflow_operator.runs.scheduler import Scheduler
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings

# Unit tests of the door and what uses it: every namespace allowed (policies: tests/unit/test_access_*.py).
ALLOW_ALL = AccessView(allow_all=True)

NAMESPACE = "paiflow-system"
UIDS = [f"{i:08x}-5f1c-4c1e-9d7a-{i * 7919:012x}" for i in range(10_000)]


@pytest.fixture(autouse=True)
def _no_paiflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PAIFLOW_", "POD_")):
            monkeypatch.delenv(name)


# ---- rendezvous hashing ----------------------------------------------------------------------------------


def owners(members: list[str]) -> dict[str, str | None]:
    return {uid: rendezvous_owner(uid, members) for uid in UIDS}


def test_rendezvous_is_balanced_and_the_same_whatever_the_order_of_members() -> None:
    members = [f"replica-{i}" for i in range(4)]
    before = owners(members)
    assert before == owners(list(reversed(members)))
    counts = [sum(1 for o in before.values() if o == m) for m in members]
    assert min(counts) > len(UIDS) / 4 * 0.9, counts
    assert rendezvous_owner("any", []) is None


@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_member_joining_takes_its_share_from_the_others_and_nothing_else_moves(count: int) -> None:
    members = [f"replica-{i}" for i in range(count)]
    before, after = owners(members), owners([*members, "newcomer"])
    moved = [uid for uid in UIDS if before[uid] != after[uid]]
    assert all(after[uid] == "newcomer" for uid in moved), "a run moved between two old members"
    fraction = len(moved) / len(UIDS)
    ideal = 1 / (count + 1)
    # Static modulo sharding (crc32 % n) would move about n/(n+1) of all runs instead.
    modulo = sum(1 for uid in UIDS if zlib.crc32(uid.encode()) % count != zlib.crc32(uid.encode()) % (count + 1))
    print(f"{count}->{count + 1}: rendezvous moved {fraction:.3f} (ideal {ideal:.3f}), modulo {modulo / len(UIDS):.3f}")
    assert abs(fraction - ideal) < 0.03
    assert modulo / len(UIDS) > 1.5 * fraction


def test_a_member_leaving_moves_only_its_own_runs() -> None:
    members = [f"replica-{i}" for i in range(4)]
    before, after = owners(members), owners([m for m in members if m != "replica-2"])
    moved = {uid for uid in UIDS if before[uid] != after[uid]}
    assert moved == {uid for uid in UIDS if before[uid] == "replica-2"}
    # Its runs spread over all survivors, not onto one.
    spread = [sum(1 for uid in moved if after[uid] == m) for m in members if m != "replica-2"]
    assert min(spread) > len(moved) / 3 * 0.8, spread


# ---- Lease liveness on the observer's clock ------------------------------------------------------------


def member(name: str, renew: str, duration: int = 10, leaving: bool = False) -> Member:
    return Member(name, name, float(duration), "1", leaving, False, (name, renew, duration, leaving))


def test_a_lease_lives_while_it_changes_whatever_its_renew_time_says() -> None:
    observer = Observer()
    # One replica's clock runs an hour behind, another's a day ahead: the values themselves never count.
    behind = "2020-01-01T00:00:00.000000Z"
    ahead = "2031-06-01T00:00:00.000000Z"
    live, expired = observer.update([member("a", behind), member("b", ahead)], now=100.0)
    assert [m.name for m in live] == ["a", "b"] and not expired
    # 9.9 s later on our clock, "a" renewed (its renewTime changed, still in the past), "b" did not.
    live, expired = observer.update([member("a", behind + "1"), member("b", ahead)], now=109.9)
    assert [m.name for m in live] == ["a", "b"]
    live, expired = observer.update([member("a", behind + "1"), member("b", ahead)], now=110.0)
    assert [m.name for m in live] == ["a"] and [m.name for m in expired] == ["b"]
    # "a" then stops: it expires its own duration after we last saw it change (109.9), not after 100.
    live, expired = observer.update([member("a", behind + "1")], now=119.8)
    assert [m.name for m in live] == ["a"]
    live, expired = observer.update([member("a", behind + "1")], now=119.9)
    assert not live and [m.name for m in expired] == ["a"]


def test_each_lease_is_judged_by_its_own_duration_and_a_deleted_one_is_forgotten() -> None:
    observer = Observer()
    observer.update([member("short", "t", duration=2), member("long", "t", duration=30)], now=0.0)
    live, _ = observer.update([member("short", "t", duration=2), member("long", "t", duration=30)], now=5.0)
    assert [m.name for m in live] == ["long"]
    observer.update([], now=6.0)
    # Seen again after it was gone: a new Lease, counted as just renewed.
    live, _ = observer.update([member("short", "t", duration=2)], now=7.0)
    assert [m.name for m in live] == ["short"]


# ---- replicas sharing an in-memory Lease API ------------------------------------------------------------


class FakeLeases:
    """The Lease API as the API server answers it: resourceVersions, 404/409, merge patches, preconditions."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.calls: list[tuple[str, str]] = []

    def _bump(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(lease)

    async def list_leases(
        self, namespace: str, label_selector: str, request_timeout: float = 0
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", namespace))
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(v) for v in self.items.values() if v["metadata"].get("labels", {}).get(key) == value]

    async def create_lease(self, namespace: str, body: dict[str, Any], request_timeout: float = 0) -> dict[str, Any]:
        self.calls.append(("create", namespace))
        name = body["metadata"]["name"]
        if name in self.items:
            raise KubeError(409, "AlreadyExists", name)
        self.items[name] = copy.deepcopy(body)
        return self._bump(self.items[name])

    async def patch_lease(
        self, namespace: str, name: str, patch: dict[str, Any], request_timeout: float = 0
    ) -> dict[str, Any]:
        self.calls.append(("patch", namespace))
        if name not in self.items:
            raise KubeError(404, "NotFound", name)
        lease = self.items[name]
        for field in ("labels", "annotations"):
            target = lease["metadata"].setdefault(field, {})
            for k, v in (patch.get("metadata", {}).get(field) or {}).items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        lease["spec"].update(patch.get("spec", {}))
        return self._bump(lease)

    async def delete_lease(
        self, namespace: str, name: str, resource_version: str | None = None, request_timeout: float = 0
    ) -> None:
        self.calls.append(("delete", namespace))
        if name not in self.items:
            raise KubeError(404, "NotFound", name)
        if resource_version and self.items[name]["metadata"]["resourceVersion"] != resource_version:
            raise KubeError(409, "Conflict", name)
        del self.items[name]


class Down:
    """The same API, unreachable from one replica (a network partition)."""

    def __init__(self, api: FakeLeases) -> None:
        self.api = api
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if self.down:

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise KubeError(0, "", "connection refused")

            return fail
        return getattr(self.api, name)


class Replica:
    def __init__(self, api: FakeLeases, identity: str, skew: timedelta, duration: float = 15, renew: float = 3) -> None:
        self.clock = FakeClock()
        self.link = Down(api)
        self.changes = 0
        self.membership = LeaseMembership(
            self.link,
            namespace=NAMESPACE,
            identity=identity,
            duration=duration,
            renew_interval=renew,
            clock=self.clock,
            wallclock=lambda: datetime(2026, 1, 1, tzinfo=UTC) + skew + timedelta(seconds=self.clock.t),
            on_change=self.changed,
        )

        self.listed = True  # kopf's initial list is over (handlers call ready() then)

    def changed(self) -> None:
        self.changes += 1

    async def tick(self, seconds: float) -> None:
        """One loop turn of the real membership (round + refresh) after `seconds` on this replica's clock."""
        self.clock.t += seconds
        with contextlib.suppress(KubeError):
            await self.membership.round()
        self.membership.refresh()
        if self.listed:
            self.membership.ready()
        await asyncio.sleep(0)  # lets the tidy-up task of an expired Lease run


async def advance(replicas: list[Replica], seconds: float, step: float = 3.0) -> None:
    t = 0.0
    while t < seconds:
        for r in replicas:
            await r.tick(step)
        t += step


async def test_replicas_agree_on_members_and_split_the_runs_exactly() -> None:
    api = FakeLeases()
    skews = [timedelta(hours=-1), timedelta(0), timedelta(days=1)]  # wall clocks far apart
    replicas = [Replica(api, f"replica-{i}", skews[i]) for i in range(3)]
    # Round 1: each announces itself (the later ones as joining, then ready); round 2: the marks go; round 3: seen.
    await advance(replicas, 9)
    for r in replicas:
        assert r.membership.members == ("replica-0", "replica-1", "replica-2")
    owned = [[uid for uid in UIDS[:3000] if r.membership.owns(uid)] for r in replicas]
    assert sum(len(o) for o in owned) == 3000 and len(set().union(*map(set, owned))) == 3000
    # Work that must happen once (a workspace scan) is owned by one replica too.
    assert sum(r.membership.owns_key("workspace/2001") for r in replicas) == 1
    assert {lease["spec"]["holderIdentity"] for lease in api.items.values()} == {f"replica-{i}" for i in range(3)}
    assert lease_name("paiflow-operator", "Host_1.local-42") == "paiflow-operator-host-1.local-42"


async def test_a_dead_replica_is_dropped_after_its_lease_duration_and_its_lease_removed() -> None:
    api = FakeLeases()
    replicas = [Replica(api, f"replica-{i}", timedelta(minutes=7 * i)) for i in range(3)]
    await advance(replicas, 6)
    survivors = replicas[:2]
    # replica-2 dies: it renews no more. The others hold on for the lease duration (15 s) on their own clocks.
    await advance(survivors, 12)
    assert all(len(r.membership.members) == 3 for r in survivors)
    await advance(survivors, 6)
    for r in survivors:
        assert r.membership.members == ("replica-0", "replica-1")
        assert all(
            r.membership.owns(uid) == (rendezvous_owner(uid, ["replica-0", "replica-1"]) == r.membership.identity)
            for uid in UIDS[:500]
        )
    await advance(survivors, 3)  # the tidy-up delete ran as a task; let it finish
    assert lease_name("paiflow-operator", "replica-2") not in api.items


async def test_a_cut_off_replica_stops_owning_before_the_others_take_over() -> None:
    api = FakeLeases()
    a, b = Replica(api, "replica-a", timedelta(0)), Replica(api, "replica-b", timedelta(seconds=-30))
    await advance([a, b], 6)
    b.link.down = True  # b still runs but reaches the API server no more
    t = 0.0
    b_stopped = a_took_over = None
    while a_took_over is None:
        await advance([a, b], 1, step=1)
        t += 1
        if b_stopped is None and b.membership.members == ():
            b_stopped = t
            assert b.changes >= 2  # its scheduler was told: it forgets every run at once
        if a.membership.members == ("replica-a",):
            a_took_over = t
    assert b_stopped is not None and b_stopped < a_took_over, (b_stopped, a_took_over)
    assert not any(b.membership.owns(uid) for uid in UIDS[:200])
    # Back online: b announces itself again and the runs are shared again.
    b.link.down = False
    await advance([a, b], 6)
    assert a.membership.members == b.membership.members == ("replica-a", "replica-b")


async def test_a_leaving_replica_keeps_its_runs_while_the_others_take_them_then_deletes_its_lease() -> None:
    api = FakeLeases()
    a, b = Replica(api, "replica-a", timedelta(0)), Replica(api, "replica-b", timedelta(0))
    await advance([a, b], 6)
    mine = {uid for uid in UIDS[:1000] if b.membership.owns(uid)}
    await b.membership.leave(drain=0)
    assert api.items[b.membership.lease_name]["metadata"]["annotations"][LEAVING_ANNOTATION] == "true"
    await advance([a, b], 3)
    # a took b's runs at its next round; b still owns them until it stops (no gap, overlap of a drain).
    assert a.membership.members == ("replica-a",)
    assert all(b.membership.owns(uid) for uid in mine) and all(a.membership.owns(uid) for uid in mine)
    await b.membership.stop()
    assert b.membership.lease_name not in api.items and not b.membership.owns(next(iter(mine)))


async def test_a_newcomer_takes_its_share_only_once_it_has_listed_every_run() -> None:
    api = FakeLeases()
    a, b = Replica(api, "replica-a", timedelta(0)), Replica(api, "replica-b", timedelta(0))
    await advance([a, b], 6)
    c = Replica(api, "replica-c", timedelta(0))
    c.listed = False  # its watch is still listing
    await advance([a, b, c], 9)
    assert a.membership.members == b.membership.members == ("replica-a", "replica-b")
    assert c.membership.members == () and c.membership.joining
    assert api.items[c.membership.lease_name]["metadata"]["annotations"]["paiflow-operator.dev/joining"] == "true"
    c.membership.ready()  # the first watch event after kopf's initial list
    assert c.membership.members == ("replica-a", "replica-b", "replica-c")
    await advance([c, a, b], 3)  # c renews without the mark, then the others see it
    assert a.membership.members == b.membership.members == c.membership.members
    assert "paiflow-operator.dev/joining" not in api.items[c.membership.lease_name]["metadata"]["annotations"]


async def test_the_first_replica_does_not_wait_for_its_list() -> None:
    api = FakeLeases()
    a = Replica(api, "replica-a", timedelta(0))
    a.listed = False
    await advance([a], 3)
    # Nobody else polls anything: waiting for the list would only delay the first polls.
    assert a.membership.members == ("replica-a",) and not a.membership.joining


def test_lease_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="lease_renew_interval"):
        Settings(lease_duration="6s", lease_renew_interval="3s")
    with pytest.raises(ValueError, match="whole number of seconds"):
        Settings(lease_duration="1500ms")
    s = Settings()
    assert (s.leases, s.lease_duration, s.operator_namespace) == (True, timedelta(seconds=15), "paiflow-system")


def test_operator_namespace_and_identity_come_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.setenv("POD_NAME", "paiflow-operator-7d9f-abcde")
    s = Settings()
    assert (s.operator_namespace, s.pod_name) == ("ops", "paiflow-operator-7d9f-abcde")


# ---- hand-over between the watch and the scheduler -----------------------------------------------------------


class Switch:
    def __init__(self, members: list[str], me: str) -> None:
        self.members, self.me = members, me

    def owns(self, uid: str) -> bool:
        return rendezvous_owner(uid, self.members) == self.me


def body(i: int) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": f"r{i}", "uid": UIDS[i], "generation": 1, "resourceVersion": "7"},
        "spec": {"pipelineRunId": f"flow-{i:020d}", "workspaceId": "2001", "pollInterval": "10s"},
        "status": {"runStatus": "Running", "observedGeneration": 1},
    }


def test_handover_moves_runs_between_the_scheduler_and_the_others_store_as_members_change() -> None:
    clock = FakeClock()
    switch = Switch(["a", "b", "c"], "a")
    kube = FakeKube()
    access = PaiAccess(Settings(), FakePai(clock), kube, DEFAULT_KEYS, clock=clock, policies=ALLOW_ALL)
    scheduler = Scheduler(Settings(), access, RunWriter(kube), rng=random.Random(1), clock=clock, ownership=switch)
    handover = Handover(scheduler, switch)
    for i in range(900):
        handover.observe(body(i), None)
    mine = {f"r{i}" for i in range(900) if switch.owns(UIDS[i])}
    assert {k[1] for k in scheduler.runs} == mine
    assert len(handover.others) == 900 - len(mine)
    # c dies: a takes c's runs (from the store, as the watch last showed them) and keeps its own.
    switch.members = ["a", "b"]
    taken, released = handover.rebalance()
    now_mine = {f"r{i}" for i in range(900) if switch.owns(UIDS[i])}
    assert (taken, released) == (len(now_mine - mine), 0)
    assert {k[1] for k in scheduler.runs} == now_mine
    run = scheduler.runs[("ns", sorted(now_mine - mine)[0])]
    assert (run.spec.pollInterval, run.status["runStatus"], run.due is not None) == ("10s", "Running", True)
    # d joins: a releases what d now owns at once, and stores it for later.
    switch.members = ["a", "b", "d"]
    taken, released = handover.rebalance()
    final = {f"r{i}" for i in range(900) if switch.owns(UIDS[i])}
    assert (taken, released) == (0, len(now_mine - final))
    assert {k[1] for k in scheduler.runs} == final
    assert len(scheduler.runs) + len(handover.others) == 900
    # A deleted run leaves both.
    gone = body(0)
    handover.observe(gone, "DELETED")
    assert ("ns", "r0") not in scheduler.runs and ("ns", "r0") not in handover.others


def test_replicas_watching_other_namespaces_are_another_group() -> None:
    assert group_for("paiflow-operator", []) == "paiflow-operator"
    ml = group_for("paiflow-operator", ["ml"])
    assert ml != group_for("paiflow-operator", ["ml", "etl"]) and ml.startswith("paiflow-operator-")
    assert group_for("paiflow-operator", ["etl", "ml"]) == group_for("paiflow-operator", ["ml", "etl", "ml"])
    assert len(group_for("g" * 63, ["ml"])) <= 63  # a label value


def test_static_shards_also_own_keys() -> None:
    shards = [StaticShards(3, i) for i in range(3)]
    assert sum(s.owns_key("workspace/2001") for s in shards) == 1
