"""kubectl_plugin's pure parts: resource names, which node `logs` reads, the nodes table (the commands themselves
run against the real API server and the emulator in tests/e2e/test_kubectl_plugin.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from paiflow_operator.kubectl_plugin import PluginError, build_parser, parse_resource, pick_node, render_nodes
from paiflow_operator.pai.models import PipelineRunNode


@pytest.mark.parametrize(
    "text",
    [
        "ppr/x",
        "pprs/x",
        "pairun/x",
        "paipipelinerun/x",
        "PaiPipelineRun/x",
        "paipipelineruns.paiflow-operator.dev/x",
        "x",
    ],
)
def test_resource_names(text: str) -> None:
    assert parse_resource(text) == "x"


@pytest.mark.parametrize("text", ["pod/x", "ppr/", "deployment.apps/x"])
def test_not_a_run(text: str) -> None:
    with pytest.raises(PluginError):
        parse_resource(text)


def leaf(name: str, status: str, finished: str | None = None) -> dict[str, Any]:
    info = {"Status": status, **({"FinishedAt": finished} if finished else {})}
    return {"Metadata": {"NodeId": f"node-{name}", "Name": name, "NodeType": "Pod"}, "StatusInfo": info}


def root(*children: dict[str, Any]) -> PipelineRunNode:
    body = {
        "Metadata": {"NodeId": "node-root", "Name": "run", "NodeType": "Dag"},
        "Spec": {"HasPipelines": True, "Pipelines": list(children)},
        "StatusInfo": {"Status": "Running", "Progress": "1/3"},
    }
    return PipelineRunNode.from_wire(body)


def test_pick_node() -> None:
    tree = root(
        leaf("a", "Succeeded"), leaf("b", "Failed", "2026-01-01T00:00:09Z"), leaf("c", "Failed", "2026-01-01T00:00:01Z")
    )
    assert pick_node(tree, None).name == "c"  # the first to fail
    assert pick_node(tree, "node-a").name == "a" and pick_node(tree, "b").name == "b"
    assert pick_node(root(leaf("a", "Succeeded"), leaf("b", "Running")), None).name == "b"
    assert pick_node(root(leaf("only", "Succeeded")), None).name == "only"
    with pytest.raises(PluginError, match="several nodes; pick one with --node \\(a, b\\)"):
        pick_node(root(leaf("a", "Running"), leaf("b", "Running")), None)
    with pytest.raises(PluginError, match="no node 'z'"):
        pick_node(tree, "z")


def test_nodes_table_indents_children() -> None:
    lines = render_nodes(root(leaf("a", "Succeeded")), datetime(2026, 1, 1, tzinfo=UTC))
    assert lines[0].split()[:4] == ["NAME", "TYPE", "STATUS", "PROGRESS"]
    assert lines[1].split()[:4] == ["run", "Dag", "Running", "1/3"]
    assert lines[2].startswith("  a ")


def test_flags_before_or_after_the_command() -> None:
    parser = build_parser()
    after = parser.parse_args(["logs", "ppr/x", "-n", "ml", "--context", "c", "-f", "--tail", "5"])
    before = parser.parse_args(["-n", "ml", "--context", "c", "logs", "ppr/x", "-f", "--tail", "5"])
    for args in (after, before):
        assert (args.namespace, args.context, args.follow, args.tail, args.command) == ("ml", "c", True, 5, "logs")
