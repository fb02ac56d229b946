"""The emulator: a real HTTP server speaking PAI Flow's protocol, plus an unauthenticated control API.

PAI Flow actions (ROA style, ACS3-signed, dispatched on method+path and checked against x-acs-action):

- GetPipelineRun          GET /api/v1/pipelineruns/{PipelineRunId}  query Verbose, ManifestType, TokenId
- ListPipelineRuns        GET /api/v1/pipelineruns                  query filters, PageNumber, PageSize,
                                                                     SortBy, Order
- ListPipelineRunsStatus  PUT /api/v1/pipelineruns                  JSON WorkspaceId, PipelineRuns, Nodes
- CreatePipelineRun       POST /api/v1/pipelineruns                 JSON WorkspaceId, PipelineId | PipelineManifest,
                                                                     Name, Arguments, Options, Accessibility,
                                                                     NoConfirmRequired, SourceType, SourceId
- StartPipelineRun        PUT /api/v1/pipelineruns/{id}/start       (no body)
- TerminatePipelineRun    PUT /api/v1/pipelineruns/{id}/termination (no body)
- DeletePipelineRun       DELETE /api/v1/pipelineruns/{id}          (no body)
- GetPipelineRunNode      GET .../{id}/nodes/{NodeId}               query Depth (default 2), Type, TokenId
- ListPipelineRunNodeStatus GET .../{id}/nodes/{NodeId}/status      query Depth (default 2), Type, TokenId
- ListPipelineRunNodeLogs GET .../{id}/nodes/{NodeId}/logs          query Offset, PageSize, FromTimeInSeconds,
                                                                     ToTimeInSeconds, Keyword, Reverse, TokenId
- ListPipelineRunNodeOutputs GET .../{id}/nodes/{NodeId}/outputs    query Depth (required), Name, Type,
                                                                     PageNumber, PageSize, SortBy, Order, TokenId

Node trees, their logs and outputs are scripted per run (``nodes``; see ``nodes.py`` for the JSON and for
what the emulator chose where PAI documents nothing).

Created runs play their pipeline's timeline (or ``created_timeline``) from the moment they start; with
NoConfirmRequired=false they wait in Initialized for StartPipelineRun (true, PAI's documented default, starts
them at once). Termination plays Terminating for ``terminating_seconds``, then Terminated. DeletePipelineRun
is allowed in the states PAI documents (Initialized, Terminated, Succeeded, Failed), otherwise refused with
PipelineRunStatusInvalid. ``list_lag``: a run made by CreatePipelineRun shows in ListPipelineRuns only that many
seconds (run clock) after its creation (PAI documents no bound; GetPipelineRun by id sees it at once).

Control API (test tool, no signature, never a PAI action), all JSON:

- GET    /_emulator/health                 -> {"ok": true, "url": ...}
- POST   /_emulator/runs                   run or {"runs": [run, ...]} -> {"runs": [{"id": ...}, ...]}
- GET    /_emulator/runs/{id}              -> GetPipelineRun body (verbose) plus "IsDeleted"
- POST   /_emulator/runs/{id}/transition   {"timeline": [...]} -> {"id", "Status"}: history kept, course changed
- POST   /_emulator/transitions            {"transitions": [{"id", "timeline"}, ...]} -> {"transitions": [{"id",
                                            "Status"}, ...], "at": epoch}: many at one instant (all or none)
- GET    /_emulator/runs?name=N            -> {"runs": [GetPipelineRun body, ...]} (exact name; test lookups)
- POST   /_emulator/pipelines              {"id", "workspaceId", "manifest"?, "timeline"?} -> {"id"}
- POST   /_emulator/workspaces             {"ids": [...]}: once any is registered, others are unknown
- DELETE /_emulator/runs/{id}[?purge=1]    marks deleted (IsDeleted in status lists) or forgets it
- DELETE /_emulator/runs                   forgets every run
- POST   /_emulator/faults                 fault or {"faults": [...]} -> {"ids": [...]}
- GET    /_emulator/faults                 -> {"faults": [...]}
- DELETE /_emulator/faults[/{id}]          removes all faults / one
- GET    /_emulator/clock                  -> {"now": epoch, "iso": ..., "offset": seconds}
- POST   /_emulator/clock/advance          {"seconds": n} -> same as GET /_emulator/clock
- GET    /_emulator/counters[?runs=0][&seconds=1] -> {"total", "actions", "outcomes", "runs", "byAction"}
                                            (+ "perSecond": {epoch second: calls arrived})
- POST   /_emulator/reset-counters         -> {"ok": true}
- POST   /_emulator/config                 {"latency"?, "qpsLimit"?, "qpsBurst"?, "modifiedTime"?, "listLag"?}
                                            -> config (modifiedTime: transition | never | read, see runs.py;
                                            listLag: seconds a created run stays out of ListPipelineRuns)
- POST   /_emulator/keys                   {"keys"?: {ak: secret}, "stsTokens"?: {token: ak}}
- DELETE /_emulator/keys/{ak}              revokes a key
- POST   /_emulator/sts-tokens/{token}/expire
- GET    /_emulator/roles                  -> {"assumeRoleCalls", "assumed": {temp key id: {roleArn, sessionName,
                                            sourceAccessKeyId}}}
- POST   /_emulator/roles                  {"trust": {roleArn: [key ids] | null}}: once any is given, other roles
                                            do not exist (EntityNotExist.Role), and only those keys may assume it

STS (RPC style, HMAC-SHA1 in the query, as alibabacloud-credentials' RamRoleArn provider sends it):
- AssumeRole              GET /?Action=AssumeRole&RoleArn=...       -> temporary keys tied to the role; PAI calls
                                                                     signed with them count under "byRole"

Run JSON: {"id"?, "timeline"?: [["Initialized", 2], ["Running", 30], ["Failed", null, "msg"]],
"createdAt"? (epoch) | "age"? (seconds before now), "workspaceId"?, "name"?, "pipelineId"?, "nodeId"?,
"userId"?, "parentUserId"?, "sourceType"?, "sourceId"?, "accessibility"?, "arguments"?, "options"?,
"manifest"?, "manifestSize"?, "shareToken"?, "region"?, "nodes"?: [node, ...] (nodes.py)}.
Fault JSON: see ``faults.Fault.from_json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

import yaml
from aiohttp import web

from . import vendor
from .auth import AuthFailure, Verifier, collect_headers
from .clock import Clock, iso_utc
from .counters import HANG, MALFORMED, OK, Counters
from .faults import Fault, FaultKind, FaultSet, Selection
from .nodes import NodeView, log_lines, node_body, outputs, status_rows
from .runs import MANIFEST_TYPES, MODIFIED_TIME_MODES, Run, add_trailing_newlines, new_id
from .sts import Sts, StsError
from .timeline import TERMINAL, Phase, Step, Timeline

log = logging.getLogger("paiflow_emulator")

GET_RUN = "GetPipelineRun"
LIST_RUNS = "ListPipelineRuns"
LIST_STATUS = "ListPipelineRunsStatus"
CREATE_RUN = "CreatePipelineRun"
START_RUN = "StartPipelineRun"
TERMINATE_RUN = "TerminatePipelineRun"
DELETE_RUN = "DeletePipelineRun"
# The states PAI's DeletePipelineRun page allows the call in ("the pipeline job must be in the following states").
DELETABLE = frozenset({"Initialized", "Terminated", "Succeeded", "Failed"})
GET_NODE = "GetPipelineRunNode"
NODE_STATUS = "ListPipelineRunNodeStatus"
NODE_LOGS = "ListPipelineRunNodeLogs"
NODE_OUTPUTS = "ListPipelineRunNodeOutputs"
NODE_ACTIONS = (GET_NODE, NODE_STATUS, NODE_LOGS, NODE_OUTPUTS)
_NODE_VERBS = {"": GET_NODE, "status": NODE_STATUS, "logs": NODE_LOGS, "outputs": NODE_OUTPUTS}
RUNS_PATH = "/api/v1/pipelineruns"
CONTROL_PREFIX = "/_emulator"
JSON_TYPE = "application/json;charset=utf-8"

_OUTPUT_SORTABLE = ("Name", "Type", "GmtCreateTime")
# PAI documents no maximum page size for logs; 1,000 lines is the emulator's (pai-python-sdk asks for 100).
MAX_LOG_PAGE = 1000

_SORTABLE = {
    "GmtCreateTime",
    "GmtModifiedTime",
    "Name",
    "Status",
    "Duration",
    "StartedAt",
    "FinishedAt",
    "PipelineRunId",
}


class ApiError(Exception):
    def __init__(
        self, error: vendor.VendorError, message: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(error.code)
        self.error = error
        self.message = message or error.message
        self.headers = dict(headers or {})


class TokenBucket:
    """The optional global QPS limit. Monotonic time: the run clock must not refill it."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


@dataclasses.dataclass(slots=True)
class Pipeline:
    """A pipeline registered in the workspace: what CreatePipelineRun's PipelineId names."""

    pipeline_id: str
    workspace_id: str
    manifest: str = ""
    timeline: Timeline | None = None


class Emulator:
    """PAI Flow stand-in. Public methods are thread-safe, so a sync test may drive an EmulatorThread's
    emulator directly while the server runs in the background loop."""

    def __init__(
        self,
        keys: Mapping[str, str],
        sts_tokens: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        latency: float = 0.0,
        max_skew: float = 900.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = vendor.DEFAULT_REGION,
        qps_limit: float | None = None,
        qps_burst: float | None = None,
        sample_quirks: bool = False,
        wall: Callable[[], float] = time.time,
        max_hang: float = 600.0,
        modified_time: str = "transition",
        list_lag: float = 0.0,
    ) -> None:
        self.clock = clock or Clock()
        self.latency = latency
        self.region = region
        self.host_id = f"paiflow.{region}.aliyuncs.com"
        # Reproduce the stray trailing newlines of the vendor's sample response.
        self.sample_quirks = sample_quirks
        self.max_hang = max_hang
        self.modified_time = _modified_mode(modified_time)
        # Seconds a run made by CreatePipelineRun stays out of ListPipelineRuns (PAI documents no bound).
        self.list_lag = _list_lag(list_lag)
        # Test hook: called with the query of every ListPipelineRuns before it is answered (e.g. to change a
        # run between two pages of a scan).
        self.list_hook: Callable[[Mapping[str, str]], None] | None = None
        self.verifier = Verifier(keys, sts_tokens, max_skew=max_skew, wall=wall)
        # STS AssumeRole on the same port: temporary keys it mints sign PAI calls as their role.
        self.sts = Sts(self.verifier)
        self.faults = FaultSet()
        self.counters = Counters()
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._runs: dict[str, Run] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._workspaces: set[str] = set()
        # What a created run plays once started, unless its pipeline brings its own timeline.
        self.created_timeline = Timeline.succeeding(queued=1, running=4)
        self.terminating_seconds = 2.0
        self._bucket: TokenBucket | None = None
        self.set_qps_limit(qps_limit, qps_burst)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    @property
    def endpoint(self) -> str:
        """``host:port``, as the vendor SDK's Config(endpoint=...) wants it."""
        return self.url.removeprefix("http://")

    async def start(self) -> str:
        if self._runner is not None:
            return self.url
        self._release = asyncio.Event()
        app = web.Application(client_max_size=32 * 1024 * 1024)
        self._add_control_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._handle_api)
        # Handler cancellation frees a hung handler as soon as its client gives up.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        self._runner = runner
        port = sock.getsockname()[1]
        self._url = f"http://{self._host}:{port}"
        log.info("PAI emulator listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._url = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ runs
    def add_run(self, timeline: Timeline | None = None, *, age: float = 0.0, **fields: Any) -> Run:
        """Adds a run created ``age`` seconds ago (on the run clock). ``fields`` are Run attributes."""
        run = Run(
            timeline=timeline or Timeline.succeeding(),
            created_at=fields.pop("created_at", self.clock.now() - age),
            region=fields.pop("region", self.region),
            **fields,
        )
        return self.add(run)

    def add(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.run_id] = run
        return run

    def add_many(self, runs: Iterable[Run]) -> list[Run]:
        added = list(runs)
        with self._lock:
            for run in added:
                self._runs[run.run_id] = run
        return added

    def get_run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def run_ids(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def status_of(self, run_id: str) -> str:
        run = self._runs[run_id]
        return run.state(self.clock.now()).status

    def transition(self, run_id: str, *steps: Step | Phase) -> Run:
        """Changes a run's course now: its past stays, its timeline continues with ``steps``."""
        with self._lock:
            run = self._runs[run_id]
            run.timeline = run.timeline.cut(self.clock.now() - run.created_at).then(*steps)
        return run

    def transition_many(self, changes: Sequence[tuple[str, Sequence[Step | Phase]]]) -> tuple[float, list[Run]]:
        """Changes many runs' course at one instant of the run clock (a mass change, as thousands of runs ending
        at once); raises KeyError, changing none, if one is unknown."""
        with self._lock:
            runs = [self._runs[run_id] for run_id, _ in changes]
            now = self.clock.now()
            for run, (_, steps) in zip(runs, changes, strict=True):
                run.timeline = run.timeline.cut(now - run.created_at).then(*steps)
        return now, runs

    def delete_run(self, run_id: str, *, purge: bool = False) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return False
            if purge:
                del self._runs[run_id]
            else:
                run.deleted = True
            return True

    def clear_runs(self) -> None:
        with self._lock:
            self._runs.clear()

    def runs_named(self, name: str) -> list[Run]:
        with self._lock:
            return [run for run in self._runs.values() if run.name == name]

    def add_pipeline(
        self,
        pipeline_id: str | None = None,
        *,
        workspace_id: str = "15945",
        manifest: str = "",
        timeline: Timeline | None = None,
    ) -> Pipeline:
        pipeline = Pipeline(pipeline_id or new_id("pipeline"), workspace_id, manifest, timeline)
        with self._lock:
            self._pipelines[pipeline.pipeline_id] = pipeline
        return pipeline

    def add_workspace(self, *workspace_ids: str) -> None:
        """Registers workspaces; once any is registered, CreatePipelineRun refuses the others."""
        with self._lock:
            self._workspaces.update(workspace_ids)

    # ------------------------------------------------------------------ faults, clock, auth, limits
    def add_fault(
        self,
        kind: FaultKind | str,
        *,
        run_id: str | None = None,
        action: str | None = None,
        count: int | None = None,
        after: float | None = None,
        duration: float | None = None,
        delay: float = 0.0,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        retry_after_ms: int | None = None,
    ) -> Fault:
        """Injects a fault. ``count``: only the next N matching calls; ``after``/``duration``: a window on the
        run clock starting ``after`` seconds from now; ``delay``: seconds added (latency faults, or before
        the fault's answer)."""
        now = self.clock.now()
        start = now + after if after is not None else None
        until = (start if start is not None else now) + duration if duration is not None else None
        return self.faults.add(
            Fault(
                kind=FaultKind(kind),
                run_id=run_id,
                action=action,
                count=count,
                start=start,
                until=until,
                delay=delay,
                status=status,
                code=code,
                message=message,
                retry_after_ms=retry_after_ms,
            )
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def advance(self, seconds: float) -> float:
        return self.clock.advance(seconds)

    def add_key(self, access_key_id: str, secret: str) -> None:
        self.verifier.add_key(access_key_id, secret)

    def remove_key(self, access_key_id: str) -> None:
        self.verifier.remove_key(access_key_id)

    def add_sts_token(self, token: str, access_key_id: str) -> None:
        self.verifier.add_sts_token(token, access_key_id)

    def expire_sts_token(self, token: str) -> None:
        self.verifier.expire_sts_token(token)

    def set_qps_limit(self, qps: float | None, burst: float | None = None) -> None:
        """Global limit over all PAI actions; beyond it callers get Throttling.User. None: no limit."""
        self._bucket = TokenBucket(qps, burst) if qps else None

    @property
    def qps_limit(self) -> float | None:
        return self._bucket.rate if self._bucket else None

    def reset_counters(self) -> None:
        self.counters.reset()

    def load_scenario(self, data: Mapping[str, Any]) -> list[Run]:
        """Applies a scenario document: {"runs": [...], "faults": [...], "keys": {...}, "stsTokens": {...},
        "latency": s, "qpsLimit": n, "qpsBurst": n, "listLag": s}."""
        for ak, secret in (data.get("keys") or {}).items():
            self.add_key(ak, secret)
        for token, ak in (data.get("stsTokens") or {}).items():
            self.add_sts_token(token, ak)
        if "latency" in data:
            self.latency = float(data["latency"])
        if data.get("qpsLimit"):
            self.set_qps_limit(float(data["qpsLimit"]), data.get("qpsBurst"))
        if "listLag" in data:
            self.list_lag = _list_lag(data["listLag"])
        now = self.clock.now()
        runs = self.add_many(Run.from_json({"region": self.region, **item}, now=now) for item in data.get("runs") or [])
        for item in data.get("faults") or []:
            self.faults.add(Fault.from_json(item, now=now))
        return runs

    # ------------------------------------------------------------------ PAI API
    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        self.counters.arrived()
        request_id = new_request_id()
        header_action = request.headers.get("x-acs-action", "")
        action = header_action or "Unknown"
        run_ids: list[str] = []
        caller = ""
        workspace = ""  # the PAI workspace the call reached (counted per workspace, for policy tests)
        slept = False
        try:
            body = await request.read()
            raw_path, _, raw_query = request.raw_path.partition("?")
            query = dict(parse_qsl(raw_query, keep_blank_values=True))
            if not header_action and query.get("Action") == "AssumeRole":
                return self._assume_role(request.method, query, request_id)
            if not header_action:
                raise ApiError(vendor.MISSING_ACTION)
            if request.headers.get("x-acs-version") != vendor.API_VERSION:
                raise ApiError(vendor.INVALID_VERSION)
            routed, path_run_id, path_node_id = _route(request.method, raw_path)
            if routed is None or routed != header_action:
                raise ApiError(vendor.ACTION_NOT_FOUND)
            try:
                caller = self.verifier.verify(
                    request.method, raw_path, query, collect_headers(request.headers.items()), body
                ).access_key_id
            except AuthFailure as failure:
                raise ApiError(failure.error, failure.message) from None
            if self._bucket is not None and not self._bucket.take():
                raise ApiError(vendor.THROTTLED)

            payload: dict[str, Any] = {}
            if routed in (LIST_STATUS, CREATE_RUN):
                payload = _json_body(body)
                run_ids = [str(r) for r in payload.get("PipelineRuns") or []]
            elif path_run_id is not None:
                run_ids = [path_run_id]
            elif query.get("PipelineRunId"):
                run_ids = [query["PipelineRunId"]]
            workspace = str(payload.get("WorkspaceId") or query.get("WorkspaceId") or "")
            if not workspace and path_run_id is not None:
                known = self._runs.get(path_run_id)
                workspace = known.workspace_id if known is not None else ""

            single = routed in (GET_RUN, START_RUN, TERMINATE_RUN, DELETE_RUN, *NODE_ACTIONS)
            selection = self.faults.select(routed, run_ids, self.clock.now(), multi=not single)
            delay = self.latency + selection.delay
            if delay > 0:
                await asyncio.sleep(delay)
            slept = True
            fault = selection.fault
            if fault is not None and fault.kind is FaultKind.HANG:
                self.counters.record(action, HANG, run_ids)
                return await self._hang(request_id)
            if fault is not None and fault.kind is FaultKind.MALFORMED:
                self.counters.record(action, MALFORMED, run_ids)
                return _malformed(request_id)
            if fault is not None and fault.kind not in (FaultKind.NOT_FOUND, FaultKind.HOLD):
                headers = {"x-acs-retry-after": str(fault.retry_after_ms)} if fault.retry_after_ms else None
                raise ApiError(fault.error(), fault.message, headers)
            # A not_found fault left here is global or aimed at a single-run call: nothing exists.
            missing = fault is not None and fault.kind is FaultKind.NOT_FOUND
            if routed == GET_RUN:
                assert path_run_id is not None
                result = self._get_run(path_run_id, query, force_missing=missing)
            elif routed == CREATE_RUN:
                result = self._create_run(payload)
                run_ids = [result["PipelineRunId"]]
            elif routed in (START_RUN, TERMINATE_RUN, DELETE_RUN):
                assert path_run_id is not None
                result = self._run_action(routed, path_run_id, force_missing=missing)
            elif routed in NODE_ACTIONS:
                assert path_run_id is not None and path_node_id is not None
                result = self._node_action(routed, path_run_id, path_node_id, query, force_missing=missing)
            elif routed == LIST_RUNS:
                result = self._list_runs(query, selection, nothing=missing)
            else:
                result = self._list_status(payload, selection, nothing=missing)
            if fault is not None and fault.kind is FaultKind.HOLD:
                # Done, but the answer is lost: the caller cannot know whether it happened.
                self.counters.record(action, HANG, run_ids, caller)
                return await self._hang(request_id)
            self.counters.record(action, OK, run_ids, caller, self.sts.role_of(caller) or "", workspace)
            return self._ok(request_id, result)
        except ApiError as exc:
            if self.latency > 0 and not slept:
                await asyncio.sleep(self.latency)
            self.counters.record(action, exc.error.code, run_ids, workspace=workspace)
            return self._error(request_id, exc)

    def _assume_role(self, method: str, query: Mapping[str, str], request_id: str) -> web.StreamResponse:
        """STS AssumeRole (not a PAI call: not in the PAI counters; ``sts.calls`` counts it)."""
        try:
            result = self.sts.assume_role(method, query)
        except StsError as exc:
            body = {"RequestId": request_id, "HostId": "sts.aliyuncs.com", "Code": exc.code, "Message": exc.message}
            return web.json_response(body, status=exc.status)
        return web.json_response({"RequestId": request_id, **result})

    async def _hang(self, request_id: str) -> web.StreamResponse:
        assert self._release is not None
        # Ends when stop() releases it, after max_hang, or by cancellation when the client hangs up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=self.max_hang)
        return self._error(request_id, ApiError(vendor.UNAVAILABLE))

    def _ok(self, request_id: str, result: dict[str, Any]) -> web.Response:
        body = {"RequestId": request_id, **result}
        if self.sample_quirks:
            body = add_trailing_newlines(body)
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            headers={"Content-Type": JSON_TYPE, "x-acs-request-id": request_id},
        )

    def _error(self, request_id: str, exc: ApiError) -> web.Response:
        body = {
            "RequestId": request_id,
            "HostId": self.host_id,
            "Code": exc.error.code,
            "Message": exc.message,
            "Recommend": (
                f"https://api.aliyun.com/troubleshoot?q={exc.error.code}"
                f"&product={vendor.PRODUCT}&requestId={request_id}"
            ),
        }
        headers = {"Content-Type": JSON_TYPE, "x-acs-request-id": request_id, **exc.headers}
        return web.Response(status=exc.error.status, body=json.dumps(body).encode(), headers=headers)

    def _get_run(self, run_id: str, query: Mapping[str, str], *, force_missing: bool) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None or run.deleted or force_missing:
            raise ApiError(vendor.RUN_NOT_FOUND, f"The pipeline run {run_id} does not exist.")
        if run.share_token is not None and query.get("TokenId") != run.share_token:
            raise ApiError(vendor.NO_PERMISSION)
        verbose = query.get("Verbose", "false").lower() == "true"
        manifest_type = _manifest_type(query.get("ManifestType"))
        return run.detail(self.clock.now(), verbose=verbose, manifest_type=manifest_type, modified=self.modified_time)

    def _node_action(
        self, action: str, run_id: str, node_id: str, query: Mapping[str, str], *, force_missing: bool
    ) -> dict[str, Any]:
        run = self._runs.get(run_id)
        if run is None or run.deleted or force_missing:
            raise ApiError(vendor.RUN_NOT_FOUND, f"The pipeline run {run_id} does not exist.")
        if run.share_token is not None and query.get("TokenId") != run.share_token:
            raise ApiError(vendor.NO_PERMISSION)
        # Type: Logical|Physical for the node calls, the output type for ListPipelineRunNodeOutputs.
        if action in (GET_NODE, NODE_STATUS) and (query.get("Type") or "Logical") not in ("Logical", "Physical"):
            raise ApiError(vendor.INVALID_PARAMETER, f"Type {query['Type']!r} is not valid.")
        now = self.clock.now()
        node = run.tree(now).find(node_id)
        if node is None:
            raise ApiError(vendor.NODE_NOT_FOUND, f"The node {node_id} does not exist in pipeline run {run_id}.")
        if action == GET_NODE:
            return node_body(node, _int_param(query, "Depth", 2, low=1))
        if action == NODE_STATUS:
            return {"Status": status_rows(node, _int_param(query, "Depth", 2, low=1))}
        if action == NODE_LOGS:
            return _logs(node, query, now)
        return _outputs(node, query)

    def _list_runs(self, query: Mapping[str, str], selection: Selection, *, nothing: bool) -> dict[str, Any]:
        if self.list_hook is not None:
            self.list_hook(query)
        page_number = _int_param(query, "PageNumber", 1, low=1)
        page_size = _int_param(query, "PageSize", 20, low=1, high=100)
        sort_by = query.get("SortBy") or "GmtCreateTime"
        if sort_by not in _SORTABLE:
            raise ApiError(vendor.INVALID_PARAMETER, f"SortBy {sort_by!r} is not supported.")
        order = (query.get("Order") or "DESC").upper()
        if order not in ("ASC", "DESC"):
            raise ApiError(vendor.INVALID_PARAMETER, f"Order {order!r} is not valid.")
        statuses = {s for s in (query.get("Status") or "").split(",") if s}
        pipeline_ids = {p for p in (query.get("PipelineIds") or "").split(",") if p}
        name = (query.get("Name") or "").lower()
        exact = {
            "WorkspaceId": query.get("WorkspaceId"),
            "PipelineRunId": query.get("PipelineRunId"),
            "SourceType": query.get("SourceType"),
            "SourceId": query.get("SourceId"),
            "UserId": query.get("UserId"),
        }
        wanted = {k: v for k, v in exact.items() if v}
        now = self.clock.now()
        with self._lock:
            candidates = [] if nothing else list(self._runs.values())
        rows: list[dict[str, Any]] = []
        # Fields a run carries as they are, checked before its row is built: a row costs a timeline replay, and a
        # workspace's page must not cost one per run of every workspace (10,000 runs: 1 s of CPU per page).
        as_is = {"WorkspaceId": "workspace_id", "PipelineRunId": "run_id", "SourceType": "source_type"}
        prefilter = [(attr, wanted[key]) for key, attr in as_is.items() if key in wanted]
        for run in candidates:
            if run.deleted or run.run_id in selection.hidden or now < run.listed_from:
                continue
            if prefilter and any(getattr(run, attr) != value for attr, value in prefilter):
                continue
            if pipeline_ids and run.pipeline_id not in pipeline_ids:
                continue
            if name and name not in run.name.lower():
                continue
            row = run.summary(now, modified=self.modified_time)
            if statuses and row["Status"] not in statuses:
                continue
            if any(row.get(k) != v for k, v in wanted.items()):
                continue
            rows.append(row)
        rows.sort(key=lambda r: (r.get(sort_by) is not None, r.get(sort_by) or ""), reverse=order == "DESC")
        start = (page_number - 1) * page_size
        return {"TotalCount": len(rows), "PipelineRuns": rows[start : start + page_size]}

    def _create_run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        workspace = _text_param(payload, "WorkspaceId")
        if not workspace:
            raise ApiError(vendor.INVALID_PARAMETER, "WorkspaceId is mandatory for this action.")
        pipeline_id = _text_param(payload, "PipelineId")
        manifest = _text_param(payload, "PipelineManifest")
        if (pipeline_id is None) == (manifest is None):
            raise ApiError(vendor.INVALID_PARAMETER, "Specify exactly one of PipelineId and PipelineManifest.")
        with self._lock:
            if self._workspaces and workspace not in self._workspaces:
                raise ApiError(vendor.WORKSPACE_NOT_FOUND, f"The workspace {workspace} does not exist.")
            pipeline = self._pipelines.get(pipeline_id) if pipeline_id else None
        if pipeline_id is not None and (pipeline is None or pipeline.workspace_id != workspace):
            raise ApiError(
                vendor.PIPELINE_NOT_FOUND, f"The pipeline {pipeline_id} does not exist in workspace {workspace}."
            )
        if manifest is not None:
            _document("PipelineManifest", manifest)
        arguments = _text_param(payload, "Arguments")
        if arguments is not None:
            parsed = _document("Arguments", arguments)
            if not isinstance(parsed.get("arguments", {}), dict):
                raise ApiError(vendor.INVALID_PARAMETER, "Arguments is not valid: 'arguments' must be an object.")
        options = _text_param(payload, "Options")
        if options is not None:
            _document("Options", options)
        accessibility = _text_param(payload, "Accessibility") or "PRIVATE"
        if accessibility not in ("PRIVATE", "PUBLIC"):
            raise ApiError(vendor.INVALID_PARAMETER, f"Accessibility {accessibility!r} is not valid.")
        timeline = (pipeline.timeline if pipeline else None) or self.created_timeline
        # PAI's documented default is true: start at once. Only an explicit false holds the run in Initialized.
        confirm = payload.get("NoConfirmRequired") is not False
        fields: dict[str, Any] = {
            "workspace_id": workspace,
            "accessibility": accessibility,
            "source_type": _text_param(payload, "SourceType") or "SDK",
            "source_id": _text_param(payload, "SourceId") or "",
        }
        if _text_param(payload, "Name"):
            fields["name"] = _text_param(payload, "Name")
        if pipeline is not None:
            fields["pipeline_id"] = pipeline.pipeline_id
        if arguments is not None:
            fields["arguments"] = arguments
        if options is not None:
            fields["options"] = options
        manifest_text = manifest if manifest is not None else (pipeline.manifest if pipeline else "")
        if manifest_text:
            fields["manifest"] = json.dumps(_document("PipelineManifest", manifest_text), separators=(",", ":"))
        run = Run(
            timeline=timeline if confirm else Timeline.of(("Initialized", None)),
            created_at=self.clock.now(),
            region=self.region,
            pending_timeline=None if confirm else timeline,
            listed_from=self.clock.now() + self.list_lag,
            **fields,
        )
        self.add(run)
        return {"PipelineRunId": run.run_id}

    def _run_action(self, action: str, run_id: str, *, force_missing: bool) -> dict[str, Any]:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.deleted or force_missing:
                raise ApiError(vendor.RUN_NOT_FOUND, f"The pipeline run {run_id} does not exist.")
            now = self.clock.now()
            status = run.state(now).status
            if action == DELETE_RUN:
                if status not in DELETABLE:
                    raise ApiError(vendor.RUN_STATUS_INVALID, f"The pipeline run {run_id} is {status}, not deletable.")
                run.deleted = True
                run.pending_timeline = None
            elif action == START_RUN:
                if run.pending_timeline is None:
                    raise ApiError(vendor.RUN_STATUS_INVALID, f"The pipeline run {run_id} is {status}, not startable.")
                pending, run.pending_timeline = run.pending_timeline, None
                run.timeline = run.timeline.cut(now - run.created_at).extended(pending.phases)
            elif status == "Terminating":
                pass  # asked again while it stops: the same answer
            elif status in TERMINAL:
                raise ApiError(vendor.RUN_STATUS_INVALID, f"The pipeline run {run_id} is {status} already.")
            else:
                run.pending_timeline = None
                run.timeline = run.timeline.cut(now - run.created_at).then(
                    ("Terminating", self.terminating_seconds), ("Terminated", None)
                )
        return {}

    def _list_status(self, payload: Mapping[str, Any], selection: Selection, *, nothing: bool) -> dict[str, Any]:
        requested = [] if nothing else payload.get("PipelineRuns") or []
        nodes = payload.get("Nodes") or []
        if not isinstance(requested, list) or not isinstance(nodes, list):
            raise ApiError(vendor.INVALID_PARAMETER, "PipelineRuns and Nodes must be lists.")
        workspace = payload.get("WorkspaceId")
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        for run_id in requested:
            run = self._runs.get(str(run_id))
            if run is None or run.run_id in selection.hidden:
                continue
            if workspace and run.workspace_id != str(workspace):
                continue
            rows.append(run.status_row(now))
        node_rows: list[dict[str, Any]] = []
        for node in nodes:
            if not isinstance(node, dict):
                raise ApiError(vendor.INVALID_PARAMETER, "Nodes entries must be objects.")
            run = self._runs.get(str(node.get("PipelineRunId")))
            if run is not None and not run.deleted and node.get("NodeId") in (None, run.node_id):
                node_rows.append(run.node_row(now))
        return {"PipelineRuns": rows, "Nodes": node_rows, "Outputs": []}

    # ------------------------------------------------------------------ control API
    def _add_control_routes(self, app: web.Application) -> None:
        r = app.router
        p = CONTROL_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", f"{p}/health", self._c_health),
            ("POST", f"{p}/runs", self._c_add_runs),
            ("DELETE", f"{p}/runs", self._c_clear_runs),
            ("GET", f"{p}/runs/{{run_id}}", self._c_get_run),
            ("DELETE", f"{p}/runs/{{run_id}}", self._c_delete_run),
            ("POST", f"{p}/runs/{{run_id}}/transition", self._c_transition),
            ("POST", f"{p}/transitions", self._c_transitions),
            ("GET", f"{p}/runs", self._c_find_runs),
            ("POST", f"{p}/pipelines", self._c_add_pipeline),
            ("POST", f"{p}/workspaces", self._c_add_workspaces),
            ("POST", f"{p}/faults", self._c_add_faults),
            ("GET", f"{p}/faults", self._c_list_faults),
            ("DELETE", f"{p}/faults", self._c_clear_faults),
            ("DELETE", f"{p}/faults/{{fault_id}}", self._c_remove_fault),
            ("GET", f"{p}/clock", self._c_clock),
            ("POST", f"{p}/clock/advance", self._c_advance),
            ("GET", f"{p}/counters", self._c_counters),
            ("POST", f"{p}/reset-counters", self._c_reset_counters),
            ("POST", f"{p}/config", self._c_config),
            ("POST", f"{p}/keys", self._c_add_keys),
            ("DELETE", f"{p}/keys/{{access_key_id}}", self._c_remove_key),
            ("POST", f"{p}/sts-tokens/{{token}}/expire", self._c_expire_token),
            ("GET", f"{p}/roles", self._c_roles),
            ("POST", f"{p}/roles", self._c_trust_roles),
        ]
        for method, path, handler in routes:
            r.add_route(method, path, _control(handler))

    async def _c_health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "url": self._url})

    async def _c_add_runs(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        items = data["runs"] if isinstance(data, dict) and "runs" in data else [data]
        now = self.clock.now()
        runs = self.add_many(Run.from_json({"region": self.region, **item}, now=now) for item in items)
        return web.json_response({"runs": [{"id": run.run_id} for run in runs]}, status=201)

    async def _c_find_runs(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now()
        found = self.runs_named(request.query["name"])
        return web.json_response({"runs": [run.detail(now, verbose=False) for run in found]})

    async def _c_add_pipeline(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        timeline = Timeline.from_json(data["timeline"]) if data.get("timeline") else None
        manifest = data.get("manifest") or ""
        if not isinstance(manifest, str):
            manifest = json.dumps(manifest)
        pipeline = self.add_pipeline(
            data.get("id"), workspace_id=str(data["workspaceId"]), manifest=manifest, timeline=timeline
        )
        return web.json_response({"id": pipeline.pipeline_id}, status=201)

    async def _c_add_workspaces(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        self.add_workspace(*(str(w) for w in data["ids"]))
        return web.json_response({"ok": True})

    async def _c_clear_runs(self, request: web.Request) -> web.StreamResponse:
        self.clear_runs()
        return web.json_response({"ok": True})

    async def _c_get_run(self, request: web.Request) -> web.StreamResponse:
        run = self._runs.get(request.match_info["run_id"])
        if run is None:
            return web.json_response({"error": "no such run"}, status=404)
        body = run.detail(self.clock.now(), verbose=True)
        body["IsDeleted"] = run.deleted
        body["Timeline"] = run.timeline.to_json()
        return web.json_response(body)

    async def _c_delete_run(self, request: web.Request) -> web.StreamResponse:
        purge = request.query.get("purge", "") in ("1", "true")
        found = self.delete_run(request.match_info["run_id"], purge=purge)
        return web.json_response({"ok": found}, status=200 if found else 404)

    async def _c_transition(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        if run_id not in self._runs:
            return web.json_response({"error": "no such run"}, status=404)
        data = await request.json()
        run = self.transition(run_id, *Timeline.from_json(data["timeline"]).phases)
        return web.json_response({"id": run_id, "Status": run.state(self.clock.now()).status})

    async def _c_transitions(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        changes = [(item["id"], Timeline.from_json(item["timeline"]).phases) for item in data["transitions"]]
        try:
            at, runs = self.transition_many(changes)
        except KeyError as exc:
            return web.json_response({"error": f"no such run: {exc.args[0]}"}, status=404)
        return web.json_response(
            {
                "transitions": [{"id": run.run_id, "Status": run.state(at).status} for run in runs],
                "at": at,  # the run clock (epoch seconds, plus any advance)
            }
        )

    async def _c_add_faults(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        items = data["faults"] if isinstance(data, dict) and "faults" in data else [data]
        now = self.clock.now()
        faults = [self.faults.add(Fault.from_json(item, now=now)) for item in items]
        return web.json_response({"ids": [f.fault_id for f in faults]}, status=201)

    async def _c_list_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"faults": [f.to_json() for f in self.faults.list()]})

    async def _c_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _c_remove_fault(self, request: web.Request) -> web.StreamResponse:
        found = self.faults.remove(request.match_info["fault_id"])
        return web.json_response({"ok": found}, status=200 if found else 404)

    def _clock_json(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"now": now, "iso": iso_utc(now), "offset": self.clock.offset}

    async def _c_clock(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._clock_json())

    async def _c_advance(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        self.advance(float(data["seconds"]))
        return web.json_response(self._clock_json())

    async def _c_counters(self, request: web.Request) -> web.StreamResponse:
        include_runs = request.query.get("runs", "1") not in ("0", "false")
        body = self.counters.snapshot(include_runs=include_runs).to_json()
        if request.query.get("seconds", "0") not in ("0", "false"):
            body["perSecond"] = {str(k): v for k, v in sorted(self.counters.per_second().items())}
        return web.json_response(body)

    async def _c_reset_counters(self, request: web.Request) -> web.StreamResponse:
        self.reset_counters()
        return web.json_response({"ok": True})

    async def _c_config(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        if "latency" in data:
            self.latency = float(data["latency"])
        if "qpsLimit" in data:
            limit = data["qpsLimit"]
            self.set_qps_limit(float(limit) if limit else None, data.get("qpsBurst"))
        if "modifiedTime" in data:
            self.modified_time = _modified_mode(str(data["modifiedTime"]))
        if "listLag" in data:
            self.list_lag = _list_lag(data["listLag"])
        return web.json_response(
            {
                "latency": self.latency,
                "qpsLimit": self.qps_limit,
                "modifiedTime": self.modified_time,
                "listLag": self.list_lag,
            }
        )

    async def _c_add_keys(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        for ak, secret in (data.get("keys") or {}).items():
            self.add_key(ak, secret)
        for token, ak in (data.get("stsTokens") or {}).items():
            self.add_sts_token(token, ak)
        return web.json_response({"ok": True})

    async def _c_remove_key(self, request: web.Request) -> web.StreamResponse:
        self.remove_key(request.match_info["access_key_id"])
        return web.json_response({"ok": True})

    async def _c_roles(self, request: web.Request) -> web.StreamResponse:
        assumed = {
            key: {"roleArn": a.role_arn, "sessionName": a.session_name, "sourceAccessKeyId": a.source_key_id}
            for key, a in self.sts.assumed().items()
        }
        return web.json_response({"assumeRoleCalls": self.sts.calls, "assumed": assumed})

    async def _c_trust_roles(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        for arn, keys in (data.get("trust") or {}).items():
            self.sts.trust[arn] = None if keys is None else frozenset(keys)
        return web.json_response({"ok": True})

    async def _c_expire_token(self, request: web.Request) -> web.StreamResponse:
        self.expire_sts_token(request.match_info["token"])
        return web.json_response({"ok": True})


def _control(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Turns a bad control request into a 400 with the reason instead of a 500."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)

    return wrapped


def _route(method: str, raw_path: str) -> tuple[str | None, str | None, str | None]:
    """(action, run id, node id) for a method and raw path; Nones if no PAI action lives there."""
    path = raw_path.rstrip("/") or "/"
    if path == RUNS_PATH:
        return {"GET": LIST_RUNS, "PUT": LIST_STATUS, "POST": CREATE_RUN}.get(method), None, None
    prefix = RUNS_PATH + "/"
    if path.startswith(prefix):
        rest = path[len(prefix) :]
        if rest and "/" not in rest and method == "GET":
            return GET_RUN, unquote(rest), None
        if rest and "/" not in rest and method == "DELETE":
            return DELETE_RUN, unquote(rest), None
        run_id, _, verb = rest.partition("/")
        if run_id and method == "PUT" and verb in ("start", "termination"):
            return (START_RUN if verb == "start" else TERMINATE_RUN), unquote(run_id), None
        parts = rest.split("/")
        if method == "GET" and len(parts) in (3, 4) and parts[1] == "nodes" and parts[0] and parts[2]:
            action = _NODE_VERBS.get(parts[3] if len(parts) == 4 else "")
            if action is not None:
                return action, unquote(parts[0]), unquote(parts[2])
    return None, None, None


def _logs(node: NodeView, query: Mapping[str, str], now: float) -> dict[str, Any]:
    offset = _int_param(query, "Offset", 0, low=0)
    page_size = _int_param(query, "PageSize", 100, low=1, high=MAX_LOG_PAGE)
    low = _int_param(query, "FromTimeInSeconds", 0, low=0)
    high = _int_param(query, "ToTimeInSeconds", 0, low=0)
    keyword = (query.get("Keyword") or "").lower()
    reverse = _bool_param(query, "Reverse")
    lines = [
        text
        for at, text in log_lines(node, now)
        if at >= low and (not high or at <= high) and (not keyword or keyword in text.lower())
    ]
    if reverse:
        lines.reverse()
    return {"Logs": lines[offset : offset + page_size], "TotalCount": len(lines)}


def _outputs(node: NodeView, query: Mapping[str, str]) -> dict[str, Any]:
    if not query.get("Depth"):
        raise ApiError(vendor.INVALID_PARAMETER, "Depth is mandatory for this action.")
    depth = _int_param(query, "Depth", 1, low=1, high=99999)
    page_number = _int_param(query, "PageNumber", 1, low=1)
    page_size = _int_param(query, "PageSize", 20, low=1, high=100)
    sort_by = query.get("SortBy") or "GmtCreateTime"
    if sort_by not in _OUTPUT_SORTABLE:
        raise ApiError(vendor.INVALID_PARAMETER, f"SortBy {sort_by!r} is not supported.")
    order = (query.get("Order") or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise ApiError(vendor.INVALID_PARAMETER, f"Order {order!r} is not valid.")
    rows = outputs(node, depth)
    if query.get("Type"):
        rows = [row for row in rows if row["Type"] == query["Type"]]
    if query.get("Name"):
        rows = [row for row in rows if query["Name"].lower() in row["Name"].lower()]
    rows.sort(key=lambda r: (str(r[sort_by]), r["Id"]), reverse=order == "DESC")
    start = (page_number - 1) * page_size
    return {"Outputs": rows[start : start + page_size], "TotalCount": len(rows)}


def _bool_param(query: Mapping[str, str], name: str) -> bool:
    raw = (query.get(name) or "false").lower()
    if raw not in ("true", "false"):
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} must be true or false.")
    return raw == "true"


def _text_param(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} must be a string.")
    return value.strip() or None


def _document(name: str, text: str) -> dict[str, Any]:
    """PAI takes manifests, Arguments and Options as YAML or JSON text holding an object."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or "syntax error")
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} is not valid YAML or JSON: {problem}.") from None
    if not isinstance(parsed, dict):
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} must be an object.")
    return parsed


def _modified_mode(value: str) -> str:
    if value not in MODIFIED_TIME_MODES:
        raise ValueError(f"modifiedTime must be one of {', '.join(MODIFIED_TIME_MODES)}, not {value!r}")
    return value


def _list_lag(value: Any) -> float:
    seconds = float(value)
    if not seconds >= 0:
        raise ValueError(f"listLag must be a number of seconds >= 0, not {value!r}")
    return seconds


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(vendor.INVALID_PARAMETER, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(vendor.INVALID_PARAMETER, "The request body must be a JSON object.")
    return data


def _manifest_type(value: str | None) -> str:
    if not value:
        return "Raw"
    for known in MANIFEST_TYPES:
        if value.lower() == known.lower():
            return known
    raise ApiError(vendor.INVALID_PARAMETER, f"ManifestType {value!r} is not valid.")


def _int_param(query: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        raise ApiError(vendor.INVALID_PARAMETER, f"{name} is out of range.")
    return value


def _malformed(request_id: str) -> web.Response:
    # A body cut short mid-object: what a proxy dropping the connection, or a gateway bug, delivers.
    text = f'{{"RequestId":"{request_id}","PipelineRunId":"flow-'
    return web.Response(body=text.encode(), headers={"Content-Type": JSON_TYPE, "x-acs-request-id": request_id})
