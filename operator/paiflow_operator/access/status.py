"""PaiAccessPolicy status: how many namespaces a policy selects and whether it conflicts with another.

``desired`` is pure; ``PolicyStatusWriter`` writes it (status subresource, merge patch, only what changed) for
the policies this replica owns (replicas/: one replica writes each policy's status), after any change of the
access view or of the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator.access.policy import CONFLICT, POLICY_KIND, Policy, PolicyState
from paiflow_operator.access.view import AccessView
from paiflow_operator.conditions import set_condition

log = logging.getLogger(__name__)

READY = "Ready"
ACTIVE = "Active"


def desired(policy: Policy, state: PolicyState, current: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """The merge patch that brings a policy's status up to date, or None when it already is."""
    conditions = [dict(c) for c in current.get("conditions") or []]
    if state.conflicts_with:
        others = ", ".join(state.conflicts_with)
        message = (
            f"names a different identity than {POLICY_KIND} {others} for namespaces both select: the operator makes "
            "no PAI call for those namespaces until one of them changes"
        )
        set_condition(conditions, READY, "False", CONFLICT, message, policy.generation, now)
    else:
        message = f"selects {state.namespaces} namespace{'' if state.namespaces == 1 else 's'}"
        set_condition(conditions, READY, "True", ACTIVE, message, policy.generation, now)
    patch = {"observedGeneration": policy.generation, "namespaces": state.namespaces, "conditions": conditions}
    changed = {k: v for k, v in patch.items() if current.get(k) != v}
    return changed or None


class PolicyKube(Protocol):
    async def patch_policy_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


class PolicyStatusWriter:
    """Writes the status of every policy this replica owns whenever the view (or the replicas) change."""

    def __init__(
        self,
        view: AccessView,
        kube: PolicyKube,
        owns_key: Callable[[str], bool],
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_seconds: float = 5.0,
    ) -> None:
        self.view = view
        self.kube = kube
        self.owns_key = owns_key
        self.wallclock = wallclock
        self.retry_seconds = retry_seconds
        self.statuses: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Keeps each policy's status as the API server has it (the watch), so only changes are written."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if event_type == "DELETED":
            self.statuses.pop(name, None)
        elif name:
            self.statuses[name] = dict(body.get("status") or {})
        self.poke()

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="paiflow-policy-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed = await self.write_once()
            if failed:
                await asyncio.sleep(self.retry_seconds)
                self._wake.set()

    async def write_once(self) -> bool:
        """One pass over the policies; True if any write failed (the loop tries again shortly)."""
        if not self.view.synced:
            return False
        states = self.view.states()
        failed = False
        for name, policy in list(self.view.policies.items()):
            if not self.owns_key(f"{POLICY_KIND}/{name}") or name not in states:
                continue
            patch = desired(policy, states[name], self.statuses.get(name, {}), self.wallclock())
            if patch is None:
                continue
            try:
                written = await self.kube.patch_policy_status(name, patch)
            except Exception as exc:
                log.warning("status write for PaiAccessPolicy %s failed: %s", name, exc)
                failed = True
                continue
            self.statuses[name] = dict(written.get("status") or {})
            state = states[name]
            if state.conflicts_with:
                log.warning("PaiAccessPolicy %s conflicts with %s", name, ", ".join(state.conflicts_with))
        return failed
