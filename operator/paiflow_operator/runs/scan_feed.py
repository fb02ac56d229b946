"""Rows from workspace scans into tracked runs: which scans run here, what they answer for, and their rows.

One ListPipelineRuns scan per workspace (workspaces/scanner.py) answers for every run of it that this replica
tracks, hand-written or imported, with the credentials the run itself would use; the batched status poll
remains as a slow safety net in case PAI does not move GmtModifiedTime on a change.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from paiflow_operator.access.policy import Allowed
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.pai_access import Action, IdentityKey, PaiAccess, identity_key
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.reconcile import is_finished
from paiflow_operator.runs.registry import Registry
from paiflow_operator.runs.tracked import Tracked, caller
from paiflow_operator.settings import Settings

# (region, PAI workspace id, whose: (namespace, Secret ref fields or "") - a scan serves one namespace)
ScanKey = tuple[str, str, IdentityKey]


class Scans:
    """The scans running on this replica (scan key -> interval in seconds), and what they mean for a run's polls."""

    def __init__(self, settings: Settings, access: PaiAccess) -> None:
        self.settings = settings
        self.access = access
        self.intervals: dict[ScanKey, float] = {}

    def scan_key(self, tracked: Tracked) -> ScanKey | None:
        spec = tracked.spec
        workspace = spec.workspaceId or tracked.status.get("workspaceId")
        if not workspace:
            return None
        return (
            self.access.region(spec.regionId),
            workspace,
            identity_key(tracked.namespace, spec.credentialsSecretRef),
        )

    def safety_net(self, tracked: Tracked) -> float | None:
        """The slow poll interval of a run a live workspace scan answers for, else None."""
        if tracked.scan_seen is None:
            return None
        key = self.scan_key(tracked)
        if key is None or key not in self.intervals:
            return None
        return max(self.settings.workspace_safety_net_interval.total_seconds(), self.intervals[key])

    def first_sync_wait(self, tracked: Tracked) -> float:
        """A new run a workspace scan can answer for waits for that scan (about one interval) before its own
        GetPipelineRun: a first sync of thousands of runs then costs a few list pages, not a call per run."""
        if tracked.status.get("runStatus") is not None or tracked.spec.verbose or tracked.spec.tokenSecretRef:
            return 0.0
        key = self.scan_key(tracked)
        interval = self.intervals.get(key) if key is not None else None
        return 0.0 if interval is None else interval * 1.5


class ScanFeed:
    """The runs' entry for the workspace scanner: scans begin and end, rows arrive, imported runs appear."""

    def __init__(
        self,
        settings: Settings,
        scans: Scans,
        registry: Registry,
        due: DueQueue,
        take_row: Callable[[Tracked, PipelineRun], None],
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.scans = scans
        self.registry = registry
        self.due = due
        self.take_row = take_row
        self.clock = clock
        self.rng = rng

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """A run the scanner just created: tracked at once, before the watch brings it."""
        self.registry.observe(body, event_type)

    def begin_scan(self, key: ScanKey, interval: float) -> None:
        intervals = self.scans.intervals
        if key in intervals:
            intervals[key] = interval
            return
        intervals[key] = interval
        # Runs seen before their workspace (kopf lists both kinds at once) wait for the scan as later ones do.
        now = self.clock()
        for tracked in list(self.registry.runs.values()):
            if tracked.due is not None and not tracked.busy and self.scans.scan_key(tracked) == key:
                wait = self.scans.first_sync_wait(tracked)
                if wait and tracked.due < now + wait:
                    self.due.schedule(tracked, now + wait)

    def end_scan(self, key: ScanKey) -> None:
        """The scan stopped (workspace deleted, suspended, handed over): its runs go back to their own polls."""
        if self.scans.intervals.pop(key, None) is None:
            return
        for tracked in list(self.registry.runs.values()):
            if tracked.scan_seen is not None and self.scans.scan_key(tracked) == key:
                tracked.scan_seen = None
                if tracked.due is not None and not tracked.busy:
                    window = self.settings.batch_window.total_seconds()
                    self.due.schedule(tracked, self.clock() + self.rng.uniform(0, window))

    def unsynced(self, key: ScanKey) -> int:
        """Runs of this scan key never read from PAI yet: the scan then reads the whole import window."""
        return sum(
            1
            for t in self.registry.runs.values()
            # Never answered at all (an error writes conditions): a run PAI does not know stops counting.
            if t.status.get("runStatus") is None and not t.status.get("conditions") and self.scans.scan_key(t) == key
        )

    def apply_rows(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> int:
        """Feeds one scan's rows (run id -> ListPipelineRuns row) to the runs of that scan key, through the same
        reconcile as a poll. Returns how many runs were handed a row."""
        by_run: dict[str, list[Tracked]] = defaultdict(list)
        for tracked in self.registry.runs.values():
            if tracked.run_id in rows:
                by_run[tracked.run_id].append(tracked)
        fed = 0
        now = self.clock()
        # One decision per namespace and Secret within one scan: a policy names neither runs nor run ids.
        decisions: dict[tuple[str, IdentityKey], bool] = {}
        for run_id, members in by_run.items():
            row = rows[run_id]
            for tracked in members:
                spec = tracked.spec
                if spec.suspend or spec.tokenSecretRef is not None or self.scans.scan_key(tracked) != key:
                    continue
                decision_key = (tracked.namespace, identity_key(tracked.namespace, spec.credentialsSecretRef))
                allowed = decisions.get(decision_key)
                if allowed is None:
                    who = caller(tracked, Action.FOLLOW, key[0])
                    allowed = decisions[decision_key] = isinstance(self.scans.access.decide(who, key[1]), Allowed)
                if not allowed:
                    continue  # the scan may import, this run may not be followed: its own poll shows why
                if tracked.busy:
                    # A poll or a write is in flight. Dropping a row that says something else would leave the
                    # change to the safety net: this scan's cut-off moves past it, and the next scan never reads
                    # it again. Look again as soon as the run is free (a rare, batched call). A row saying what
                    # the write in flight writes is no news (a burst's writes wait their turn while the next scan
                    # reads the same rows again): looking again would cost a GetPipelineRun each.
                    shown = tracked.writing or tracked.status.get("runStatus")
                    if (row.raw_status or row.status.value) != shown:
                        tracked.rerun = True
                    continue
                tracked.scan_seen = now
                if is_finished(tracked.status, tracked.generation):
                    continue  # a finished run costs nothing
                if spec.verbose:
                    # Manifest, Arguments and Options come from GetPipelineRun only: a change fetches them now.
                    if (row.raw_status or row.status.value) != tracked.status.get("runStatus"):
                        self.due.schedule(tracked, now)
                    continue
                tracked.busy = True
                self.due.void(tracked)
                tracked.last_detail = now  # a row carries everything a non-verbose GetPipelineRun does
                fed += 1
                self.take_row(tracked, row)
        return fed
