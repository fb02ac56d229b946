"""The pure PaiWorkspace planner and the scan's paging, table-tested without I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paiflow_operator.api.workspaces import PaiWorkspaceSpec
from paiflow_operator.pai.models import PipelineRun, RunList
from paiflow_operator.workspaces.pages import scan_pages
from paiflow_operator.workspaces.plan import (
    LABEL_PIPELINE,
    LABEL_WORKSPACE,
    Existing,
    WorkspaceRef,
    existing_from_body,
    in_scope,
    label_value,
    list_query,
    plan,
    resource_name,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
WS = WorkspaceRef("team-a", "prod", "uid-ws")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def row(
    run_id: str, *, age: float = 60, status: str = "Running", modified_ago: float | None = None, **extra: Any
) -> PipelineRun:
    created = NOW - timedelta(seconds=age)
    modified = NOW - timedelta(seconds=modified_ago if modified_ago is not None else age)
    wire: dict[str, Any] = {
        "PipelineRunId": run_id,
        "Status": status,
        "WorkspaceId": "ws-1",
        "PipelineId": "pipeline-a",
        "SourceType": "SDK",
        "GmtCreateTime": created.isoformat(),
        "GmtModifiedTime": modified.isoformat(),
        **extra,
    }
    return PipelineRun.from_wire(wire)


def spec(**fields: Any) -> PaiWorkspaceSpec:
    return PaiWorkspaceSpec.model_validate({"workspaceId": "ws-1", **fields})


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("flow-j94y0000000000lf7a", "flow-j94y0000000000lf7a"),
        ("run-rbvg00ks92", "run-rbvg00ks92"),
    ],
)
def test_valid_ids_are_their_own_names(run_id: str, expected: str) -> None:
    assert resource_name(run_id) == expected


@pytest.mark.parametrize("run_id", ["Flow-ABC", "flow_abc", "flow.abc", "-flow", "A" * 128, "_"])
def test_other_ids_become_distinct_dns1123_names(run_id: str) -> None:
    name = resource_name(run_id)
    assert DNS1123.fullmatch(name) and len(name) <= 253
    assert name == resource_name(run_id)  # deterministic
    # Case and punctuation never fold two ids into one name.
    assert name != resource_name(run_id.swapcase()) or run_id == run_id.swapcase()


def test_names_of_ids_that_differ_only_in_case_differ() -> None:
    assert resource_name("flow-abc") != resource_name("FLOW-abc") != resource_name("flow-ABC")


@pytest.mark.parametrize("value", ["ws-1", "a" * 80, "user@example.com", "x/y", "-lead"])
def test_label_values_are_valid(value: str) -> None:
    out = label_value(value)
    assert out is not None and len(out) <= 63
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", out)


def test_imported_run_body_is_owned_labelled_and_templated() -> None:
    s = spec(
        regionId="cn-shanghai",
        credentialsSecretRef={"name": "pai-keys"},
        template={"labels": {"team": "ml"}, "annotations": {"note": "x"}, "pollInterval": "1m"},
    )
    p = plan(WS, s, [row("flow-a")], [], NOW)
    (body,) = p.creates
    meta = body["metadata"]
    assert meta["name"] == "flow-a" and meta["namespace"] == "team-a"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("PaiWorkspace", "prod", "uid-ws", True)
    assert meta["labels"]["team"] == "ml" and meta["labels"][LABEL_WORKSPACE] == "prod"
    assert meta["labels"][LABEL_PIPELINE] == "pipeline-a"
    assert meta["annotations"] == {"note": "x"}
    assert body["spec"] == {
        "pipelineRunId": "flow-a",
        "workspaceId": "ws-1",
        "regionId": "cn-shanghai",
        "credentialsSecretRef": {
            "name": "pai-keys",
            "accessKeyIdKey": "accessKeyId",
            "accessKeySecretKey": "accessKeySecret",
            "securityTokenKey": "securityToken",
        },
        "pollInterval": "1m",
        # Priced reads (nodes, logs, outputs) are off for imported runs unless the template asks.
        "inside": False,
    }
    asked = plan(WS, spec(template={"inside": True}), [row("flow-b")], [], NOW)
    assert asked.creates[0]["spec"]["inside"] is True


def test_window_filters_and_already_followed_runs() -> None:
    rows = [
        row("flow-new", age=60),
        row("flow-old", age=3 * 86400),  # created before the 24 h window
        row("flow-hand", age=60),  # a hand-written resource follows it
        row("flow-other-ws", age=60, WorkspaceId="ws-2"),
        row("flow-failed", age=60, status="Failed"),
    ]
    hand = Existing("my-run", "uid-h", "flow-hand", owner_uid=None)
    p = plan(WS, spec(filters={"statuses": ["Running", "Succeeded"]}), rows, [hand], NOW)
    assert [b["spec"]["pipelineRunId"] for b in p.creates] == ["flow-new"]
    assert not p.deletes


def test_cap_keeps_the_newest_and_counts_the_rest() -> None:
    owned = [
        Existing(f"flow-o{i}", f"uid-o{i}", f"flow-o{i}", owner_uid="uid-ws", run_status="Running") for i in range(3)
    ]
    rows = [row(f"flow-{i}", age=100 + i) for i in range(10)]
    p = plan(WS, spec(maxRuns=5), rows, owned, NOW)
    assert [b["spec"]["pipelineRunId"] for b in p.creates] == ["flow-0", "flow-1"]
    assert (p.over_cap, p.owned, p.counts) == (8, 3, {"Running": 5})


def test_the_namespace_cap_counts_every_workspace_of_the_namespace_whatever_max_runs_asks() -> None:
    own = [
        Existing(f"flow-o{i}", f"uid-o{i}", f"flow-o{i}", owner_uid="uid-ws", run_status="Running") for i in range(2)
    ]
    # Imported by another PaiWorkspace of the namespace; a hand-written run counts for nobody.
    others = [Existing(f"flow-x{i}", f"uid-x{i}", f"flow-x{i}", owner_uid="uid-other") for i in range(5)]
    hand = [Existing("mine", "uid-mine", "flow-mine", owner_uid=None)]
    rows = [row(f"flow-{i}", age=100 + i) for i in range(10)]
    p = plan(WS, spec(maxRuns=1000), rows, own + others + hand, NOW, namespace_cap=10)
    assert [b["spec"]["pipelineRunId"] for b in p.creates] == ["flow-0", "flow-1", "flow-2"]
    assert (p.over_cap, p.namespace_cap) == (7, 10)
    # Without a cap (or a cap not reached) maxRuns rules as before, and says so.
    assert len(plan(WS, spec(maxRuns=4), rows, own + others, NOW, namespace_cap=100).creates) == 2
    assert plan(WS, spec(maxRuns=4), rows, own + others, NOW, namespace_cap=100).namespace_cap is None
    assert len(plan(WS, spec(maxRuns=1000), rows, own + others, NOW).creates) == 10
    # Over the cap already (a lowered policy): nothing new, nothing deleted either.
    full = plan(WS, spec(), rows, own + others, NOW, namespace_cap=3)
    assert (full.creates, full.deletes, full.over_cap) == ([], [], 10)


def test_template_labels_and_annotations_are_bounded_in_size() -> None:
    spec(template={"labels": {"team": "a"}, "annotations": {"example.com/owner": "a" * 4000}})
    with pytest.raises(ValueError, match=r"template\.annotations must be at most 4096 bytes"):
        spec(template={"annotations": {f"k{i}": "x" * 1000 for i in range(5)}})
    with pytest.raises(ValueError, match=r"template\.labels must be at most 2048 bytes"):
        spec(template={"labels": {f"team.example.com/k{i}": "v" * 63 for i in range(30)}})
    with pytest.raises(ValueError, match="not a valid annotation key"):
        spec(template={"annotations": {"not a key": "x"}})


def test_ttl_deletes_only_finished_imported_runs_past_their_time() -> None:
    ended = NOW - timedelta(hours=2)
    items = [
        Existing("old", "u1", "flow-1", owner_uid="uid-ws", run_status="Succeeded", finished_at=ended),
        Existing("recent", "u2", "flow-2", owner_uid="uid-ws", run_status="Failed", finished_at=NOW),
        Existing("running", "u3", "flow-3", owner_uid="uid-ws", run_status="Running"),
        Existing("hand", "u4", "flow-4", owner_uid=None, run_status="Succeeded", finished_at=ended),
        Existing("theirs", "u5", "flow-5", owner_uid="uid-other", run_status="Succeeded", finished_at=ended),
        Existing("going", "u6", "flow-6", owner_uid="uid-ws", run_status="Succeeded", finished_at=ended, deleting=True),
    ]
    p = plan(WS, spec(ttlAfterFinished="1h"), [], items, NOW)
    assert [d.name for d in p.deletes] == ["old"]
    assert p.owned == 2
    # A run that already ended longer ago than the TTL is not imported just to be deleted.
    gone = row("flow-9", status="Succeeded", FinishedAt=(NOW - timedelta(hours=3)).isoformat())
    assert not plan(WS, spec(ttlAfterFinished="1h"), [gone], [], NOW).creates
    assert not plan(WS, spec(), [], items, NOW).deletes  # no TTL: nothing is deleted


def test_duplicate_rows_import_once() -> None:
    p = plan(WS, spec(), [row("flow-a", modified_ago=30), row("flow-a", modified_ago=5)], [], NOW)
    assert len(p.creates) == 1


def test_list_query_maps_filters_onto_list_pipeline_runs() -> None:
    s = spec(filters={"pipelineIds": ["p1", "p2"], "sourceType": "DESIGNER", "userId": "u", "statuses": ["Failed"]})
    q = list_query(s)
    assert q["pipeline_ids"] == "p1,p2" and q["source_type"] == "DESIGNER" and q["user_id"] == "u"
    # Never sent to PAI: a Running-only scan would not see a run end.
    assert "status" not in q
    assert in_scope(row("x", status="Running"), spec(filters={"statuses": ["Failed", "Running"]}))
    assert not in_scope(row("x", status="Succeeded"), spec(filters={"statuses": ["Failed", "Running"]}))


def test_existing_from_a_watch_body() -> None:
    body = {
        "metadata": {
            "name": "flow-a",
            "uid": "u",
            "ownerReferences": [{"kind": "PaiWorkspace", "uid": "uid-ws", "controller": True}],
        },
        "spec": {"pipelineRunId": "flow-a"},
        "status": {"runStatus": "Succeeded", "finishedAt": "2026-11-29T10:00:00Z"},
    }
    e = existing_from_body(body)
    assert e is not None and e.owner_uid == "uid-ws" and e.terminal
    assert e.finished_at == datetime(2026, 11, 29, 10, tzinfo=UTC)


# ---- paging -----------------------------------------------------------------------------------------------


class ShiftingPages:
    """ListPipelineRuns sorted by GmtModifiedTime DESC over a mutable table; ``between`` runs before a page."""

    def __init__(self, rows: list[PipelineRun], page_size: int) -> None:
        self.rows = rows
        self.page_size = page_size
        self.calls: list[int] = []
        self.between: dict[int, Any] = {}

    async def __call__(self, page: int) -> RunList:
        if page in self.between and page not in self.calls:
            self.between[page](self)
        self.calls.append(page)
        ordered = sorted(self.rows, key=lambda r: r.gmt_modified_time or NOW, reverse=True)
        start = (page - 1) * self.page_size
        chunk = ordered[start : start + self.page_size]
        return RunList.model_validate(
            {
                "RequestId": f"req-{len(self.calls)}",
                "TotalCount": len(ordered),
                "PipelineRuns": [r.model_dump(by_alias=True, exclude_none=True) for r in chunk],
            }
        )


async def test_paging_stops_past_the_cutoff() -> None:
    table = [row(f"flow-{i:02d}", modified_ago=i * 10) for i in range(30)]
    fetch = ShiftingPages(table, page_size=5)
    out = await scan_pages(fetch, NOW - timedelta(seconds=75), page_size=5, max_pages=100)
    # Rows 0..7 are newer than the cut-off: pages 1 and 2 are read, then page 1 once more.
    assert fetch.calls == [1, 2, 1]
    assert set(out.rows) == {f"flow-{i:02d}" for i in range(10)}
    assert out.first_page_newest == NOW
    assert all(r.request_id for r in out.rows.values())


def flow_07_ends_before_page_2() -> ShiftingPages:
    """Twelve runs in pages of 5; flow-07 sits on page 2, and just before page 2 is read it ends and jumps to
    the top (page 1)."""

    def finish_flow_07(pages: ShiftingPages) -> None:
        pages.rows = [r for r in pages.rows if r.pipeline_run_id != "flow-07"]
        pages.rows.append(row("flow-07", status="Succeeded", modified_ago=0))

    fetch = ShiftingPages([row(f"flow-{i:02d}", modified_ago=100 + i) for i in range(12)], page_size=5)
    fetch.between[2] = finish_flow_07
    return fetch


async def test_a_run_changing_between_two_pages_is_still_seen() -> None:
    fetch = flow_07_ends_before_page_2()
    out = await scan_pages(fetch, None, page_size=5, max_pages=100)
    assert out.rows["flow-07"].status.value == "Succeeded"
    assert len(out.rows) == 12
    # The next scan's cut-off comes from page 1 as first read, before flow-07 moved.
    assert out.first_page_newest == NOW - timedelta(seconds=100)


async def test_single_page_scan_costs_one_call() -> None:
    fetch = ShiftingPages([row("flow-a")], page_size=100)
    out = await scan_pages(fetch, None, page_size=100, max_pages=10)
    assert fetch.calls == [1] and list(out.rows) == ["flow-a"]


def test_runs_a_resource_launched_are_never_imported_beside_it() -> None:
    launched = existing_from_body(
        {
            "metadata": {"namespace": "team-a", "name": "train", "uid": "uid-train"},
            "spec": {"launch": {"workspaceId": "ws-1", "pipelineId": "pipeline-a"}},
            "status": {"pipelineRunId": "flow-launched"},
        }
    )
    creating = existing_from_body(
        {
            "metadata": {"namespace": "team-a", "name": "eval", "uid": "uid-eval"},
            "spec": {"launch": {"workspaceId": "ws-1", "pipelineId": "pipeline-a"}},
            "status": {"launch": {"phase": "Creating"}},
        }
    )
    assert launched is not None and creating is not None and launched.run_id == "flow-launched"
    rows = [row("flow-launched"), row("flow-in-flight", SourceId="uid-eval"), row("flow-other")]
    out = plan(WS, spec(), rows, [launched, creating], NOW)
    assert [c["spec"]["pipelineRunId"] for c in out.creates] == ["flow-other"]


def test_a_state_no_run_is_in_any_more_is_removed_by_the_merge_patch() -> None:
    from paiflow_operator.workspaces.status import changes

    current = {"runs": 4, "counts": {"Running": 2, "Succeeded": 2}}
    desired = {"runs": 4, "counts": {"Succeeded": 3, "Failed": 1}}
    assert changes(current, desired) == {"counts": {"Running": None, "Succeeded": 3, "Failed": 1}}
    assert changes(desired, desired) == {}


def test_counts_after_the_creates_add_up_to_the_runs_that_exist() -> None:
    from paiflow_operator.workspaces.plan import Plan, counts_after

    p = Plan(owned=2, counts={"Running": 4}, owned_counts={"Running": 1, "Unknown": 1})
    # Two creates were planned (counted in p.counts); one failed: only the one made is a run.
    assert counts_after(p, ["Running"]) == {"Running": 2, "Unknown": 1}


async def test_each_page_hands_on_the_rows_that_are_newest_so_far_as_it_arrives() -> None:
    fetch = flow_07_ends_before_page_2()
    handed: list[dict[str, str]] = []

    def on_page(rows: dict[str, PipelineRun]) -> None:
        handed.append({rid: r.status.value for rid, r in rows.items()})
        assert len(fetch.calls) == len(handed)  # as each page arrives, not at the end

    out = await scan_pages(fetch, None, page_size=5, max_pages=100, on_page=on_page)
    # flow-07's move pushed flow-04 onto page 2 as well: no news, not handed on twice.
    assert [sorted(h) for h in handed[:3]] == [
        [f"flow-{i:02d}" for i in range(5)],
        ["flow-05", "flow-06", "flow-08", "flow-09"],
        ["flow-10", "flow-11"],
    ]
    # The re-read page 1 hands on only what is newer than what came before: flow-07's end.
    assert handed[-1] == {"flow-07": "Succeeded"}
    assert out.rows["flow-07"].status.value == "Succeeded"
