"""Replicas share the runs among themselves through Leases (coordination.k8s.io/v1) in the operator's namespace.

Each replica holds a Lease of its own and renews it every lease_renew_interval, and lists its group's Leases
at the same pace. Whether another replica is alive is judged as client-go's leader election judges a leader:
its Lease's renewTime is never compared with this machine's wall clock; what counts is how long, on this
process's monotonic clock, the Lease has gone unchanged, against the Lease's own leaseDurationSeconds. Clock
skew between replicas therefore changes nothing.

A run (its uid, or any other key: `owns_key`) belongs to the live member with the highest rendezvous weight
(sharding.rendezvous_owner), so a member coming or going moves only its own share. A replica that has not
completed a renew-and-list round for renew_deadline (lease_duration - 2 * renew interval) owns nothing: it
stops before the others, whose clocks started no earlier than its last renewal, can take its runs over.
A replica leaving cleanly marks its Lease `leaving`: the others take its runs at their next round, while it
keeps polling them for a drain period, then stops and deletes its Lease. A replica joining while others
work marks its Lease `joining` until its watch has listed every run (`ready()`): the others keep its share
until then, so no run waits for a newcomer that has not seen it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.kube import KubeError
from paiflow_operator.replicas.sharding import rendezvous_owner

log = logging.getLogger(__name__)

GROUP_LABEL = "paiflow-operator.dev/membership"
LEAVING_ANNOTATION = "paiflow-operator.dev/leaving"
JOINING_ANNOTATION = "paiflow-operator.dev/joining"


class LeaseApi(Protocol):
    async def list_leases(
        self, namespace: str, label_selector: str, request_timeout: float = ...
    ) -> list[dict[str, Any]]: ...

    async def create_lease(
        self, namespace: str, body: dict[str, Any], request_timeout: float = ...
    ) -> dict[str, Any]: ...

    async def patch_lease(
        self, namespace: str, name: str, patch: dict[str, Any], request_timeout: float = ...
    ) -> dict[str, Any]: ...

    async def delete_lease(
        self, namespace: str, name: str, resource_version: str | None = None, request_timeout: float = ...
    ) -> None: ...


def default_identity(pod_name: str | None) -> str:
    """The pod's name (downward API) or, outside a pod, hostname-pid: unique among running replicas."""
    return pod_name or f"{socket.gethostname()}-{os.getpid()}"


def lease_name(group: str, identity: str) -> str:
    """A valid object name (DNS subdomain) for this replica's Lease."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", f"{group}-{identity}".lower()).strip("-.")
    return cleaned[:253].rstrip("-.")


def group_for(group: str, namespaces: Iterable[str]) -> str:
    """Replicas share runs only with replicas that watch the same namespaces: one watching only `ml` must not
    be handed runs of `etl` it never sees. So the namespaces, when given, are part of the group."""
    watched = sorted(set(namespaces))
    if not watched:
        return group
    return f"{group[:54]}-{zlib.crc32(','.join(watched).encode()):08x}"


def micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Member:
    """What one list showed of one Lease."""

    name: str
    identity: str
    duration: float
    resource_version: str
    leaving: bool
    joining: bool
    # Any change of these counts as a renewal (client-go compares the whole leader record likewise).
    record: tuple[Any, ...]

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> Member | None:
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        identity, duration = spec.get("holderIdentity"), spec.get("leaseDurationSeconds")
        if not identity or not isinstance(duration, int) or duration <= 0:
            return None  # released or not one of ours
        annotations = meta.get("annotations") or {}
        leaving = annotations.get(LEAVING_ANNOTATION) == "true"
        joining = annotations.get(JOINING_ANNOTATION) == "true"
        return cls(
            name=str(meta.get("name", "")),
            identity=str(identity),
            duration=float(duration),
            resource_version=str(meta.get("resourceVersion", "")),
            leaving=leaving,
            joining=joining,
            record=(identity, spec.get("renewTime"), duration, leaving, joining),
        )


class Observer:
    """Liveness of Leases, timed on the local monotonic clock only.

    A Lease seen for the first time counts as just renewed: a replica that starts cannot know how old a Lease
    is without trusting a remote clock, so a dead replica's Lease keeps its share for one more lease duration.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[Any, ...], float]] = {}

    def update(self, members: Iterable[Member], now: float) -> tuple[list[Member], list[Member]]:
        """(live, expired) among `members`; forgets Leases no longer listed."""
        live: list[Member] = []
        expired: list[Member] = []
        seen: dict[str, tuple[tuple[Any, ...], float]] = {}
        for member in members:
            previous = self._seen.get(member.name)
            if previous is None or previous[0] != member.record:
                previous = (member.record, now)
            seen[member.name] = previous
            (live if now - previous[1] < member.duration else expired).append(member)
        self._seen = seen
        return live, expired


class LeaseMembership:
    """Ownership by Lease membership (see the module's docstring). `on_change` runs whenever the members this
    replica hashes over change: the caller then hands runs over (handover.Handover.rebalance)."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        namespace: str,
        identity: str,
        group: str = "paiflow-operator",
        duration: float = 15.0,
        renew_interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[], object] | None = None,
    ) -> None:
        if not 0 < 3 * renew_interval <= duration:
            raise ValueError("renew_interval must be positive and at most a third of duration")
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.group = group
        self.duration = duration
        self.renew_interval = renew_interval
        self.renew_deadline = duration - 2 * renew_interval
        self.clock = clock
        self.wallclock = wallclock
        self._listeners: list[Callable[[], object]] = [on_change] if on_change is not None else []
        self.lease_name = lease_name(group, identity)
        self.observer = Observer()
        self._members: tuple[str, ...] = ()
        self._live: list[Member] = []
        self._round_at: float | None = None  # start of the last complete renew-and-list round
        self._created = False
        self._leaving = False
        self._joining = True
        self._tasks: list[asyncio.Task[None]] = []
        self._gc: set[asyncio.Task[None]] = set()

    # ---- Ownership -------------------------------------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        """The identities runs are hashed over; empty while this replica is not a member itself."""
        return self._members

    def owns(self, uid: str) -> bool:
        return self.owns_key(uid)

    def owns_key(self, key: str) -> bool:
        """Whether this replica owns `key` (a run's uid, a workspace id...): work that must happen once."""
        members = self._members
        return bool(members) and rendezvous_owner(key, members) == self.identity

    @property
    def joining(self) -> bool:
        return self._joining

    def ready(self) -> None:
        """This replica has seen every run (the runs' first list is over): it takes its share now, and the others
        release it when they see the `joining` mark gone (at the next renewal)."""
        if self._joining:
            self._joining = False
            log.info("membership: every run listed; joining the members")
            self.refresh()

    def subscribe(self, listener: Callable[[], object]) -> None:
        """`listener()` runs (in the event loop, synchronously) after every change of `members`."""
        self._listeners.append(listener)

    # ---- the loop ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """One round at once (so the first watch events already see the members), then one per interval."""
        await self._guarded_round()
        self.refresh()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._loop(), name="paiflow-membership"),
            loop.create_task(self._watchdog(), name="paiflow-membership-deadline"),
        ]

    async def _loop(self) -> None:
        while True:
            started = self.clock()
            await self._guarded_round()
            self.refresh()
            await asyncio.sleep(max(0.0, self.renew_interval - (self.clock() - started)))

    async def _watchdog(self) -> None:
        # A round may take up to the renew deadline; the deadline itself is checked meanwhile too.
        while True:
            await asyncio.sleep(self.renew_interval / 2)
            self.refresh()

    async def _guarded_round(self) -> None:
        try:
            await asyncio.wait_for(self.round(), self.renew_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an unreachable API server must not stop the loop
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("membership: renewing or listing Leases in %s failed: %s", self.namespace, reason)

    async def round(self) -> None:
        """Renew this replica's Lease and list the group's; a complete round restarts the renew deadline."""
        sent = self.clock()
        await self._renew()
        items = await self.api.list_leases(self.namespace, f"{GROUP_LABEL}={self.group}", self.renew_deadline)
        now = self.clock()
        others = [m for m in map(Member.from_lease, items) if m is not None and m.name != self.lease_name]
        self._live, expired = self.observer.update(others, now)
        self._round_at = sent
        for member in expired:
            # Tidy up after a replica that died (pod names are not reused); only the version we saw expire.
            task = asyncio.get_running_loop().create_task(self._delete_expired(member))
            self._gc.add(task)
            task.add_done_callback(self._gc.discard)

    def refresh(self) -> None:
        """Recompute the members runs are hashed over; frozen while leaving (keep polling through the drain)."""
        if self._leaving:
            return
        active = self._round_at is not None and self.clock() - self._round_at < self.renew_deadline
        others = {m.identity for m in self._live if not (m.leaving or m.joining) and m.identity != self.identity}
        if self._joining and active and not others:
            self._joining = False  # nobody else polls anything: nothing to wait for
        members = tuple(sorted(others | {self.identity})) if active and not self._joining else ()
        metrics.MEMBERS.set(len(members))
        metrics.MEMBER.set(1 if active else 0)
        if members != self._members:
            log.info("membership: %d member(s) now share the runs: %s", len(members), ", ".join(members) or "-")
            self._members = members
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("membership: a listener failed on a membership change")

    async def _renew(self) -> None:
        now = self.wallclock()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": micro_time(now),
        }
        annotations = {
            LEAVING_ANNOTATION: "true" if self._leaving else None,
            JOINING_ANNOTATION: "true" if self._joining else None,
        }
        if self._created:
            try:
                await self.api.patch_lease(
                    self.namespace,
                    self.lease_name,
                    {"metadata": {"labels": {GROUP_LABEL: self.group}, "annotations": annotations}, "spec": spec},
                    self.renew_deadline,
                )
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
                # Deleted by a replica that thought this one dead (it was cut off): announce it afresh.
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.lease_name,
                "namespace": self.namespace,
                "labels": {GROUP_LABEL: self.group},
                "annotations": {k: v for k, v in annotations.items() if v is not None},
            },
            "spec": {**spec, "acquireTime": micro_time(now)},
        }
        try:
            await self.api.create_lease(self.namespace, body, self.renew_deadline)
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Left from before a restart under the same name (a StatefulSet pod): take it over at the next renewal.
            self._created = True
            raise
        self._created = True

    async def _delete_expired(self, member: Member) -> None:
        with contextlib.suppress(Exception):
            await self.api.delete_lease(self.namespace, member.name, member.resource_version, self.renew_interval)
            log.info("membership: deleted the expired Lease of %s", member.identity)

    # ---- a clean stop ------------------------------------------------------------------------------------

    async def leave(self, drain: float) -> None:
        """Mark this replica's Lease as leaving, then keep polling for `drain` seconds while the others (who see
        the mark at their next round) take the runs over. Ownership stays as it was meanwhile."""
        self._leaving = True
        if self._round_at is None:
            return
        try:
            await asyncio.wait_for(self._renew(), self.renew_deadline)
        except Exception as exc:  # then the others take over when the Lease expires
            log.warning("membership: could not mark the Lease as leaving: %s", exc)
            return
        log.info("membership: leaving; handing runs over for %.1fs", drain)
        await asyncio.sleep(drain)

    async def stop(self) -> None:
        """Stop renewing and delete this replica's Lease (after the scheduler stopped polling)."""
        tasks = [*self._tasks, *self._gc]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._members = ()
        if self._created:
            try:
                await self.api.delete_lease(self.namespace, self.lease_name, None, self.renew_interval)
            except Exception as exc:  # it then expires by itself
                log.warning("membership: could not delete the Lease %s: %s", self.lease_name, exc)
