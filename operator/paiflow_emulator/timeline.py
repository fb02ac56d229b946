"""Scripted run timelines, evaluated lazily: a run's state is a pure function of the time since creation.

No timers exist per run, so 10,000 idle runs cost only their memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TERMINAL = frozenset({"Succeeded", "Failed", "Terminated", "Skipped"})
RUNNING = "Running"

Step = tuple[str, float | None] | tuple[str, float | None, str | None]


@dataclass(frozen=True, slots=True)
class Phase:
    """``status`` held for ``duration`` seconds (``None``: for ever). ``message`` is PAI's Message field."""

    status: str
    duration: float | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "duration": self.duration, "message": self.message}


@dataclass(frozen=True, slots=True)
class RunState:
    """The run at one instant. Offsets are seconds since the run was created."""

    status: str
    message: str
    phase_index: int
    phase_started: float
    started: float | None
    finished: float | None


@dataclass(frozen=True, slots=True)
class Timeline:
    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a timeline needs at least one phase")
        for phase in self.phases[:-1]:
            if phase.duration is None:
                raise ValueError(f"only the last phase may last for ever, not {phase.status!r}")
        for phase in self.phases:
            if phase.duration is not None and phase.duration < 0:
                raise ValueError(f"negative duration for {phase.status!r}")

    @classmethod
    def of(cls, *steps: Step | Phase) -> Timeline:
        """``Timeline.of(("Initialized", 2), ("Running", 30), ("Failed", None, "OOM"))``."""
        return cls(tuple(_phase(step) for step in steps))

    # Shorthands for the shapes tests and the benchmark use most.
    @classmethod
    def succeeding(cls, *, queued: float = 2, running: float = 30) -> Timeline:
        return cls.of(("Initialized", queued), (RUNNING, running), ("Succeeded", None))

    @classmethod
    def failing(cls, message: str = "Job failed", *, queued: float = 2, running: float = 30) -> Timeline:
        return cls.of(("Initialized", queued), (RUNNING, running), ("Failed", None, message))

    @classmethod
    def running_forever(cls, *, queued: float = 0) -> Timeline:
        if queued:
            return cls.of(("Initialized", queued), (RUNNING, None))
        return cls.of((RUNNING, None))

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> Timeline:
        """Accepts ``[["Running", 30], ["Failed", null, "msg"]]`` or a list of ``{"status", "duration",
        "message"}`` objects."""
        steps: list[Phase] = []
        for item in data:
            if isinstance(item, dict):
                steps.append(Phase(str(item["status"]), _seconds(item.get("duration")), item.get("message")))
            elif isinstance(item, list | tuple) and 1 <= len(item) <= 3:
                message = item[2] if len(item) == 3 else None
                duration = _seconds(item[1]) if len(item) >= 2 else None
                steps.append(Phase(str(item[0]), duration, message))
            else:
                raise ValueError(f"bad timeline step: {item!r}")
        return cls(tuple(steps))

    def to_json(self) -> list[dict[str, Any]]:
        return [phase.to_json() for phase in self.phases]

    def state_at(self, elapsed: float) -> RunState:
        started: float | None = None
        at = 0.0
        index = 0
        last = len(self.phases) - 1
        for index, phase in enumerate(self.phases):
            if phase.status == RUNNING and started is None:
                started = at
            if index == last or phase.duration is None or elapsed < at + phase.duration:
                break
            at += phase.duration
        phase = self.phases[index]
        finished = at if phase.status in TERMINAL else None
        return RunState(
            status=phase.status,
            message=phase.message or "",
            phase_index=index,
            phase_started=at,
            started=started,
            finished=finished,
        )

    def cut(self, at: float) -> Timeline:
        """The history up to ``at`` seconds, the phase current at ``at`` ending there.

        Used to change a run's course mid-way (terminate it, resume it) without rewriting its past."""
        kept: list[Phase] = []
        start = 0.0
        for phase in self.phases:
            end = None if phase.duration is None else start + phase.duration
            if end is None or at < end:
                kept.append(Phase(phase.status, max(0.0, at - start), phase.message))
                break
            kept.append(phase)
            start = end
        else:
            # ``at`` lies past a last phase that had a duration: it kept holding since.
            last = kept[-1]
            kept[-1] = Phase(last.status, (last.duration or 0.0) + (at - start), last.message)
        return Timeline(tuple(kept))

    def then(self, *steps: Step | Phase) -> Timeline:
        return Timeline(self.phases + tuple(_phase(step) for step in steps))

    def extended(self, phases: Iterable[Phase]) -> Timeline:
        return Timeline(self.phases + tuple(phases))


def _phase(step: Step | Phase) -> Phase:
    if isinstance(step, Phase):
        return step
    if len(step) == 3:
        return Phase(step[0], step[1], step[2])
    return Phase(step[0], step[1])


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
