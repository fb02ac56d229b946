"""Smoke tests of the control-plane harness: if these fail, no other cluster test means anything.

They check the API server behaviours the operator relies on (CEL validation, the status subresource,
TokenRequest + RBAC) are real, and that the harness never leaves etcd or kube-apiserver behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from tests.support.controlplane import ControlPlane, ControlPlaneError, KubectlError

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]


def _eventually(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager")


def _control_plane_processes(workdir: Path) -> dict[int, str]:
    """Live etcd / kube-apiserver processes of the control plane in `workdir` (their flags name paths
    inside it), read from /proc so no extra package is needed."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # exited while we looked
            continue
        # A zombie holds no port and no file; if one lingered, its parent would be the bug.
        if Path(argv[0]).name in DAEMONS and str(workdir) in " ".join(argv) and state != "Z":
            found[int(entry.name)] = Path(argv[0]).name
    return found


# --- the API server ------------------------------------------------------------------------------


def test_garbage_collection_and_namespace_deletion_are_real(control_plane: ControlPlane, namespace: str) -> None:
    owner = json.loads(control_plane.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    # kube-controller-manager's garbage collector removes the dependent (background propagation).
    _eventually(
        lambda: (
            not control_plane.kubectl(
                "get", "configmap", "dependent", "-n", namespace, "--ignore-not-found", "-o", "name"
            ).stdout.strip()
        ),
        timeout=30,
        what="the dependent ConfigMap to be collected",
    )
    gone = f"gone-{namespace}"[:63]
    control_plane.kubectl("create", "namespace", gone)
    control_plane.kubectl("delete", "namespace", gone, "--timeout=60s")  # waits: the namespace controller finishes
    assert not control_plane.kubectl("get", "namespace", gone, "--ignore-not-found", "-o", "name").stdout.strip()


def test_apiserver_is_ready(control_plane: ControlPlane) -> None:
    readyz = control_plane.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "readyz check passed" in readyz
    # The RBAC bootstrap is part of readiness; the harness waits for it before handing out the cluster.
    assert "[+]poststarthook/rbac/bootstrap-roles ok" in readyz
    assert control_plane.kubectl("get", "--raw", "/livez").stdout.strip() == "ok"


def test_server_is_the_pinned_release(control_plane: ControlPlane) -> None:
    if control_plane.external:
        pytest.skip("PAIFLOW_TEST_KUBECONFIG: the cluster runs whatever version it runs")
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    # build.sh stamps the version; an unstamped build says v0.0.0-master and breaks `kubectl version`.
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"


def test_admin_kubeconfig(control_plane: ControlPlane, namespace: str) -> None:
    assert control_plane.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"
    if not control_plane.external:
        whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json").stdout)
        assert whoami["status"]["userInfo"]["username"] == "paiflow-admin"
        assert "system:masters" in whoami["status"]["userInfo"]["groups"]
    control_plane.kubectl("create", "configmap", "greeting", "-n", namespace, "--from-literal=hello=world")
    got = control_plane.kubectl("get", "configmap", "greeting", "-n", namespace, "-o", "jsonpath={.data.hello}")
    assert got.stdout == "world"


# --- a throwaway CRD: CEL validation and the status subresource ----------------------------------


@pytest.fixture(scope="module")
def widgets(control_plane: ControlPlane) -> Iterator[str]:
    """A CRD in a unique group (CRDs are cluster-scoped; the cluster may be shared); yields the
    fully qualified resource name to use with kubectl."""
    group = f"smoke{uuid.uuid4().hex[:8]}.paiflow.test"
    resource = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["minReplicas", "maxReplicas"],
                                    "properties": {
                                        "minReplicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": "must not exceed maxReplicas",
                                            "fieldPath": ".minReplicas",
                                        }
                                    ],
                                },
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(crd))
    try:
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{resource}", "--timeout=60s")
        # Established comes slightly before discovery shows the resource; kubectl needs discovery.
        _eventually(
            lambda: control_plane.kubectl("get", resource, "-A", check=False).returncode == 0,
            what=f"{resource} in discovery",
        )
        yield resource
    finally:
        control_plane.kubectl("delete", "crd", resource, "--wait=false", "--ignore-not-found", check=False)


def _widget(group: str, name: str, namespace: str, min_replicas: int, max_replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
        }
    )


def test_cel_rule_is_enforced_and_names_the_field(control_plane: ControlPlane, widgets: str, namespace: str) -> None:
    group = widgets.split(".", 1)[1]
    bad = control_plane.kubectl("create", "-f", "-", input=_widget(group, "bad", namespace, 5, 2), check=False)
    assert bad.returncode != 0
    assert "spec.minReplicas" in bad.stderr
    assert "must not exceed maxReplicas" in bad.stderr
    assert control_plane.kubectl("get", widgets, "bad", "-n", namespace, check=False).returncode != 0

    # The rule also applies to updates, not only to creation.
    control_plane.kubectl("create", "-f", "-", input=_widget(group, "good", namespace, 1, 3))
    with pytest.raises(KubectlError, match=r"spec\.minReplicas"):
        control_plane.kubectl(
            "patch", widgets, "good", "-n", namespace, "--type=merge", "-p", '{"spec":{"minReplicas":9}}'
        )


def test_status_subresource_is_honoured(control_plane: ControlPlane, widgets: str, namespace: str) -> None:
    group = widgets.split(".", 1)[1]

    def get() -> dict[str, object]:
        out = control_plane.kubectl("get", widgets, "w", "-n", namespace, "-o", "json").stdout
        obj: dict[str, object] = json.loads(out)
        return obj

    # Status in a create through the main endpoint is dropped.
    obj = json.loads(_widget(group, "w", namespace, 1, 2))
    obj["status"] = {"phase": "Created"}
    control_plane.kubectl("create", "-f", "-", input=json.dumps(obj))
    assert "status" not in get()

    # A patch of .status through the main endpoint is accepted but ignored...
    control_plane.kubectl("patch", widgets, "w", "-n", namespace, "--type=merge", "-p", '{"status":{"phase":"Main"}}')
    assert "status" not in get()

    # ...and so is a PUT (kubectl replace) that carries a status.
    current = get()
    current["status"] = {"phase": "Put"}
    control_plane.kubectl("replace", "-f", "-", input=json.dumps(current))
    assert "status" not in get()

    # Through /status it is stored, and a spec change sent there is ignored in turn.
    control_plane.kubectl(
        "patch",
        widgets,
        "w",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Done"},"spec":{"maxReplicas":7}}',
    )
    after = get()
    assert after["status"] == {"phase": "Done"}
    assert after["spec"] == {"minReplicas": 1, "maxReplicas": 2}


# --- ServiceAccount tokens and RBAC --------------------------------------------------------------


def test_service_account_token_and_rbac(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    control_plane.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    control_plane.kubectl("create", "configmap", "data", "-n", namespace)
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "robot", tmp_path / "robot.kubeconfig", expiration_seconds=600
    )
    assert kubeconfig.stat().st_mode & 0o077 == 0  # holds a credential

    def as_robot(*args: str) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(*args, kubeconfig=kubeconfig, check=False)

    # Authenticated as the ServiceAccount...
    whoami = as_robot("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == f"system:serviceaccount:{namespace}:robot", whoami.stderr

    # ...but without any RBAC grant, refused (the namespace comes from the kubeconfig's context).
    assert as_robot("auth", "can-i", "list", "configmaps").stdout.strip() == "no"
    refused = as_robot("get", "configmaps")
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr
    assert f'User "system:serviceaccount:{namespace}:robot" cannot list resource "configmaps"' in refused.stderr

    control_plane.kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace)
    control_plane.kubectl(
        "create",
        "rolebinding",
        "robot-cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:robot",
        "-n",
        namespace,
    )
    # The RBAC authorizer works from an informer cache: the grant takes effect within moments.
    _eventually(lambda: as_robot("get", "configmaps").returncode == 0, what="the RoleBinding to apply")
    assert as_robot("auth", "can-i", "list", "configmaps").stdout.strip() == "yes"
    assert "data" in as_robot("get", "configmaps", "-o", "name").stdout
    # Only what the Role grants: other resources, other namespaces and writes stay refused.
    assert as_robot("auth", "can-i", "list", "secrets").stdout.strip() == "no"
    assert as_robot("auth", "can-i", "list", "configmaps", "-n", "default").stdout.strip() == "no"
    assert as_robot("create", "configmap", "mine").returncode != 0


def test_bad_token_is_not_authenticated(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    control_plane.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    good = control_plane.service_account_kubeconfig(namespace, "robot", tmp_path / "good.kubeconfig", 600)
    config = yaml.safe_load(good.read_text())
    token: str = config["users"][0]["user"]["token"]
    # Same header and claims, forged signature: only a verifying API server rejects it.
    config["users"][0]["user"]["token"] = token[: token.rindex(".") + 1] + "AAAA" + token[-20:]
    forged = tmp_path / "forged.kubeconfig"
    forged.write_text(yaml.safe_dump(config))
    result = control_plane.kubectl("get", "configmaps", kubeconfig=forged, check=False)
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr or "provide credentials" in result.stderr, result.stderr


# --- the harness cleans up -----------------------------------------------------------------------


@pytest.fixture
def local_binaries(control_plane: ControlPlane) -> None:
    cp = ControlPlane(bin_dir=control_plane.bin_dir)
    if missing := cp.missing_binaries():
        # Only reachable with PAIFLOW_TEST_KUBECONFIG; without it the session fixture already failed.
        pytest.skip(f"no local binaries ({', '.join(missing)}) to start a second control plane with")


@pytest.mark.usefixtures("local_binaries")
def test_stop_leaves_no_process_and_no_files() -> None:
    cp = ControlPlane()
    with cp:
        assert cp.startup_seconds is not None and cp.startup_seconds < 30
        pids = cp.pids
        assert set(pids) == set(DAEMONS)
        assert set(_control_plane_processes(cp.workdir)) == set(pids.values())
        # A second, independent cluster: its own port and its own data.
        cp.kubectl("create", "namespace", "only-here")
        assert "only-here" in cp.kubectl("get", "namespaces", "-o", "name").stdout
    assert _control_plane_processes(cp.workdir) == {}
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists()
    assert not cp.workdir.exists()  # a temporary workdir is removed
    cp.stop()  # idempotent


@pytest.mark.usefixtures("local_binaries")
def test_failed_start_reports_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cp = ControlPlane(tmp_path / "cp", startup_timeout=30)
    # A flag kube-apiserver rejects: start-up must fail at once, quoting the log, and not hang.
    monkeypatch.setattr(cp, "_apiserver_flags", lambda *args: ["--no-such-flag"])
    with pytest.raises(ControlPlaneError, match=r"(?s)kube-apiserver exited .*no-such-flag"):
        cp.start()
    assert _control_plane_processes(cp.workdir) == {}
    assert (tmp_path / "cp" / "kube-apiserver.log").exists()


def _kill_leftovers(proc: subprocess.Popen[str], workdir: Path | None) -> None:
    """After a failed test, kill what the harness should have: one failure, not a leak into others."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if workdir is not None:
        for pid in _control_plane_processes(workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_script(workdir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.controlplane", "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


@pytest.mark.usefixtures("local_binaries")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_script_cleans_up_when_signalled(sig: signal.Signals, tmp_path: Path) -> None:
    workdir = tmp_path / "cp"
    proc = _start_script(workdir)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the control plane is ready (or the script died)
        assert line.startswith("export KUBECONFIG="), proc.stderr.read() if proc.stderr else line
        kubeconfig = Path(line.strip().split("=", 1)[1])
        cp = ControlPlane(kubeconfig=kubeconfig)  # a client of the script's cluster
        with cp:
            assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        assert sorted(_control_plane_processes(workdir).values()) == sorted(DAEMONS)

        proc.send_signal(sig)
        proc.wait(timeout=30)
        if sig != signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        # After SIGKILL nothing ran in the script: PR_SET_PDEATHSIG has the kernel kill the children.
        _eventually(lambda: _control_plane_processes(workdir) == {}, timeout=15, what="children to exit")
    finally:
        _kill_leftovers(proc, workdir)


@pytest.mark.usefixtures("local_binaries")
def test_sigterm_to_a_program_using_the_library_stops_the_control_plane() -> None:
    # The program installs no handler of its own, so the library's SIGTERM handler must stop the
    # control plane (removing its temporary workdir, which PR_SET_PDEATHSIG alone would leave behind)
    # and then let the program die of SIGTERM as it would have.
    program = textwrap.dedent(
        """
        import time
        from tests.support.controlplane import ControlPlane
        cp = ControlPlane().start()
        print(cp.workdir, flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    workdir = None
    try:
        assert proc.stdout is not None
        workdir = Path(proc.stdout.readline().strip())
        assert sorted(_control_plane_processes(workdir).values()) == sorted(DAEMONS)
        assert (workdir / "kube-apiserver.log").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
        assert not workdir.exists()
        _eventually(lambda: _control_plane_processes(workdir) == {}, timeout=15, what="children to exit")
    finally:
        _kill_leftovers(proc, workdir)
