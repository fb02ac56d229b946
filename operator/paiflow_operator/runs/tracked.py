"""The per-run record: what this replica knows of one PaiPipelineRun it tracks, in flat slots.

Flat slots on purpose: 10,000 tracked runs must stay a few MiB. Each group of fields has one room that
writes it (see the field comments); everyone else only reads.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.pai_access import Action, Caller

KIND = "PaiPipelineRun"
Key = tuple[str, str]  # (namespace, name)


@dataclass(slots=True)
class Tracked:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: PaiPipelineRunSpec
    status: dict[str, Any]
    resource_version: str | None = None
    due: float | None = None
    heap_version: int = 0
    attempt: int = 0
    last_detail: float | None = None
    last_ok: float | None = None
    since: float = field(default_factory=time.monotonic)
    busy: bool = False
    # The runStatus a status write in flight sets (writes.py), None when none is: a scan row saying the same is
    # no news, however long the write waits for its turn in a burst.
    writing: str | None = None
    # The spec changed, or a scan row said something else, while a poll was in flight: look again as soon as that
    # poll ends.
    rerun: bool = False
    # A workspace scan last answered for this run at this clock time (scan_feed.py): polled slowly.
    scan_seen: float | None = None
    # A batched status query saw this run change before its workspace scan did, at this clock time: the scan
    # brings the change with its details; a GetPipelineRun only if it has not within a while (sync.py).
    change_seen: float | None = None
    # Monotonic time of the first of the retryable PAI failures in a row, None while calls succeed.
    failing_since: float | None = None
    # The resourceVersion whose terminal status was last confirmed with PAI (registry._needs_confirmation).
    confirmed_version: str | None = None
    # The outage (CircuitBreaker.outage) this run's condition already shows, if any: shown once per outage.
    outage_shown: int = 0
    deleting: bool = False
    finalizers: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def run_id(self) -> str:
        """The run followed: spec.pipelineRunId, or the one this resource launched ("" until it exists)."""
        return self.spec.pipelineRunId or str(self.status.get("pipelineRunId") or "")


# Strings up to this long are shared between records (keys, statuses, reasons, messages, timestamps of a burst).
SHARED_STRING_LENGTH = 100


def compact(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status as the record keeps it: a copy whose keys and short strings are shared with every other record's.

    A status decoded from JSON owns every string of it, its keys included: 5.7 KiB per run as the operator writes
    it, 2.1 KiB compacted, that is 36 MiB less at 10,000 runs. CPython's interned strings are freed with their last
    user, so unique values (run ids) cost only their slot in the intern table while they live.
    """
    return {sys.intern(key): _shared(value) for key, value in status.items()}


def _shared(value: Any) -> Any:
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= SHARED_STRING_LENGTH else value
    if isinstance(value, dict):
        return {sys.intern(key): _shared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shared(item) for item in value]
    return value


def caller(tracked: Tracked, action: Action, region: str) -> Caller:
    """Who asks PAI when this run's calls go through the door (pai_access)."""
    spec = tracked.spec
    launch_workspace = spec.launch.workspaceId if spec.launch is not None else None
    workspace = spec.workspaceId or launch_workspace or tracked.status.get("workspaceId")
    # A share token reads someone else's run; only the calls that read a run (status, or inside) carry it.
    token = spec.tokenSecretRef if action in (Action.FOLLOW, Action.VERBOSE, Action.INSPECT) else None
    return Caller(tracked.namespace, KIND, tracked.name, action, region, workspace, spec.credentialsSecretRef, token)


def runstatus_manager(meta: Mapping[str, Any]) -> str | None:
    """The field manager that last set status.runStatus, from the object's managedFields."""
    for entry in meta.get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:status") or {}
        if "f:runStatus" in fields:
            manager: str | None = entry.get("manager")
            return manager
    return None
