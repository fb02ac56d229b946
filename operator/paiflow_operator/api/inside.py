"""What a run holds inside, as its status shows it (issue 19; computed in runs/inside.py): the node summary, why
it failed and what it produced. Bounded: never the whole node tree."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from paiflow_operator.api.common import _Model

# What a run holds inside (issue 19; computed in runs/inside.py). Bounded: never the whole node tree.
MAX_STATUS_NODE_NAMES = 20
MAX_STATUS_FAILED_NODES = 10
MAX_STATUS_OUTPUTS = 20
MAX_LOG_TAIL_CHARS = 4096


class NodeRef(_Model):
    """One node of the run's tree, by name."""

    name: str = Field(max_length=253, description="The node's display name in PAI.")
    nodeId: str = Field(max_length=253)
    status: str | None = Field(default=None, max_length=64, description="PAI's node status.")
    startedAt: datetime | None = None
    finishedAt: datetime | None = None


class NodeCounts(_Model):
    """Leaf nodes by status."""

    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    running: int = Field(default=0, ge=0)
    waiting: int = Field(default=0, ge=0, description="Not started yet (ReadyToSchedule and the like).")
    skipped: int = Field(default=0, ge=0)
    other: int = Field(default=0, ge=0, description="Any other status (Unknown, Terminated, a new one).")


class NodesSummary(_Model):
    """A bounded summary of the run's leaf nodes: counts by status, and the failed and running ones by name."""

    total: int = Field(ge=0, description="Leaf nodes PAI lists for the run.")
    counts: NodeCounts | None = None
    failed: list[NodeRef] | None = Field(default=None, max_length=MAX_STATUS_NODE_NAMES)
    running: list[NodeRef] | None = Field(default=None, max_length=MAX_STATUS_NODE_NAMES)
    omitted: int | None = Field(default=None, ge=0, description="Failed or running nodes left unnamed (bound).")
    observedAt: datetime | None = Field(default=None, description="When the operator read the node tree.")
    final: bool | None = Field(default=None, description="Read after the run ended: no further reads.")


class RunFailure(_Model):
    """Why the run failed: its failed nodes, and the end of the first one's log."""

    node: str = Field(max_length=253, description="The first node to fail.")
    nodeId: str = Field(max_length=253)
    nodes: list[NodeRef] | None = Field(
        default=None, max_length=MAX_STATUS_FAILED_NODES, description="The failed nodes, the first to fail first."
    )
    omitted: int | None = Field(default=None, ge=0)
    logTail: str | None = Field(
        default=None,
        max_length=MAX_LOG_TAIL_CHARS,
        description="The last lines of the first failed node's log (at most 4 KiB, secrets and escapes removed).",
    )
    logTruncated: bool | None = Field(default=None, description="Older lines of the log were left out.")


class RunOutput(_Model):
    """An artifact the run produced."""

    name: str = Field(max_length=253)
    type: str = Field(max_length=32, description="Model, DataSet or Metrics.")
    node: str | None = Field(default=None, max_length=253, description="The node that produced it.")
    nodeId: str | None = Field(default=None, max_length=253)
    uri: str | None = Field(default=None, max_length=2048, description="Where it lives, from PAI's Info.")
    createdAt: datetime | None = None
