"""Emulated pipeline runs and how they look on the wire (GetPipelineRun, ListPipelineRuns, ...Status)."""

from __future__ import annotations

import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

from .clock import iso_utc
from .nodes import NodeSpec, NodeView, build_tree, specs_from_json
from .timeline import TERMINAL, RunState, Timeline
from .vendor import DEFAULT_REGION

MANIFEST_TYPES = ("Raw", "Frozen", "Rendered", "Expanded", "Runtime")
# How GmtModifiedTime moves (undocumented by PAI, so the emulator plays each possibility):
# "transition": on every status change (the default); "never": it stays at GmtCreateTime;
# "read": an active run's is "now" on every read (a finished run's stays at its last transition).
MODIFIED_TIME_MODES = ("transition", "never", "read")
_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """IDs shaped like PAI's (``flow-j94y...lf7a``): prefix, dash, 16 lowercase letters and digits."""
    return f"{prefix}-{''.join(secrets.choice(_ALPHABET) for _ in range(16))}"


def _json_text(value: Any) -> str:
    # PAI carries Arguments/Options/Manifest as JSON *strings*; callers may hand us objects.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(slots=True)
class Run:
    """One emulated run. Its state is derived from ``timeline`` and ``created_at`` on every read."""

    timeline: Timeline
    created_at: float
    run_id: str = field(default_factory=lambda: new_id("flow"))
    workspace_id: str = "15945"
    name: str = ""
    pipeline_id: str = field(default_factory=lambda: new_id("pipeline"))
    node_id: str = field(default_factory=lambda: new_id("node"))
    user_id: str = "1557702098194904"
    parent_user_id: str = "1557702098194904"
    source_type: str = "SDK"
    source_id: str = ""
    accessibility: str = "PRIVATE"
    arguments: str = '{"arguments":{"parameters":[]}}'
    options: str = "{}"
    manifest: str | None = None
    manifest_size: int | None = None
    share_token: str | None = None
    region: str = DEFAULT_REGION
    deleted: bool = False
    # Created with NoConfirmRequired=false: held in Initialized until StartPipelineRun plays this timeline.
    pending_timeline: Timeline | None = None
    # Run-clock time from which ListPipelineRuns shows the run (the emulator's list lag for created runs).
    listed_from: float = 0.0
    # The root node's children (nodes.py); none: one leaf, "main", as long as the run.
    nodes: tuple[NodeSpec, ...] = ()
    _manifest_cache: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"run-{self.run_id.removeprefix('flow-')[:8]}"

    @classmethod
    def from_json(cls, data: dict[str, Any], *, now: float) -> Run:
        """Builds a run from the control API's camelCase JSON (see the package docs for the shape)."""
        timeline = Timeline.from_json(data.get("timeline") or [["Initialized", 2], ["Running", 30], ["Succeeded"]])
        created_at = float(data["createdAt"]) if "createdAt" in data else now - float(data.get("age", 0.0))
        kwargs: dict[str, Any] = {}
        for key, attr in _JSON_FIELDS.items():
            if key in data and data[key] is not None:
                kwargs[attr] = data[key]
        for attr in ("arguments", "options", "manifest"):
            if attr in kwargs:
                kwargs[attr] = _json_text(kwargs[attr])
        if "manifest_size" in kwargs:
            kwargs["manifest_size"] = int(kwargs["manifest_size"])
        if "nodes" in kwargs:
            kwargs["nodes"] = specs_from_json(kwargs["nodes"])
        return cls(timeline=timeline, created_at=created_at, **kwargs)

    def state(self, now: float) -> RunState:
        return self.timeline.state_at(now - self.created_at)

    def tree(self, now: float) -> NodeView:
        """The run's node tree at ``now``, its root being ``node_id``."""
        state = self.state(now)
        return build_tree(
            run_id=self.run_id,
            root_id=self.node_id,
            root_name=self.name,
            specs=self.nodes,
            created_at=self.created_at,
            state=state,
            run_status=state.status,
            now=now,
        )

    @property
    def uri(self) -> str:
        return (
            f"https://pai.console.aliyun.com/?regionId={self.region}&workspaceId={self.workspace_id}"
            f"#/studio/task/detail/{self.run_id}"
        )

    def summary(self, now: float, state: RunState | None = None, modified: str = "transition") -> dict[str, Any]:
        """A ListPipelineRuns row (GetPipelineRun without Arguments, Options, Manifest).

        ``modified``: how GmtModifiedTime moves, which PAI does not document (see MODIFIED_TIME_MODES)."""
        st = state or self.state(now)
        body: dict[str, Any] = {
            "PipelineRunId": self.run_id,
            "Name": self.name,
            "Status": st.status,
            "Message": st.message,
            "WorkspaceId": self.workspace_id,
            "PipelineId": self.pipeline_id,
            "NodeId": self.node_id,
            "UserId": self.user_id,
            "ParentUserId": self.parent_user_id,
            "SourceType": self.source_type,
            "SourceId": self.source_id,
            "Accessibility": self.accessibility,
            "PipelineRunUri": self.uri,
            "GmtCreateTime": iso_utc(self.created_at),
            "GmtModifiedTime": iso_utc(self._modified_at(now, st, modified)),
            "Duration": 0,
        }
        if st.started is not None:
            started = self.created_at + st.started
            body["StartedAt"] = iso_utc(started)
            end = self.created_at + st.finished if st.finished is not None else now
            body["Duration"] = max(0, int(end - started))
        if st.finished is not None:
            body["FinishedAt"] = iso_utc(self.created_at + st.finished)
        return body

    def _modified_at(self, now: float, st: RunState, mode: str) -> float:
        if mode == "never":
            return self.created_at
        if mode == "read" and st.status not in TERMINAL:
            return now
        return self.created_at + st.phase_started

    def detail(
        self, now: float, *, verbose: bool, manifest_type: str = "Raw", modified: str = "transition"
    ) -> dict[str, Any]:
        """GetPipelineRun's body, without RequestId."""
        body = self.summary(now, modified=modified)
        body["Arguments"] = self.arguments
        body["Options"] = self.options
        if verbose:
            body["Manifest"] = self.manifest_for(manifest_type)
        return body

    def status_row(self, now: float) -> dict[str, Any]:
        """A ListPipelineRunsStatus row: status and identity only."""
        return {
            "PipelineRunId": self.run_id,
            "Status": self.state(now).status,
            "Name": self.name,
            "NodeId": self.node_id,
            "IsDeleted": self.deleted,
            "UserId": self.user_id,
            "ParentUserId": self.parent_user_id,
            "SourceId": self.source_id,
        }

    def node_row(self, now: float) -> dict[str, Any]:
        """ListPipelineRunsStatus' Nodes row for the run's root node."""
        st = self.state(now)
        row: dict[str, Any] = {
            "PipelineRunId": self.run_id,
            "NodeId": self.node_id,
            "NodeName": self.name,
            "Status": st.status,
        }
        if st.started is not None:
            row["StartedAt"] = iso_utc(self.created_at + st.started)
        if st.finished is not None:
            row["FinishedAt"] = iso_utc(self.created_at + st.finished)
        return row

    def manifest_for(self, manifest_type: str) -> str:
        cached = self._manifest_cache.get(manifest_type)
        if cached is None:
            cached = self._build_manifest(manifest_type)
            # Only Raw is kept: it is the one polled repeatedly, and multi-MiB variants add up.
            if manifest_type == "Raw":
                self._manifest_cache[manifest_type] = cached
        return cached

    def _build_manifest(self, manifest_type: str) -> str:
        if self.manifest is not None and manifest_type == "Raw" and self.manifest_size is None:
            return self.manifest
        document: dict[str, Any] = (
            json.loads(self.manifest)
            if self.manifest is not None
            else {
                "ApiVersion": "core/v1",
                "Metadata": {
                    "NodeId": self.node_id,
                    "Provider": self.user_id,
                    "Name": self.run_id,
                    "Version": "v1",
                    "Identifier": str(uuid.uuid5(uuid.NAMESPACE_URL, self.run_id)),
                    "Namespace": None,
                    "DisplayName": self.name,
                    "NodeType": "Dag",
                },
                "Spec": {},
            }
        )
        if manifest_type != "Raw" and isinstance(document.get("Metadata"), dict):
            # Lets a test see which ManifestType reached the server.
            document["Metadata"]["Annotations"] = {"paiflow-emulator/manifest-type": manifest_type}
        text = json.dumps(document, separators=(",", ":"))
        if self.manifest_size is None or len(text) >= self.manifest_size or not isinstance(document, dict):
            return text
        spec = document.setdefault("Spec", {})
        if not isinstance(spec, dict):
            return text
        spec["Padding"] = ""
        base = len(json.dumps(document, separators=(",", ":")))
        spec["Padding"] = "x" * max(0, self.manifest_size - base)
        return json.dumps(document, separators=(",", ":"))


# Control-API JSON key -> Run attribute.
_JSON_FIELDS = {
    "id": "run_id",
    "workspaceId": "workspace_id",
    "name": "name",
    "pipelineId": "pipeline_id",
    "nodeId": "node_id",
    "userId": "user_id",
    "parentUserId": "parent_user_id",
    "sourceType": "source_type",
    "sourceId": "source_id",
    "accessibility": "accessibility",
    "arguments": "arguments",
    "options": "options",
    "manifest": "manifest",
    "manifestSize": "manifest_size",
    "shareToken": "share_token",
    "region": "region",
    "nodes": "nodes",
}


def add_trailing_newlines(body: dict[str, Any]) -> dict[str, Any]:
    """The vendor's documented sample ends many string values with a stray newline; reproduce it on demand."""
    quirky = {
        "RequestId",
        "PipelineRunId",
        "UserId",
        "ParentUserId",
        "StartedAt",
        "FinishedAt",
        "NodeId",
        "Message",
        "SourceId",
        "Options",
        "GmtCreateTime",
        "GmtModifiedTime",
        "PipelineId",
    }
    return {k: (f"{v}\n" if k in quirky and isinstance(v, str) else v) for k, v in body.items()}
