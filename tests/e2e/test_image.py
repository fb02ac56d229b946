"""The image built from the shipped Dockerfile, run the way the chart's Deployment runs it: installed with helm on a
control plane of this module's own, the pod template read back from the API server and started with podman as a
kubelet would start it (user, read-only root, capabilities, privilege escalation, limits, env, volumes, the
ServiceAccount token projected at the usual path), on the host network so it reaches the API server and the
PAI emulator on 127.0.0.1.

The image comes from tests/image/build.sh (a stand-in base of Debian packages, no registry needed), or is the one
PAIFLOW_TEST_IMAGE names. Without podman these tests skip; `.ci/run` installs it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.conftest import Runs, wait_for
from tests.e2e.test_chart import CHART, Helm
from tests.support.controlplane import ControlPlane
from tests.support.operator_process import REPO, free_port
from tests.support.policies import TEST_POLICY

from paiflow_emulator.server import Emulator
from paiflow_emulator.thread import EmulatorThread
from paiflow_emulator.timeline import Timeline

# The first test's setup may build the image's stand-in base and the image (minutes, once; `make test` builds
# them before pytest starts).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RELEASE = "paiflow-operator"
NAMESPACE = "paiflow-system"
ACCESS_KEY_ID = "LTAI5tImageKey000001"
ACCESS_KEY_SECRET = "image-secret-Hq2wX9vR4nT6yK1p"
CREDENTIALS_SECRET = "pai-credentials"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONTAINERS_CONF = REPO / "tests" / "image" / "containers.conf"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF") or str(CONTAINERS_CONF)}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    if not shutil.which("podman"):
        pytest.skip("no podman on PATH: the image tests build and run the image with podman (apt-get install podman)")
    if named := os.environ.get("PAIFLOW_TEST_IMAGE"):
        return named
    cache = os.environ.get("PAIFLOW_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paiflow-operator"
    )
    build = subprocess.run(
        [str(REPO / "tests" / "image" / "build.sh"), cache], capture_output=True, text=True, timeout=1200, check=False
    )
    if build.returncode != 0:
        pytest.fail(f"tests/image/build.sh failed ({build.returncode}):\n{build.stderr[-4000:]}", pytrace=False)
    return build.stdout.split()[-1]


# ---- the chart, installed on a control plane of this module's own -----------------------------------------------


@dataclass
class Installed:
    cp: ControlPlane
    emulator: Emulator
    deployment: dict[str, Any]
    token_dir: Path


@pytest.fixture(scope="module")
def installed(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    helm_binary = os.environ.get("PAIFLOW_HELM", "")
    if not Path(helm_binary).is_file():
        pytest.fail(f"helm not built ({helm_binary or 'PAIFLOW_HELM unset'}): run `make tools-bin`", pytrace=False)
    work = tmp_path_factory.mktemp("image")
    cp = ControlPlane(work / "cp").start()
    try:
        with EmulatorThread(keys={ACCESS_KEY_ID: ACCESS_KEY_SECRET}) as pai:
            helm = Helm(helm_binary, cp, work / "helm-home")
            values = work / "values.yaml"
            values.write_text(yaml.safe_dump(chart_values(image, pai.emulator.url)))
            helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", "-f", str(values))
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": CREDENTIALS_SECRET, "namespace": NAMESPACE},
                "stringData": {"accessKeySecret": ACCESS_KEY_SECRET},
            }
            cp.kubectl("apply", "-f", "-", input=json.dumps(secret))
            deployment = json.loads(cp.kubectl("get", "deployment", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
            yield Installed(cp, pai.emulator, deployment, work / "serviceaccount")
    finally:
        cp.stop()


def chart_values(image: str, endpoint: str) -> dict[str, Any]:
    """The chart's defaults but for what a test cluster must change: the image under test, PAI's address, free
    ports on the host network, fast loops, and access keys from a Secret (as a user would put them)."""
    repository, _, tag = image.rpartition(":")
    assert repository and "/" not in tag, f"image {image!r}: expected REPOSITORY:TAG"
    return {
        "image": {"repository": repository, "tag": tag},
        # The test namespaces may use the operator, through the chart's own accessPolicies value.
        "accessPolicies": [{"name": TEST_POLICY["metadata"]["name"], "spec": TEST_POLICY["spec"]}],
        "config": {
            "endpointOverride": endpoint,
            "healthPort": free_port(),
            "metricsPort": free_port(),
            "minPollInterval": "1s",
            "defaultPollInterval": "1s",
            "initialJitter": "500ms",
            "logLevel": "DEBUG",
        },
        "extraEnv": [
            {"name": "ALIBABA_CLOUD_ACCESS_KEY_ID", "value": ACCESS_KEY_ID},
            {
                "name": "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": "accessKeySecret"}},
            },
            # Never let the credentials library probe a cloud metadata address from a test machine.
            {"name": "ALIBABA_CLOUD_ECS_METADATA_DISABLED", "value": "true"},
        ],
    }


# ---- the pod, started as a kubelet would -------------------------------------------------------------------------


@dataclass
class Pod:
    name: str  # the container's, and the pod's (POD_NAME, hostname)
    container: dict[str, Any]
    template: dict[str, Any]

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        (port,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == name_or_number]
        return int(port)

    def get(self, port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec_python(self, script: str, *args: str) -> Any:
        result = podman("exec", self.name, "python3", "-c", script, *args, check=False)
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def state(self) -> dict[str, Any]:
        (info,) = json.loads(podman("inspect", self.name).stdout)
        state: dict[str, Any] = info["State"]
        return state


def resolve_env(cp: ControlPlane, namespace: str, pod_name: str, env: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet computes it: values, the downward API, Secret keys."""
    out: dict[str, str] = {}
    for var in env:
        source = var.get("valueFrom")
        if source is None:
            out[var["name"]] = var.get("value", "")
        elif field := source.get("fieldRef"):
            out[var["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}[field["fieldPath"]]
        elif ref := source.get("secretKeyRef"):
            data = json.loads(cp.kubectl("get", "secret", ref["name"], "-n", namespace, "-o", "json").stdout)["data"]
            out[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            raise AssertionError(f"env {var['name']}: this test's kubelet does not know {source}")
    return out


def project_service_account_token(cp: ControlPlane, namespace: str, account: str, uid: int, directory: Path) -> None:
    """token, ca.crt and namespace as the kubelet projects them (the token from the TokenRequest API, readable by
    the pod's user only, as the kubelet writes it when the pod sets runAsUser; rootless podman maps no host user
    to that UID, so there the token is readable by all)."""
    directory.mkdir(parents=True, exist_ok=True)
    token = cp.kubectl("create", "token", account, "-n", namespace, "--duration=3600s").stdout.strip()
    ca = cp.kubectl(
        "config", "view", "--raw", "--minify", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}"
    ).stdout
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(base64.b64decode(ca))
    (directory / "namespace").write_text(namespace)
    for name in ("ca.crt", "namespace"):
        (directory / name).chmod(0o644)
    if os.geteuid() == 0:
        os.chown(directory / "token", uid, uid)
        (directory / "token").chmod(0o600)
    else:
        (directory / "token").chmod(0o644)


def podman_run_args(installed: Installed, pod_name: str) -> list[str]:
    """`podman run` options for the Deployment's pod template; anything this kubelet cannot honour fails."""
    template = installed.deployment["spec"]["template"]
    spec = template["spec"]
    (container,) = spec["containers"]
    pod_security = spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    uid, gid = security["runAsUser"], security["runAsGroup"]
    assert security["runAsNonRoot"] and uid != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default profile
    args = ["--name", pod_name, "--hostname", pod_name, "--network", "host", "--user", f"{uid}:{gid}"]
    if fs_group := pod_security.get("fsGroup"):
        args += ["--group-add", str(fs_group)]
    if security.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]  # podman would add writable /tmp, /run; Kubernetes not
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    capabilities = security.get("capabilities", {})
    args += [f"--cap-drop={c.lower()}" for c in capabilities.get("drop", [])]
    args += [f"--cap-add={c.lower()}" for c in capabilities.get("add", [])]
    limits = container.get("resources", {}).get("limits", {})
    if memory := limits.get("memory"):
        args += ["--memory", re.sub(r"^(\d+)Mi$", r"\1m", memory)]
    if cpu := limits.get("cpu"):
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"volume {mount['name']}: this test's kubelet knows emptyDir only"
        size = re.sub(r"^(\d+)Mi$", r"\1m", volume["emptyDir"].get("sizeLimit", "64Mi"))
        args += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
    if spec.get("automountServiceAccountToken", True):
        project_service_account_token(installed.cp, NAMESPACE, spec["serviceAccountName"], uid, installed.token_dir)
        args += ["--volume", f"{installed.token_dir}:{TOKEN_DIR}:ro"]
    port = installed.cp.server.rsplit(":", 1)[1]
    env = {
        **resolve_env(installed.cp, NAMESPACE, pod_name, container.get("env", [])),
        # The kubernetes Service, as the kubelet announces it; reached on the host network here.
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
    }
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    if command := container.get("command"):
        args += ["--entrypoint", json.dumps(command)]
    return [*args, container["image"], *container.get("args", [])]


@pytest.fixture(scope="module")
def pod(installed: Installed) -> Iterator[Pod]:
    template = installed.deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    name = f"{RELEASE}-{uuid.uuid4().hex[:10]}"
    started = Pod(name, container, template)
    try:
        # --timeout: a test run killed before its teardown leaves no operator running for long.
        podman("run", "--detach", "--timeout", "1200", *podman_run_args(installed, name))
        probe = container["readinessProbe"]["httpGet"]

        def ready() -> bool:
            if not started.state()["Running"]:
                raise AssertionError(f"the container exited: {started.state()}\n{started.logs()[-4000:]}")
            with contextlib.suppress(OSError):
                return started.get(started.port(probe["port"]), probe["path"])[0] == 200
            return False

        wait_for(ready, 90, interval=0.5, what="the readiness probe")
        yield started
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


# ---- the tests ---------------------------------------------------------------------------------------------------


def test_version_is_the_package_version(image: str) -> None:
    result = podman("run", "--rm", "--read-only", "--cap-drop=all", "--user", "65532:65532", image, "--version")
    assert result.stdout.strip() == f"paiflow-operator {VERSION}"


def test_deployment_runs_the_image_under_test_with_the_charts_probes_and_metrics(pod: Pod, image: str) -> None:
    assert pod.container["image"] == image
    for probe in ("livenessProbe", "readinessProbe"):
        get = pod.container[probe]["httpGet"]
        assert pod.get(pod.port(get["port"]), get["path"])[0] == 200, probe
    annotations = pod.template["metadata"]["annotations"]
    metrics_port = pod.port("metrics")
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == metrics_port
    status, text = pod.get(metrics_port, "/metrics")
    assert status == 200 and "# TYPE paiflow_pai_calls_total counter" in text


def test_a_run_is_synced_to_succeeded(pod: Pod, installed: Installed) -> None:
    namespace = f"image-{uuid.uuid4().hex[:6]}"
    installed.cp.kubectl("create", "namespace", namespace)
    runs = Runs(installed.cp, namespace)
    run_id = f"flow-{uuid.uuid4().hex[:20]}"
    installed.emulator.add_run(Timeline.of(("Running", 2), ("Succeeded", None)), run_id=run_id, workspace_id="4001")
    runs.apply("train", run_id)
    status = runs.wait_status("train", "Succeeded", timeout=60)
    assert status["workspaceId"] == "4001" and status["duration"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
    metrics = pod.get(pod.port("metrics"), "/metrics")[1]
    assert f'paiflow_runs_completed_total{{namespace="{namespace}",status="Succeeded"}} 1.0' in metrics
    assert re.search(r'^paiflow_pai_calls_total\{action="\w+",outcome="ok"\} [1-9]', metrics, re.M), metrics


# Run inside the container: every process's identity and privileges, and whether the root filesystem takes a write.
PROCESSES = r"""
import json, os
processes = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    except OSError:
        continue  # ended meanwhile
    processes.append({"pid": int(pid), "cmdline": cmdline, **{k: fields[k].split() for k in
        ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")}})
try:
    open("/written-by-a-test", "w").close()
    root_write = "allowed"
except OSError as exc:
    root_write = exc.strerror
open("/tmp/written-by-a-test", "w").close()
print(json.dumps({"processes": processes, "root_write": root_write}))
"""


def test_no_process_in_the_container_runs_as_root_or_holds_a_capability(pod: Pod) -> None:
    seen = pod.exec_python(PROCESSES)
    processes = {p["pid"]: p for p in seen["processes"]}
    assert "paiflow-operator" in processes[1]["cmdline"], processes  # the entrypoint is PID 1
    assert len(processes) >= 2  # the operator and this check
    for p in processes.values():
        assert p["Uid"] == ["65532"] * 4 and p["Gid"] == ["65532"] * 4, p
        assert p["CapEff"] == p["CapPrm"] == p["CapBnd"] == ["0000000000000000"], p
        assert p["NoNewPrivs"] == ["1"] and p["Seccomp"] == ["2"], p
    assert seen["root_write"] == "Read-only file system"


# Run inside the container: anything that should not ship, found anywhere on its filesystem.
CONTENTS = r"""
import importlib.util, json, os, re, sys
test_files = json.loads(sys.argv[1])
mounted = os.path.realpath("/var/run/secrets")  # the ServiceAccount token, not the image
found = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "tmp")]  # kernel and emptyDir, not the image
    if root == mounted:
        dirs.clear()
    for name in dirs + files:
        path = os.path.join(root, name)
        if (re.fullmatch(r"pip[0-9.]*|pip-.*\.(dist-info|egg-info|whl)", name) or name == ".git"
                or "paiflow_emulator" in name or any(path.endswith("/" + t) for t in test_files)):
            found.append(path)
        if name == "RECORD" and root.endswith(".dist-info") and "paiflow_emulator" in open(path).read():
            found.append(path + ": paiflow_emulator")
if importlib.util.find_spec("pip") is not None:
    found.append(f"{sys.executable}: import pip")
print(json.dumps({"found": found, "python": sys.executable}))
"""


def test_image_holds_no_pip_emulator_tests_or_git(pod: Pod) -> None:
    test_files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*") if p.is_file())
    assert "tests/e2e/test_image.py" in test_files
    seen = pod.exec_python(CONTENTS, json.dumps(test_files))
    assert seen["python"] == "/opt/venv/bin/python3"  # the operator's interpreter, first on PATH
    assert seen["found"] == []


# Modules the operator imports at start whose bytecode is looked for (the root filesystem is read-only and
# PYTHONDONTWRITEBYTECODE is set: without bytecode shipped, every start compiles them again).
STARTUP_MODULES = ["paiflow_operator.handlers", "kopf", "kubernetes.client", "aiohttp", "pydantic"]
BYTECODE = """
import importlib.util, json, os, sys
missing = []
for name in json.loads(sys.argv[1]):
    origin = importlib.util.find_spec(name).origin
    if not os.path.exists(importlib.util.cache_from_source(origin)):
        missing.append(name)
print(json.dumps(missing))
"""


def test_the_image_ships_bytecode_so_a_start_compiles_nothing(pod: Pod) -> None:
    # Measured in the image: importing the operator took 1.65 s of CPU from source, 0.57 s from bytecode; that
    # is time before the first status write on every pod start and handover.
    assert pod.exec_python(BYTECODE, json.dumps(STARTUP_MODULES)) == []


def test_sigterm_ends_it_cleanly_within_the_grace_period(pod: Pod) -> None:
    grace = pod.template["spec"]["terminationGracePeriodSeconds"]
    podman("stop", "--time", str(grace), pod.name, timeout=grace + 30)
    state = pod.state()
    logs = pod.logs()
    assert state["ExitCode"] == 0, f"{state}\n{logs[-4000:]}"
    assert ACCESS_KEY_SECRET not in logs
    # The chart's logFormat: json, every line.
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), lines[:5]
