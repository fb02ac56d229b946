"""The PaiPipelineRun models: duration parsing and spec validation (the same rules the CRD enforces)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from paiflow_operator.api.runs import PaiPipelineRun, PaiPipelineRunSpec, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("1m30s", timedelta(seconds=90)),
        ("1h2m3s", timedelta(hours=1, minutes=2, seconds=3)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m5ms", timedelta(minutes=1, milliseconds=5)),  # "ms" is not read as minutes followed by "s"
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "s", "-5s", "1d", "1 m", "5sec", "1.s", "30S", " 30s", "1h-1m", "1us"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def spec(**fields: Any) -> PaiPipelineRunSpec:
    return PaiPipelineRunSpec.model_validate({"pipelineRunId": "flow-j94y0000000000lf7a", **fields})


def test_minimal_spec_defaults() -> None:
    s = spec()
    assert (s.verbose, s.suspend, s.pollInterval, s.manifestType) == (False, False, None, None)
    assert s.credentialsSecretRef is None and s.tokenSecretRef is None


@pytest.mark.parametrize(
    ("run_id", "valid"),
    [
        ("flow-j94y0000000000lf7a", True),
        ("run-rbvg0000ks92", True),
        ("a", True),
        ("A1_b.c-d", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("-flow", False),
        (".flow", False),
        ("flow j94y", False),
        ("flow/j94y", False),
        ("flow-j94y**********lf7a", False),  # the vendor's masked sample id
    ],
)
def test_run_id_pattern(run_id: str, valid: bool) -> None:
    if valid:
        assert spec(pipelineRunId=run_id).pipelineRunId == run_id
    else:
        with pytest.raises(ValidationError, match="pipelineRunId"):
            spec(pipelineRunId=run_id)


def test_run_id_is_required() -> None:
    with pytest.raises(ValidationError, match="pipelineRunId"):
        PaiPipelineRunSpec.model_validate({})


@pytest.mark.parametrize("manifest_type", ["Raw", "Frozen", "Rendered", "Expanded", "Runtime"])
def test_manifest_type_enum_accepts(manifest_type: str) -> None:
    assert spec(manifestType=manifest_type).manifestType == manifest_type


@pytest.mark.parametrize("manifest_type", ["raw", "RAW", "Compiled", ""])
def test_manifest_type_enum_rejects(manifest_type: str) -> None:
    with pytest.raises(ValidationError, match="manifestType"):
        spec(manifestType=manifest_type)


@pytest.mark.parametrize(("interval", "valid"), [("30s", True), ("1m30s", True), ("30", False), ("1d", False)])
def test_poll_interval_must_be_a_duration(interval: str, valid: bool) -> None:
    if valid:
        assert spec(pollInterval=interval).pollInterval == interval
    else:
        with pytest.raises(ValidationError, match="pollInterval"):
            spec(pollInterval=interval)


@pytest.mark.parametrize(
    ("field", "value", "valid"),
    [
        ("regionId", "cn-hangzhou", True),
        ("regionId", "ap-southeast-1", True),
        ("regionId", "Hangzhou", False),
        ("regionId", "cn", False),
        ("workspaceId", "15945", True),
        ("workspaceId", "ws_1-a", True),
        ("workspaceId", "ws 1", False),
        ("workspaceId", "x" * 65, False),
    ],
)
def test_region_and_workspace_patterns(field: str, value: str, valid: bool) -> None:
    if valid:
        assert getattr(spec(**{field: value}), field) == value
    else:
        with pytest.raises(ValidationError, match=field):
            spec(**{field: value})


def test_secret_refs_default_their_keys_and_validate_names() -> None:
    s = spec(credentialsSecretRef={"name": "pai-keys"}, tokenSecretRef={"name": "share"})
    assert s.credentialsSecretRef is not None and s.tokenSecretRef is not None
    assert (s.credentialsSecretRef.accessKeyIdKey, s.credentialsSecretRef.accessKeySecretKey) == (
        "accessKeyId",
        "accessKeySecret",
    )
    assert s.credentialsSecretRef.securityTokenKey == "securityToken"
    assert s.tokenSecretRef.key == "token"
    for bad in ("Pai-Keys", "-keys", "keys_1"):
        with pytest.raises(ValidationError, match="name"):
            spec(credentialsSecretRef={"name": bad})


def test_unknown_fields_are_ignored_like_a_pruned_crd() -> None:
    run = PaiPipelineRun.model_validate(
        {"spec": {"pipelineRunId": "run-1", "future": 1}, "status": {"runStatus": "Running", "extra": True}}
    )
    assert run.spec.pipelineRunId == "run-1"
    assert run.status is not None and run.status.runStatus == "Running"
