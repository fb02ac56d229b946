"""KubeApi's errors: what reaches logs and conditions is a status and a type, never a library's text."""

from __future__ import annotations

import socket

import kubernetes
import pytest

from paiflow_operator.kube import KubeApi, KubeError


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
