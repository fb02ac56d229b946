"""Emulated node trees of a run: node statuses that move with the run's timeline, their logs and outputs.

A run's nodes are a tree under its root node (``Run.node_id``, NodeType Dag). Each leaf (NodeType Pod) is
scripted relative to the moment the run first became Running: it waits ``start`` seconds, runs for
``duration`` seconds (``None``: until the run ends), then succeeds or, with ``fail``, fails. A Dag node's
status and times follow from its children. Like the run itself, everything is computed at read time from
the run's state, so a node tree costs no timers.

What PAI does not document and the emulator had to choose (see paiflow-api-more.md §3):

- Nodes that have not started yet are listed, with status ``ReadyToSchedule``; nodes that never started
  because the run ended first are ``Skipped``; a node cut short by a run that failed or was terminated is
  ``Failed`` (one that outlived a Succeeded run took its end).
- ``StatusInfo.Progress`` is "done/total" over the node's leaves, done being any ended leaf (Argo's count).
- ``Depth`` counts levels from the asked node: 1 is the node alone, 2 adds its children (PAI's default).
- ListPipelineRunNodeLogs of a Dag node answers no lines; log lines carry no timestamp prefix of their own.

Node JSON (control API and scenarios), in a run's ``"nodes"``: a list of the root's children, each
``{"name", "displayName"?, "start"?: s, "duration"?: s | null, "fail"?: bool, "logs"?: [text | [s, text]],
"outputs"?: [{"name", "type", "info"?}], "children"?: [...]}``; a node with children is a Dag. A line
``[s, text]`` is written ``s`` seconds after its node started (plain text lines: one a second).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .clock import iso_utc
from .timeline import RunState

POD = "Pod"
DAG = "Dag"
READY = "ReadyToSchedule"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"
ENDED = frozenset({SUCCEEDED, FAILED, SKIPPED})
OUTPUT_TYPES = ("Model", "DataSet", "Metrics", "ModelEvaluation")


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    type: str
    info: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Output:
        kind = str(data.get("type", "Model"))
        if kind not in OUTPUT_TYPES:
            raise ValueError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, not {kind!r}")
        info = data.get("info") or {}
        if not isinstance(info, dict):
            raise ValueError("output info must be an object")
        return cls(str(data["name"]), kind, info)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One scripted node. Offsets are seconds after the run first became Running."""

    name: str
    display_name: str = ""
    start: float = 0.0
    duration: float | None = None
    fail: bool = False
    logs: tuple[tuple[float, str], ...] = ()
    outputs: tuple[Output, ...] = ()
    children: tuple[NodeSpec, ...] = ()

    @property
    def is_dag(self) -> bool:
        return bool(self.children)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeSpec:
        lines: list[tuple[float, str]] = []
        for index, item in enumerate(data.get("logs") or []):
            if isinstance(item, str):
                lines.append((float(index), item))
            elif isinstance(item, list | tuple) and len(item) == 2:
                lines.append((float(item[0]), str(item[1])))
            else:
                raise ValueError(f"bad log line: {item!r}")
        duration = data.get("duration")
        spec = cls(
            name=str(data["name"]),
            display_name=str(data.get("displayName") or ""),
            start=float(data.get("start") or 0.0),
            duration=None if duration is None else float(duration),
            fail=bool(data.get("fail", False)),
            logs=tuple(sorted(lines, key=lambda line: line[0])),
            outputs=tuple(Output.from_json(o) for o in data.get("outputs") or []),
            children=tuple(cls.from_json(c) for c in data.get("children") or []),
        )
        if spec.start < 0 or (spec.duration is not None and spec.duration < 0):
            raise ValueError(f"node {spec.name!r}: negative start or duration")
        return spec


def specs_from_json(data: Sequence[Any]) -> tuple[NodeSpec, ...]:
    return tuple(NodeSpec.from_json(item) for item in data)


# A run scripted without nodes has one leaf, "main", that lasts as long as the run.
DEFAULT_NODES = (NodeSpec(name="main"),)


@dataclass(slots=True)
class NodeView:
    """A node at one instant: its id, status and times (epoch seconds), and its children."""

    node_id: str
    name: str
    display_name: str
    node_type: str
    status: str
    started: float | None
    finished: float | None
    spec: NodeSpec | None
    children: list[NodeView] = field(default_factory=list)

    def leaves(self) -> Iterator[NodeView]:
        if not self.children:
            yield self
            return
        for child in self.children:
            yield from child.leaves()

    def walk(self, depth: int) -> Iterator[NodeView]:
        """This node and its descendants down to ``depth`` levels (1: this node alone)."""
        yield self
        if depth > 1:
            for child in self.children:
                yield from child.walk(depth - 1)

    def find(self, node_id: str) -> NodeView | None:
        if self.node_id == node_id:
            return self
        for child in self.children:
            found = child.find(node_id)
            if found is not None:
                return found
        return None

    @property
    def progress(self) -> str:
        leaves = list(self.leaves())
        return f"{sum(1 for leaf in leaves if leaf.status in ENDED)}/{len(leaves)}"


def node_id_for(run_id: str, path: str) -> str:
    """Stable, PAI-shaped ids: ``node-`` and 16 hex digits of the run id and the node's path."""
    return "node-" + hashlib.sha256(f"{run_id}/{path}".encode()).hexdigest()[:16]


def build_tree(
    *,
    run_id: str,
    root_id: str,
    root_name: str,
    specs: Sequence[NodeSpec],
    created_at: float,
    state: RunState,
    run_status: str,
    now: float,
) -> NodeView:
    """The run's node tree at ``now``, from its scripted nodes and the run's current state."""
    started = None if state.started is None else created_at + state.started
    run_end = None if state.finished is None else created_at + state.finished
    children = [_view(spec, run_id, spec.name, started, run_end, run_status, now) for spec in (specs or DEFAULT_NODES)]
    root = _dag(root_id, root_name, root_name, None, children)
    return root


def _view(
    spec: NodeSpec,
    run_id: str,
    path: str,
    run_started: float | None,
    run_end: float | None,
    run_status: str,
    now: float,
) -> NodeView:
    node_id = node_id_for(run_id, path)
    if spec.is_dag:
        kids = [
            _view(child, run_id, f"{path}/{child.name}", run_started, run_end, run_status, now)
            for child in spec.children
        ]
        return _dag(node_id, spec.name, spec.display_name or spec.name, spec, kids)
    status, begun, ended = _leaf_state(spec, run_started, run_end, run_status, now)
    return NodeView(node_id, spec.name, spec.display_name or spec.name, POD, status, begun, ended, spec)


def _leaf_state(
    spec: NodeSpec, run_started: float | None, run_end: float | None, run_status: str, now: float
) -> tuple[str, float | None, float | None]:
    if run_started is None:
        # The run never ran: its nodes wait, or were skipped with it.
        return (SKIPPED if run_end is not None else READY), None, None
    begin = run_started + spec.start
    end = None if spec.duration is None else begin + spec.duration
    if run_end is not None and begin >= run_end:
        return SKIPPED, None, None
    if now < begin:
        return READY, None, None
    if end is not None and end <= now and (run_end is None or end <= run_end):
        return (FAILED if spec.fail else SUCCEEDED), begin, end
    if run_end is not None and run_end <= now:
        # The run ended while this node still ran: it ends with it.
        return (SUCCEEDED if run_status == SUCCEEDED and not spec.fail else FAILED), begin, run_end
    return RUNNING, begin, None


def _dag(node_id: str, name: str, display: str, spec: NodeSpec | None, children: list[NodeView]) -> NodeView:
    statuses = [child.status for child in children]
    if any(s == RUNNING for s in statuses):
        status = RUNNING
    elif statuses and all(s in ENDED for s in statuses):
        if any(s == FAILED for s in statuses):
            status = FAILED
        elif all(s == SKIPPED for s in statuses):
            status = SKIPPED
        else:
            status = SUCCEEDED
    elif any(s in ENDED for s in statuses):
        status = RUNNING  # some children ended, others wait for their turn
    else:
        status = READY
    starts = [c.started for c in children if c.started is not None]
    ends = [c.finished for c in children if c.finished is not None]
    finished = max(ends) if status in ENDED and ends else None
    return NodeView(node_id, name, display, DAG, status, min(starts) if starts else None, finished, spec, children)


# ---------------------------------------------------------------------------------------------- wire shapes


def node_body(node: NodeView, depth: int) -> dict[str, Any]:
    """GetPipelineRunNode's answer for ``node`` (without RequestId), children down to ``depth`` levels."""
    spec: dict[str, Any] = {"HasPipelines": node.node_type == DAG, "Dependencies": []}
    if depth > 1 and node.children:
        spec["Pipelines"] = [node_body(child, depth - 1) for child in node.children]
    return {
        "ApiVersion": "core/v1",
        "Metadata": {
            "NodeId": node.node_id,
            "Name": node.name,
            "DisplayName": node.display_name,
            "NodeType": node.node_type,
            "Provider": "pai",
            "Version": "v1",
            "Identifier": node.name,
            "RelatedNodeIds": [],
        },
        "Spec": spec,
        "StatusInfo": _status_info(node),
    }


def _status_info(node: NodeView) -> dict[str, Any]:
    info: dict[str, Any] = {"Status": node.status, "Progress": node.progress, "Conditions": []}
    if node.started is not None:
        info["StartedAt"] = iso_utc(node.started)
    if node.finished is not None:
        info["FinishedAt"] = iso_utc(node.finished)
    return info


def status_rows(node: NodeView, depth: int) -> list[dict[str, Any]]:
    """ListPipelineRunNodeStatus' Status[]: ``node`` and its descendants down to ``depth`` levels."""
    rows: list[dict[str, Any]] = []
    for each in node.walk(depth):
        row: dict[str, Any] = {
            "NodeId": each.node_id,
            "NodeName": each.name,
            "Status": each.status,
            "RuntimeInfo": "{}",
        }
        if each.started is not None:
            row["StartedAt"] = iso_utc(each.started)
        if each.finished is not None:
            row["FinishedAt"] = iso_utc(each.finished)
        rows.append(row)
    return rows


def log_lines(node: NodeView, now: float) -> list[tuple[float, str]]:
    """The (epoch time, text) lines ``node`` has written by ``now``; a line never outlives its node's end."""
    if node.spec is None or node.node_type == DAG or node.started is None:
        return []
    end = node.finished
    lines = []
    for offset, text in node.spec.logs:
        at = node.started + offset
        if end is not None:
            at = min(at, end)
        if at <= now:
            lines.append((at, text))
    return lines


def outputs(node: NodeView, depth: int) -> list[dict[str, Any]]:
    """The outputs of ``node`` and its descendants down to ``depth`` levels, once their producer succeeded."""
    rows: list[dict[str, Any]] = []
    for each in node.walk(depth):
        if each.spec is None or each.status != SUCCEEDED or each.node_type == DAG:
            continue
        for index, out in enumerate(each.spec.outputs):
            rows.append(
                {
                    "Id": f"artifact-{each.node_id.removeprefix('node-')}-{index}",
                    "Name": out.name,
                    "Type": out.type,
                    "NodeId": each.node_id,
                    "Producer": each.name,
                    "GmtCreateTime": iso_utc(each.finished or 0.0),
                    "Info": dict(out.info),
                    "ExpandedArtifactIndex": "",
                    "ExpandableArtifactName": "",
                }
            )
    return rows
