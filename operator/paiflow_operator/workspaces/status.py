"""A PaiWorkspace's status (pure): what a scan, a failed scan or a suspended workspace writes, and what changed.

The I/O (the scan, the patch, the Event) is the scanner's; here only (current status, what happened, now) ->
the status to have, and the merge patch that gets there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from paiflow_operator.api.workspaces import PaiWorkspaceSpec
from paiflow_operator.conditions import NEEDS_HUMAN, READY, STALLED, error_reason, set_condition, timestamp
from paiflow_operator.pai.errors import PaiError
from paiflow_operator.workspaces.plan import Plan


def _conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in status.get("conditions") or []]


def scanned(
    status: Mapping[str, Any],
    generation: int,
    spec: PaiWorkspaceSpec,
    plan: Plan,
    counts: Mapping[str, int],
    imported: int,
    deleted: int,
    now: datetime,
) -> dict[str, Any]:
    """After a scan: Ready, the counts, and how many runs were imported or deleted so far."""
    conditions = _conditions(status)
    message = f"Scanning PAI workspace {spec.workspaceId}"
    if plan.over_cap and plan.namespace_cap is not None:
        message += (
            f"; the namespace's cap of {plan.namespace_cap} imported runs (all its PaiWorkspaces together) "
            f"reached, {plan.over_cap} runs in scope not imported"
        )
    elif plan.over_cap:
        message += f"; maxRuns ({spec.maxRuns}) reached, {plan.over_cap} runs in scope not imported"
    set_condition(conditions, READY, "True", "Scanned", message, generation, now)
    set_condition(conditions, STALLED, "False", "Scanned", message, generation, now)
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        # The counts are the runs' states: they add up to the runs at every write.
        "runs": sum(counts.values()),
        "counts": dict(counts) or None,
        "imported": imported,
        "deleted": deleted,
        "skipped": plan.over_cap or None,
        "lastScanTime": timestamp(now),
    }


def failed(status: Mapping[str, Any], generation: int, error: PaiError, now: datetime) -> dict[str, Any]:
    """A scan PAI refused or did not answer: conditions only, the last counts stay."""
    conditions = _conditions(status)
    reason = error_reason(error)  # as for runs (reconcile._on_error)
    message = error.describe(with_request_id=False)
    set_condition(conditions, READY, "False", reason, message, generation, now)
    stalled = "True" if error.kind in NEEDS_HUMAN else "False"
    set_condition(conditions, STALLED, stalled, reason, message, generation, now)
    return {"observedGeneration": generation, "conditions": conditions}


def suspended(status: Mapping[str, Any], generation: int, now: datetime) -> dict[str, Any]:
    conditions = _conditions(status)
    message = "Scanning is suspended by spec.suspend; imported runs are kept"
    set_condition(conditions, READY, "True", "Suspended", message, generation, now)
    set_condition(conditions, STALLED, "False", "Suspended", message, generation, now)
    return {"observedGeneration": generation, "conditions": conditions}


def changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``current`` to ``desired`` (a None for a field never written is no change).

    A JSON merge patch merges maps key by key: a map's key that ``desired`` no longer has (a state no run is in
    any more, in ``counts``) is sent as null, or the API server would keep the old count beside the new ones.
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if old == value or (value is None and key not in current):
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            value = {**{k: None for k in old if k not in value}, **value}
        patch[key] = value
    return patch


def ready(status: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == READY), None)
