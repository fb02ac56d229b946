"""Node-call response models (issue 19): the wire shape flattened, every size bounded."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from paiflow_operator.pai import NodeLogs, NodeOutputList, NodeStatusList, PipelineRunNode, RunStatus, models


def wire_node(node_id: str, status: str = "Running", children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "Metadata": {"NodeId": f"{node_id}\n", "Name": node_id, "NodeType": "Dag" if children else "Pod"},
        "Spec": {"HasPipelines": children is not None},
        "StatusInfo": {"Status": status, "Progress": "1/2", "StartedAt": "2021-01-30T12:51:33.028Z\n"},
    }
    if children is not None:
        node["Spec"]["Pipelines"] = children
    return node


def test_tree_is_flattened_and_statuses_parsed() -> None:
    body = {"RequestId": "R", **wire_node("root", children=[wire_node("a", "Succeeded"), wire_node("b", "Bogus")])}
    node = PipelineRunNode.from_wire(body)
    assert (node.node_id, node.node_type, node.is_dag, node.request_id) == ("root", "Dag", True, "R")
    assert node.status_info.progress == "1/2" and node.status_info.started_at is not None
    assert [(c.node_id, c.status_info.status, c.is_dag) for c in node.children] == [
        ("a", RunStatus.SUCCEEDED, False),
        ("b", RunStatus.UNRECOGNIZED, False),
    ]
    assert node.children[1].status_info.raw_status == "Bogus"


def test_a_dag_returned_without_its_children_is_still_a_dag() -> None:
    node = PipelineRunNode.from_wire({"Metadata": {"NodeId": "d", "NodeType": "Dag"}, "Spec": {"HasPipelines": True}})
    assert node.is_dag and node.children == []


def test_tree_too_wide_or_too_deep_is_refused() -> None:
    wide = wire_node("root", children=[wire_node(f"n{i}") for i in range(models.MAX_NODES)])
    with pytest.raises(ValueError, match="more than"):
        PipelineRunNode.from_wire(wide)
    deep = wire_node("leaf")
    for level in range(models.MAX_NODE_DEPTH):
        deep = wire_node(f"d{level}", children=[deep])
    with pytest.raises(ValueError, match="deeper"):
        PipelineRunNode.from_wire(deep)


def test_node_without_id_is_refused() -> None:
    with pytest.raises(ValidationError):
        PipelineRunNode.from_wire({"Metadata": {"Name": "x"}})


def test_long_log_lines_are_cut_and_pages_bounded() -> None:
    line = "x" * (models.MAX_LOG_LINE_CHARS + 10)
    logs = NodeLogs.model_validate({"Logs": [line, "ok\n"], "TotalCount": 2})
    assert logs.logs[0].endswith("...[cut]") and len(logs.logs[0]) < len(line)
    assert logs.logs[1] == "ok"
    with pytest.raises(ValidationError):
        NodeLogs.model_validate({"Logs": ["a"] * (models.MAX_LOG_LINES + 1)})
    with pytest.raises(ValidationError):
        NodeLogs.model_validate({"Logs": [], "TotalCount": -1})


def test_oversized_output_info_is_dropped_and_the_row_kept() -> None:
    big = {"blob": "y" * models.MAX_OUTPUT_INFO_CHARS}
    got = NodeOutputList.model_validate(
        {
            "TotalCount": 2,
            "Outputs": [
                {"Name": "model", "Type": "Model", "Info": {"uri": "oss://b/m/"}},
                {"Name": "huge", "Type": "DataSet", "Info": big},
            ],
        }
    )
    assert got.outputs[0].info == {"uri": "oss://b/m/"}
    assert (got.outputs[1].name, got.outputs[1].info) == ("huge", None)
    with pytest.raises(ValidationError):
        NodeOutputList.model_validate({"Outputs": [{}] * (models.MAX_OUTPUTS + 1)})


def test_status_rows() -> None:
    rows = NodeStatusList.model_validate(
        {"Status": [{"NodeId": "n1\n", "NodeName": "train", "Status": "ReadyToSchedule", "RuntimeInfo": "{}"}]}
    )
    assert (rows.status[0].node_id, rows.status[0].status) == ("n1", RunStatus.READY_TO_SCHEDULE)
