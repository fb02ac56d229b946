"""The committed CRD is what crdgen makes of runs_api.py, and the API server will accept it as structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paiflow_operator import crdgen
from paiflow_operator.api import runs as runs_api

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / crdgen.CRD_FILENAME


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return dict(only)


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    return dict(version["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path: the root, each property and each array's items."""
    yield path or "<root>", node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("source", crdgen.SOURCES, ids=lambda s: s.kind)
def test_committed_crd_matches_the_models_byte_for_byte(source: crdgen.CrdSource) -> None:
    path = CRD_PATH.parent / source.filename
    assert path.read_text(encoding="utf-8") == crdgen.render(source), (
        f"{path.name} is out of date with {source.module}: run `make crds` and commit the result"
    )


def test_crds_dir_holds_exactly_the_generated_files() -> None:
    assert sorted(p.name for p in CRD_PATH.parent.glob("*.yaml")) == sorted(s.filename for s in crdgen.SOURCES)


def test_workspace_crd_is_structural_and_its_columns_resolve() -> None:
    data = yaml.safe_load((CRD_PATH.parent / crdgen.WORKSPACES.filename).read_text(encoding="utf-8"))
    (version,) = data["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    forbidden = {"anyOf", "oneOf", "allOf", "$ref", "$defs", "title", "definitions"}
    for path, node in walk(schema):
        assert not forbidden & node.keys(), f"{path} keeps {sorted(forbidden & node.keys())}"
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object" and path != ".metadata":
            assert "properties" in node or "additionalProperties" in node, path
    assert version["subresources"] == {"status": {}}
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["workspaceId"]
    assert "self == oldSelf" in _rules(spec["properties"]["workspaceId"])
    assert "namespace" not in spec["properties"]["credentialsSecretRef"]["properties"]
    assert spec["properties"]["importWindow"]["default"] == "24h"
    for column in version["additionalPrinterColumns"]:
        parts = column["jsonPath"].split("[")[0].strip(".").split(".")
        node = schema
        for part in parts if parts[0] != "metadata" else []:
            props = node.get("properties", {})
            assert part in props or "additionalProperties" in node, column
            node = props.get(part) or node["additionalProperties"]


def test_crd_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{runs_api.PLURAL}.{runs_api.GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == runs_api.KIND
    assert version["name"] == runs_api.VERSION and version["served"] and version["storage"]
    # The operator writes only the status subresource: it must exist.
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    forbidden = {"anyOf", "oneOf", "allOf", "$ref", "$defs", "title", "definitions"}
    for path, node in walk(schema):
        assert not forbidden & node.keys(), f"{path} keeps {sorted(forbidden & node.keys())}"
        assert "type" in node, f"{path} has no type"
        if node["type"] == "object" and path != ".metadata":
            assert "properties" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("default", "") is not None, f"{path} has a null default"
        if "enum" in node:
            assert all(isinstance(v, str) for v in node["enum"]), path


def test_spec_and_status_fields_are_all_in_the_schema(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    status = schema["properties"]["status"]
    assert set(spec["properties"]) == set(runs_api.PaiPipelineRunSpec.model_fields)
    assert set(status["properties"]) == set(runs_api.PaiPipelineRunStatus.model_fields)
    # pipelineRunId or launch, exactly one: a CEL rule says so (naming both), not `required`.
    assert "required" not in spec
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.pipelineRunId) != has(self.launch)" in rules
    # Manifests and arguments given as YAML objects survive the API server's pruning.
    launch = spec["properties"]["launch"]["properties"]
    for name in ("arguments", "options"):
        assert launch[name]["x-kubernetes-preserve-unknown-fields"] is True
        assert "additionalProperties" not in launch[name]
    assert schema["required"] == ["spec"]
    # Secret references have no namespace field: a resource can only use Secrets of its own namespace.
    for ref in ("tokenSecretRef", "credentialsSecretRef"):
        assert "namespace" not in spec["properties"][ref]["properties"]


def test_conditions_are_a_map_list_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "reason", "lastTransitionTime"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


@pytest.mark.parametrize(
    ("name", "json_path", "type_"),
    [
        ("Run ID", ".status.pipelineRunId", "string"),
        ("Status", ".status.runStatus", "string"),
        ("Duration", ".status.duration", "integer"),
        ("Started", ".status.startedAt", "date"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status', "string"),
        ("Reason", '.status.conditions[?(@.type=="Ready")].reason', "string"),
        ("Age", ".metadata.creationTimestamp", "date"),
        ("Finished", ".status.finishedAt", "date"),
        ("Message", ".status.message", "string"),
    ],
)
def test_printer_columns(version: dict[str, Any], name: str, json_path: str, type_: str) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert name in columns
    assert (columns[name]["jsonPath"], columns[name]["type"]) == (json_path, type_)


def test_every_printer_column_points_into_the_schema(version: dict[str, Any], schema: dict[str, Any]) -> None:
    for column in version["additionalPrinterColumns"]:
        parts = column["jsonPath"].split("[")[0].strip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = schema
        for part in parts:
            assert part in node.get("properties", {}), column
            node = node["properties"][part]


def _rules(node: dict[str, Any]) -> list[str]:
    return [v["rule"] for v in node.get("x-kubernetes-validations", [])]


def test_pipeline_run_id_is_immutable_by_cel(schema: dict[str, Any]) -> None:
    run_id = schema["properties"]["spec"]["properties"]["pipelineRunId"]
    assert "self == oldSelf" in _rules(run_id)
    assert run_id["pattern"] == runs_api.RUN_ID_PATTERN and run_id["maxLength"] == 128


def test_poll_interval_bounds_are_checked_by_cel(schema: dict[str, Any]) -> None:
    interval = schema["properties"]["spec"]["properties"]["pollInterval"]
    assert _rules(interval) == ["duration(self) >= duration('5s') && duration(self) <= duration('1h')"]
    # CEL's duration() fails on anything else, so the pattern must keep the input to what it accepts.
    assert interval["pattern"] == runs_api.DURATION_PATTERN
    assert all(v["message"] for v in interval["x-kubernetes-validations"])
