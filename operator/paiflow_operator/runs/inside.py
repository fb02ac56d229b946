"""Pure: a run's insides from PAI's node answers -> status.progress, status.nodes, status.failure, status.outputs.

How progress is counted (PAI documents ``StatusInfo.Progress`` only as "the running progress of the node",
example ``"9/9"``): as Argo counts it, over the *leaves* of the node tree (Pod nodes; Dag nodes only group),
``done`` being the leaves that ended whatever their end (Succeeded, Failed, Skipped, Terminated) and
``total`` all leaves PAI lists. The tree comes from one GetPipelineRunNode of the run's root node with a
Depth deep enough for the nesting; a Dag returned without its children (below that Depth) counts with its own
``Progress`` when it reads as ``done/total``, else as one leaf. Only when the root has no children at all is
the root's own ``Progress`` taken as it reads.

No I/O here: the operator asks PAI, these functions say what to write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paiflow_operator.conditions import timestamp
from paiflow_operator.pai.models import NodeOutput, PipelineRunNode, RunStatus
from paiflow_operator.runs.reconcile import truncate_utf8

# Bounds of what goes into a resource's status (Tekton cut embedded child statuses because they bloated etcd).
MAX_NODE_NAMES = 20  # running + failed nodes named in status.nodes
MAX_FAILED_NODES = 10  # in status.failure.nodes
MAX_LOG_TAIL_BYTES = 4 * 1024
MAX_OUTPUTS = 20
MAX_NAME_BYTES = 253
MAX_URI_BYTES = 2048
OUTPUT_TYPES = ("Model", "DataSet", "Metrics")
# Lines of log fetched to make the tail: enough for 4 KiB of typical lines, one page.
LOG_TAIL_LINES = 100

_COUNTED = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.RUNNING: "running",
    RunStatus.SKIPPED: "skipped",
    RunStatus.READY_TO_SCHEDULE: "waiting",
    RunStatus.INITIALIZED: "waiting",
    RunStatus.STARTING: "waiting",
    RunStatus.WORKFLOW_SERVICE_STARTING: "waiting",
}
_ENDED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.TERMINATED})
_PROGRESS = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{1,9})\s*$")
# Info keys that say where an output lives, in order of preference (PAI does not document Info's keys).
_LOCATION_KEYS = ("uri", "Uri", "URI", "location", "Location", "path", "Path", "ossPath", "OssPath", "url", "Url")


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int

    def __str__(self) -> str:
        return f"{self.done}/{self.total}"


@dataclass(frozen=True, slots=True)
class Leaf:
    """A node that does work (or a Dag standing for the leaves PAI did not return), as progress counts it."""

    node: PipelineRunNode
    done: int
    total: int


def parse_progress(text: str | None) -> Progress | None:
    match = _PROGRESS.match(text or "")
    if match is None:
        return None
    done, total = int(match.group(1)), int(match.group(2))
    return Progress(done, total) if done <= total else None


def _ended(node: PipelineRunNode) -> bool:
    return node.status_info.status in _ENDED


def leaves(root: PipelineRunNode) -> Iterator[Leaf]:
    """The tree's leaves in tree order, without recursion (trees are bounded, but deep ones exist)."""
    stack = list(reversed(root.children))
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(reversed(node.children))
            continue
        own = parse_progress(node.status_info.progress) if node.is_dag else None
        if own is not None:
            yield Leaf(node, own.done, own.total)
        else:
            yield Leaf(node, int(_ended(node)), 1)


def all_nodes(root: PipelineRunNode) -> Iterator[PipelineRunNode]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def progress(root: PipelineRunNode) -> Progress | None:
    if not root.children:
        return parse_progress(root.status_info.progress)
    done = total = 0
    for leaf in leaves(root):
        done += leaf.done
        total += leaf.total
    return Progress(done, total)


def _name(node: PipelineRunNode) -> str:
    text = node.display_name or node.name or node.node_id
    return scrub(text, MAX_NAME_BYTES)


def _ref(node: PipelineRunNode) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "name": _name(node),
        "nodeId": scrub(node.node_id, MAX_NAME_BYTES),
        "status": node.status_info.raw_status[:64] or node.status_info.status.value,
    }
    started, finished = timestamp(node.status_info.started_at), timestamp(node.status_info.finished_at)
    if started:
        ref["startedAt"] = started
    if finished:
        ref["finishedAt"] = finished
    return ref


def nodes_summary(root: PipelineRunNode, now: datetime) -> dict[str, Any]:
    """status.progress and status.nodes: counts of leaves by status, and the failed then running ones by name
    (at most MAX_NODE_NAMES; ``omitted`` says how many more)."""
    counts = dict.fromkeys(("succeeded", "failed", "running", "waiting", "skipped", "other"), 0)
    running: list[PipelineRunNode] = []
    failed: list[PipelineRunNode] = []
    for leaf in leaves(root):
        status = leaf.node.status_info.status
        counts[_COUNTED.get(status, "other")] += 1
        if status is RunStatus.FAILED:
            failed.append(leaf.node)
        elif status is RunStatus.RUNNING:
            running.append(leaf.node)
    named_failed = failed[:MAX_NODE_NAMES]
    named_running = running[: MAX_NODE_NAMES - len(named_failed)]
    got = progress(root)
    summary: dict[str, Any] = {
        "total": sum(counts.values()),
        "counts": counts,
        "failed": [_ref(n) for n in named_failed],
        "running": [_ref(n) for n in named_running],
        "omitted": len(failed) + len(running) - len(named_failed) - len(named_running),
        "observedAt": timestamp(now),
    }
    return {"progress": str(got) if got is not None else None, "nodes": summary}


def failed_nodes(root: PipelineRunNode) -> list[PipelineRunNode]:
    """Failed leaves, the first to fail first (the likeliest cause; later ones often failed because of it)."""
    failed = [leaf.node for leaf in leaves(root) if leaf.node.status_info.status is RunStatus.FAILED]
    order = {id(node): index for index, node in enumerate(failed)}

    def key(node: PipelineRunNode) -> tuple[bool, float, int]:
        at = node.status_info.finished_at
        return (at is None, at.timestamp() if at else 0.0, order[id(node)])

    return sorted(failed, key=key)


def failure(
    root: PipelineRunNode, log_lines: Sequence[str] | None, *, secrets: Sequence[str] = ()
) -> dict[str, Any] | None:
    """status.failure: the failed nodes and the tail of the first one's log (oldest line first, at most
    MAX_LOG_TAIL_BYTES, cut at a line start), or None when no node failed. ``log_lines`` None: not read."""
    failed = failed_nodes(root)
    if not failed:
        return None
    first = failed[0]
    result: dict[str, Any] = {
        "node": _name(first),
        "nodeId": scrub(first.node_id, MAX_NAME_BYTES),
        "nodes": [_ref(n) for n in failed[:MAX_FAILED_NODES]],
    }
    if len(failed) > MAX_FAILED_NODES:
        result["omitted"] = len(failed) - MAX_FAILED_NODES
    if log_lines is not None:
        tail, cut = log_tail(log_lines, secrets=secrets)
        result["logTail"] = tail
        result["logTruncated"] = cut
    return result


def log_tail(lines: Sequence[str], *, secrets: Sequence[str] = (), limit: int = MAX_LOG_TAIL_BYTES) -> tuple[str, bool]:
    """The last lines that fit in ``limit`` bytes, scrubbed, oldest first; True when older lines were left out."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        clean = scrub(line, limit, secrets=secrets)
        cost = len(clean.encode("utf-8")) + 1
        if size + cost > limit:
            return "\n".join(reversed(kept)), True
        kept.append(clean)
        size += cost
    return "\n".join(reversed(kept)), False


def failure_event(failed: Mapping[str, Any]) -> str:
    """The NodeFailed Event's message: which node failed, and its last log line."""
    text = f"node {failed.get('node')!r} ({failed.get('nodeId')}) failed"
    tail = str(failed.get("logTail") or "").rstrip()
    if tail:
        text += ": " + tail.rsplit("\n", 1)[-1][:512]
    return text


def outputs(rows: Sequence[NodeOutput], total_count: int, names: Mapping[str, str]) -> dict[str, Any]:
    """status.outputs: Model, DataSet and Metrics outputs (at most MAX_OUTPUTS), each with where it lives.
    ``names``: node id -> node name, for outputs whose Producer PAI left empty."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        if row.type not in OUTPUT_TYPES or len(kept) >= MAX_OUTPUTS:
            continue
        item: dict[str, Any] = {"name": scrub(row.name or row.id or "", MAX_NAME_BYTES), "type": row.type}
        if row.node_id:
            item["nodeId"] = scrub(row.node_id, MAX_NAME_BYTES)
        node = row.producer or names.get(row.node_id or "")
        if node:
            item["node"] = scrub(node, MAX_NAME_BYTES)
        uri = location(row.info)
        if uri:
            item["uri"] = scrub(uri, MAX_URI_BYTES)
        if row.gmt_create_time is not None:
            item["createdAt"] = timestamp(row.gmt_create_time)
        kept.append(item)
    omitted = max(0, total_count, len(rows)) - len(kept)
    return {"outputs": kept, "outputsOmitted": omitted or None}


def location(info: Mapping[str, Any] | None) -> str | None:
    """Where an output lives, from PAI's undocumented Info: a known key, else the first value that is a URI."""
    if not info:
        return None
    for key in _LOCATION_KEYS:
        value = info.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    for value in _strings(info):
        if "://" in value:
            return value.strip()
    return None


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 4:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


# --------------------------------------------------------------------------------------------- scrubbing
# Log lines and names are the user's pipeline's own text: before they go into a status or an Event, terminal
# escapes and control characters go, anything shaped like a credential goes, and every known secret of the
# run (its share token, its keys) goes, raw or JSON-escaped; then the text is cut to its bound.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CREDENTIAL_SHAPES = re.compile(
    r"(?i)\b(LTAI[A-Za-z0-9]{8,})"  # Alibaba Cloud AccessKey ids
    r"|((?:access[_-]?key[_-]?secret|secret|password|token|security[_-]?token)[\"']?\s*[=:]\s*)([\"']?)"
    r"[^\s\"',;]{6,}"
)


def scrub(text: str, limit: int, *, secrets: Sequence[str] = ()) -> str:
    text = _ANSI.sub("", text)
    text = _CONTROL.sub("", text).replace("\t", " ")
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        for form in {secret, json.dumps(secret)[1:-1]}:
            text = text.replace(form, "<redacted>")
    text = _CREDENTIAL_SHAPES.sub(_mask, text)
    return truncate_utf8(text, limit)[0]


def _mask(match: re.Match[str]) -> str:
    if match.group(1):
        return "<redacted>"
    return f"{match.group(2)}{match.group(3)}<redacted>"
