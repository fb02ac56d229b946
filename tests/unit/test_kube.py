"""KubeApi's errors: what reaches logs and conditions is a status and a type, never a library's text."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from paiflow_operator import kube as kube_module
from paiflow_operator.conditions import Event
from paiflow_operator.kube import KubeApi, KubeError, Lane, ObjectRef, lane_of

RUNS = "/apis/paiflow-operator.dev/v1alpha1/namespaces/ns/paipipelineruns"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_api_server_is_a_kube_error_of_status_zero_without_library_text() -> None:
    config = kubernetes.client.Configuration()
    config.host = f"https://127.0.0.1:{_closed_port()}"
    config.api_key = {"authorization": "Bearer SEKRIT-token-value"}
    config.retries = 0
    api = KubeApi(config, concurrency=1)
    try:
        with pytest.raises(KubeError) as info:
            await api.read_secret("ns", "name")
    finally:
        await api.aclose()
    assert info.value.status == 0
    text = f"{info.value} {info.value!r}"
    assert "SEKRIT" not in text and "127.0.0.1" not in text


async def _serve(handle: Any) -> tuple[Any, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _slow_api_server(delay: float, seen: list[dict[str, str]]) -> tuple[Any, str]:
    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        await asyncio.sleep(delay)
        body = await request.json() if request.can_read_body else {}
        return web.json_response({"metadata": {"resourceVersion": str(len(seen))}, "status": body.get("status")})

    return await _serve(handle)


async def test_a_burst_of_writes_queues_for_its_turn_without_timing_out() -> None:
    """Thousands of status writes in a mass finish wait for a connection; only the request itself is timed.
    (aiohttp counts a wait for a pooled connection against the connect timeout: the burst used to fail.)"""
    seen: list[dict[str, str]] = []
    runner, url = await _slow_api_server(0.3, seen)
    config = kubernetes.client.Configuration()
    config.host = url
    api = KubeApi(config, concurrency=1)
    try:
        patches = [api.patch_status("ns", f"run-{i}", {"runStatus": "Succeeded"}, None) for i in range(8)]
        # Each request is 0.3 s; the last waits 2.1 s for its turn, longer than a 1 s request timeout.
        with_short_timeout = [
            api._call("POST", "/api/v1/namespaces/ns/events", {"reason": f"R{i}"}, request_timeout=1.0)
            for i in range(4)
        ]
        results = await asyncio.gather(*patches, *with_short_timeout)
    finally:
        await api.aclose()
        await runner.cleanup()
    assert len(results) == 12 and len(seen) == 12
    assert results[0]["status"] == {"runStatus": "Succeeded"}


async def test_a_burst_of_writes_does_not_hold_back_reads_or_lease_renewals() -> None:
    """A first sync queues thousands of status writes and Events: a Secret read for a tenant's PAI call and a
    Lease renewal go out at once rather than after them; writes keep their order."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(f"{request.method} {request.path}")
        await asyncio.sleep(0.2)
        return web.json_response({"metadata": {}, "data": {}, "items": []})

    runner, url = await _serve(handle)
    config = kubernetes.client.Configuration()
    config.host = url
    api = KubeApi(config, concurrency=1)
    try:
        burst = [asyncio.ensure_future(api.patch_status("ns", f"run-{i}", {"runStatus": "Running"})) for i in range(5)]
        event = api.create_event(ObjectRef("ns", "run-0", "uid"), Event("Normal", "R", "m"))
        burst.append(asyncio.ensure_future(event))
        burst.append(asyncio.ensure_future(api.patch_workspace_status("ns", "ws", {"runs": 1})))
        await asyncio.sleep(0.05)  # the burst is queued
        await asyncio.gather(api.read_secret("ns", "keys"), api.list_leases("paiflow-system", "group=x"))
        writes_done = sum(1 for f in burst if f.done())
        await asyncio.gather(*burst)
    finally:
        await api.aclose()
        await runner.cleanup()
    # One write at a time (0.2 s each): the read and the renewal were answered while the burst had 1.2 s to go.
    assert writes_done <= 1, writes_done
    writes = [p for p in paths if not p.startswith("GET")]
    assert writes == [f"PATCH {RUNS}/run-{i}/status" for i in range(5)] + [
        "POST /api/v1/namespaces/ns/events",
        "PATCH /apis/paiflow-operator.dev/v1alpha1/namespaces/ns/paiworkspaces/ws/status",
    ]


def test_requests_are_sorted_into_lanes() -> None:
    run = f"{RUNS}/r"
    assert lane_of("PATCH", f"{run}/status?fieldManager=paiflow-operator") is Lane.WRITES
    assert lane_of("POST", "/api/v1/namespaces/ns/events") is Lane.WRITES
    assert lane_of("POST", RUNS) is Lane.WRITES
    assert lane_of("GET", "/api/v1/namespaces/ns/secrets/s") is Lane.READS
    assert lane_of("GET", "/api/v1/namespaces/ns/configmaps/c") is Lane.READS
    assert lane_of("PUT", "/apis/coordination.k8s.io/v1/namespaces/n/leases/l") is Lane.LEASES
    assert lane_of("GET", "/apis/coordination.k8s.io/v1/namespaces/n/leases") is Lane.LEASES


async def test_a_rotated_token_is_used_after_the_recheck_interval_or_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []
    runner, url = await _slow_api_server(0.0, seen)
    config = kubernetes.client.Configuration()
    config.host = url
    tokens = iter(["first", "second", "third"])

    def refresh(configuration: kubernetes.client.Configuration) -> None:
        configuration.api_key = {"authorization": f"Bearer {next(tokens)}"}

    config.api_key = {"authorization": "Bearer loaded"}  # as load_incluster_config leaves it, with its hook
    config.refresh_api_key_hook = refresh
    clock = [1000.0]
    monkeypatch.setattr(kube_module.time, "monotonic", lambda: clock[0])
    api = KubeApi(config, concurrency=2)
    try:
        await api.read_configmap("ns", "a")
        await api.read_configmap("ns", "b")  # within the recheck interval: the same token
        clock[0] += kube_module.TOKEN_RECHECK
        await api.read_configmap("ns", "c")
        api._token_checked = None  # what a 401 does
        await api.read_configmap("ns", "d")
    finally:
        await api.aclose()
        await runner.cleanup()
    assert [h.get("Authorization") for h in seen] == ["Bearer first", "Bearer first", "Bearer second", "Bearer third"]


async def test_a_401_makes_the_next_request_ask_for_the_token_again() -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"reason": "Unauthorized", "message": "no"}, status=401)

    runner, url = await _serve(handle)
    config = kubernetes.client.Configuration()
    config.host = url
    config.api_key = {"authorization": "Bearer old"}
    api = KubeApi(config, concurrency=1)
    try:
        with pytest.raises(KubeError) as info:
            await api.read_configmap("ns", "a")
    finally:
        await api.aclose()
        await runner.cleanup()
    assert info.value.status == 401 and api._token_checked is None
