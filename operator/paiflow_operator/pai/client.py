"""Async PAI Flow (PAIFlow 2021-02-02) client: ROA calls signed with ACS3-HMAC-SHA256 over one httpx pool.

The wire format mirrors the vendor SDK (``alibabacloud_paiflow20210202`` on ``alibabacloud_tea_openapi``'s
V3 path): same path encoding, query values, JSON body bytes and signed header set.

Secrets (access key secret, STS token, TokenId share token, the Authorization header) never appear in
an exception, a repr or a log line: errors are built from PAI's Code/Message with those values redacted,
and neither request headers nor the query string are ever logged or quoted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import platform
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote_plus, urlsplit

import httpx
from pydantic import ValidationError

from . import signing
from .credentials import Credentials, CredentialSource
from .errors import (
    AuthError,
    BadRequestError,
    CredentialsError,
    MalformedResponseError,
    NotFoundError,
    PaiError,
    ServerError,
    ThrottledError,
    TransportError,
)
from .models import (
    MAX_LOG_LINES,
    MAX_OUTPUTS,
    Acknowledged,
    CreatedRun,
    NodeLogs,
    NodeOutputList,
    NodeStatusList,
    PipelineRun,
    PipelineRunNode,
    RunList,
    RunStatusList,
)
from .paging import ALL_PAGES_ORDER, collect_pages
from .regions import PAI_REGIONS, REGION_RE, check_region

__all__ = ["API_VERSION", "DEFAULT_USER_AGENT", "PAI_REGIONS", "PaiClient", "classify_error", "default_endpoint"]

log = logging.getLogger(__name__)

API_VERSION: Final = "2021-02-02"
DEFAULT_USER_AGENT: Final = (
    f"paiflow-operator/0.1.0 ({platform.system()}; {platform.machine()}) "
    f"Python/{platform.python_version()} httpx/{httpx.__version__}"
)
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"  # what the SDK sends for JSON bodies
_PIPELINERUNS_PATH: Final = "/api/v1/pipelineruns"

_MAX_ERROR_TEXT = 400

Observer = Callable[[str, str, float], None]
T = TypeVar("T")


def default_endpoint(region: str) -> str:
    check_region(region, PAI_REGIONS)
    return f"https://paiflow.{region}.aliyuncs.com"


# What may go into an HTTP header: visible ASCII. httpx would refuse anything else, quoting the value.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_endpoint_override(value: str) -> tuple[str, str]:
    """Returns (base URL, host header). Raises ValueError for anything but https or loopback http."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http"):
        raise ValueError("endpoint_override must be an https:// URL (or http:// on a loopback host)")
    if not parts.hostname or parts.username or parts.password:
        raise ValueError("endpoint_override must be https://host[:port] without credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("endpoint_override must not carry a path, query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"endpoint_override has an invalid port: {exc}") from None
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        # Plain http would expose signed requests and STS tokens on the network: emulator use only.
        raise ValueError("plain http endpoint_override is only allowed for loopback hosts")
    host = parts.hostname
    host_for_url = f"[{host}]" if ":" in host else host
    netloc = f"{host_for_url}:{port}" if port is not None else host_for_url
    return f"{parts.scheme}://{netloc}", netloc


def _query_value(value: object) -> str:
    # OpenApiUtilClient.query stringifies with str(): ints as "50", booleans as "True"/"False".
    return str(value)


def _redact(text: str, secrets: Sequence[str]) -> str:
    """Removes every secret (raw and percent-encoded) from text PAI or a library produced, then truncates.

    PAI's SignatureDoesNotMatch message can quote the server's string-to-sign, which contains the query
    (with TokenId) and the x-acs-security-token header.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        escaped = secret.encode("unicode_escape").decode("ascii")
        forms = {secret, signing.percent_encode(secret), quote_plus(secret), secret.replace(" ", "+"), escaped}
        for form in forms:
            text = text.replace(form, "<redacted>")
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "..."
    return text


_AUTH_CODE_PREFIXES: Final = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidSecurityToken",
    "Forbidden",
    "NoPermission",
)
# Codes saying the *API call* does not exist (wrong endpoint, version or region), not the run. They can
# come with HTTP 404 but must never make the operator believe a run was deleted.
_API_NOT_FOUND_PREFIXES: Final = ("InvalidAction", "InvalidApi", "InvalidVersion", "InvalidRegion")


def classify_error(http_status: int, code: str | None, *, has_error_body: bool = True) -> type[PaiError]:
    """Maps an HTTP error status plus PAI's error Code to an error class. Order matters."""
    code = code or ""
    if code.startswith("Throttling") or http_status == 429:
        return ThrottledError
    # Before NotFound: "InvalidAccessKeyId.NotFound" arrives as HTTP 404 and is an auth problem.
    if code.startswith(_AUTH_CODE_PREFIXES) or http_status in (401, 403):
        return AuthError
    if code.startswith(_API_NOT_FOUND_PREFIXES):
        return BadRequestError
    if "NotFound" in code or "NotExist" in code:
        return NotFoundError
    if http_status == 404:
        # A 404 without PAI's JSON error body came from something in front of PAI (proxy, wrong
        # endpoint_override), so it says nothing about the run.
        return NotFoundError if has_error_body else BadRequestError
    if 400 <= http_status < 500:
        return BadRequestError
    return ServerError


class PaiClient:
    """One shared connection pool for every PAI call the operator makes, whatever the region or keys."""

    def __init__(
        self,
        *,
        endpoint_override: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 15,
        max_connections: int = 100,
        observer: Observer | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
        extra_regions: Sequence[str] = (),
    ) -> None:
        """``endpoint_override`` is an operator setting (the emulator, a VPC endpoint), never user input.
        ``transport`` exists for tests (httpx.MockTransport); production uses a pooled HTTP transport."""
        self._override: tuple[str, str] | None = (
            _parse_endpoint_override(endpoint_override) if endpoint_override else None
        )
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        bad = [r for r in extra_regions if not REGION_RE.fullmatch(r)]
        if bad:
            raise ValueError(f"extra_regions: not region ids: {', '.join(bad)}")
        self._regions = PAI_REGIONS | frozenset(extra_regions)
        self._observer = observer
        self._user_agent = user_agent
        # write and pool waits are bounded too, so no call can hang forever on a stuck pool.
        timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._transport: httpx.AsyncBaseTransport = transport or httpx.AsyncHTTPTransport(
            limits=limits, retries=0, proxy=proxy
        )
        # trust_env=False: proxies are an explicit operator setting, not whatever the pod env says.
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
        )

    @property
    def timeout(self) -> httpx.Timeout:
        return self._http.timeout

    def endpoint_for(self, region: str) -> tuple[str, str]:
        """Returns (base URL, host header) for a region."""
        check_region(region, self._regions)
        if self._override is not None:
            return self._override
        host = f"paiflow.{region}.aliyuncs.com"
        return f"https://{host}", host

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PaiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        target = self._override[0] if self._override else "https://paiflow.<region>.aliyuncs.com"
        return f"PaiClient(endpoint={target!r})"

    # ------------------------------------------------------------------ calls

    async def get_pipeline_run(
        self,
        run_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        verbose: bool = False,
        manifest_type: str | None = None,
        token_id: str | None = None,
    ) -> PipelineRun:
        if not run_id:
            raise BadRequestError("pipeline run id is empty", code="MissingPipelineRunId")
        # Like the SDK: the id is one path segment, so "/" and everything but unreserved is encoded.
        path = f"{_PIPELINERUNS_PATH}/{signing.percent_encode(run_id)}"
        query: dict[str, str | None] = {
            "ManifestType": manifest_type,
            "TokenId": token_id,
            "Verbose": _query_value(verbose),
        }
        body = await self._call(
            "GetPipelineRun",
            "GET",
            path,
            query=query,
            region=region,
            credentials=credentials,
            extra_secrets=(token_id,) if token_id else (),
            parse=PipelineRun.from_wire,
        )
        if body.pipeline_run_id != run_id:
            # Mirroring it would show another run's state (and, were it terminal, stop polling this one).
            raise MalformedResponseError(
                f"GetPipelineRun: the answer is for run {body.pipeline_run_id!r}, not {run_id!r} (PipelineRunId)",
                request_id=body.request_id,
            )
        return body

    async def list_pipeline_runs_status(
        self,
        workspace_id: str,
        run_ids: Sequence[str],
        *,
        region: str,
        credentials: CredentialSource,
    ) -> RunStatusList:
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of ids, not a str")
        # Key order and compact separators match DaraCore.to_json_string on the SDK's body dict.
        payload: dict[str, Any] = {"PipelineRuns": list(run_ids), "WorkspaceId": workspace_id}
        return await self._call(
            "ListPipelineRunsStatus",
            "PUT",
            _PIPELINERUNS_PATH,
            query={},
            body=payload,
            region=region,
            credentials=credentials,
            parse=RunStatusList.model_validate,
        )

    async def list_pipeline_runs(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str | None = None,
        page_number: int = 1,
        page_size: int = 50,
        status: str | None = None,
        name: str | None = None,
        pipeline_run_id: str | None = None,
        pipeline_ids: str | None = None,
        source_type: str | None = None,
        source_id: str | None = None,
        user_id: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
    ) -> RunList:
        query: dict[str, str | None] = {
            "Name": name,
            "Order": order,
            "PageNumber": _query_value(page_number),
            "PageSize": _query_value(page_size),
            "PipelineIds": pipeline_ids,
            "PipelineRunId": pipeline_run_id,
            "SortBy": sort_by,
            "SourceId": source_id,
            "SourceType": source_type,
            "Status": status,
            "UserId": user_id,
            "WorkspaceId": workspace_id,
        }
        return await self._call(
            "ListPipelineRuns",
            "GET",
            _PIPELINERUNS_PATH,
            query=query,
            region=region,
            credentials=credentials,
            parse=RunList.model_validate,
        )

    async def list_all_pipeline_runs(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str | None = None,
        name: str | None = None,
        source_id: str | None = None,
        page_size: int = 50,
        max_pages: int = 20,
    ) -> RunList:
        """Every row of a filtered ListPipelineRuns, oldest first; see collect_pages."""

        async def page(number: int, size: int) -> RunList:
            return await self.list_pipeline_runs(
                region=region,
                credentials=credentials,
                workspace_id=workspace_id,
                name=name,
                source_id=source_id,
                page_number=number,
                page_size=size,
                **ALL_PAGES_ORDER,
            )

        return await collect_pages(page, page_size=page_size, max_pages=max_pages)

    async def create_pipeline_run(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str,
        name: str,
        pipeline_id: str | None = None,
        pipeline_manifest: str | None = None,
        arguments: str | None = None,
        options: str | None = None,
        accessibility: str | None = None,
        no_confirm_required: bool = True,
        source_type: str | None = None,
        source_id: str | None = None,
    ) -> CreatedRun:
        """POST /api/v1/pipelineruns. PAI has no idempotency token: every call that reaches it may make a run,
        so callers must look the run up by name before calling again (see launch_reconcile)."""
        if (pipeline_id is None) == (pipeline_manifest is None):
            raise BadRequestError("exactly one of pipeline_id and pipeline_manifest", code="MissingPipeline")
        # Key order as the SDK builds its body dict (alphabetical by field), compact separators.
        candidates: dict[str, Any] = {
            "Accessibility": accessibility,
            "Arguments": arguments,
            "Name": name,
            "NoConfirmRequired": no_confirm_required,
            "Options": options,
            "PipelineId": pipeline_id,
            "PipelineManifest": pipeline_manifest,
            "SourceId": source_id,
            "SourceType": source_type,
            "WorkspaceId": workspace_id,
        }
        payload = {k: v for k, v in candidates.items() if v is not None}
        return await self._call(
            "CreatePipelineRun",
            "POST",
            _PIPELINERUNS_PATH,
            query={},
            body=payload,
            region=region,
            credentials=credentials,
            parse=CreatedRun.model_validate,
        )

    async def start_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        return await self._run_action("StartPipelineRun", run_id, "start", region=region, credentials=credentials)

    async def delete_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        """DELETE /api/v1/pipelineruns/{id}. PAI allows it only while the run is Initialized, Terminated,
        Succeeded or Failed (its API page); the operator uses it on unstarted duplicates only."""
        if not run_id:
            raise BadRequestError("pipeline run id is empty", code="MissingPipelineRunId")
        return await self._call(
            "DeletePipelineRun",
            "DELETE",
            f"{_PIPELINERUNS_PATH}/{signing.percent_encode(run_id)}",
            query={},
            region=region,
            credentials=credentials,
            parse=Acknowledged.model_validate,
        )

    async def terminate_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged:
        return await self._run_action(
            "TerminatePipelineRun", run_id, "termination", region=region, credentials=credentials
        )

    # ------------------------------------------------------------------ node calls (issue 19)
    # All four hang off a node of the run, normally its root (the run's NodeId). They cost PAI quota like
    # every call: callers decide how often (the operator gives them a budget of their own).

    async def get_pipeline_run_node(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 2,
        token_id: str | None = None,
    ) -> PipelineRunNode:
        """The node and its descendants down to ``depth`` levels (PAI's default 2: the node and its children)."""
        query: dict[str, str | None] = {"Depth": _query_value(_positive(depth, "depth")), "TokenId": token_id}
        node = await self._call(
            "GetPipelineRunNode",
            "GET",
            _node_path(run_id, node_id),
            query=query,
            region=region,
            credentials=credentials,
            extra_secrets=(token_id,) if token_id else (),
            parse=PipelineRunNode.from_wire,
        )
        if node.node_id != node_id:
            raise MalformedResponseError(
                f"GetPipelineRunNode: the answer is for node {node.node_id!r}, not {node_id!r} (Metadata.NodeId)",
                request_id=node.request_id,
            )
        return node

    async def list_pipeline_run_node_status(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 2,
        token_id: str | None = None,
    ) -> NodeStatusList:
        query: dict[str, str | None] = {"Depth": _query_value(_positive(depth, "depth")), "TokenId": token_id}
        return await self._call(
            "ListPipelineRunNodeStatus",
            "GET",
            _node_path(run_id, node_id, "status"),
            query=query,
            region=region,
            credentials=credentials,
            extra_secrets=(token_id,) if token_id else (),
            parse=NodeStatusList.model_validate,
        )

    async def list_pipeline_run_node_logs(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        offset: int = 0,
        page_size: int = 100,
        from_time: int | None = None,
        to_time: int | None = None,
        keyword: str | None = None,
        reverse: bool | None = None,
        token_id: str | None = None,
    ) -> NodeLogs:
        """A page of a node's log lines. ``from_time``/``to_time``: epoch seconds; ``reverse``: newest first."""
        if offset < 0:
            raise BadRequestError("offset must not be negative", code="InvalidOffset")
        if not 1 <= page_size <= MAX_LOG_LINES:
            raise BadRequestError(f"page_size must lie in 1..{MAX_LOG_LINES}", code="InvalidPageSize")
        query: dict[str, str | None] = {
            "FromTimeInSeconds": None if from_time is None else _query_value(from_time),
            "Keyword": keyword,
            "Offset": _query_value(offset),
            "PageSize": _query_value(page_size),
            "Reverse": None if reverse is None else _query_value(reverse),
            "ToTimeInSeconds": None if to_time is None else _query_value(to_time),
            "TokenId": token_id,
        }
        return await self._call(
            "ListPipelineRunNodeLogs",
            "GET",
            _node_path(run_id, node_id, "logs"),
            query=query,
            region=region,
            credentials=credentials,
            extra_secrets=(token_id,) if token_id else (),
            parse=NodeLogs.model_validate,
        )

    async def list_pipeline_run_node_outputs(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 99999,
        page_number: int = 1,
        page_size: int = 50,
        output_type: str | None = None,
        name: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
        token_id: str | None = None,
    ) -> NodeOutputList:
        """Outputs of the node and its descendants down to ``depth`` (PAI requires it, 1..99999)."""
        if not 1 <= depth <= 99999:
            raise BadRequestError("depth must lie in 1..99999", code="InvalidDepth")
        if not 1 <= page_size <= MAX_OUTPUTS or page_number < 1:
            raise BadRequestError(f"page_size must lie in 1..{MAX_OUTPUTS}, page_number >= 1", code="InvalidPage")
        query: dict[str, str | None] = {
            "Depth": _query_value(depth),
            "Name": name,
            "Order": order,
            "PageNumber": _query_value(page_number),
            "PageSize": _query_value(page_size),
            "SortBy": sort_by,
            "TokenId": token_id,
            "Type": output_type,
        }
        return await self._call(
            "ListPipelineRunNodeOutputs",
            "GET",
            _node_path(run_id, node_id, "outputs"),
            query=query,
            region=region,
            credentials=credentials,
            extra_secrets=(token_id,) if token_id else (),
            parse=NodeOutputList.model_validate,
        )

    async def _run_action(
        self, action: str, run_id: str, verb: str, *, region: str, credentials: CredentialSource
    ) -> Acknowledged:
        if not run_id:
            raise BadRequestError("pipeline run id is empty", code="MissingPipelineRunId")
        # The SDK sends these PUTs without a body (no content-type, hash of "").
        return await self._call(
            action,
            "PUT",
            f"{_PIPELINERUNS_PATH}/{signing.percent_encode(run_id)}/{verb}",
            query={},
            region=region,
            credentials=credentials,
            parse=Acknowledged.model_validate,
        )

    # ------------------------------------------------------------------ plumbing

    async def _call(
        self,
        action: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None],
        region: str,
        credentials: CredentialSource,
        parse: Callable[[dict[str, Any]], T],
        body: Mapping[str, Any] | None = None,
        extra_secrets: Sequence[str] = (),
    ) -> T:
        started = time.perf_counter()
        outcome = "internal"
        try:
            result = await self._send(action, method, path, query, region, credentials, parse, body, extra_secrets)
            outcome = "ok"
            return result
        except PaiError as exc:
            outcome = exc.kind.value
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._observe(action, outcome, time.perf_counter() - started)

    def _observe(self, action: str, outcome: str, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(action, outcome, seconds)
        except Exception:
            # Metrics must never break a reconcile.
            log.exception("PAI call observer failed for %s", action)

    async def _credentials(self, source: CredentialSource) -> Credentials:
        try:
            return await source.get()
        except PaiError:
            raise
        except Exception as exc:
            # Only the type: a third-party source's message could quote what it read.
            raise CredentialsError(f"credential source failed: {type(exc).__name__}") from None

    async def _send(
        self,
        action: str,
        method: str,
        path: str,
        query: Mapping[str, str | None],
        region: str,
        source: CredentialSource,
        parse: Callable[[dict[str, Any]], T],
        body: Mapping[str, Any] | None,
        extra_secrets: Sequence[str],
    ) -> T:
        base_url, host = self.endpoint_for(region)
        creds = await self._credentials(source)
        _check_header_values(creds)

        content: bytes | None = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        payload_hash = signing.sha256_hex(content or b"")

        headers: dict[str, str] = {
            "host": host,
            "x-acs-version": API_VERSION,
            "x-acs-action": action,
            "user-agent": self._user_agent,
            "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "accept": "application/json",
        }
        if content is not None:
            headers["content-type"] = JSON_CONTENT_TYPE
        headers["x-acs-content-sha256"] = payload_hash
        if creds.security_token:
            # The SDK sends (and signs) the key id next to the token for STS credentials.
            headers["x-acs-accesskey-id"] = creds.access_key_id
            headers["x-acs-security-token"] = creds.security_token
        authorization = signing.authorization(
            method, path, query, headers, payload_hash, creds.access_key_id, creds.access_key_secret
        )
        secrets = (
            creds.access_key_secret,
            creds.security_token or "",
            authorization,
            *extra_secrets,
        )
        # Query on the wire is encoded exactly like the canonical query (RFC 3986), so what we signed is
        # what the server decodes.
        query_string = signing.canonical_query(query)
        url = f"{base_url}{path}" + (f"?{query_string}" if query_string else "")
        request = self._http.build_request(
            method, url, headers={**headers, "Authorization": authorization}, content=content
        )

        try:
            response = await self._roundtrip(request)
        except httpx.TimeoutException as exc:
            raise TransportError(f"{action}: timed out ({type(exc).__name__})") from None
        except httpx.DecodingError:
            # Content-Encoding that does not decode: PAI's answer is unusable, a retry may fare better.
            raise MalformedResponseError(f"{action}: response body could not be decoded") from None
        except (httpx.RequestError, OSError, httpx.LocalProtocolError) as exc:
            detail = _scrub_library_text(_redact(str(exc), secrets))
            raise TransportError(f"{action}: transport error {type(exc).__name__}: {detail}") from None

        header_request_id = response.headers.get("x-acs-request-id")
        raw = response.content
        try:
            data: Any = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested beyond the parser's depth, e.g. a pathological node tree.
            data = None
        body_map = data if isinstance(data, dict) else None
        request_id = _text(body_map.get("RequestId")) if body_map else None
        request_id = request_id or header_request_id

        if response.status_code >= 300:
            raise self._error(action, response.status_code, body_map, request_id, secrets)

        if body_map is None:
            raise MalformedResponseError(
                f"{action}: response is not a JSON object",
                http_status=response.status_code,
                request_id=request_id,
            )
        try:
            result = parse(body_map)
        except (ValidationError, ValueError, TypeError) as exc:
            raise MalformedResponseError(
                f"{action}: response is missing or has invalid fields: {_field_errors(exc)}",
                http_status=response.status_code,
                request_id=request_id,
            ) from None
        log.debug("PAI %s %s -> %s requestId=%s", action, path, response.status_code, request_id)
        return result

    async def _roundtrip(self, request: httpx.Request) -> httpx.Response:
        # Straight to the client's pooled transport: AsyncClient.send logs every request's full URL at
        # INFO, and GetPipelineRun's URL can carry the TokenId share token. build_request() has already
        # applied the client's timeouts; redirects are never followed anyway.
        if self._http.is_closed:
            raise RuntimeError("PaiClient is closed")
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _error(
        self,
        action: str,
        status: int,
        body: dict[str, Any] | None,
        request_id: str | None,
        secrets: Sequence[str],
    ) -> PaiError:
        if status < 400:
            # We never follow redirects; PAI does not send them.
            return MalformedResponseError(
                f"{action}: unexpected HTTP {status}", http_status=status, request_id=request_id
            )
        code = _text(body.get("Code") or body.get("code")) if body else None
        message = _text(body.get("Message") or body.get("message")) if body else None
        cls = classify_error(status, code, has_error_body=body is not None)
        text = f"{action} failed: {message}" if message else f"{action} failed"
        if body is None:
            text += " (response body is not PAI's JSON error)"
        return cls(
            _redact(text, secrets),
            code=_redact(code, secrets) if code else None,
            http_status=status,
            request_id=request_id,
        )


def _node_path(run_id: str, node_id: str, verb: str = "") -> str:
    if not run_id:
        raise BadRequestError("pipeline run id is empty", code="MissingPipelineRunId")
    if not node_id:
        raise BadRequestError("node id is empty", code="MissingNodeId")
    # Each id is one path segment, encoded like the SDK's get_encode_param.
    path = f"{_PIPELINERUNS_PATH}/{signing.percent_encode(run_id)}/nodes/{signing.percent_encode(node_id)}"
    return f"{path}/{verb}" if verb else path


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise BadRequestError(f"{name} must be at least 1", code="InvalidParameter")
    return value


def _check_header_values(creds: Credentials) -> None:
    """Refuses credentials that cannot travel in a header before any library sees (and quotes) them.

    (The share token goes in the query, where anything is percent-encoded.)"""
    for what, value in (
        ("access key id", creds.access_key_id),
        ("access key secret", creds.access_key_secret),
        ("security token", creds.security_token),
    ):
        if value and not _HEADER_SAFE.fullmatch(value):
            raise CredentialsError(
                f"the {what} holds characters that cannot be sent (only printable ASCII without spaces)",
                code="CredentialValueInvalid",
            )


# Library messages are not trusted to be clean: anything quoted (a bytes or str repr) and any long opaque
# run of token-like characters is dropped, whatever it was.
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*"')
_OPAQUE_RUN = re.compile(r"[A-Za-z0-9+/=_\-.%]{24,}")


def _scrub_library_text(text: str) -> str:
    text = _QUOTED.sub("<quoted>", text)
    return _OPAQUE_RUN.sub("<redacted>", text)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _field_errors(exc: Exception) -> str:
    # Field locations and error types only: pydantic's default text echoes the input values.
    if isinstance(exc, ValidationError):
        return ", ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['type']}" for err in exc.errors())[
            :_MAX_ERROR_TEXT
        ]
    return type(exc).__name__
