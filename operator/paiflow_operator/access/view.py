"""The live view of PaiAccessPolicies and Namespace labels that access decisions are made on (no I/O).

Fed by the watch (handlers.py) after one initial list of each, so that the first decision already knows every
policy: a resource is never denied at start-up for want of a policy not yet seen. Subscribers hear of every
change that can alter a decision, which is how denied resources recover (and allowed ones stop) live.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from paiflow_operator.access import policy as core
from paiflow_operator.access.policy import Allowed, Decision, Namespace, Policy, PolicyState
from paiflow_operator.api.policies import Action, PaiAccessPolicySpec
from paiflow_operator.pai.errors import CredentialsError

log = logging.getLogger(__name__)

MAX_DECISIONS = 50_000


class AccessDenied(CredentialsError):
    """The operator will not act for this resource: no policy allows it (PolicyDenied) or the policies that
    select its namespace name different identities (PolicyConflict). Raised before any PAI call; its code is
    the condition's reason, and like any credentials problem it needs a human (Stalled=True, slow retry)."""

    def __init__(self, decision: core.Denied | core.Conflict) -> None:
        super().__init__(decision.message, code=decision.reason)
        self.decision = decision


class AccessView:
    def __init__(self, *, allow_all: bool = False) -> None:
        # allow_all: PAIFLOW_ACCESS_POLICIES=off, for an install that serves one team only (documented; off by
        # default): every namespace may do everything with the operator's own identity.
        self.allow_all = allow_all
        self.policies: dict[str, Policy] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.synced = False
        self.version = 0
        self._subscribers: list[Callable[[], None]] = []
        # Decisions made since the last change: every run's every call asks, and the answer only changes with
        # a policy or a namespace (a mass finish spent 3% of the operator's CPU matching policies again).
        self._decisions: dict[tuple[str, Action, str | None, str, bool], Decision] = {}

    # ---- fed by the initial lists and the watches --------------------------------------------------------

    def load(self, policies: Iterable[Mapping[str, Any]], namespaces: Iterable[Mapping[str, Any]]) -> None:
        """The initial lists: replaces everything, then decisions may be made."""
        self.policies = {}
        for body in policies:
            parsed = _parse(body)
            if parsed is not None:
                self.policies[parsed.name] = parsed
        self.namespaces = {ns.name: ns for ns in (_namespace(b) for b in namespaces) if ns is not None}
        self.synced = True
        self._changed()

    def observe_policy(self, body: Mapping[str, Any], event_type: str | None) -> None:
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return
        parsed = None if event_type == "DELETED" else _parse(body)
        old = self.policies.get(name)
        if parsed is None:
            if self.policies.pop(name, None) is not None:
                self._changed()
            return
        if old is None or old.spec != parsed.spec:
            self.policies[name] = parsed
            self._changed()
        else:
            self.policies[name] = parsed  # a status-only change: keep the generation current, nothing to decide

    def observe_namespace(self, body: Mapping[str, Any], event_type: str | None) -> None:
        ns = _namespace(body)
        if ns is None:
            return
        if event_type == "DELETED":
            if self.namespaces.pop(ns.name, None) is not None:
                self._changed()
            return
        if self.namespaces.get(ns.name) != ns:
            self.namespaces[ns.name] = ns
            self._changed()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Called (synchronously, on the event loop) after every change that may alter a decision."""
        self._subscribers.append(callback)

    def _changed(self) -> None:
        self.version += 1
        self._decisions.clear()
        for callback in self._subscribers:
            try:
                callback()
            except Exception:
                log.exception("an access-policy subscriber failed")

    # ---- decisions ---------------------------------------------------------------------------------------

    def namespace(self, name: str) -> Namespace:
        # A namespace not seen yet (created a moment ago) is judged by its name alone until its labels arrive.
        return self.namespaces.get(name) or Namespace(name)

    def decide(
        self, namespace: str, action: Action, workspace: str | None, region: str, *, name_workspace: bool = True
    ) -> Decision:
        if self.allow_all:
            return Allowed(core.OPERATOR_IDENTITY)
        key = (namespace, action, workspace, region, name_workspace)
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) >= MAX_DECISIONS:
                self._decisions.clear()  # a bound, whatever workspace ids the resources name
            decision = core.decide(
                self.policies.values(),
                self.namespace(namespace),
                action,
                workspace,
                region,
                name_workspace=name_workspace,
            )
            self._decisions[key] = decision
        return decision

    def check(
        self, namespace: str, action: Action, workspace: str | None, region: str, *, name_workspace: bool = True
    ) -> Allowed:
        """The decision, or AccessDenied: what the access door calls before every PAI call."""
        decision = self.decide(namespace, action, workspace, region, name_workspace=name_workspace)
        if not isinstance(decision, Allowed):
            raise AccessDenied(decision)
        return decision

    def for_secret(self, namespace: str, secret: tuple[str, ...]) -> Allowed:
        return core.for_secret(self.policies.values(), self.namespace(namespace), secret)

    def states(self) -> dict[str, PolicyState]:
        return core.policy_states(list(self.policies.values()), self.namespaces.values())

    def role_arns(self) -> set[str]:
        return {
            p.spec.identity.roleArn
            for p in self.policies.values()
            if p.spec.identity is not None and p.spec.identity.roleArn is not None
        }


def _parse(body: Mapping[str, Any]) -> Policy | None:
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    try:
        spec = PaiAccessPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        # The CRD's schema makes this unreachable short of a schema change; an unreadable policy grants nothing.
        log.warning("ignoring PaiAccessPolicy %s: invalid spec (%d errors)", name, exc.error_count())
        return None
    return Policy(name, spec, int(meta.get("generation") or 0))


def _namespace(body: Mapping[str, Any]) -> Namespace | None:
    meta = body.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return None
    return Namespace(str(name), dict(meta.get("labels") or {}))
