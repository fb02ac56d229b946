"""Scripted timelines and how a run renders at each instant (no HTTP here)."""

from __future__ import annotations

import json
import time

import pytest

from paiflow_emulator import Clock, Phase, Run, Timeline, iso_utc
from paiflow_emulator.runs import add_trailing_newlines

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_run(timeline: Timeline, **kwargs: object) -> Run:
    return Run(timeline=timeline, created_at=T0, **kwargs)  # type: ignore[arg-type]


def test_iso_format_matches_the_vendor_sample() -> None:
    assert iso_utc(T0) == "2023-11-14T22:13:20.000Z"
    assert iso_utc(T0 + 0.0289) == "2023-11-14T22:13:20.028Z"


def test_succeeding_run_moves_through_every_phase() -> None:
    run = make_run(Timeline.of(("Initialized", 2), ("Running", 30), ("Succeeded", None)))

    queued = run.summary(T0 + 1)
    assert queued["Status"] == "Initialized"
    assert "StartedAt" not in queued and "FinishedAt" not in queued
    assert queued["Duration"] == 0
    assert queued["GmtModifiedTime"] == iso_utc(T0)

    running = run.summary(T0 + 12.5)
    assert running["Status"] == "Running"
    assert running["StartedAt"] == iso_utc(T0 + 2)
    assert running["Duration"] == 10
    assert running["GmtModifiedTime"] == iso_utc(T0 + 2)
    assert "FinishedAt" not in running

    done = run.summary(T0 + 500)
    assert done["Status"] == "Succeeded"
    assert done["StartedAt"] == iso_utc(T0 + 2)
    assert done["FinishedAt"] == iso_utc(T0 + 32)
    assert done["Duration"] == 30  # frozen at finish, not 498
    assert done["GmtModifiedTime"] == iso_utc(T0 + 32)
    assert done["GmtCreateTime"] == iso_utc(T0)
    assert done["Message"] == ""


@pytest.mark.parametrize(
    ("timeline", "status", "message", "started", "finished"),
    [
        (Timeline.succeeding(queued=1, running=9), "Succeeded", "", 1, 10),
        (Timeline.failing("exit code 137", queued=1, running=4), "Failed", "exit code 137", 1, 5),
        (
            Timeline.of(("Initialized", 1), ("Running", 5), ("Terminating", 3), ("Terminated", None, "by user")),
            "Terminated",
            "by user",
            1,
            9,
        ),
        (Timeline.of(("Initialized", 4), ("Skipped", None)), "Skipped", "", None, 4),
    ],
)
def test_every_terminal_state(
    timeline: Timeline, status: str, message: str, started: float | None, finished: float
) -> None:
    body = make_run(timeline).summary(T0 + 3600)
    assert body["Status"] == status
    assert body["Message"] == message
    assert body["FinishedAt"] == iso_utc(T0 + finished)
    if started is None:
        assert "StartedAt" not in body
        assert body["Duration"] == 0
    else:
        assert body["StartedAt"] == iso_utc(T0 + started)
        assert body["Duration"] == int(finished - started)


def test_terminating_is_not_terminal() -> None:
    run = make_run(Timeline.of(("Running", 5), ("Terminating", 3), ("Terminated", None)))
    body = run.summary(T0 + 6)
    assert body["Status"] == "Terminating"
    assert "FinishedAt" not in body
    assert body["Duration"] == 6


def test_suspended_pause_in_the_middle() -> None:
    run = make_run(
        Timeline.of(("Initialized", 2), ("Running", 10), ("Suspended", 20), ("Running", 10), ("Succeeded", None))
    )
    paused = run.summary(T0 + 20)
    assert paused["Status"] == "Suspended"
    assert paused["GmtModifiedTime"] == iso_utc(T0 + 12)
    assert paused["StartedAt"] == iso_utc(T0 + 2)

    resumed = run.summary(T0 + 35)
    assert resumed["Status"] == "Running"
    assert resumed["StartedAt"] == iso_utc(T0 + 2)  # the first start, not the resume
    assert resumed["GmtModifiedTime"] == iso_utc(T0 + 32)

    done = run.summary(T0 + 100)
    assert done["Status"] == "Succeeded"
    assert done["FinishedAt"] == iso_utc(T0 + 42)
    assert done["Duration"] == 40  # wall time since start, pause included


def test_non_terminal_last_phase_holds_for_ever() -> None:
    run = make_run(Timeline.running_forever(queued=3))
    body = run.summary(T0 + 10_000)
    assert body["Status"] == "Running"
    assert body["Duration"] == 10_000 - 3
    assert "FinishedAt" not in body
    # A last phase with a duration also holds once it is over.
    assert make_run(Timeline.of(("Unknown", 5))).summary(T0 + 99)["Status"] == "Unknown"


def test_phase_boundaries_are_half_open() -> None:
    timeline = Timeline.of(("Initialized", 2), ("Running", 3), ("Succeeded", None))
    assert timeline.state_at(1.999).status == "Initialized"
    assert timeline.state_at(2.0).status == "Running"
    assert timeline.state_at(5.0).status == "Succeeded"
    assert timeline.state_at(-5).status == "Initialized"


def test_cut_keeps_history_and_changes_course() -> None:
    timeline = Timeline.succeeding(queued=2, running=100)
    changed = timeline.cut(12).then(("Terminating", 1), ("Terminated", None, "stopped"))
    assert [p.status for p in changed.phases] == ["Initialized", "Running", "Terminating", "Terminated"]
    assert changed.phases[1] == Phase("Running", 10)
    assert changed.state_at(12.5).status == "Terminating"
    state = changed.state_at(50)
    assert (state.status, state.message, state.started, state.finished) == ("Terminated", "stopped", 2, 13)
    # Cutting after a terminal phase that lasts for ever keeps it and appends after "at".
    rerun = Timeline.of(("Failed", None)).cut(30).then(("Running", None))
    assert rerun.state_at(29).status == "Failed"
    assert rerun.state_at(31).status == "Running"


def test_invalid_timelines_are_refused() -> None:
    with pytest.raises(ValueError, match="last phase"):
        Timeline.of(("Running", None), ("Succeeded", None))
    with pytest.raises(ValueError, match="at least one"):
        Timeline(())
    with pytest.raises(ValueError, match="negative"):
        Timeline.of(("Running", -1))
    with pytest.raises(ValueError, match="bad timeline step"):
        Timeline.from_json([42])


def test_json_round_trip_accepts_lists_and_objects() -> None:
    timeline = Timeline.from_json([["Initialized", 1], {"status": "Running", "duration": 2}, ["Failed", None, "boom"]])
    assert timeline == Timeline.of(("Initialized", 1), ("Running", 2), ("Failed", None, "boom"))
    assert Timeline.from_json(timeline.to_json()) == timeline
    assert Timeline.from_json([["Skipped"]]).phases == (Phase("Skipped", None),)


def test_frozen_clock_moves_only_when_advanced() -> None:
    clock = Clock(frozen_at=T0)
    assert clock.now() == T0
    assert clock.advance(90) == T0 + 90
    assert clock.now() == T0 + 90


def test_real_clock_advances_by_an_offset() -> None:
    clock = Clock()
    clock.advance(3600)
    assert clock.offset == 3600
    assert abs(clock.now() - (time.time() + 3600)) < 1.0


def test_detail_fields_and_verbose_manifest() -> None:
    run = make_run(
        Timeline.succeeding(),
        run_id="flow-abc",
        workspace_id="ws-1",
        arguments='{"a":1}',
        options='{"mlflow":{}}',
    )
    plain = run.detail(T0 + 1, verbose=False)
    assert "Manifest" not in plain
    assert plain["Arguments"] == '{"a":1}'
    assert plain["Options"] == '{"mlflow":{}}'
    assert plain["PipelineRunUri"].endswith("workspaceId=ws-1#/studio/task/detail/flow-abc")
    verbose = run.detail(T0 + 1, verbose=True)
    manifest = json.loads(verbose["Manifest"])
    assert manifest["Metadata"]["Name"] == "flow-abc"
    assert manifest["Metadata"]["NodeId"] == run.node_id
    assert "Annotations" not in manifest["Metadata"]
    frozen = json.loads(run.detail(T0 + 1, verbose=True, manifest_type="Frozen")["Manifest"])
    assert frozen["Metadata"]["Annotations"] == {"paiflow-emulator/manifest-type": "Frozen"}


def test_manifest_size_is_exact_and_valid_json() -> None:
    size = 3 * 1024 * 1024 + 17
    run = make_run(Timeline.succeeding(), manifest_size=size)
    manifest = run.manifest_for("Raw")
    assert len(manifest) == size
    assert json.loads(manifest)["ApiVersion"] == "core/v1"
    assert run.manifest_for("Raw") is manifest  # cached: repeated polling costs nothing


def test_user_manifest_is_returned_verbatim() -> None:
    run = make_run(Timeline.succeeding(), manifest='{"ApiVersion":"core/v1","Spec":{"x":1}}')
    assert run.manifest_for("Raw") == '{"ApiVersion":"core/v1","Spec":{"x":1}}'


def test_from_json_builds_a_run() -> None:
    run = Run.from_json(
        {
            "id": "flow-x",
            "age": 40,
            "timeline": [["Running", 30], ["Succeeded"]],
            "arguments": {"arguments": {"parameters": []}},
            "shareToken": "tok",
            "manifestSize": "2048",
        },
        now=T0,
    )
    assert run.run_id == "flow-x"
    assert run.created_at == T0 - 40
    assert run.arguments == '{"arguments":{"parameters":[]}}'
    assert run.share_token == "tok"
    assert run.manifest_size == 2048
    assert run.summary(T0)["Status"] == "Succeeded"


def test_status_row_has_no_timestamps() -> None:
    run = make_run(Timeline.succeeding())
    row = run.status_row(T0 + 5)
    assert row["Status"] == "Running"
    assert row["IsDeleted"] is False
    assert set(row) == {
        "PipelineRunId",
        "Status",
        "Name",
        "NodeId",
        "IsDeleted",
        "UserId",
        "ParentUserId",
        "SourceId",
    }


def test_sample_quirk_adds_trailing_newlines() -> None:
    body = add_trailing_newlines({"RequestId": "R", "Status": "Running", "Duration": 3, "UserId": "u"})
    assert body == {"RequestId": "R\n", "Status": "Running", "Duration": 3, "UserId": "u\n"}
