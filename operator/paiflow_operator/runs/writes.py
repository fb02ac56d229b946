"""Every status write and Event of a PaiPipelineRun, polled or launched: through the write gate, with the
metrics and the record's bookkeeping (its status and resourceVersion as written)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.conditions import Event
from paiflow_operator.guards.write_gate import WriteGate
from paiflow_operator.kube import ObjectRef
from paiflow_operator.runs.events import EventQueue
from paiflow_operator.runs.tracked import Tracked, compact

log = logging.getLogger(__name__)


class RunKube(Protocol):
    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]: ...

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None: ...


class RunWriter:
    def __init__(
        self,
        kube: RunKube,
        *,
        gate: WriteGate | None = None,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        events: EventQueue | None = None,
    ) -> None:
        self.kube = kube
        # Through an API server outage, status writes wait together and go again together (write_gate.py).
        self.gate = gate or WriteGate()
        self.wallclock = wallclock
        # With a queue, Events go after the status writes in flight (events.py); without one, inline.
        self.events = events
        self.in_flight = 0
        self._wave = 0  # writes since in_flight was last zero: how large this wave of writes is
        # Told of every status written, without waiting (set by handlers.py: runs/notify.py's completion events).
        self.on_written: Callable[[Mapping[str, Any]], None] | None = None

    async def write_status(
        self, tracked: Tracked, patch: dict[str, Any], *, resource_version: str | None = None
    ) -> None:
        """A merge patch of the run's status (with ``resource_version``: only if the object is still at it).
        Raises KubeError as the API server answers about this object (its own retry), but waits out an outage
        of the API server itself."""
        was = tracked.status.get("runStatus")  # read before the await: the watch may echo our write first
        self.in_flight += 1
        self._wave += 1
        tracked.writing = str(patch.get("runStatus") or was or "")
        try:
            # The run's key tells the gate whose write failed: one object's refusals never hold the others'.
            if resource_version is None:
                written = await self.gate.write(
                    lambda: self.kube.patch_status(tracked.namespace, tracked.name, patch), tracked.key
                )
            else:
                written = await self.gate.write(
                    lambda: self.kube.patch_status(
                        tracked.namespace, tracked.name, patch, resource_version=resource_version
                    ),
                    tracked.key,
                )
        finally:
            tracked.writing = None
            self.in_flight -= 1
            if self.in_flight == 0:
                if self.events is not None:
                    self.events.writes_settled(self._wave)
                self._wave = 0
        metrics.KUBE_WRITES.labels("status").inc()
        after = written.get("status") or {}
        if after.get("runStatus") != was and after.get("runStatus") in metrics.ENDED:
            metrics.observe_completion(tracked.namespace, after["runStatus"], after.get("duration"))
        tracked.status = compact(written.get("status") or tracked.status)
        tracked.resource_version = (written.get("metadata") or {}).get("resourceVersion")
        if self.on_written is not None:
            self.on_written(written)

    async def post_events(self, tracked: Tracked, events: list[Event]) -> None:
        """Events are best effort: one that cannot be posted is logged, never retried."""
        if self.events is not None:
            ref = ObjectRef(tracked.namespace, tracked.name, tracked.uid, tracked.resource_version)
            await self.events.post(ref, events, self.wallclock())
            return
        for event in events:
            try:
                ref = ObjectRef(tracked.namespace, tracked.name, tracked.uid, tracked.resource_version)
                await self.kube.create_event(ref, event, self.wallclock())
                metrics.KUBE_WRITES.labels("event").inc()
            except Exception as exc:
                log.warning("event for %s/%s not posted: %s", tracked.namespace, tracked.name, exc)


def log_events(tracked: Tracked, events: list[Event], *, quiet: bool) -> None:
    """Each Event of a poll (a status transition or a change of error class) is a log line too; ``quiet``: the
    circuit breaker's own lines tell the story, these go to DEBUG."""
    run_id = tracked.run_id
    for event in events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        if quiet:
            level = logging.DEBUG
        log.log(
            level,
            "%s/%s run=%s %s: %s",
            tracked.namespace,
            tracked.name,
            run_id,
            event.reason,
            event.message,
            extra={
                "namespace": tracked.namespace,
                "resource": tracked.name,
                "run_id": run_id,
                "reason": event.reason,
            },
        )
