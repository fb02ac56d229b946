"""The operator as it ships, running as its own ServiceAccount (RBAC from deploy/) against the real API
server, with PAI played by the emulator."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.support.controlplane import ControlPlane
from tests.support.operator_process import REPO, OperatorProcess
from tests.support.policies import test_policy_json

from paiflow_emulator.server import Emulator
from paiflow_emulator.thread import EmulatorThread

ACCESS_KEY_ID = "LTAI5tE2eTestKey0001"
ACCESS_KEY_SECRET = "e2e-secret-Zq8vW3nP4xY7tB1k"
STS_TOKEN = "CAIS-e2e-sts-token-0123456789abcdef"
SHARE_TOKEN = "eyJ0e-e2e-share-token-5f2c9a"
SECRETS = (ACCESS_KEY_SECRET, STS_TOKEN, SHARE_TOKEN)

# Fast loops for tests; the CRD's own bounds (5s..1h) still hold for spec.pollInterval.
OPERATOR_ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
    "PAIFLOW_MIN_POLL_INTERVAL": "1s",
    "PAIFLOW_DEFAULT_POLL_INTERVAL": "1s",
    "PAIFLOW_INITIAL_JITTER": "500ms",
    "PAIFLOW_BACKOFF_BASE": "1s",
    "PAIFLOW_BACKOFF_MAX": "2s",
    "PAIFLOW_SLOW_RETRY_INTERVAL": "2s",
    "PAIFLOW_SECRET_CACHE_TTL": "1s",
    "PAIFLOW_HEARTBEAT_INTERVAL": "1h",
    "PAIFLOW_READ_TIMEOUT": "2",
    "PAIFLOW_QPS": "100",
    "PAIFLOW_BURST": "100",
    "PAIFLOW_LOG_LEVEL": "DEBUG",
    # PaiWorkspace scans: fast, small pages (so paging is exercised), a short safety net, no periodic full scan
    # (so that what the safety net catches is not caught by a full scan first).
    "PAIFLOW_WORKSPACE_SCAN_INTERVAL": "1s",
    "PAIFLOW_WORKSPACE_SAFETY_NET_INTERVAL": "6s",
    "PAIFLOW_WORKSPACE_FULL_SCAN_INTERVAL": "1h",
    "PAIFLOW_WORKSPACE_SCAN_OVERLAP": "2s",
    "PAIFLOW_WORKSPACE_PAGE_SIZE": "5",
    "PAIFLOW_WORKSPACE_STATUS_HEARTBEAT": "5s",
    # Errors show at once here: the tests look at one error at a time (the grace has tests of its own).
    "PAIFLOW_ERROR_GRACE": "0s",
    # A create whose answer was lost is looked up again after this (production: 60s).
    "PAIFLOW_LAUNCH_SETTLE_TIME": "3s",
    # Priced reads (nodes, logs, outputs) only for runs that ask (spec.inside: true, test_inside.py): other tests
    # count the PAI calls of a run. Progress is read every second here (production: 2m).
    "PAIFLOW_INSIDE": "false",
    "PAIFLOW_PROGRESS_INTERVAL": "1s",
}

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last value: {last!r}")


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """CRDs and the operator's ServiceAccount + RBAC applied exactly as a user would."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("apply", "-k", str(REPO / "deploy" / "base"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/paipipelineruns.paiflow-operator.dev",
        "crd/paiworkspaces.paiflow-operator.dev",
        "crd/paipipelineschedules.paiflow-operator.dev",
        "crd/paiaccesspolicies.paiflow-operator.dev",
        "--timeout=60s",
    )
    # Tests written before PaiAccessPolicies keep their namespaces allowed (tests/support/policies.py).
    control_plane.kubectl("apply", "-f", "-", input=test_policy_json())
    return control_plane


@pytest.fixture(scope="session")
def operator_kubeconfig(installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return installed.service_account_kubeconfig("paiflow-system", "paiflow-operator", path)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with EmulatorThread(keys={ACCESS_KEY_ID: ACCESS_KEY_SECRET}, sts_tokens={STS_TOKEN: ACCESS_KEY_ID}) as thread:
        yield thread.emulator


@pytest.fixture(scope="session")
def operator(
    installed: ControlPlane, operator_kubeconfig: Path, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator-log") / "operator.log"
    # AssumeRole (PaiAccessPolicy identities) goes to the emulator's STS.
    env = {**OPERATOR_ENV, "PAIFLOW_STS_ENDPOINT": emulator.url}
    process = OperatorProcess(operator_kubeconfig, emulator.url, log, env)
    with process:
        yield process
    print(f"operator log: {log}")


class Runs:
    """kubectl-level helpers for PaiPipelineRuns in one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.namespace = namespace

    def apply(self, name: str, run_id: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "paiflow-operator.dev/v1alpha1",
            "kind": "PaiPipelineRun",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"pipelineRunId": run_id, **spec},
        }
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
        return body

    def get(self, name: str) -> dict[str, Any]:
        out = self.cp.kubectl("get", "paipipelinerun", name, "-n", self.namespace, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type_), None)

    def wait_status(self, name: str, run_status: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status(name)).get("runStatus") == run_status and s,
            timeout,
            what=f"{name} to reach {run_status}",
        )

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.condition(name, type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(check, timeout, what=f"{name} condition {type_}={status} ({reason})")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "get", "events", "-n", self.namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(items, key=lambda e: e.get("firstTimestamp") or "")


@pytest.fixture
def runs(installed: ControlPlane, namespace: str) -> Runs:
    return Runs(installed, namespace)


@pytest.fixture
def run_id() -> Callable[[], str]:
    return lambda: f"flow-{uuid.uuid4().hex[:20]}"
