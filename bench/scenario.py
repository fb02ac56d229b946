"""The benchmark's population: N runs with scripted PAI timelines, and the exact times their status changes.

Timelines are absolute (each run gets an explicit createdAt), so the benchmark knows to the millisecond
when PAI "changed" a run without asking the emulator, and two emulators given the same runs agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

NAMESPACES = 10
WORKSPACES = 20
TERMINAL = frozenset({"Succeeded", "Failed", "Terminated", "Skipped"})

# Shares of the population, chosen to look like a busy cluster: most runs active for minutes to an hour.
FINISHED_SHARE = 0.15  # already finished when their resource is created
QUEUED_SHARE = 0.10  # Initialized at creation, start within 15 minutes
FAIL_SHARE = 0.15  # of the runs that end during the benchmark, this many fail
# Remaining life of a running run, uniform: mean 30 min, so ~10% of runs change in a 5-minute window.
REMAINING = (60.0, 3600.0)


@dataclass(frozen=True)
class BenchRun:
    index: int
    run_id: str
    namespace: str
    name: str
    workspace: str
    created_at: float  # epoch seconds, on the emulator's clock (wall time)
    phases: tuple[tuple[str, float | None, str | None], ...]
    # (epoch, new status) for every status change after creation, in order.
    transitions: tuple[tuple[float, str], ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def status_at(self, epoch: float) -> str:
        status = self.phases[0][0]
        for at, new in self.transitions:
            if at > epoch:
                break
            status = new
        return status

    def emulator_json(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "workspaceId": self.workspace,
            "name": self.name,
            "createdAt": self.created_at,
            "timeline": [list(p) for p in self.phases],
        }

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "paiflow-operator.dev/v1alpha1",
            "kind": "PaiPipelineRun",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {"bench": "paiflow"}},
            "spec": {"pipelineRunId": self.run_id, "workspaceId": self.workspace},
        }


def _with_transitions(run: BenchRun) -> BenchRun:
    at = run.created_at
    out: list[tuple[float, str]] = []
    for (_, duration, _msg), (next_status, _, _) in zip(run.phases, run.phases[1:], strict=False):
        assert duration is not None
        at += duration
        out.append((at, next_status))
    return BenchRun(**{**run.__dict__, "transitions": tuple(out)})


def population(n: int, now: float, seed: int = 5) -> list[BenchRun]:
    """N runs as of `now`. Same n and seed: same runs (ids, shapes, times relative to `now`)."""
    rng = random.Random(seed * 1_000_003 + n)
    runs: list[BenchRun] = []
    for i in range(n):
        namespace = f"bench-{i % NAMESPACES}"
        workspace = f"ws-{i % WORKSPACES:02d}"
        name = f"run-{i:05d}"
        run_id = f"flow-bench{n}x{i:06d}"
        roll = rng.random()
        phases: list[tuple[str, float | None, str | None]]
        if roll < FINISHED_SHARE:
            # Ended 1-60 minutes ago after 5-60 minutes of running.
            ran = rng.uniform(300, 3600)
            ended = rng.uniform(60, 3600)
            created = now - ended - ran - 5
            end = rng.choices(["Succeeded", "Failed", "Terminated"], weights=[70, 25, 5])[0]
            message = "Node 'train' exited with code 137 (OOMKilled)" if end == "Failed" else None
            phases = [("Initialized", 5.0, None), ("Running", ran, None), (end, None, message)]
        elif roll < FINISHED_SHARE + QUEUED_SHARE:
            created = now - rng.uniform(0, 60)
            queued = (now - created) + rng.uniform(30, 900)
            phases = [
                ("Initialized", queued, None),
                ("Running", rng.uniform(600, 3600), None),
                ("Succeeded", None, None),
            ]
        else:
            started = rng.uniform(60, 3600)
            created = now - started - 5
            remaining = rng.uniform(*REMAINING)
            failed = rng.random() < FAIL_SHARE
            end_phase = ("Failed", None, "Job failed: exit code 1") if failed else ("Succeeded", None, None)
            phases = [("Initialized", 5.0, None), ("Running", started + remaining, None), end_phase]
        run = BenchRun(i, run_id, namespace, name, workspace, created, tuple(phases))
        runs.append(_with_transitions(run))
    return runs


def changes_between(runs: list[BenchRun], start: float, end: float) -> list[tuple[BenchRun, float, str]]:
    """Every scripted status change with start <= time < end."""
    return [(run, at, status) for run in runs for at, status in run.transitions if start <= at < end]


def workspace_pairs(runs: list[BenchRun]) -> list[tuple[str, str]]:
    """(namespace, PAI workspace) pairs the population uses: one PaiWorkspace each."""
    return sorted({(run.namespace, run.workspace) for run in runs})
