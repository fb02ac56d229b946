"""Response models against the vendor's documented GetPipelineRun sample (copied verbatim)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from paiflow_operator.pai import PipelineRun, RunList, RunStatus, RunStatusList

SAMPLE_PATH = Path(__file__).parent / "data" / "get_pipeline_run_sample.json"


@pytest.fixture
def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))
    return data


def test_sample_fixture_is_the_vendor_sample_with_its_stray_newlines(sample: dict[str, Any]) -> None:
    # If someone "cleans" the fixture, the stripping below is no longer tested.
    assert sample["PipelineRunId"].endswith("\n")
    assert sample["StartedAt"].endswith("\n")


def test_parse_documented_sample(sample: dict[str, Any]) -> None:
    run = PipelineRun.from_wire(sample)
    assert run.request_id == "DA869D1B-035A-43B2-ACC1-C56681BD9FAA"
    assert run.pipeline_run_id == "flow-j94y**********lf7a"
    assert run.name == "testName"
    assert run.status is RunStatus.SUCCEEDED
    assert run.status.is_terminal
    assert run.raw_status == "Succeeded"
    assert run.duration == 60
    assert isinstance(run.duration, int)
    assert run.workspace_id == "15945"
    assert run.message == "error message"
    assert run.user_id == "155**********904"
    assert run.node_id == "node-n06d**********fc53"
    assert run.pipeline_id == "pipeline-j94y**********lf7a"
    assert run.source_type == "UNKNOWN"
    assert run.accessibility == "PUBLIC"
    assert run.options == '{"mlflow":{"experimentId":"exp-**********"}}'
    assert run.manifest is not None and json.loads(run.manifest)["ApiVersion"] == "core/v1"
    assert run.started_at == datetime(2021, 1, 30, 12, 51, 33, 28000, tzinfo=UTC)
    assert run.finished_at == datetime(2021, 1, 30, 12, 52, 33, 28000, tzinfo=UTC)
    assert run.gmt_create_time == datetime(2021, 1, 30, 12, 51, 33, 28000, tzinfo=UTC)
    for ts in (run.started_at, run.finished_at, run.gmt_create_time, run.gmt_modified_time):
        assert ts is not None
        assert ts.utcoffset() == timedelta(0)


def test_no_string_field_keeps_a_trailing_newline(sample: dict[str, Any]) -> None:
    run = PipelineRun.from_wire(sample)
    for name, value in run.model_dump().items():
        if isinstance(value, str):
            assert value == value.strip(), name


def test_unknown_fields_are_ignored(sample: dict[str, Any]) -> None:
    run = PipelineRun.from_wire({**sample, "BrandNewField": {"x": 1}, "Another": [1, 2]})
    assert run.pipeline_run_id == "flow-j94y**********lf7a"
    assert not hasattr(run, "BrandNewField")


def test_unknown_status_is_unrecognized_and_raw_status_kept(sample: dict[str, Any]) -> None:
    run = PipelineRun.from_wire({**sample, "Status": "Quiescing\n"})
    assert run.status is RunStatus.UNRECOGNIZED
    assert run.raw_status == "Quiescing"
    assert not run.status.is_terminal


@pytest.mark.parametrize("status", [s.value for s in RunStatus if s is not RunStatus.UNRECOGNIZED])
def test_every_documented_status_parses(status: str) -> None:
    run = PipelineRun.from_wire({"PipelineRunId": "flow-1", "Status": status})
    assert run.status.value == status
    assert run.status is not RunStatus.UNRECOGNIZED


def test_non_utc_offset_is_normalised_to_utc() -> None:
    run = PipelineRun.from_wire(
        {"PipelineRunId": "flow-1", "Status": "Running", "StartedAt": "2021-01-30T20:51:33+08:00"}
    )
    assert run.started_at == datetime(2021, 1, 30, 12, 51, 33, tzinfo=UTC)
    assert run.started_at is not None and run.started_at.tzinfo == UTC


def test_naive_timestamp_is_taken_as_utc() -> None:
    run = PipelineRun.from_wire({"PipelineRunId": "flow-1", "Status": "Running", "StartedAt": "2021-01-30T12:00:00"})
    assert run.started_at == datetime(2021, 1, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "expected"), [("60", 60), (60.0, 60), ("", None), (None, None), ("7\n", 7)])
def test_duration_coerced_to_int(raw: Any, expected: int | None) -> None:
    run = PipelineRun.from_wire({"PipelineRunId": "flow-1", "Status": "Running", "Duration": raw})
    assert run.duration == expected


@pytest.mark.parametrize("missing", ["PipelineRunId", "Status"])
def test_required_fields(sample: dict[str, Any], missing: str) -> None:
    body = {k: v for k, v in sample.items() if k != missing}
    with pytest.raises(ValidationError):
        PipelineRun.from_wire(body)


def test_bad_timestamp_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        PipelineRun.from_wire({"PipelineRunId": "flow-1", "Status": "Running", "StartedAt": "yesterday"})


def test_list_rows_keep_raw_status_too() -> None:
    listing = RunList.model_validate(
        {
            "RequestId": "R\n",
            "TotalCount": "2",
            "PipelineRuns": [
                {"PipelineRunId": "flow-1", "Status": "Running"},
                {"PipelineRunId": "flow-2\n", "Status": "Paused", "Extra": 1},
            ],
        }
    )
    assert listing.total_count == 2
    assert [r.status for r in listing.pipeline_runs] == [RunStatus.RUNNING, RunStatus.UNRECOGNIZED]
    assert listing.pipeline_runs[1].raw_status == "Paused"
    assert listing.pipeline_runs[1].pipeline_run_id == "flow-2"


def test_status_list_rows() -> None:
    statuses = RunStatusList.model_validate(
        {
            "RequestId": "R",
            "PipelineRuns": [
                {"PipelineRunId": "flow-1", "Status": "Succeeded", "IsDeleted": False, "UserId": "1"},
                {"PipelineRunId": "flow-2", "Status": "Brand-new"},
            ],
            "Nodes": [],
        }
    )
    first, second = statuses.pipeline_runs
    assert first.status is RunStatus.SUCCEEDED and first.is_deleted is False
    assert second.status is RunStatus.UNRECOGNIZED and second.raw_status == "Brand-new"


def test_explicit_nulls_in_bounded_fields_are_absent_values() -> None:
    from paiflow_operator.pai.models import PipelineRun

    wire = {"PipelineRunId": "flow-1", "Status": "Running", "NodeId": None, "Name": None, "WorkspaceId": None}
    run = PipelineRun.model_validate(wire)
    assert run.node_id is None and run.name is None and run.workspace_id is None
