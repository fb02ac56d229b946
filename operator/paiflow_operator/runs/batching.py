"""What is batched together (pure): which runs one ListPipelineRunsStatus answers, and their shared beat.

Runs of one workspace, region and set of keys that fall due together are answered by one status query; a run
that needs its own GetPipelineRun (suspended, read with a share token, never read yet, a spec not yet synced)
goes alone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any, TypeVar

from paiflow_operator.api.runs import PaiPipelineRunSpec

T = TypeVar("T")
# (region, PAI workspace id, which keys sign: None for the operator's own, else (namespace, Secret ref fields))
BatchKey = tuple[str, str, tuple[str, str, str, str, str] | None]


def batch_key(
    spec: PaiPipelineRunSpec,
    generation: int,
    status: Mapping[str, Any],
    region: str,
    identity: tuple[str, str, str, str, str] | None,
    *,
    enabled: bool = True,
) -> BatchKey | None:
    """Runs that one ListPipelineRunsStatus may answer together, or None to poll alone."""
    workspace = spec.workspaceId or status.get("workspaceId")
    if (
        not enabled
        or spec.suspend
        or spec.tokenSecretRef is not None
        or not workspace
        or status.get("runStatus") is None
        or generation != status.get("observedGeneration")
    ):
        return None
    return (region, workspace, identity)


def chunks(members: list[T], size: int) -> list[list[T]]:
    """A batch split into status queries of at most ``size`` runs."""
    return [members[start : start + size] for start in range(0, len(members), size)]


def next_beat(batch: tuple[Any, ...], interval: float, now: float) -> float:
    """The next tick of this batch's own beat, between half and one and a half intervals from now.

    Runs that one ListPipelineRunsStatus answers share a beat, so they fall due at the same moment and
    take one call per interval between them; each batch's beat has its own phase (a hash of its key), so
    batches spread over the interval instead of polling together.
    """
    phase = zlib.crc32(repr((batch, interval)).encode()) % 100_003 / 100_003 * interval
    beats = math.ceil((now + interval / 2 - phase) / interval)
    return phase + beats * interval


def detail_due(last_detail: float | None, now: float, refresh: float) -> bool:
    """A batched answer carries the status only: message and duration are read again every ``refresh`` s."""
    return last_detail is None or now - last_detail >= refresh
