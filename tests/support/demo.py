"""`make demo`: a local control plane, the PAI emulator with scripted runs, and the operator, all on loopback.

Shows `kubectl get paipipelineruns` changing until every run has ended, then keeps the cluster up for you
to explore until Ctrl-C (or exits at once with --exit-when-done). Everything it started is stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.controlplane import ControlPlane
from tests.support.operator_process import REPO, OperatorProcess

from paiflow_emulator import scenario
from paiflow_emulator.thread import EmulatorThread
from paiflow_emulator.timeline import Timeline

ACCESS_KEY_ID = "LTAI5tDemoAccessKey01"
ACCESS_KEY_SECRET = "demo-secret-never-printed"
# A second key of the emulator, for you: `kubectl paiflow` calls PAI with the user's own keys, never the
# operator's, so the demo prints these for you to export (they open nothing but this emulator).
USER_KEY_ID, USER_KEY_SECRET = "LTAI5tDemoUserKey0001", "demo-user-key-for-kubectl-paiflow"
NAMESPACE = "ml"
THROTTLED_RUN = "flow-demo-throttled"
EXAMPLE_RUN = "flow-j94y0000000000lf7a"  # the run deploy/examples/paipipelinerun.yaml refers to
# The pipeline deploy/examples/paipipelinerun-launch.yaml launches a run of, in its workspace.
LAUNCH_PIPELINE, LAUNCH_WORKSPACE = "pipeline-j94yabcdefghlf7a", "24601"
SHARE_TOKEN = next(r["shareToken"] for r in scenario.DEMO["runs"] if "shareToken" in r)
TERMINAL = {"Succeeded", "Failed", "Terminated", "Skipped"}
# A second PAI workspace, nobody wrote a PaiPipelineRun for: the PaiWorkspace "team-imports" mirrors it.
IMPORT_WORKSPACE = "48213"
IMPORTED = [
    ("flow-import-designer-01", "DESIGNER", Timeline.of(("Running", 15), ("Succeeded", None))),
    ("flow-import-designer-02", "DESIGNER", Timeline.of(("Initialized", 5), ("Running", 25), ("Succeeded", None))),
    ("flow-import-sdk-01", "SDK", Timeline.of(("Running", 20), ("Failed", None, "step eval: exit code 1"))),
    ("flow-import-sdk-02", "SDK", Timeline.of(("Running", 30), ("Succeeded", None))),
]


def demo_policy() -> dict[str, Any]:
    workspaces = [scenario.DEMO_WORKSPACE, "15945", LAUNCH_WORKSPACE, IMPORT_WORKSPACE]
    return {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiAccessPolicy",
        "metadata": {"name": "demo-ml"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "workspaceIds": workspaces,
            "actions": ["Follow", "Import", "Launch", "Terminate", "Verbose", "Inspect"],
        },
    }


def _manifest(name: str, run_id: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pipelineRunId": run_id, **spec},
    }


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exit-when-done", action="store_true", help="stop once every run has ended")
    parser.add_argument("--timeout", type=float, default=300, help="give up waiting for the runs after this")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    workdir = Path(tempfile.mkdtemp(prefix="paiflow-demo-"))
    print(f"[demo] starting etcd + kube-apiserver (work dir {workdir}) ...", flush=True)
    try:
        with (
            ControlPlane(workdir=workdir / "cluster") as cp,
            EmulatorThread(keys={ACCESS_KEY_ID: ACCESS_KEY_SECRET}) as emu,
        ):
            pai = emu.emulator
            pai.add_key(USER_KEY_ID, USER_KEY_SECRET)
            pai.load_scenario(scenario.demo())
            pai.add_run(
                Timeline.of(("Initialized", 5), ("Running", 30), ("Succeeded", None)),
                run_id=THROTTLED_RUN,
                name="throttled-report",
                workspace_id=scenario.DEMO_WORKSPACE,
            )
            pai.add_run(
                Timeline.of(("Initialized", 5), ("Running", 20), ("Succeeded", None)),
                run_id=EXAMPLE_RUN,
                name="nightly-train",
                workspace_id="15945",
            )
            pai.add_pipeline(
                LAUNCH_PIPELINE,
                workspace_id=LAUNCH_WORKSPACE,
                timeline=Timeline.of(("Initialized", 4), ("Running", 20), ("Succeeded", None)),
            )
            for run_id, source, timeline in IMPORTED:
                pai.add_run(timeline, run_id=run_id, workspace_id=IMPORT_WORKSPACE, source_type=source)
            # Created two days ago: outside the PaiWorkspace's import window (24 h), so never imported.
            pai.add_run(Timeline.of(("Succeeded", None)), age=2 * 86400, workspace_id=IMPORT_WORKSPACE)
            # PAI throttles every call about this run for its first 25 seconds.
            pai.add_fault("throttle", run_id=THROTTLED_RUN, duration=25)
            print(f"[demo] PAI emulator at {emu.url}", flush=True)

            cp.kubectl("apply", "-f", str(REPO / "crds"))
            cp.kubectl("apply", "-k", str(REPO / "deploy" / "base"))
            cp.kubectl("create", "namespace", NAMESPACE)
            cp.kubectl(
                "wait",
                "--for=condition=Established",
                "crd/paipipelineruns.paiflow-operator.dev",
                "crd/paiworkspaces.paiflow-operator.dev",
                "crd/paipipelineschedules.paiflow-operator.dev",
                "crd/paiaccesspolicies.paiflow-operator.dev",
            )
            # Nothing works for a namespace until a PaiAccessPolicy allows it: the demo's namespace may reach the
            # demo's four workspaces, with the operator's own credentials.
            cp.kubectl("apply", "-f", "-", input=json.dumps(demo_policy()))
            sa = cp.service_account_kubeconfig("paiflow-system", "paiflow-operator", workdir / "operator.kubeconfig")
            operator = OperatorProcess(
                sa,
                emu.url,
                workdir / "operator.log",
                {
                    "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
                    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
                    "PAIFLOW_DEFAULT_POLL_INTERVAL": "5s",
                    "PAIFLOW_BACKOFF_BASE": "2s",
                    "PAIFLOW_BACKOFF_MAX": "8s",
                    "PAIFLOW_WORKSPACE_SCAN_INTERVAL": "5s",
                    # Progress moves in seconds here; the default (2m) suits runs of hours.
                    "PAIFLOW_PROGRESS_INTERVAL": "3s",
                },
            )
            with operator:
                print(
                    f"[demo] operator runs as ServiceAccount paiflow-system/paiflow-operator; log: {operator.log_path}"
                )
                cp.kubectl("apply", "-f", str(REPO / "deploy" / "examples" / "paipipelinerun.yaml"))
                # The shared run is read with its share TokenId, kept in a Secret the namespace lets us read.
                cp.kubectl("apply", "-f", str(REPO / "deploy" / "examples" / "secret-reader-rolebinding.yaml"))
                cp.kubectl(
                    "create", "secret", "generic", "demo-share", "-n", NAMESPACE, f"--from-literal=token={SHARE_TOKEN}"
                )
                docs = [
                    _manifest(r["id"].removeprefix("flow-"), r["id"])
                    if "shareToken" not in r
                    else _manifest(r["id"].removeprefix("flow-"), r["id"], tokenSecretRef={"name": "demo-share"})
                    for r in scenario.DEMO["runs"]
                ]
                docs.append(_manifest("demo-throttled", THROTTLED_RUN))
                cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
                # A run the operator starts itself (spec.launch), next to the ones it follows by id.
                launched = cp.kubectl(
                    "create", "-f", str(REPO / "deploy" / "examples" / "paipipelinerun-launch.yaml"), "-o", "name"
                ).stdout.strip()
                print(f"[demo] launched: {launched} (spec.launch; the operator creates its PAI run once)", flush=True)
                cp.kubectl("apply", "-f", str(REPO / "deploy" / "examples" / "paiworkspace.yaml"))
                print(
                    "\n[demo] to use your own kubectl on this cluster:\n"
                    f"  export KUBECONFIG={cp.kubeconfig}\n"
                    f"  kubectl get paipipelineruns -n {NAMESPACE} -o wide\n"
                    f"  kubectl describe ppr demo-fails -n {NAMESPACE}\n"
                    f"  kubectl get paiworkspaces -n {NAMESPACE}\n"
                    f"  kubectl get ppr -n {NAMESPACE} -l paiflow-operator.dev/workspace=team-imports\n"
                    "  (deploy/base is applied as a user would, but this cluster has no scheduler or kubelet: the\n"
                    "  Deployment paiflow-system/paiflow-operator stays 0/1 with no pods. The operator runs here as a\n"
                    f"  local process with that Deployment's ServiceAccount; its log: {operator.log_path})\n",
                    flush=True,
                )
                _watch(cp, args.timeout)
                _inside(cp, emu.url)
                if args.exit_when_done:
                    return 0
                print("\n[demo] the cluster stays up for you to explore; Ctrl-C stops everything.", flush=True)
                while True:
                    time.sleep(3600)
    except (KeyboardInterrupt, _Stop):
        print("\n[demo] stopping ...", flush=True)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("[demo] stopped: control plane, emulator and operator are gone.", flush=True)


def pai_runs_named(item: dict[str, Any]) -> str:
    launch = (item.get("status") or {}).get("launch") or {}
    return f"PAI name {launch.get('runName')}, {launch.get('attempts')} create attempt(s)"


def _watch(cp: ControlPlane, timeout: float) -> None:
    """Prints the table each time a run changes, until every run but the endless one has ended."""
    deadline = time.monotonic() + timeout
    last: list[tuple[str, str, str, str]] = []
    while time.monotonic() < deadline:
        items = json.loads(cp.kubectl("get", "paipipelineruns", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        state = sorted(
            (
                i["metadata"]["name"],
                (i.get("status") or {}).get("runStatus") or "",
                (i.get("status") or {}).get("progress") or "",
                next(
                    (c["reason"] for c in (i.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), ""
                ),
            )
            for i in items
        )
        if state != last:
            last = state
            table = cp.kubectl("get", "paipipelineruns", "-n", NAMESPACE).stdout
            print(
                f"\n[demo] {time.strftime('%H:%M:%S')} kubectl get paipipelineruns -n {NAMESPACE}\n{table}", flush=True
            )
        if all(status in TERMINAL for name, status, _, _ in state if name != "demo-long"):
            print("[demo] every run has ended (demo-long keeps running on purpose).", flush=True)
            events = cp.kubectl("describe", "paipipelinerun", "demo-fails", "-n", NAMESPACE).stdout.split("Events:")[-1]
            print(f"[demo] kubectl describe ppr demo-fails -n {NAMESPACE} (events):{events}", flush=True)
            for item in items:
                if (item["spec"].get("launch")) is not None:
                    runs = pai_runs_named(item)
                    print(
                        f"[demo] {item['metadata']['name']} launched PAI run "
                        f"{(item.get('status') or {}).get('pipelineRunId')} ({runs})",
                        flush=True,
                    )
            workspaces = cp.kubectl("get", "paiworkspaces", "-n", NAMESPACE, "-o", "wide").stdout
            print(f"[demo] kubectl get paiworkspaces -n {NAMESPACE} -o wide\n{workspaces}", flush=True)
            imported = cp.kubectl(
                "get",
                "ppr",
                "-n",
                NAMESPACE,
                "-l",
                "paiflow-operator.dev/workspace=team-imports",
                "-L",
                "paiflow-operator.dev/source-type",
            ).stdout
            print(f"[demo] imported runs (label paiflow-operator.dev/workspace=team-imports):\n{imported}", flush=True)
            return
        time.sleep(1)
    print(f"[demo] gave up after {timeout:.0f}s", file=sys.stderr)


def _inside(cp: ControlPlane, endpoint: str) -> None:
    """What the runs held inside: the failed node and its log tail, the model a run made, and the plugin."""

    def ended_reads() -> tuple[dict[str, Any], dict[str, Any]]:
        fails = json.loads(cp.kubectl("get", "ppr", "demo-fails", "-n", NAMESPACE, "-o", "json").stdout)
        succeeds = json.loads(cp.kubectl("get", "ppr", "demo-succeeds", "-n", NAMESPACE, "-o", "json").stdout)
        return fails.get("status") or {}, succeeds.get("status") or {}

    deadline = time.monotonic() + 30
    fails, succeeds = ended_reads()
    while not (fails.get("failure") and succeeds.get("outputs")) and time.monotonic() < deadline:
        time.sleep(1)
        fails, succeeds = ended_reads()
    failure = fails.get("failure") or {}
    print(
        f"[demo] demo-fails failed in node {failure.get('node')!r}; status.failure.logTail:\n"
        + "".join(f"    {line}\n" for line in str(failure.get("logTail") or "").splitlines()),
        flush=True,
    )
    for out in succeeds.get("outputs") or []:
        print(f"[demo] demo-succeeds made {out.get('type')} {out.get('name')!r} at {out.get('uri')}", flush=True)
    print(
        "[demo] kubectl paiflow, the plugin this package installs (.venv/bin/kubectl-paiflow), calls PAI with YOUR\n"
        "  keys, never the operator's. This emulator knows a demo key for you:\n"
        f"  export PATH=$PWD/.venv/bin:$PATH KUBECONFIG={cp.kubeconfig}\n"
        f"  export PAIFLOW_ENDPOINT_OVERRIDE={endpoint} ALIBABA_CLOUD_ACCESS_KEY_ID={USER_KEY_ID}\n"
        f"  export ALIBABA_CLOUD_ACCESS_KEY_SECRET={USER_KEY_SECRET} ALIBABA_CLOUD_ECS_METADATA_DISABLED=true\n"
        f"  kubectl paiflow nodes ppr/demo-succeeds -n {NAMESPACE}\n"
        f"  kubectl paiflow logs ppr/demo-fails -n {NAMESPACE} --tail 3\n"
        f"  kubectl paiflow outputs ppr/demo-succeeds -n {NAMESPACE}\n"
        f"  kubectl paiflow logs ppr/demo-long -n {NAMESPACE} -f  # follows until the node ends (never, here)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
