"""runs/inside.py: PAI's node answers -> status.progress, nodes, failure, outputs (table tests, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from paiflow_operator.api.runs import PaiPipelineRunStatus
from paiflow_operator.pai.models import NodeOutput, NodeOutputList, PipelineRunNode
from paiflow_operator.runs import inside

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def pod(name: str, status: str, finished: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"Status": status}
    if finished:
        info["FinishedAt"] = finished
    return {"Metadata": {"NodeId": f"node-{name}", "Name": name, "NodeType": "Pod"}, "StatusInfo": info}


def dag(name: str, *children: dict[str, Any], progress: str | None = None, status: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {"HasPipelines": True}
    if children:
        spec["Pipelines"] = list(children)
    info: dict[str, Any] = {"Status": status}
    if progress:
        info["Progress"] = progress
    return {"Metadata": {"NodeId": f"node-{name}", "Name": name, "NodeType": "Dag"}, "Spec": spec, "StatusInfo": info}


def tree(body: dict[str, Any]) -> PipelineRunNode:
    return PipelineRunNode.from_wire(body)


PROGRESS_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("flat", dag("r", pod("a", "Succeeded"), pod("b", "Running"), pod("c", "ReadyToSchedule")), "1/3"),
    ("every end counts", dag("r", pod("a", "Succeeded"), pod("b", "Failed"), pod("c", "Skipped")), "3/3"),
    (
        "nested dags count their leaves, not themselves",
        dag("r", pod("a", "Succeeded"), dag("d", pod("x", "Succeeded"), dag("e", pod("y", "Running")))),
        "2/3",
    ),
    (
        "a dag cut by Depth counts with its own Progress",
        dag("r", pod("a", "Succeeded"), dag("d", progress="4/9")),
        "5/10",
    ),
    (
        "a dag cut by Depth without Progress is one leaf",
        dag("r", pod("a", "Running"), dag("d", status="Succeeded")),
        "1/2",
    ),
    ("unreadable Progress: one leaf", dag("r", dag("d", progress="most", status="Running")), "0/1"),
    ("no children: the root's own Progress", dag("r", progress="9/9"), "9/9"),
    ("no children and no Progress: none", dag("r"), None),
    ("Progress with done > total is unreadable", dag("r", progress="5/3"), None),
    ("unknown statuses are not done", dag("r", pod("a", "Bogus"), pod("b", "Unknown")), "0/2"),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in PROGRESS_CASES], ids=[c[0] for c in PROGRESS_CASES])
def test_progress(body: dict[str, Any], expected: str | None) -> None:
    got = inside.progress(tree(body))
    assert (str(got) if got else None) == expected


def test_summary_counts_and_names_failed_then_running_within_the_bound() -> None:
    running = [pod(f"r{i}", "Running") for i in range(30)]
    body = dag("root", pod("ok", "Succeeded"), pod("bad", "Failed"), pod("w", "ReadyToSchedule"), *running)
    patch = inside.nodes_summary(tree(body), NOW)
    assert patch["progress"] == "2/33"
    nodes = patch["nodes"]
    assert nodes["total"] == 33
    assert nodes["counts"] == {"succeeded": 1, "failed": 1, "running": 30, "waiting": 1, "skipped": 0, "other": 0}
    assert [n["name"] for n in nodes["failed"]] == ["bad"]
    assert len(nodes["running"]) == inside.MAX_NODE_NAMES - 1
    assert nodes["omitted"] == 31 - inside.MAX_NODE_NAMES
    assert nodes["observedAt"] == "2026-01-02T03:04:05Z"
    # What the core writes, the CRD's model takes (bounds included).
    PaiPipelineRunStatus.model_validate({"progress": patch["progress"], "nodes": nodes})


def test_failure_names_the_first_node_to_fail_and_keeps_the_log_tail() -> None:
    body = dag(
        "root",
        pod("later", "Failed", "2026-01-02T03:00:09Z"),
        dag("d", pod("first", "Failed", "2026-01-02T03:00:01Z")),
        pod("ok", "Succeeded"),
    )
    got = inside.failure(tree(body), ["epoch 1", "CUDA error: out of memory"])
    assert got is not None
    assert (got["node"], got["nodeId"]) == ("first", "node-first")
    assert [n["name"] for n in got["nodes"]] == ["first", "later"]
    assert (got["logTail"], got["logTruncated"]) == ("epoch 1\nCUDA error: out of memory", False)
    assert inside.failure_event(got) == "node 'first' (node-first) failed: CUDA error: out of memory"
    assert inside.failure(tree(dag("r", pod("a", "Succeeded"))), []) is None
    unread = inside.failure(tree(body), None)
    assert unread is not None and "logTail" not in unread
    PaiPipelineRunStatus.model_validate({"failure": got})


def test_log_tail_is_bounded_at_line_starts_and_keeps_the_newest() -> None:
    lines = [f"line {i:04d} " + "x" * 90 for i in range(200)]
    tail, cut = inside.log_tail(lines)
    assert cut and len(tail.encode()) <= inside.MAX_LOG_TAIL_BYTES
    assert tail.endswith(lines[-1]) and tail.split("\n")[0] in lines
    one_huge, cut = inside.log_tail(["é" * 5000])
    assert len(one_huge.encode()) <= inside.MAX_LOG_TAIL_BYTES


SCRUB_CASES = [
    ("terminal escapes", "\x1b[31mERROR\x1b[0m done\r", "ERROR done"),
    ("control characters", "a\x00b\x07c\td", "abc d"),
    ("access key ids", "using key LTAI5tAbCdEfGhIjKlMn now", "using key <redacted> now"),
    ("key=value secrets", "AccessKeySecret=abcdef123456 ok", "AccessKeySecret=<redacted> ok"),
    ("json secrets", '{"token": "eyJhbGciOi.x.y"}', '{"token": "<redacted>"}'),
    ("known secrets, raw", "share tok-SECRET-1 used", "share <redacted> used"),
    ("plain text stays", "loss=0.25 step=10", "loss=0.25 step=10"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in SCRUB_CASES], ids=[c[0] for c in SCRUB_CASES])
def test_scrub(text: str, expected: str) -> None:
    assert inside.scrub(text, 1000, secrets=["tok-SECRET-1"]) == expected


def test_log_tail_scrubs_the_runs_own_secrets() -> None:
    tail, _ = inside.log_tail(["url?TokenId=tok-SECRET-1", 'echo "tok-SECRET-1"'], secrets=["tok-SECRET-1"])
    assert "tok-SECRET-1" not in tail


def test_outputs_keep_models_datasets_metrics_with_their_location() -> None:
    page = NodeOutputList.model_validate(
        {
            "TotalCount": 4,
            "Outputs": [
                {"Name": "model", "Type": "Model", "NodeId": "node-train", "Info": {"uri": "oss://b/model/"}},
                {"Name": "table", "Type": "DataSet", "NodeId": "node-prep", "Info": {"meta": {"x": "odps://p/t"}}},
                {"Name": "eval", "Type": "ModelEvaluation", "NodeId": "node-eval", "Info": {}},
                {"Name": "auc", "Type": "Metrics", "NodeId": "node-eval", "Producer": "evaluate"},
            ],
        }
    )
    got = inside.outputs(page.outputs, page.total_count, {"node-train": "train", "node-prep": "prepare"})
    assert got["outputs"] == [
        {"name": "model", "type": "Model", "nodeId": "node-train", "node": "train", "uri": "oss://b/model/"},
        {"name": "table", "type": "DataSet", "nodeId": "node-prep", "node": "prepare", "uri": "odps://p/t"},
        {"name": "auc", "type": "Metrics", "nodeId": "node-eval", "node": "evaluate"},
    ]
    assert got["outputsOmitted"] == 1
    PaiPipelineRunStatus.model_validate({"outputs": got["outputs"]})


def test_outputs_are_bounded() -> None:
    rows = [NodeOutput.model_validate({"Name": f"m{i}", "Type": "Model"}) for i in range(50)]
    got = inside.outputs(rows, 500, {})
    assert len(got["outputs"]) == inside.MAX_OUTPUTS and got["outputsOmitted"] == 500 - inside.MAX_OUTPUTS
