"""Fixtures shared by every test folder. Folder-specific fixtures belong in that folder's conftest.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from tests.support.controlplane import BinariesMissingError, ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver + kube-controller-manager for the whole session (or the cluster in
    PAIFLOW_TEST_KUBECONFIG).

    Tests share it, so each works in its own namespace (`namespace` fixture) and names anything
    cluster-scoped uniquely. Nothing is built here: missing binaries fail the test, because a skip
    would let `make test` pass without ever talking to an API server.
    """
    cp = ControlPlane.from_environment()
    try:
        cp.start()
    except BinariesMissingError as exc:
        pytest.fail(f"{exc}\n(run `make k8s-bin`)", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards without waiting.

    kube-controller-manager's namespace controller removes it in the background; nothing waits for that, and
    unique names mean a leftover never gets in a later test's way.
    """
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{stem or 'test'}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
