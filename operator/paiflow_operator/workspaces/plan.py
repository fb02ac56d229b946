"""Pure planning for PaiWorkspace: (scan rows, existing PaiPipelineRuns, now) -> creates, deletes, counts.

No I/O: every rule (filters, the import window, the cap, TTL, never touching hand-written resources) is
table-tested here; workspace_scan.py only carries the plan out.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paiflow_operator.api import runs as runs_api
from paiflow_operator.api import workspaces as workspaces_api
from paiflow_operator.api.runs import parse_duration
from paiflow_operator.api.workspaces import PaiWorkspaceSpec
from paiflow_operator.pai.models import PipelineRun, RunStatus

LABEL_PREFIX = "paiflow-operator.dev/"
LABEL_WORKSPACE = LABEL_PREFIX + "workspace"  # the PaiWorkspace's name
LABEL_PAI_WORKSPACE = LABEL_PREFIX + "pai-workspace-id"
LABEL_PIPELINE = LABEL_PREFIX + "pipeline-id"
LABEL_SOURCE_TYPE = LABEL_PREFIX + "source-type"
LABEL_SOURCE_ID = LABEL_PREFIX + "source-id"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "paiflow-operator"

_NAME_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME = 253
MAX_LABEL = 63


def _hash(text: str) -> str:
    return f"{zlib.crc32(text.encode()):08x}"


def resource_name(run_id: str) -> str:
    """A DNS-1123 subdomain made from the run id alone, so every replica and every rescan agree on it.

    PAI's ids are usually valid names already (flow-j94y...); an id that had to be changed (upper case,
    underscores, dots) gets a hash of the original appended, so two ids never map to one name.
    """
    cleaned = _NAME_INVALID.sub("-", run_id.lower()).strip("-")
    if cleaned == run_id and cleaned:
        return cleaned[:MAX_NAME]
    suffix = _hash(run_id)
    return f"{cleaned[: MAX_NAME - len(suffix) - 1].strip('-') or 'run'}-{suffix}"


def label_value(value: str | None) -> str | None:
    """A valid label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends), or None."""
    if not value:
        return None
    cleaned = _LABEL_INVALID.sub("-", value).strip("-_.")
    if cleaned == value and len(cleaned) <= MAX_LABEL:
        return cleaned
    suffix = _hash(value)
    return f"{cleaned[: MAX_LABEL - len(suffix) - 1].strip('-_.') or 'v'}-{suffix}"


@dataclass(frozen=True, slots=True)
class WorkspaceRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Existing:
    """What the planner needs of a PaiPipelineRun in the workspace's namespace (from the watch)."""

    name: str
    uid: str
    run_id: str
    owner_uid: str | None  # the controller ownerReference's uid; None for hand-written resources
    run_status: str | None = None
    finished_at: datetime | None = None
    deleting: bool = False

    @property
    def terminal(self) -> bool:
        if self.run_status is None:
            return False
        try:
            return RunStatus(self.run_status).is_terminal
        except ValueError:
            return False


@dataclass
class Plan:
    creates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[Existing] = field(default_factory=list)
    # Rows in scope but not imported: the cap was reached.
    over_cap: int = 0
    # The cap reached was the namespace's (the operator's ceiling or the access policy's), not maxRuns.
    namespace_cap: int | None = None
    # Imported runs that exist now, and their PAI states (from their own status).
    owned: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # the owned runs' and the planned creates' states
    owned_counts: dict[str, int] = field(default_factory=dict)  # the owned runs' alone: one per owned run


def in_scope(row: PipelineRun, spec: PaiWorkspaceSpec) -> bool:
    """The filters ListPipelineRuns cannot apply itself (several statuses) and those it might apply loosely."""
    filters = spec.filters
    if row.workspace_id and row.workspace_id != spec.workspaceId:
        return False
    if filters is None:
        return True
    if filters.statuses and (row.raw_status or row.status.value) not in filters.statuses:
        return False
    if filters.pipelineIds and row.pipeline_id not in filters.pipelineIds:
        return False
    if filters.sourceType and row.source_type and row.source_type != filters.sourceType:
        return False
    if filters.sourceId and row.source_id != filters.sourceId:
        return False
    return not (filters.userId and row.user_id and row.user_id != filters.userId)


def list_query(spec: PaiWorkspaceSpec) -> dict[str, str | None]:
    """ListPipelineRuns filter parameters for the spec (keyword arguments of PaiClient.list_pipeline_runs)."""
    f = spec.filters
    if f is None:
        return {}
    return {
        "pipeline_ids": ",".join(f.pipelineIds) if f.pipelineIds else None,
        "source_type": f.sourceType,
        "source_id": f.sourceId,
        "user_id": f.userId,
        "name": f.name,
        # Status is never sent: a run that leaves the wanted state would vanish from the scan just when its
        # resource needs that change (and PAI documents one value only). in_scope applies it to imports.
    }


def run_body(ws: WorkspaceRef, spec: PaiWorkspaceSpec, row: PipelineRun) -> dict[str, Any]:
    """The PaiPipelineRun an imported run becomes: an ordinary resource, owned by its PaiWorkspace."""
    template = spec.template
    labels: dict[str, str] = dict(template.labels or {}) if template else {}
    ours = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WORKSPACE: label_value(ws.name),
        LABEL_PAI_WORKSPACE: label_value(spec.workspaceId),
        LABEL_PIPELINE: label_value(row.pipeline_id),
        LABEL_SOURCE_TYPE: label_value(row.source_type),
        LABEL_SOURCE_ID: label_value(row.source_id),
    }
    labels.update({k: v for k, v in ours.items() if v})
    run_spec: dict[str, Any] = {"pipelineRunId": row.pipeline_run_id, "workspaceId": spec.workspaceId}
    if spec.regionId:
        run_spec["regionId"] = spec.regionId
    if spec.credentialsSecretRef is not None:
        run_spec["credentialsSecretRef"] = spec.credentialsSecretRef.model_dump()
    if template is not None and template.pollInterval:
        run_spec["pollInterval"] = template.pollInterval
    # Imported runs read no node, log or output (priced calls) unless the workspace asks.
    run_spec["inside"] = bool(template is not None and template.inside)
    metadata: dict[str, Any] = {
        "name": resource_name(row.pipeline_run_id),
        "namespace": ws.namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": runs_api.API_VERSION,
                "kind": workspaces_api.KIND,
                "name": ws.name,
                "uid": ws.uid,
                "controller": True,
                # True would need update rights on paiworkspaces/finalizers; background deletion works without.
                "blockOwnerDeletion": False,
            }
        ],
    }
    if template is not None and template.annotations:
        metadata["annotations"] = dict(template.annotations)
    return {"apiVersion": runs_api.API_VERSION, "kind": runs_api.KIND, "metadata": metadata, "spec": run_spec}


def plan(
    ws: WorkspaceRef,
    spec: PaiWorkspaceSpec,
    rows: Iterable[PipelineRun],
    existing: Iterable[Existing],
    now: datetime,
    namespace_cap: int | None = None,
) -> Plan:
    """What to create and delete after one scan. ``rows``: this scan's rows (any order, any duplicates);
    ``existing``: every PaiPipelineRun of the namespace as the watch last showed it; ``namespace_cap``: imported
    runs the whole namespace may hold, from all its PaiWorkspaces together (the operator's hard ceiling, or the
    access policy's maxImportedRuns if lower), whatever maxRuns asks."""
    out = Plan()
    followed: set[str] = set()  # run ids some resource of the namespace already follows
    # A run a PaiPipelineRun launched names that resource's uid as its SourceId: it is that resource's own, even
    # before its id reaches the resource's status.
    launchers: set[str] = set()
    owned: list[Existing] = []
    imported_elsewhere = 0  # imported by the namespace's other PaiWorkspaces
    for item in existing:
        launchers.add(item.uid)
        if item.run_id:
            followed.add(item.run_id)
        if item.owner_uid == ws.uid:
            owned.append(item)
        elif item.owner_uid is not None and not item.deleting:
            imported_elsewhere += 1

    rows = list(rows)
    latest: dict[str, str] = {r.pipeline_run_id: r.raw_status or r.status.value for r in rows}
    ttl = parse_duration(spec.ttlAfterFinished) if spec.ttlAfterFinished is not None else None
    remaining = 0
    for item in owned:
        if item.deleting:
            continue
        if ttl is not None and item.terminal and item.finished_at is not None and now - item.finished_at >= ttl:
            out.deletes.append(item)
            continue
        remaining += 1
        # This scan's row is fresher than the resource's status as the watch last showed it.
        status = latest.get(item.run_id) or item.run_status
        _count(out.counts, status)
        # A run with no status yet still counts, so that the counts add up to the runs.
        _count(out.owned_counts, status or UNKNOWN)
    out.owned = remaining

    window_start = now - parse_duration(spec.importWindow)
    newest: dict[str, PipelineRun] = {}
    for row in rows:
        if row.pipeline_run_id in followed or row.source_id in launchers or not in_scope(row, spec):
            continue
        if row.gmt_create_time is None or row.gmt_create_time < window_start:
            continue
        if ttl is not None and _expired(row, now, ttl):
            continue  # would be deleted at once: two writes for nothing
        seen = newest.get(row.pipeline_run_id)
        if seen is None or _modified(row) >= _modified(seen):
            newest[row.pipeline_run_id] = row
    # The newest runs first, so that a cap keeps what people are most likely to look at.
    candidates = sorted(newest.values(), key=lambda r: (r.gmt_create_time or now, r.pipeline_run_id), reverse=True)
    room = max(spec.maxRuns - remaining, 0)
    if namespace_cap is not None and namespace_cap - imported_elsewhere - remaining < room:
        room = max(namespace_cap - imported_elsewhere - remaining, 0)
        out.namespace_cap = namespace_cap if len(candidates) > room else None
    for row in candidates[:room]:
        out.creates.append(run_body(ws, spec, row))
        _count(out.counts, row.raw_status or row.status.value)
    out.over_cap = max(len(candidates) - room, 0)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNKNOWN = "Unknown"  # an imported run whose status was never written yet


def counts_after(plan: Plan, created_statuses: Iterable[str]) -> dict[str, int]:
    """The workspace's counts once the scan's creates are done: its owned runs' states and those of the runs
    it did create (a failed create is not a run), so that they always add up to ``runs``."""
    counts = dict(plan.owned_counts)
    for status in created_statuses:
        _count(counts, status or UNKNOWN)
    return counts


def _count(counts: dict[str, int], status: str | None) -> None:
    if status:
        counts[status] = counts.get(status, 0) + 1


def _modified(row: PipelineRun) -> datetime:
    return row.gmt_modified_time or row.gmt_create_time or _EPOCH


def _expired(row: PipelineRun, now: datetime, ttl: timedelta) -> bool:
    return row.status.is_terminal and row.finished_at is not None and now - row.finished_at >= ttl


def existing_from_body(body: Mapping[str, Any]) -> Existing | None:
    """The planner's view of a PaiPipelineRun watch object: the run it follows (named in its spec) or launched
    (in its status, once created; empty before that)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    run_id = (body.get("spec") or {}).get("pipelineRunId") or status.get("pipelineRunId") or ""
    owner = next(
        (
            ref.get("uid")
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller") and ref.get("kind") == workspaces_api.KIND
        ),
        None,
    )
    finished = status.get("finishedAt")
    return Existing(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        run_id=str(run_id),
        owner_uid=owner,
        run_status=status.get("runStatus"),
        finished_at=datetime.fromisoformat(finished.replace("Z", "+00:00")) if finished else None,
        deleting=bool(meta.get("deletionTimestamp")),
    )
