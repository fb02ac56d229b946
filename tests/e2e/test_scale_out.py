"""Replicas that share the runs through Leases, on a control plane of their own (no other operator watches).

Each replica signs its PAI calls with its own access key, so the emulator's per-key counters say which replica
polled which run. N runs stay Running for a while, then succeed; meanwhile replicas are killed, added and
stopped. N defaults to 300 (this is a test, on a shared 2-core machine); PAIFLOW_SCALE_RUNS=1000 runs the
issue's size.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.conftest import OPERATOR_ENV, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.operator_process import REPO, OperatorProcess
from tests.support.policies import install_test_policy

from paiflow_emulator.server import Emulator
from paiflow_emulator.thread import EmulatorThread
from paiflow_emulator.timeline import Timeline
from paiflow_operator.replicas.sharding import rendezvous_owner

pytestmark = pytest.mark.cluster

N = int(os.environ.get("PAIFLOW_SCALE_RUNS", "300"))
INTERVAL = 3.0  # poll interval, seconds
LEASE = 5.0  # lease duration, seconds
RENEW = 1.0  # lease renew interval, seconds (renew deadline: 5 - 2 * 1 = 3 s)
RUNNING = 3600.0  # every run stays Running until the test ends it
NAMESPACE = "scale-out"
WORKSPACE = "3001"


def key_of(identity: str) -> tuple[str, str]:
    n = int(identity.rsplit("-", 1)[1])
    return f"LTAI5tScaleKey{n:06d}", f"scale-secret-{n}"


IDENTITIES = [f"replica-{i}" for i in range(6)]
KEYS = dict(key_of(i) for i in IDENTITIES)
CALLER = {key_of(i)[0]: i for i in IDENTITIES}


@dataclass
class Cluster:
    cp: ControlPlane
    kubeconfig: Path
    emulator: Emulator
    logs: Path
    uids: dict[str, str]  # run id -> uid


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("scale-out")
    cp = ControlPlane()
    try:
        cp.start()
        cp.kubectl("apply", "-f", str(REPO / "crds"))
        cp.kubectl("apply", "-k", str(REPO / "deploy" / "base"))
        cp.kubectl("wait", "--for=condition=Established", "crd/paipipelineruns.paiflow-operator.dev", "--timeout=60s")
        install_test_policy(cp)  # PaiAccessPolicy: these namespaces may use the operator
        cp.kubectl("create", "namespace", NAMESPACE)
        kubeconfig = cp.service_account_kubeconfig("paiflow-system", "paiflow-operator", work / "sa.kubeconfig")
        with EmulatorThread(keys=KEYS) as thread:
            timeline = Timeline.of(("Running", RUNNING), ("Succeeded", None))
            run_ids = [f"flow-scale{i:015d}" for i in range(N)]
            for rid in run_ids:
                thread.emulator.add_run(timeline, run_id=rid, workspace_id=WORKSPACE)
            items = [
                {
                    "apiVersion": "paiflow-operator.dev/v1alpha1",
                    "kind": "PaiPipelineRun",
                    "metadata": {"name": f"r{i}", "namespace": NAMESPACE},
                    "spec": {"pipelineRunId": rid, "workspaceId": WORKSPACE},
                }
                for i, rid in enumerate(run_ids)
            ]
            for start in range(0, N, 250):
                chunk = {"apiVersion": "v1", "kind": "List", "items": items[start : start + 250]}
                cp.kubectl("create", "-f", "-", input=json.dumps(chunk))
            listed = json.loads(cp.kubectl("get", "paipipelineruns", "-n", NAMESPACE, "-o", "json").stdout)["items"]
            uids = {item["spec"]["pipelineRunId"]: item["metadata"]["uid"] for item in listed}
            assert len(uids) == N
            yield Cluster(cp, kubeconfig, thread.emulator, work, uids)
    finally:
        cp.stop()


class Replicas:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.running: dict[str, OperatorProcess] = {}

    def start(self, identity: str) -> OperatorProcess:
        ak, secret = key_of(identity)
        env = {
            **OPERATOR_ENV,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ak,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
            "PAIFLOW_POD_NAME": identity,
            "PAIFLOW_NAMESPACES": NAMESPACE,
            "PAIFLOW_DEFAULT_POLL_INTERVAL": f"{INTERVAL:g}s",
            "PAIFLOW_LEASE_DURATION": f"{LEASE:g}s",
            "PAIFLOW_LEASE_RENEW_INTERVAL": f"{RENEW:g}s",
            "PAIFLOW_LOG_LEVEL": "INFO",
        }
        process = OperatorProcess(
            self.cluster.kubeconfig, self.cluster.emulator.url, self.cluster.logs / f"{identity}.log", env
        )
        self.running[identity] = process.start(timeout=60)
        return process

    def stop(self, identity: str) -> None:
        self.running.pop(identity).stop()

    def kill(self, identity: str) -> None:
        process = self.running.pop(identity)
        assert process.process is not None
        os.killpg(process.process.pid, signal.SIGKILL)
        process.process.wait(10)

    def metric(self, identity: str, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.running[identity].metrics(), re.MULTILINE)
        return float(match.group(1)) if match else -1.0

    def wait_members(self, timeout: float = 30.0) -> None:
        want = len(self.running)
        wait_for(
            lambda: all(self.metric(i, "paiflow_members") == want for i in self.running),
            timeout,
            what=f"every replica to see {want} members",
        )

    def stop_all(self) -> None:
        for identity in list(self.running):
            self.stop(identity)


@pytest.fixture
def replicas(cluster: Cluster) -> Iterator[Replicas]:
    group = Replicas(cluster)
    try:
        yield group
    finally:
        group.stop_all()


def pollers(emulator: Emulator) -> dict[str, set[str]]:
    """Run id -> the replicas whose calls answered it since the last reset."""
    result: dict[str, set[str]] = {}
    for caller, runs in emulator.counters.by_caller().items():
        for rid in runs:
            result.setdefault(rid, set()).add(CALLER[caller])
    return result


def statuses(cp: ControlPlane) -> dict[str, str | None]:
    items = json.loads(cp.kubectl("get", "paipipelineruns", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    return {item["spec"]["pipelineRunId"]: (item.get("status") or {}).get("runStatus") for item in items}


def check_each_polled_by_its_owner(cluster: Cluster, members: list[str]) -> None:
    seen = pollers(cluster.emulator)
    unpolled = [rid for rid in cluster.uids if rid not in seen]
    doubled = {rid: who for rid, who in seen.items() if len(who) > 1}
    wrong = {
        rid: who for rid, who in seen.items() if len(who) == 1 and who != {rendezvous_owner(cluster.uids[rid], members)}
    }
    assert not unpolled, f"{len(unpolled)} runs polled by no replica, e.g. {unpolled[:3]}"
    assert not doubled, f"{len(doubled)} runs polled by two replicas, e.g. {list(doubled.items())[:3]}"
    assert not wrong, f"{len(wrong)} runs polled by a replica that does not own them, e.g. {list(wrong.items())[:3]}"


def test_replicas_share_runs_take_over_from_the_dead_and_hand_over_on_stop(
    cluster: Cluster, replicas: Replicas
) -> None:
    emulator, cp = cluster.emulator, cluster.cp
    for identity in IDENTITIES[:3]:
        replicas.start(identity)
    replicas.wait_members()
    wait_for(lambda: all(s == "Running" for s in statuses(cp).values()), 90, 1, "every run's first status")

    # 1. Three replicas: every run polled by exactly its owner, over two intervals.
    emulator.reset_counters()
    time.sleep(2 * INTERVAL + 1)
    check_each_polled_by_its_owner(cluster, IDENTITIES[:3])
    steady_gap = max(emulator.counters.gaps().values())
    owned = [
        sum(1 for rid in cluster.uids if rendezvous_owner(cluster.uids[rid], IDENTITIES[:3]) == i)
        for i in IDENTITIES[:3]
    ]
    tracked = [replicas.metric(i, "paiflow_tracked_resources") for i in IDENTITIES[:3]]
    assert tracked == owned, (tracked, owned)

    # 2. SIGKILL one: the survivors poll each of its runs within lease duration + one poll interval.
    victim_runs = {rid for rid, uid in cluster.uids.items() if rendezvous_owner(uid, IDENTITIES[:3]) == "replica-1"}
    taken_metric = 'paiflow_handovers_total{direction="taken"}'
    taken_before = sum(replicas.metric(i, taken_metric) for i in ("replica-0", "replica-2"))
    emulator.reset_counters()
    killed = time.monotonic()
    replicas.kill("replica-1")
    first_taken: dict[str, float] = {}
    while len(first_taken) < len(victim_runs) and time.monotonic() - killed < 4 * (LEASE + INTERVAL):
        now = time.monotonic()
        for rid, who in pollers(emulator).items():
            if rid in victim_runs and rid not in first_taken and who - {"replica-1"}:
                first_taken[rid] = now - killed
        time.sleep(0.1)
    assert len(first_taken) == len(victim_runs), f"{len(victim_runs) - len(first_taken)} runs never taken over"
    takeover = max(first_taken.values())
    print(f"take-over after SIGKILL: {len(victim_runs)} runs, slowest {takeover:.2f}s (bound {LEASE + INTERVAL:g}s)")
    assert takeover <= LEASE + INTERVAL, f"slowest take-over {takeover:.2f}s"
    replicas.wait_members()
    # Each replica's metrics tell the story: two members seen, the victim's runs counted as taken over.
    taken = sum(replicas.metric(i, taken_metric) for i in ("replica-0", "replica-2")) - taken_before
    assert taken >= len(victim_runs), (taken, len(victim_runs))
    emulator.reset_counters()
    time.sleep(2 * INTERVAL + 1)
    check_each_polled_by_its_owner(cluster, ["replica-0", "replica-2"])

    # 3. Scale 2 -> 5 -> 2 with clean stops: no run waits longer than in steady state plus one interval.
    emulator.reset_counters()
    for identity in IDENTITIES[3:6]:
        replicas.start(identity)
    replicas.wait_members()
    time.sleep(INTERVAL)
    join_gap = max(emulator.counters.gaps().values())
    emulator.reset_counters()
    time.sleep(2 * INTERVAL + 1)
    check_each_polled_by_its_owner(cluster, ["replica-0", "replica-2", *IDENTITIES[3:6]])
    emulator.reset_counters()
    for identity in ("replica-0", "replica-3", "replica-5"):
        replicas.stop(identity)
    replicas.wait_members()
    time.sleep(INTERVAL)
    gaps = emulator.counters.gaps()
    leave_gap = max(gaps.values())
    print(f"longest wait between polls: steady {steady_gap:.2f}s, 2->5 {join_gap:.2f}s, 5->2 {leave_gap:.2f}s")
    assert len(gaps) == N
    assert join_gap <= steady_gap + INTERVAL, f"a run went {join_gap:.2f}s unpolled while replicas joined"
    assert leave_gap <= steady_gap + INTERVAL, f"a run went {leave_gap:.2f}s unpolled while replicas left"
    emulator.reset_counters()
    time.sleep(2 * INTERVAL + 1)
    check_each_polled_by_its_owner(cluster, ["replica-2", "replica-4"])

    # 4. Nothing lost: every run ends in PAI now, and every status follows.
    for rid in cluster.uids:
        emulator.transition(rid, ("Succeeded", None))
    wait_for(lambda: all(s == "Succeeded" for s in statuses(cp).values()), 60, 2, "every run to show Succeeded")
