"""`kubectl paiflow` as a user runs it: the installed entry point found by the real kubectl on PATH, against the
real API server and the PAI emulator, from a shell holding only the user's kubeconfig and the user's own PAI keys.

The user is a ServiceAccount allowed to read PaiPipelineRuns (and, for one test, Secrets) in its namespace, and
its PAI key is not the operator's: the emulator's per-caller counters prove whose key every call was signed with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import Runs, wait_for
from tests.support.controlplane import ControlPlane

from paiflow_emulator.server import Emulator

pytestmark = pytest.mark.cluster

USER_KEY = ("LTAI5tPluginUserKey01", "plugin-user-secret-7f3a9c")
SHARE = "eyJ0-plugin-share-token-a1b2"
PLUGIN = Path(sys.executable).parent / "kubectl-paiflow"


# prepare (done), a nested Dag (encode done, scale done), train (runs 4 s, writes as it goes, fails or succeeds).
def nodes(*, fail: bool, train_start: float = 0.0, train_seconds: float = 4.0) -> list[dict[str, Any]]:
    return [
        {"name": "prepare", "duration": 0.1, "logs": ["reading table", "wrote 1200 rows"]},
        {
            "name": "features",
            "children": [
                {"name": "encode", "duration": 0.1, "outputs": [{"name": "encoded", "type": "DataSet"}]},
                {"name": "scale", "duration": 0.1},
            ],
        },
        {
            "name": "train",
            "start": train_start,
            "duration": train_seconds,
            "fail": fail,
            "logs": [[0.5, "epoch 1 loss=0.9"], [1.5, "epoch 2 loss=0.7"], [2.5, "epoch 3 loss=0.5"], [3.9, "done"]],
            "outputs": [{"name": "model", "type": "Model", "info": {"uri": "oss://bucket/models/resnet/"}}],
        },
    ]


def add_run(
    emulator: Emulator,
    run_id: str,
    *,
    age: float,
    fail: bool,
    train_start: float = 0.0,
    train_seconds: float = 4.0,
    **extra: Any,
) -> None:
    end = ["Failed", None, "train failed"] if fail else ["Succeeded", None]
    timeline = [["Running", train_start + train_seconds + 0.2], end]
    tree = nodes(fail=fail, train_start=train_start, train_seconds=train_seconds)
    spec = {"id": run_id, "age": age, "timeline": timeline, "nodes": tree}
    emulator.load_scenario({"runs": [{**spec, **extra}]})


@pytest.fixture
def user(installed: ControlPlane, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that may get PaiPipelineRuns and Secrets in the namespace, nothing else."""
    installed.kubectl("create", "serviceaccount", "analyst", "-n", namespace)
    installed.kubectl(
        "create", "role", "ppr-reader", "-n", namespace, "--verb=get", "--resource=paipipelineruns,secrets"
    )
    installed.kubectl(
        "create",
        "rolebinding",
        "analyst",
        "-n",
        namespace,
        "--role=ppr-reader",
        f"--serviceaccount={namespace}:analyst",
    )
    return installed.service_account_kubeconfig(namespace, "analyst", tmp_path / "user" / "kubeconfig")


@pytest.fixture
def shell(
    installed: ControlPlane, emulator: Emulator, user: Path, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs a command line in an environment that holds the user's kubeconfig and PAI keys, and nothing else."""
    emulator.add_key(*USER_KEY)
    home = tmp_path / "home"
    home.mkdir()
    path = os.pathsep.join([str(PLUGIN.parent), str(installed.kubectl_path.parent), "/usr/bin", "/bin"])

    def run(*argv: str, keys: bool = True, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        base = {
            "PATH": path,
            "HOME": str(home),
            "KUBECONFIG": str(user),
            "PAIFLOW_ENDPOINT_OVERRIDE": emulator.url,
            # Never let the credentials library probe a cloud metadata address from a test machine.
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        }
        if keys:
            base |= {"ALIBABA_CLOUD_ACCESS_KEY_ID": USER_KEY[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": USER_KEY[1]}
        return subprocess.run(
            list(argv), env={**base, **env}, capture_output=True, text=True, timeout=timeout, check=False
        )

    run.home = home  # type: ignore[attr-defined]
    return run


def test_the_plugin_is_installed_where_kubectl_finds_it(shell: Callable[..., Any]) -> None:
    assert PLUGIN.exists() and shutil.which("kubectl-paiflow", path=str(PLUGIN.parent))
    listed = shell("kubectl", "plugin", "list")
    assert "kubectl-paiflow" in listed.stdout, listed.stderr


def test_nodes_show_the_tree_with_status_progress_and_durations(
    shell: Callable[..., Any], emulator: Emulator, runs: Runs, run_id: Callable[[], str], namespace: str
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=1.0, fail=True, train_seconds=600)  # prepare and the Dag are done, train runs
    runs.apply("nightly", rid)

    got = shell("kubectl", "paiflow", "nodes", "ppr/nightly", "-n", namespace)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "STATUS", "PROGRESS", "STARTED", "DURATION", "NODE", "ID"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["prepare"][1:4] == ["Pod", "Succeeded", "1/1"]
    assert rows["features"][1:4] == ["Dag", "Succeeded", "2/2"]
    assert rows["train"][1:4] == ["Pod", "Running", "0/1"]
    assert any(line.startswith("    encode") for line in lines)  # nested one level deeper
    root = lines[1].split()
    assert root[1:4] == ["Dag", "Running", "3/4"]

    # Whose keys: the node calls were the plugin's, signed with the user's key (the operator, which may be
    # polling this run's status with its own key, reads no nodes unless a run asks: PAIFLOW_INSIDE=false).
    node_calls = emulator.counters.calls_for(rid, "GetPipelineRunNode")
    assert emulator.counters.by_caller()[USER_KEY[0]][rid] >= node_calls >= 1


def test_logs_tail_and_follow_until_the_node_ends(
    shell: Callable[..., Any], emulator: Emulator, runs: Runs, run_id: Callable[[], str], namespace: str
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=0.0, fail=True, train_start=4.0)
    runs.apply("train-job", rid)
    before = shell("kubectl", "paiflow", "nodes", "ppr/train-job", "-n", namespace)
    train = next(line.split() for line in before.stdout.splitlines() if line.startswith("  train"))
    assert train[2] in ("ReadyToSchedule", "Running"), before.stdout  # -f starts before the node has ended

    follow = shell(
        "kubectl",
        "paiflow",
        "logs",
        "ppr/train-job",
        "--node",
        "train",
        "-f",
        "--poll-interval",
        "0.2",
        "-n",
        namespace,
    )
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == ["epoch 1 loss=0.9", "epoch 2 loss=0.7", "epoch 3 loss=0.5", "done"]
    # -f returned by itself once the node ended: the node is over now.
    tree = shell("kubectl", "paiflow", "nodes", "ppr/train-job", "-n", namespace)
    assert any(line.split()[:3] == ["train", "Pod", "Failed"] for line in tree.stdout.splitlines()), tree.stdout

    tail = shell("kubectl-paiflow", "logs", "ppr/train-job", "--tail", "2", "--namespace", namespace)
    # Without --node: the first failed leaf.
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == ["epoch 3 loss=0.5", "done"]
    prepare = shell("kubectl", "paiflow", "logs", "paipipelinerun/train-job", "--node", "prepare", "-n", namespace)
    assert prepare.stdout.splitlines() == ["reading table", "wrote 1200 rows"]
    missing = shell("kubectl", "paiflow", "logs", "ppr/train-job", "--node", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no node 'nope'" in missing.stderr


def test_outputs_of_a_succeeded_run(
    shell: Callable[..., Any], emulator: Emulator, runs: Runs, run_id: Callable[[], str], namespace: str
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=30.0, fail=False)
    runs.apply("trained", rid)

    table = shell("kubectl", "paiflow", "outputs", "ppr/trained", "-n", namespace)
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == ["NAME", "TYPE", "NODE", "URI"]
    assert sorted(rows[1:]) == [
        ["encoded", "DataSet", "encode"],
        ["model", "Model", "train", "oss://bucket/models/resnet/"],
    ]
    as_json = shell("kubectl", "paiflow", "outputs", "ppr/trained", "-n", namespace, "-o", "json")
    model = next(o for o in json.loads(as_json.stdout) if o["type"] == "Model")
    assert model["info"] == {"uri": "oss://bucket/models/resnet/"} and model["producer"] == "train"


def test_keys_from_the_aliyun_cli_profile(
    shell: Callable[..., Any], emulator: Emulator, runs: Runs, run_id: Callable[[], str], namespace: str
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=30.0, fail=False)
    runs.apply("profiled", rid)
    profile = {
        "current": "work",
        "profiles": [
            {"name": "work", "mode": "AK", "access_key_id": USER_KEY[0], "access_key_secret": USER_KEY[1]},
        ],
    }
    aliyun = shell.home / ".aliyun"  # type: ignore[attr-defined]
    aliyun.mkdir()
    (aliyun / "config.json").write_text(json.dumps(profile))
    got = shell("kubectl", "paiflow", "nodes", "ppr/profiled", "-n", namespace, keys=False)
    assert got.returncode == 0, got.stderr
    assert "Succeeded" in got.stdout


def test_no_credentials_is_one_clear_line(
    shell: Callable[..., Any], emulator: Emulator, runs: Runs, run_id: Callable[[], str], namespace: str
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=30.0, fail=False)
    runs.apply("nokeys", rid)
    got = shell("kubectl", "paiflow", "nodes", "ppr/nokeys", "-n", namespace, keys=False)
    assert got.returncode == 1
    assert got.stdout == ""
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kubectl-paiflow: no Alibaba Cloud credentials found")
    assert emulator.counters.calls_for(rid, "GetPipelineRunNode") == 0  # nothing was sent to PAI
    assert USER_KEY[0] not in emulator.counters.by_caller() or rid not in emulator.counters.by_caller()[USER_KEY[0]]


def test_a_shared_run_uses_the_token_from_its_secret_when_the_user_may_read_it(
    installed: ControlPlane,
    shell: Callable[..., Any],
    emulator: Emulator,
    runs: Runs,
    run_id: Callable[[], str],
    namespace: str,
) -> None:
    rid = run_id()
    add_run(emulator, rid, age=30.0, fail=False, shareToken=SHARE)
    installed.kubectl("create", "secret", "generic", "share", "-n", namespace, f"--from-literal=token={SHARE}")
    runs.apply("shared", rid, tokenSecretRef={"name": "share"})
    got = shell("kubectl", "paiflow", "outputs", "ppr/shared", "-n", namespace)
    assert got.returncode == 0, got.stderr
    assert "oss://bucket/models/resnet/" in got.stdout

    # Without the right to read Secrets, PAI says no, in one line, and the token is never printed.
    installed.kubectl("create", "role", "no-secrets", "-n", namespace, "--verb=get", "--resource=paipipelineruns")
    installed.kubectl("delete", "rolebinding", "analyst", "-n", namespace)
    installed.kubectl(
        "create",
        "rolebinding",
        "analyst2",
        "-n",
        namespace,
        "--role=no-secrets",
        f"--serviceaccount={namespace}:analyst",
    )
    denied = wait_for(
        lambda: (r := shell("kubectl", "paiflow", "outputs", "ppr/shared", "-n", namespace)).returncode == 1 and r,
        what="RBAC to drop the Secret read",
    )
    assert "share token not used: secret/share: forbidden" in denied.stderr
    assert denied.stderr.strip().splitlines()[-1].startswith("kubectl-paiflow: PAI: ")
    assert "NoPermission" in denied.stderr
    assert SHARE not in denied.stdout + denied.stderr + got.stdout + got.stderr


def test_flags_context_and_kubeconfig_and_errors(
    shell: Callable[..., Any], user: Path, namespace: str, tmp_path: Path
) -> None:
    # --kubeconfig instead of $KUBECONFIG, a context that does not exist, a resource that does not exist.
    missing = shell("kubectl", "paiflow", "nodes", "ppr/none", "--kubeconfig", str(user), KUBECONFIG="/nonexistent")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"kubectl-paiflow: paipipelineruns/none in namespace {namespace}: not found"
    bad_context = shell("kubectl", "paiflow", "nodes", "ppr/none", "--context", "elsewhere")
    assert bad_context.returncode == 1 and "context 'elsewhere' not found" in bad_context.stderr
    not_ours = shell("kubectl", "paiflow", "nodes", "pod/x")
    assert not_ours.returncode == 1 and "not a PaiPipelineRun" in not_ours.stderr
    other_ns = shell("kubectl", "paiflow", "nodes", "ppr/none", "-n", "kube-system")
    assert other_ns.returncode == 1 and "forbidden" in other_ns.stderr
