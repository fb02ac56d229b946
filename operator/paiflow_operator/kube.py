"""The few Kubernetes calls the operator makes itself: status patches, Events, Secret reads, membership Leases,
and for launched runs its finalizer and a manifest ConfigMap read.

kopf watches the other kinds, the runs' own watch (watching.py) lists and watches through here; these requests
go out on aiohttp (which kopf brings) from the event loop, with the
connection, TLS and credentials of the `kubernetes` client's configuration (kubeconfig or ServiceAccount, its
token refreshed as that client refreshes it). Not the `kubernetes` client's own blocking calls on a thread
pool: a status write cost the operator 2-3 times the CPU that way (`python -m bench.ceiling`), CPU the API
server needs during a mass finish on a small control plane.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import kubernetes

from paiflow_operator.api import policies as policies_api
from paiflow_operator.api import runs as runs_api
from paiflow_operator.api import schedules as schedules_api
from paiflow_operator.api import workspaces as workspaces_api
from paiflow_operator.conditions import Event, timestamp

log = logging.getLogger(__name__)

COMPONENT = "paiflow-operator"
# Named on every status write, so that managedFields tell the operator's writes from anyone else's.
FIELD_MANAGER = "paiflow-operator"
MAX_EVENT_MESSAGE = 1024
LEASES = "/apis/coordination.k8s.io/v1"
# Lease renewals have connections of their own: a late renewal costs the membership.
LEASE_CONNECTIONS = 2
# So do reads (Secrets for PAI calls, a launch's manifest ConfigMap, lists): one tenant's Secret read waited
# behind a burst of thousands of status writes, and its PAI calls with it.
READ_CONNECTIONS = 4
# List pages of the runs' watch at a time (its streams hold connections of their own, unlimited).
LIST_CONNECTIONS = 4
# Seconds a bearer token is used before the configuration is asked for it again (ServiceAccount tokens are
# reread every minute by the kubernetes client's own hook).
TOKEN_RECHECK = 5.0


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str
    uid: str
    resource_version: str | None = None
    kind: str = runs_api.KIND


def load_client_configuration() -> kubernetes.client.Configuration:
    """In a pod: the ServiceAccount; elsewhere: the current kubeconfig (KUBECONFIG or ~/.kube/config)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    return config


def tls_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | None:
    """The TLS settings of the `kubernetes` client's configuration as an SSLContext (None for plain http)."""
    if not configuration.host.startswith("https:"):
        return None
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert or None, cadata=getattr(configuration, "ca_cert_data", None) or None
    )
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def proxy_for(configuration: kubernetes.client.Configuration) -> str | None:
    """The proxy the `kubernetes` client would use for this server, if any (its own no_proxy rules)."""
    proxy: str | None = configuration.proxy
    if not proxy:
        return None
    bypass = getattr(kubernetes.client.rest, "should_bypass_proxies", None)
    if bypass is not None and bypass(configuration.host, configuration.no_proxy or ""):
        return None
    if proxy.startswith("socks"):
        raise ValueError("a SOCKS proxy for the API server is not supported; use an http(s) proxy or none")
    return proxy


class Lane(enum.Enum):
    """Requests queue per lane, so that a burst in one never delays the others."""

    WRITES = "writes"  # status patches, Events, creates: thousands at once in a first sync or a mass finish
    READS = "reads"  # a few at a time, each holding back a PAI call or a launch
    LEASES = "leases"  # membership renewals
    WATCH = "watch"  # the runs' list pages and watch streams (watching.py): long requests of their own


def lane_of(method: str, path: str) -> Lane:
    if path.startswith(LEASES):
        return Lane.LEASES
    # Writes stay in one queue, in order: a workspace's status write waiting behind its runs' writes also
    # paces its scans during a burst (an experiment that let them go ahead is in the README, issue 22).
    return Lane.READS if method == "GET" else Lane.WRITES


@dataclass
class _LaneState:
    session: aiohttp.ClientSession
    # Requests wait for a turn here, not in the connector: aiohttp counts a wait for a pooled connection
    # against the request's connect timeout, and a burst of thousands of writes would time out queueing.
    turns: asyncio.Semaphore


class KubeApi:
    def __init__(self, configuration: kubernetes.client.Configuration, concurrency: int = 8) -> None:
        self._configuration = configuration
        self._base = configuration.host.rstrip("/")
        self._tls = tls_context(configuration)
        self._proxy = proxy_for(configuration)
        self._server_hostname = getattr(configuration, "tls_server_name", None) or None
        self._concurrency = concurrency
        # Per lane, made in the event loop at its first request (aiohttp binds its sessions to one loop).
        self._lanes: dict[Lane, _LaneState] = {}
        self._instance = socket.gethostname()
        self._token: str | None = None
        self._token_checked: float | None = None

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        # limit 0: no limit (the watch lane: one stream per namespace watched, each held for minutes).
        connector = aiohttp.TCPConnector(limit=limit, ssl=self._tls if self._tls is not None else False)
        # trust_env off: the proxy is the one the kubernetes configuration names (proxy_for), nothing else.
        return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)

    def _lane(self, lane: Lane) -> _LaneState:
        state = self._lanes.get(lane)
        if state is None or state.session.closed:
            limit = {
                Lane.WRITES: self._concurrency,
                Lane.LEASES: LEASE_CONNECTIONS,
                Lane.WATCH: LIST_CONNECTIONS,
            }.get(lane, READ_CONNECTIONS)
            session = self._new_session(0 if lane is Lane.WATCH else limit)
            state = self._lanes[lane] = _LaneState(session, asyncio.Semaphore(limit))
        return state

    async def aclose(self) -> None:
        for state in self._lanes.values():
            await state.session.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._bearer()
        if token:
            headers["Authorization"] = token
        return headers

    def _bearer(self) -> str | None:
        """The configuration's token, asked for again every TOKEN_RECHECK seconds (and after a 401): its hook
        refreshes a rotated ServiceAccount token or an expired exec-plugin token, as the `kubernetes` client
        does, but a kubeconfig's hook reloads the whole configuration, 4% of the operator's CPU in a mass
        finish when asked at every request."""
        now = time.monotonic()
        if self._token_checked is None or now - self._token_checked >= TOKEN_RECHECK:
            bearer = self._configuration.auth_settings().get("BearerToken")
            value = bearer.get("value") if bearer else None
            self._token = str(value) if value else None
            self._token_checked = now
        return self._token

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
        request_timeout: float = 30.0,
        lane: Lane | None = None,
    ) -> Any:
        url = self._url(path, query)
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        state = self._lane(lane or lane_of(method, path))
        try:
            async with state.turns:
                # The request's own time only: the turn above is taken before the clock starts.
                timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=min(5.0, request_timeout))
                async with state.session.request(
                    method,
                    url,
                    data=data,
                    headers=self._headers(content_type),
                    timeout=timeout,
                    proxy=self._proxy,
                    server_hostname=self._server_hostname,
                ) as response:
                    raw = await response.read()
                    status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Unreachable, reset, timed out: status 0 and the error's type only. Every caller logs what it gets,
            # and a library's text is not trusted to be clean.
            raise KubeError(0, type(exc).__name__, "the API server could not be reached") from None
        if status == 401:
            self._token_checked = None  # a rotated token: the next request asks the configuration again
        if status >= 400:
            raise self._error(status, raw)
        return json.loads(raw) if raw else None

    def _url(self, path: str, query: list[tuple[str, str]] | None) -> str:
        return self._base + path + (("&" if "?" in path else "?") + urlencode(query) if query else "")

    async def list_page(self, path: str, query: list[tuple[str, str]], request_timeout: float = 60.0) -> Any:
        """One page of a list, for the runs' watch (watching.py): in the watch lane, not ahead of Secret reads."""
        return await self._call("GET", path, query=query, request_timeout=request_timeout, lane=Lane.WATCH)

    async def watch_events(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, decoded, until the server ends it. Lines are split here rather than
        by aiohttp's readline, whose 64 KiB line limit a run with a large status would pass."""
        state = self._lane(Lane.WATCH)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=read_timeout)
        try:
            async with state.session.get(
                self._url(path, query),
                headers=self._headers(None),
                timeout=timeout,
                proxy=self._proxy,
                server_hostname=self._server_hostname,
            ) as response:
                if response.status == 401:
                    self._token_checked = None
                if response.status >= 400:
                    raise self._error(response.status, await response.read())
                pending = bytearray()
                async for chunk in response.content.iter_any():
                    pending += chunk
                    start = 0
                    while (end := pending.find(b"\n", start)) >= 0:
                        if end > start:
                            yield json.loads(pending[start:end])
                        start = end + 1
                    del pending[:start]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # As _call: the error's type only, never a library's text.
            raise KubeError(0, type(exc).__name__, "the API server could not be reached") from None

    @staticmethod
    def _error(status: int, body: Any) -> KubeError:
        try:
            detail = json.loads(body)
            return KubeError(status, str(detail.get("reason", "")), str(detail.get("message", "")))
        except (TypeError, ValueError):
            return KubeError(status, "", str(body)[:200])

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource. With ``resource_version`` it is conditional: the API
        server answers 409 if the object changed since (how a launch claims the right to create a run)."""
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        path = f"{self._object_path(namespace, name)}/status?fieldManager={FIELD_MANAGER}"
        result: dict[str, Any] = await self._call("PATCH", path, body, content_type="application/merge-patch+json")
        return result

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]:
        """The operator's only metadata write: its finalizer on launched runs whose deletionPolicy needs one.
        Conditional on resourceVersion, so that another controller's finalizer is never dropped."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        result: dict[str, Any] = await self._call(
            "PATCH",
            f"{self._object_path(namespace, name)}?fieldManager={FIELD_MANAGER}",
            body,
            content_type="application/merge-patch+json",
        )
        return result

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        data = await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return dict(data.get("data") or {})

    @staticmethod
    def _object_path(namespace: str, name: str) -> str:
        return f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/{runs_api.PLURAL}/{name}"

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        message = event.message if len(event.message) <= MAX_EVENT_MESSAGE else event.message[:1021] + "..."
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": runs_api.API_VERSION,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
                "resourceVersion": ref.resource_version,
            },
            "reason": event.reason,
            "message": message,
            "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": timestamp(now),
            "lastTimestamp": timestamp(now),
            "count": 1,
        }
        await self._call("POST", f"/api/v1/namespaces/{ref.namespace}/events", body)

    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Creates a PaiPipelineRun (an imported run); a name already taken raises KubeError 409."""
        path = (
            f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/{runs_api.PLURAL}"
            f"?fieldManager={FIELD_MANAGER}"
        )
        result: dict[str, Any] = await self._call("POST", path, body)
        return result

    async def delete_run(self, namespace: str, name: str, uid: str) -> None:
        """Deletes exactly the PaiPipelineRun seen (uid precondition): never a namesake created since."""
        path = f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/{runs_api.PLURAL}/{name}"
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        await self._call("DELETE", path, body)

    async def patch_workspace_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        path = (
            f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/"
            f"{workspaces_api.PLURAL}/{name}/status?fieldManager={FIELD_MANAGER}"
        )
        result: dict[str, Any] = await self._call(
            "PATCH", path, {"status": patch}, content_type="application/merge-patch+json"
        )
        return result

    async def patch_run_spec(self, namespace: str, name: str, patch: dict[str, Any], uid: str) -> dict[str, Any]:
        """A schedule's only spec write, to a run it owns: `terminate: true` (concurrencyPolicy Replace).
        A JSON patch with a uid test, so a namesake created since is never touched."""
        ops = [{"op": "test", "path": "/metadata/uid", "value": uid}]
        ops += [{"op": "add", "path": f"/spec/{key}", "value": value} for key, value in patch.items()]
        result: dict[str, Any] = await self._call(
            "PATCH",
            f"{self._object_path(namespace, name)}?fieldManager={FIELD_MANAGER}",
            ops,
            content_type="application/json-patch+json",
        )
        return result

    async def patch_schedule_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        path = (
            f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/"
            f"{schedules_api.PLURAL}/{name}/status?fieldManager={FIELD_MANAGER}"
        )
        result: dict[str, Any] = await self._call(
            "PATCH", path, {"status": patch}, content_type="application/merge-patch+json"
        )
        return result

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        data = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return {k: base64.b64decode(v) for k, v in (data.get("data") or {}).items()}

    # ---- PaiAccessPolicies (cluster-scoped) and the Namespaces they select (access/) -------------------

    async def list_all(self, path: str) -> list[dict[str, Any]]:
        """Every item of a cluster-wide list, page by page."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("limit", "500")] + ([("continue", token)] if token else [])
            data = await self._call("GET", path, query=query)
            items.extend(data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    async def list_policies(self) -> list[dict[str, Any]]:
        return await self.list_all(f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/{policies_api.PLURAL}")

    async def list_namespaces(self) -> list[dict[str, Any]]:
        return await self.list_all("/api/v1/namespaces")

    async def patch_policy_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        path = (
            f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/{policies_api.PLURAL}/{name}/status"
            f"?fieldManager={FIELD_MANAGER}"
        )
        result: dict[str, Any] = await self._call(
            "PATCH", path, {"status": patch}, content_type="application/merge-patch+json"
        )
        return result

    # ---- Leases of the replicas (membership.py), in the operator's own namespace only -----------------

    async def list_leases(
        self, namespace: str, label_selector: str, request_timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        data = await self._call(
            "GET",
            f"{LEASES}/namespaces/{namespace}/leases",
            query=[("labelSelector", label_selector)],
            request_timeout=request_timeout,
        )
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    async def create_lease(self, namespace: str, body: dict[str, Any], request_timeout: float = 30.0) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"{LEASES}/namespaces/{namespace}/leases", body, request_timeout=request_timeout
        )
        return result

    async def patch_lease(
        self, namespace: str, name: str, patch: dict[str, Any], request_timeout: float = 30.0
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PATCH",
            f"{LEASES}/namespaces/{namespace}/leases/{name}",
            patch,
            content_type="application/merge-patch+json",
            request_timeout=request_timeout,
        )
        return result

    async def delete_lease(
        self, namespace: str, name: str, resource_version: str | None = None, request_timeout: float = 30.0
    ) -> None:
        """With `resource_version`, deletes only that version: a Lease renewed meanwhile stays."""
        body = {"preconditions": {"resourceVersion": resource_version}} if resource_version else None
        await self._call(
            "DELETE", f"{LEASES}/namespaces/{namespace}/leases/{name}", body, request_timeout=request_timeout
        )
