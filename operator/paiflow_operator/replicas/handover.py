"""Hand-over of runs between replicas when the Lease membership changes.

The scheduler keeps only the runs this replica owns. The watch still shows every run, so the others' runs are
kept here as compact JSON (about 1 KB each, nothing parsed): when a member leaves or dies, this replica starts
polling the runs it now owns from what the watch last said, with no relist; when one joins, the runs it takes
leave the scheduler at once and wait here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.api.runs import without_launch_payload
from paiflow_operator.replicas.sharding import Ownership

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Polls(Protocol):
    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None: ...

    def forget(self, key: Key) -> None: ...

    def rebalance(self) -> list[dict[str, Any]]: ...


def _compact(body: Mapping[str, Any]) -> bytes:
    meta = body.get("metadata") or {}
    kept = {k: meta.get(k) for k in ("namespace", "name", "uid", "generation", "resourceVersion")}
    status = body.get("status") or {}
    spec = without_launch_payload(body.get("spec") or {}, status)
    return json.dumps({"metadata": kept, "spec": spec, "status": status}, separators=(",", ":")).encode()


class Handover:
    """Sits between the watch and the scheduler: owned runs go to the scheduler, the others wait here."""

    def __init__(self, scheduler: Polls, ownership: Ownership) -> None:
        self.scheduler = scheduler
        self.ownership = ownership
        self.others: dict[Key, tuple[str, bytes]] = {}  # key -> (uid, compact body)

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        uid = str(meta.get("uid", ""))
        if event_type == "DELETED" or meta.get("deletionTimestamp") or self.ownership.owns(uid):
            self.others.pop(key, None)
            self.scheduler.observe(body, event_type)
        else:
            self.others[key] = (uid, _compact(body))
            self.scheduler.forget(key)

    def rebalance(self) -> tuple[int, int]:
        """After a membership change: (runs taken over, runs released)."""
        released = self.scheduler.rebalance()
        for body in released:
            meta = body["metadata"]
            self.others[(meta["namespace"], meta["name"])] = (meta["uid"], _compact(body))
        taken = [key for key, (uid, _) in self.others.items() if self.ownership.owns(uid)]
        for key in taken:
            _, raw = self.others.pop(key)
            self.scheduler.observe(json.loads(raw), None)
        metrics.HANDOVERS.labels("taken").inc(len(taken))
        metrics.HANDOVERS.labels("released").inc(len(released))
        if taken or released:
            log.info("hand-over: took %d run(s), released %d", len(taken), len(released))
        return len(taken), len(released)
