"""Call counters: per action, per run id, per outcome ("ok" or the error code). Plain dicts under a lock."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
HANG = "Hang"
MALFORMED = "MalformedResponse"


@dataclass(frozen=True, slots=True)
class Snapshot:
    total: int
    actions: dict[str, int]
    outcomes: dict[str, int]
    runs: dict[str, int]
    by_action: dict[str, dict[str, int]] = field(default_factory=dict)
    # Answered PAI calls by the RAM role whose temporary keys signed them ("" for keys that are no role's).
    by_role: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "actions": self.actions,
            "outcomes": self.outcomes,
            "runs": self.runs,
            "byAction": self.by_action,
            "byRole": self.by_role,
        }


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._actions: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._runs: Counter[str] = Counter()
        self._run_actions: Counter[tuple[str, str]] = Counter()
        self._by_action: dict[str, Counter[str]] = {}
        self._by_role: dict[str, Counter[str]] = {}
        self._workspaces: Counter[str] = Counter()  # calls that reached a workspace, any outcome
        # PAI calls by the wall-clock second they arrived in: proves a client's rate limit on the wire.
        self._per_second: Counter[int] = Counter()
        # Answered calls per run by the access key that signed them (which replica polled which run), and the
        # longest wait between two answered calls for a run (monotonic seconds).
        self._by_caller: dict[str, Counter[str]] = {}
        self._last_ok: dict[str, float] = {}
        self._max_gap: dict[str, float] = {}

    def arrived(self, now: float | None = None) -> None:
        with self._lock:
            self._per_second[int(time.time() if now is None else now)] += 1

    def per_second(self) -> dict[int, int]:
        with self._lock:
            return dict(self._per_second)

    def record(
        self,
        action: str,
        outcome: str,
        run_ids: Iterable[str] = (),
        caller: str = "",
        role: str = "",
        workspace: str = "",
    ) -> None:
        now = time.monotonic()
        with self._lock:
            if workspace:
                self._workspaces[workspace] += 1
            if outcome == OK:
                self._by_role.setdefault(role, Counter())[action] += 1
            self._total += 1
            self._actions[action] += 1
            self._outcomes[outcome] += 1
            self._by_action.setdefault(action, Counter())[outcome] += 1
            callers = self._by_caller.setdefault(caller, Counter()) if outcome == OK else None
            for run_id in run_ids:
                self._runs[run_id] += 1
                self._run_actions[(action, run_id)] += 1
                if callers is not None:
                    callers[run_id] += 1
                    last = self._last_ok.get(run_id)
                    if last is not None:
                        self._max_gap[run_id] = max(self._max_gap.get(run_id, 0.0), now - last)
                    self._last_ok[run_id] = now

    def calls_in(self, workspace: str) -> int:
        """Calls of any action and outcome that named or reached this PAI workspace, since the last reset."""
        with self._lock:
            return self._workspaces[workspace]

    def by_caller(self) -> dict[str, dict[str, int]]:
        """Answered calls per run by access key id, since the last reset."""
        with self._lock:
            return {caller: dict(runs) for caller, runs in self._by_caller.items()}

    def gaps(self, now: float | None = None) -> dict[str, float]:
        """Per run seen since the last reset: the longest time without an answered call, up to `now`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {run: max(self._max_gap.get(run, 0.0), now - last) for run, last in self._last_ok.items()}

    def snapshot(self, *, include_runs: bool = True) -> Snapshot:
        with self._lock:
            return Snapshot(
                total=self._total,
                actions=dict(self._actions),
                outcomes=dict(self._outcomes),
                runs=dict(self._runs) if include_runs else {},
                by_action={a: dict(c) for a, c in self._by_action.items()},
                by_role={r: dict(c) for r, c in self._by_role.items()},
            )

    def calls_for(self, run_id: str, action: str | None = None) -> int:
        """Calls that named this run (all actions, or only ``action``)."""
        with self._lock:
            return self._runs[run_id] if action is None else self._run_actions[(action, run_id)]

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._actions.clear()
            self._outcomes.clear()
            self._runs.clear()
            self._run_actions.clear()
            self._by_action.clear()
            self._by_role.clear()
            self._workspaces.clear()
            self._per_second.clear()
            self._by_caller.clear()
            self._last_ok.clear()
            self._max_gap.clear()
