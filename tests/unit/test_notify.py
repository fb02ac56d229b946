"""Completion CloudEvents: one per ended run, binary mode, retried until acknowledged, recorded in status."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from paiflow_operator.kube import KubeError
from paiflow_operator.runs.notify import Notifier, build_event
from paiflow_operator.settings import Settings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = 0

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            self.fail -= 1
            raise KubeError(0, "ConnectionError", "the API server could not be reached")
        self.patches.append((namespace, name, patch))
        return {"status": patch}


class Sink:
    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.received: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        answer = self.answers.pop(0) if self.answers else 202
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


def body(status: str = "Succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ml",
            "name": "train",
            "uid": "u-1",
            "creationTimestamp": "2026-12-02T11:00:00Z",
            "managedFields": [{"manager": "paiflow-operator", "fieldsV1": {"f:status": {"f:runStatus": {}}}}],
        },
        "status": {
            "runStatus": status,
            "pipelineRunId": "flow-abc",
            "finishedAt": "2026-12-02T11:59:00Z",
            "outputs": {"model": "oss://bucket/model"},
            **extra,
        },
    }


def notifier(sink: Sink, kube: FakeKube, **settings: Any) -> Notifier:
    config = Settings(
        notify_sink="https://sink.example/", notify_backoff_base="10ms", notify_backoff_max="40ms", **settings
    )
    client = httpx.AsyncClient(transport=httpx.MockTransport(sink.handler))
    return Notifier(config, kube, lambda uid: True, client=client, wallclock=lambda: NOW, rng=random.Random(1))


async def settle(n: Notifier, until: Any, bound: float = 30.0) -> None:
    task = asyncio.create_task(n.run())
    try:
        async with asyncio.timeout(bound):
            while not until():  # noqa: ASYNC110 (polls the fakes' state; nothing to await on)
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_event() -> None:
    event = build_event(body("Failed", notification={"x": 1}))
    assert event.get_type() == "dev.paiflow-operator.pipelinerun.failed.v1"
    assert event.get_source() == "/apis/paiflow-operator.dev/v1alpha1/namespaces/ml/paipipelineruns/train"
    assert event.get_subject() == "flow-abc" and event.get_id() == "u-1.failed"
    data = event.get_data()
    assert isinstance(data, dict) and data["outputs"] == {"model": "oss://bucket/model"} and "notification" not in data


async def test_delivered_once_in_binary_mode_and_recorded() -> None:
    sink, kube = Sink([]), FakeKube()
    n = notifier(sink, kube)
    n.written(body())
    n.offer(body())  # the watch echo of the same write: still one delivery
    await settle(n, lambda: kube.patches)
    (request,) = sink.received
    assert request.headers["ce-specversion"] == "1.0" and request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    event = from_http_event(HTTPMessage(dict(request.headers), request.content))
    assert event.get_type() == "dev.paiflow-operator.pipelinerun.succeeded.v1"
    (_, _, patch) = kube.patches[0]
    assert patch["notification"]["type"] == event.get_type() and patch["notification"]["attempts"] == 1
    assert patch["notification"]["id"] == event.get_id() and patch["notification"]["sink"] == "default"
    # The watch brings the recorded status back: nothing more is sent.
    n.offer(body(notification=patch["notification"]))
    assert not n.pending


async def test_retried_until_acknowledged_with_the_same_id() -> None:
    sink, kube = Sink([503, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), 302, 200]), FakeKube()
    n = notifier(sink, kube)
    n.offer(body("Terminated"))
    await settle(n, lambda: kube.patches)
    assert len(sink.received) == 5
    assert {r.headers["ce-id"] for r in sink.received} == {"u-1.terminated"}
    assert kube.patches[0][2]["notification"]["attempts"] == 5


async def test_a_lost_record_write_is_retried_without_sending_again() -> None:
    sink, kube = Sink([]), FakeKube()
    kube.fail = 2
    n = notifier(sink, kube)
    n.offer(body())
    await settle(n, lambda: kube.patches)
    assert len(sink.received) == 1 and kube.patches[0][2]["notification"]["attempts"] == 1


@pytest.mark.parametrize(
    ("case", "the_body", "settings"),
    [
        ("running", body("Running"), {}),
        (
            "recorded",
            body(notification={"type": "dev.paiflow-operator.pipelinerun.succeeded.v1", "deliveredAt": "x"}),
            {},
        ),
        ("ended before the resource existed", body(finishedAt="2026-12-01T00:00:00Z"), {}),
        ("ended before the window", body(), {"notify_window": "30s"}),
    ],
)
async def test_not_owed(case: str, the_body: dict[str, Any], settings: dict[str, Any]) -> None:
    n = notifier(Sink([]), FakeKube(), **settings)
    n.offer(the_body)
    assert not n.pending, case


def test_a_status_someone_else_wrote_is_not_announced() -> None:
    forged = body()
    forged["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:status": {"f:runStatus": {}}}}]
    n = notifier(Sink([]), FakeKube())
    n.offer(forged)
    assert not n.pending


def test_a_run_another_replica_owns_or_no_sink() -> None:
    sink = Sink([])
    config = Settings(notify_sink="http://127.0.0.1:9/")
    n = Notifier(
        config,
        FakeKube(),
        lambda uid: False,
        client=httpx.AsyncClient(transport=httpx.MockTransport(sink.handler)),
        wallclock=lambda: NOW,
    )
    n.offer(body())
    assert not n.pending
    off = Notifier(Settings(), FakeKube(), lambda uid: True)
    off.offer(body())
    assert not off.enabled and not off.pending


def test_the_queue_is_bounded() -> None:
    n = notifier(Sink([]), FakeKube(), notify_queue_size=2)
    for i in range(5):
        b = body()
        b["metadata"]["uid"] = f"u-{i}"
        n.offer(b)
    assert len(n.pending) == 2


def test_window_uses_the_wall_clock() -> None:
    n = notifier(Sink([]), FakeKube(), notify_window="2m")
    recent = body(finishedAt=(NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    n.offer(recent)
    assert len(n.pending) == 1


def test_a_run_of_another_replica_waits_until_it_is_ours() -> None:
    mine: set[str] = set()
    config = Settings(notify_sink="http://127.0.0.1:9/")
    n = Notifier(
        config,
        FakeKube(),
        lambda uid: uid in mine,
        client=httpx.AsyncClient(transport=httpx.MockTransport(Sink([]).handler)),
        wallclock=lambda: NOW,
    )
    n.offer(body())
    assert not n.pending and "u-1" in n.others
    mine.add("u-1")  # the dead replica's Lease expired: the run is this replica's now
    n.rebalance()
    assert "u-1" in n.pending and not n.others
    # Its owner recorded the delivery: nothing waits any more.
    n.offer(body(notification={"type": "dev.paiflow-operator.pipelinerun.succeeded.v1", "deliveredAt": "x"}))
    assert not n.pending and not n.others


async def test_an_https_sink_with_an_untrusted_certificate_gets_nothing(tmp_path: Any) -> None:
    """The operator's own client (no transport injected): the certificate is verified, the event is not sent."""
    import datetime as dt
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(UTC) - timedelta(minutes=1))
        .not_valid_after(dt.datetime.now(UTC) + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    posted: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    class TlsServer(ThreadingHTTPServer):
        # The handshake happens in each connection's own thread: on a TLS listening socket it would happen in
        # accept(), where a client that stalls the handshake stalls serve_forever and so shutdown() (CI: 300 s).
        daemon_threads = True

        def finish_request(self, request: Any, client_address: Any) -> None:
            request.settimeout(5)
            try:
                tls = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused the certificate: what this test expects
            super().finish_request(tls, client_address)

    server = TlsServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = Settings(
            notify_sink=f"https://localhost:{server.server_address[1]}/",
            notify_backoff_base="10ms",
            notify_backoff_max="20ms",
        )
        kube = FakeKube()
        n = Notifier(config, kube, lambda uid: True, wallclock=lambda: NOW)
        n.offer(body())
        await settle(n, lambda: n.pending["u-1"].attempts >= 3)
        assert not posted and not kube.patches and n.pending["u-1"].delivered_at is None
        await n.stop()
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_picks_a_sink_its_namespace_policies_list_never_a_url() -> None:
    from paiflow_operator.access.view import AccessView
    from paiflow_operator.runs.notify import PolicySinks

    view = AccessView()
    policy = {
        "metadata": {"name": "ml-team"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}},
            "workspaceIds": ["*"],
            "actions": ["Launch"],
            "sinks": [{"name": "serving", "url": "https://hooks.serving.svc/paiflow"}],
        },
    }
    view.load([policy], [{"metadata": {"name": "ml"}}, {"metadata": {"name": "other"}}])
    sinks = PolicySinks(view, "http://default-sink.svc/")

    def run(namespace: str, notify: dict[str, Any] | None) -> dict[str, Any]:
        b = body()
        b["metadata"]["namespace"] = namespace
        b["spec"] = {"notify": notify} if notify else {}
        return b

    chosen = sinks.sink_for(run("ml", {"sink": "serving"}))
    assert chosen is not None and (chosen.name, chosen.url) == ("serving", "https://hooks.serving.svc/paiflow")
    assert sinks.sink_for(run("other", {"sink": "serving"})) is None  # not listed for that namespace
    assert sinks.sink_for(run("ml", {"sink": "nope"})) is None
    default = sinks.sink_for(run("other", None))
    assert default is not None and (default.name, default.url) == ("default", "http://default-sink.svc/")
    assert PolicySinks(view, None).sink_for(run("ml", None)) is None


async def test_the_chosen_sink_gets_the_event_and_is_recorded() -> None:
    from paiflow_operator.runs.notify import SinkTarget

    class Chosen:
        def sink_for(self, b: Any) -> SinkTarget | None:
            return SinkTarget("serving", "https://serving.example/") if (b.get("spec") or {}).get("notify") else None

    sink, kube = Sink([]), FakeKube()
    n = Notifier(
        Settings(),
        kube,
        lambda uid: True,
        client=httpx.AsyncClient(transport=httpx.MockTransport(sink.handler)),
        sinks=Chosen(),
        wallclock=lambda: NOW,
    )
    b = body()
    b["spec"] = {"notify": {"sink": "serving"}}
    n.offer(b)
    other = body()
    other["metadata"]["uid"] = "u-2"
    n.offer(other)  # no choice, no operator-wide sink: nothing
    await settle(n, lambda: kube.patches)
    assert [str(r.url) for r in sink.received] == ["https://serving.example/"]
    assert kube.patches[0][2]["notification"]["sink"] == "serving"
