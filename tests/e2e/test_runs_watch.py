"""The runs' own list-then-watch (watching.py) against the real API server, as the operator's ServiceAccount:
pages, events, a watch the server ends and that resumes without a new list, and a version the server has
forgotten, after which a new list tells what was deleted meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes
from tests.support.controlplane import ControlPlane

from paiflow_operator.api import runs as runs_api
from paiflow_operator.kube import KubeApi
from paiflow_operator.watching import Reflector


def _kube(kubeconfig: Path) -> KubeApi:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)  # type: ignore[no-untyped-call]
    return KubeApi(config)


def _apply(cp: ControlPlane, namespace: str, *names: str) -> None:
    items = [
        {
            "apiVersion": f"{runs_api.GROUP}/{runs_api.VERSION}",
            "kind": runs_api.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"pipelineRunId": f"flow-{name}"},
        }
        for name in names
    ]
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


async def _until(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_the_runs_watch_against_the_api_server(
    installed: ControlPlane, operator_kubeconfig: Path, namespace: str
) -> None:
    _apply(installed, namespace, "a", "b", "c")
    fed: list[tuple[str | None, str]] = []

    def feed(body: Mapping[str, Any], event_type: str | None) -> None:
        fed.append((event_type, body["metadata"]["name"]))

    kube = _kube(operator_kubeconfig)
    path = f"/apis/{runs_api.GROUP}/{runs_api.VERSION}/namespaces/{namespace}/{runs_api.PLURAL}"
    # Pages of two, and the server ends each watch after a second.
    reflector = Reflector(kube, path, feed, page_size=2, server_timeout=1)
    task = asyncio.get_running_loop().create_task(reflector.run())
    # The suite's operator may be writing statuses of these runs meanwhile: their MODIFIED events come too.
    try:
        await _until(lambda: len([e for e in fed if e[0] is None]) == 3, "the list")
        assert sorted(e for e in fed if e[0] is None) == [(None, "a"), (None, "b"), (None, "c")]
        assert reflector.listed.is_set()

        mark = len(fed)
        installed.kubectl("annotate", "-n", namespace, f"{runs_api.PLURAL}/a", "touched=yes")
        installed.kubectl("delete", "-n", namespace, f"{runs_api.PLURAL}/b", "--wait=false")
        _apply(installed, namespace, "d")
        await _until(lambda: ("ADDED", "d") in fed[mark:], "the changes")
        changes = fed[mark:]
        assert ("MODIFIED", "a") in changes
        assert changes.index(("DELETED", "b")) < changes.index(("ADDED", "d"))

        await asyncio.sleep(2.5)  # two more watches ended by the server, each resumed where it stopped
        _apply(installed, namespace, "e")
        await _until(lambda: ("ADDED", "e") in fed, "a run made after the resumed watches")
        assert reflector.lists == 1 and fed.count(("ADDED", "e")) == 1

        # Not watching while a run is deleted, then back with a version the server has forgotten.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        installed.kubectl("delete", "-n", namespace, f"{runs_api.PLURAL}/c", "--wait=false")
        mark = len(fed)
        reflector.resource_version = "1"
        task = asyncio.get_running_loop().create_task(reflector.run())
        await _until(lambda: ("DELETED", "c") in fed[mark:], "the run deleted while nobody watched")
        assert reflector.lists == 2
        assert sorted(name for kind, name in fed[mark:] if kind is None) == ["a", "d", "e"]
        assert set(reflector.known.values()) == {(namespace, "a"), (namespace, "d"), (namespace, "e")}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.aclose()
