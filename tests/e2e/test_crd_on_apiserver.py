"""The shipped CRD on the real API server: invalid resources are refused with the field named, and the
status subresource keeps users' and the operator's writes apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.e2e.conftest import Runs
from tests.support.operator_process import OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster


def _create(runs: Runs, spec: dict[str, Any], name: str = "bad") -> tuple[int, str]:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": spec,
    }
    result = runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "set exactly one of spec.pipelineRunId (follow an existing run) or spec.launch"),
        ({"pipelineRunId": "flow/../../etc"}, "spec.pipelineRunId"),
        ({"pipelineRunId": "flow-ok1", "manifestType": "Cooked"}, 'spec.manifestType: Unsupported value: "Cooked"'),
        ({"pipelineRunId": "flow-ok1", "pollInterval": "1s"}, "pollInterval must be between 5s and 1h"),
        ({"pipelineRunId": "flow-ok1", "pollInterval": "2h"}, "pollInterval must be between 5s and 1h"),
        ({"pipelineRunId": "flow-ok1", "pollInterval": "soon"}, "spec.pollInterval"),
        ({"pipelineRunId": "flow-ok1", "regionId": "Hangzhou!"}, "spec.regionId"),
        ({"pipelineRunId": "flow-ok1", "credentialsSecretRef": {}}, "spec.credentialsSecretRef.name: Required value"),
    ],
    ids=["no-run-id", "bad-run-id", "bad-manifest-type", "interval-too-short", "interval-too-long",
         "interval-not-a-duration", "bad-region", "secret-ref-without-name"],
)  # fmt: skip
def test_invalid_resources_are_refused_with_the_field_named(runs: Runs, spec: dict[str, Any], expected: str) -> None:
    code, stderr = _create(runs, spec)
    assert code != 0, "the API server accepted an invalid resource"
    assert expected in stderr, stderr


def test_run_id_is_immutable(runs: Runs) -> None:
    assert _create(runs, {"pipelineRunId": "flow-first1"}, "immutable")[0] == 0
    code, stderr = _create(runs, {"pipelineRunId": "flow-other2"}, "immutable")
    assert code != 0
    assert "pipelineRunId is immutable" in stderr, stderr
    # Other fields stay editable.
    assert _create(runs, {"pipelineRunId": "flow-first1", "pollInterval": "10m"}, "immutable")[0] == 0


def test_status_is_written_only_through_its_subresource(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: Callable[[], str]
) -> None:
    rid = run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=rid)
    runs.apply("sub", rid)
    runs.wait_status("sub", "Running")
    # A user's edit of status through the main endpoint does not stick.
    runs.cp.kubectl(
        "patch", "ppr", "sub", "-n", runs.namespace, "--type=merge", "-p", '{"status": {"runStatus": "Succeeded"}}'
    )
    assert runs.status("sub")["runStatus"] == "Running"
    # The operator's writes touch status only: its field manager owns nothing outside the subresource.
    shown = runs.cp.kubectl("get", "ppr", "sub", "-n", runs.namespace, "-o", "json", "--show-managed-fields").stdout
    managed = json.loads(shown)["metadata"]["managedFields"]
    status_managers = {m["manager"] for m in managed if m.get("subresource") == "status"}
    assert status_managers, managed
    for entry in managed:
        if entry["manager"] in status_managers:
            assert entry.get("subresource") == "status", entry
    assert runs.get("sub")["spec"] == {
        "pipelineRunId": rid,
        "suspend": False,
        "verbose": False,
        "terminate": False,
        "deletionPolicy": "Retain",
    }


def _create_workspace(runs: Runs, spec: dict[str, Any], name: str = "bad-ws") -> tuple[int, str]:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiWorkspace",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": spec,
    }
    result = runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "spec.workspaceId: Required value"),
        ({"workspaceId": "ws 1"}, "spec.workspaceId"),
        ({"workspaceId": "ws1", "importWindow": "forever"}, "spec.importWindow"),
        ({"workspaceId": "ws1", "importWindow": "9000h"}, "importWindow must be between 1m and 8760h"),
        ({"workspaceId": "ws1", "maxRuns": -1}, "spec.maxRuns"),
        ({"workspaceId": "ws1", "maxRuns": 100001}, "spec.maxRuns"),
        ({"workspaceId": "ws1", "ttlAfterFinished": "1d"}, "spec.ttlAfterFinished"),
        ({"workspaceId": "ws1", "filters": {"sourceType": "CLI"}}, 'spec.filters.sourceType: Unsupported value: "CLI"'),
        ({"workspaceId": "ws1", "filters": {"statuses": ["Done"]}}, "spec.filters.statuses[0]"),
        ({"workspaceId": "ws1", "template": {"pollInterval": "1s"}}, "template.pollInterval must be between 5s and 1h"),
        ({"workspaceId": "ws1", "template": {"labels": {"a b": "c"}}}, "template.labels must be valid"),
        ({"workspaceId": "ws1", "credentialsSecretRef": {}}, "spec.credentialsSecretRef.name: Required value"),
        ({"workspaceId": "ws1", "template": {"labels": {f"team.example.com/k{i}": "v" * 63 for i in range(30)}}},
         "template.labels must be at most 2048 bytes"),
        ({"workspaceId": "ws1", "template": {"annotations": {f"a{i}": "x" * 1000 for i in range(5)}}},
         "template.annotations must be at most 4096 bytes"),
        ({"workspaceId": "ws1", "template": {"annotations": {"not a key": "x"}}},
         "template.annotations keys must be valid"),
    ],
    ids=["no-workspace", "bad-workspace", "window-not-a-duration", "window-too-long", "negative-cap", "cap-too-big",
         "ttl-in-days", "bad-source-type", "bad-status", "template-interval", "bad-label", "secret-without-name",
         "labels-too-large", "annotations-too-large", "bad-annotation-key"],
)  # fmt: skip
def test_invalid_workspaces_are_refused_with_the_field_named(runs: Runs, spec: dict[str, Any], expected: str) -> None:
    code, stderr = _create_workspace(runs, spec)
    assert code != 0, "the API server accepted an invalid PaiWorkspace"
    assert expected in stderr, stderr


def test_workspace_id_is_immutable_and_defaults_apply(runs: Runs) -> None:
    assert _create_workspace(runs, {"workspaceId": "ws1"}, "imm")[0] == 0
    stored = json.loads(runs.cp.kubectl("get", "paiws", "imm", "-n", runs.namespace, "-o", "json").stdout)
    assert (stored["spec"]["importWindow"], stored["spec"]["maxRuns"]) == ("24h", 1000)
    # (status: observedGeneration 0 until the operator's first scan, if an operator runs in this session)
    assert (stored.get("status") or {}).get("observedGeneration") in (0, 1)
    code, stderr = _create_workspace(runs, {"workspaceId": "ws2"}, "imm")
    assert code != 0 and "workspaceId is immutable" in stderr, stderr


def test_inside_fields_are_stored_bounded_and_shown_in_the_progress_column(runs: Runs) -> None:
    # Written as the operator writes them (runs/inside.py), through the status subresource.
    assert _create(runs, {"pipelineRunId": "flow-inside1"}, "inside")[0] == 0
    status = {
        "pipelineRunId": "flow-inside1",
        "runStatus": "Failed",
        "progress": "2/3",
        "nodes": {
            "total": 3,
            "counts": {"succeeded": 1, "failed": 1, "skipped": 1},
            "failed": [{"name": "transform", "nodeId": "node-t", "status": "Failed"}],
            "final": True,
        },
        "failure": {"node": "transform", "nodeId": "node-t", "logTail": "OOMKilled", "logTruncated": False},
        "outputs": [{"name": "model", "type": "Model", "uri": "oss://b/m/"}],
    }

    def patch(body: dict[str, Any]) -> Any:
        return runs.cp.kubectl(
            *("patch", "ppr", "inside", "-n", runs.namespace, "--subresource=status", "--type=merge"),
            *("-p", json.dumps({"status": body})),
            check=False,
        )

    assert patch(status).returncode == 0
    table = runs.cp.kubectl("get", "ppr", "inside", "-n", runs.namespace).stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:4] == ["NAME", "RUN", "ID", "STATUS"] and header[4] == "PROGRESS"
    assert row[1:4] == ["flow-inside1", "Failed", "2/3"]
    got = runs.get("inside")["status"]
    assert got["failure"]["logTail"] == "OOMKilled" and got["outputs"][0]["uri"] == "oss://b/m/"
    model = runs.cp.kubectl(
        "get", "ppr", "inside", "-n", runs.namespace, "-o", 'jsonpath={.status.outputs[?(@.type=="Model")].uri}'
    ).stdout
    assert model == "oss://b/m/"

    for bad, field in [
        ({"progress": "most"}, "status.progress"),
        ({"failure": {"node": "x", "nodeId": "n", "logTail": "x" * 5000}}, "status.failure.logTail"),
        ({"outputs": [{"name": f"m{i}", "type": "Model"} for i in range(21)]}, "status.outputs"),
        ({"nodes": {"total": 1, "running": [{"name": "n", "nodeId": "n"}] * 21}}, "status.nodes.running"),
    ]:
        refused = patch(bad)
        assert refused.returncode != 0 and field in refused.stderr, refused.stderr
