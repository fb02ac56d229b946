"""PaiPipelineSchedule and completion CloudEvents end to end: the operator as its shipped ServiceAccount, the real
API server (with kube-controller-manager's garbage collector), PAI played by the emulator.

The schedules' clock runs fast here (PAIFLOW_SCHEDULE_CLOCK_RATE, anchored at the test's start, so a restarted
operator agrees on the time): a minute of schedule time is a couple of seconds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from tests.e2e.conftest import Runs, wait_for
from tests.support.operator_process import REPO, OperatorProcess, free_port

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

WORKSPACE = "3101"
SCHEDULED_AT = "paiflow-operator.dev/scheduled-at"


def pipeline(emulator: Emulator, timeline: Timeline) -> str:
    emulator.add_workspace(WORKSPACE)
    return emulator.add_pipeline(
        f"pipeline-{uuid.uuid4().hex[:12]}", workspace_id=WORKSPACE, manifest="apiVersion: core/v1", timeline=timeline
    ).pipeline_id


@contextmanager
def own_operator(shared: OperatorProcess, namespace: str, name: str, **env: str) -> Iterator[list[OperatorProcess]]:
    """The session's operator stops (it would act on these schedules with the real clock); ours runs with a fast
    schedule clock; the session's comes back afterwards. Yields a list whose last item is the live process."""
    shared.stop()
    settings = {**shared.extra_env, "PAIFLOW_NAMESPACES": namespace, "PAIFLOW_SCHEDULE_RESYNC_INTERVAL": "1s", **env}
    procs = [OperatorProcess(shared.kubeconfig, shared.endpoint, shared.log_path.with_name(f"{name}.log"), settings)]
    try:
        procs[0].start()
        yield procs
    finally:
        for proc in procs:
            if proc.process is not None and proc.process.poll() is None:
                os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait(5)
        shared.start()


def restart(procs: list[OperatorProcess], kill: bool) -> None:
    old = procs[-1]
    assert old.process is not None
    if kill:
        os.killpg(old.process.pid, signal.SIGKILL)
        old.process.wait(5)
    else:
        old.stop()
    new = OperatorProcess(old.kubeconfig, old.endpoint, old.log_path, old.extra_env)
    procs.append(new)
    new.start()


def clock(rate: float) -> dict[str, str]:
    return {
        "PAIFLOW_SCHEDULE_CLOCK_RATE": str(rate),
        "PAIFLOW_SCHEDULE_CLOCK_ANCHOR": datetime.now(UTC).isoformat(),
    }


def apply_schedule(runs: Runs, name: str, pid: str, **spec: Any) -> None:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineSchedule",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {
            "schedule": "* * * * *",
            "runTemplate": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": pid}},
            },
            **spec,
        },
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def schedule(runs: Runs, name: str) -> dict[str, Any]:
    out = runs.cp.kubectl("get", "ppsched", name, "-n", runs.namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def runs_of(runs: Runs, name: str) -> list[dict[str, Any]]:
    out = runs.cp.kubectl(
        "get", "ppr", "-n", runs.namespace, "-l", f"paiflow-operator.dev/schedule={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(items, key=lambda r: r["metadata"]["annotations"][SCHEDULED_AT])


def slots(items: list[dict[str, Any]]) -> list[int]:
    """Each run's slot in minutes since the epoch (the suffix of its name, and its annotation)."""
    out = []
    for item in items:
        at = datetime.fromisoformat(item["metadata"]["annotations"][SCHEDULED_AT].replace("Z", "+00:00"))
        minutes = int(at.timestamp()) // 60
        assert item["metadata"]["name"].endswith(f"-{minutes}")
        out.append(minutes)
    return out


def pai_runs_of(emulator: Emulator, item: dict[str, Any]) -> int:
    uid = item["metadata"]["uid"]
    return sum(1 for r in emulator.run_ids() if (run := emulator.get_run(r)) is not None and run.name.endswith(uid))


def reasons(runs: Runs, name: str) -> list[str]:
    return [e["reason"] for e in runs.events(name)]


def test_one_run_per_slot_and_exactly_one_across_a_sigkill(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    with own_operator(operator, runs.namespace, "schedule-slots", **clock(30)) as procs:
        apply_schedule(runs, "every", pid, successfulRunsHistoryLimit=20)
        wait_for(lambda: len(runs_of(runs, "every")) >= 3, 60, 0.2, "three slots")
        first = slots(runs_of(runs, "every"))[:3]
        assert first == list(range(first[0], first[0] + 3)), first  # consecutive minutes, one run each
        # SIGKILL the moment a slot's run appears (before or after its status write, whichever comes first).
        seen = len(runs_of(runs, "every"))
        wait_for(lambda: len(runs_of(runs, "every")) > seen, 30, 0.05, "the next slot")
        restart(procs, kill=True)
        after = len(runs_of(runs, "every"))
        wait_for(lambda: len(runs_of(runs, "every")) >= after + 2, 60, 0.2, "two more slots")
        items = runs_of(runs, "every")
        minutes = slots(items)
        assert len(minutes) == len(set(minutes))
        # Every object made exactly one PAI run (the launch protocol), none made twice across the kill.
        wait_for(lambda: all(pai_runs_of(emulator, i) == 1 for i in runs_of(runs, "every")[:-1]), 30, 0.2, "PAI runs")
        assert all(pai_runs_of(emulator, i) <= 1 for i in runs_of(runs, "every"))
        for item in items:
            owner = item["metadata"]["ownerReferences"][0]
            assert owner["kind"] == "PaiPipelineSchedule" and owner["controller"] is True
            assert item["metadata"]["labels"]["team"] == "ml"
        status = schedule(runs, "every")["status"]
        assert status["lastScheduleTime"] and status["nextScheduleTime"] > status["lastScheduleTime"]
        table = runs.cp.kubectl("get", "ppsched", "every", "-n", runs.namespace).stdout.splitlines()
        assert table[0].split()[:5] == ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST"], table[0]


def test_forbid_skips_and_replace_terminates(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    pid = pipeline(emulator, Timeline.running_forever())
    with own_operator(operator, runs.namespace, "schedule-forbid", **clock(30)):
        apply_schedule(runs, "busy", pid, concurrencyPolicy="Forbid")
        wait_for(lambda: len(runs_of(runs, "busy")) == 1, 60, 0.2, "the first run")
        (first,) = runs_of(runs, "busy")
        runs.wait_status(first["metadata"]["name"], "Running", timeout=30)
        # Two more slots pass while it runs: both are skipped, with an Event, and no run is made.
        skipped = wait_for(
            lambda: reasons(runs, "busy").count("RunAlreadyActive") >= 2 and reasons(runs, "busy"), 30, 0.2, "skips"
        )
        assert len(runs_of(runs, "busy")) == 1, skipped
        status = schedule(runs, "busy")["status"]
        assert status["lastSkippedTime"] > status["lastScheduleTime"]
        assert status["active"] == [{"name": first["metadata"]["name"], "uid": first["metadata"]["uid"]}]
        # Replace: the next slot terminates the running one (spec.terminate) and starts a new one.
        runs.cp.kubectl(
            "patch",
            "ppsched",
            "busy",
            "-n",
            runs.namespace,
            "--type=merge",
            "-p",
            '{"spec":{"concurrencyPolicy":"Replace"}}',
        )
        wait_for(lambda: len(runs_of(runs, "busy")) >= 2, 30, 0.2, "the replacing run")
        runs.wait_status(first["metadata"]["name"], "Terminated", timeout=30)
        assert runs.get(first["metadata"]["name"])["spec"]["terminate"] is True
        assert "Replacing" in reasons(runs, "busy")


def test_an_outage_of_many_slots_makes_one_catch_up_run(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    # A slot every 10 minutes of schedule time = 10 s here: a burst would show between two slots.
    fast = clock(60)
    anchor = datetime.fromisoformat(fast["PAIFLOW_SCHEDULE_CLOCK_ANCHOR"])
    with own_operator(operator, runs.namespace, "schedule-outage", **fast) as procs:
        apply_schedule(runs, "nightly", pid, schedule="*/10 * * * *", successfulRunsHistoryLimit=20)
        wait_for(lambda: len(runs_of(runs, "nightly")) == 1, 30, 0.2, "the first run")
        procs[-1].stop()
        # Four slots or more missed; the operator is back just after a slot (its start takes a few seconds), so
        # that the catch-up run and the next slot's run are seconds apart.
        virtual = anchor.timestamp() + 60 * (datetime.now(UTC) - anchor).total_seconds()
        time.sleep(40 + (600 - virtual % 600) / 60 + 1)  # slots are 600 s of schedule time, 10 s here
        restart(procs, kill=False)
        wait_for(lambda: len(runs_of(runs, "nightly")) == 2, 10, 0.2, "the catch-up run")
        time.sleep(1)  # before the next slot
        items = runs_of(runs, "nightly")
        assert len(items) == 2, [i["metadata"]["name"] for i in items]
        gap = slots(items)[1] - slots(items)[0]
        assert gap >= 40 and gap % 10 == 0, gap  # the most recent slot, not the first one missed
        missed = [e for e in runs.events("nightly") if e["reason"] == "MissedSchedules"]
        assert len(missed) == 1 and f"{gap // 10 - 1} earlier slots" in missed[0]["message"], missed


def test_history_limits_delete_the_oldest(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    ok = pipeline(emulator, Timeline.of(("Running", 0.5), ("Succeeded", None)))
    bad = pipeline(emulator, Timeline.of(("Running", 0.5), ("Failed", None, "boom")))
    with own_operator(operator, runs.namespace, "schedule-history", **clock(30)):
        apply_schedule(runs, "good", ok, successfulRunsHistoryLimit=2)
        apply_schedule(runs, "poor", bad, failedRunsHistoryLimit=1)
        made: dict[str, set[str]] = {"good": set(), "poor": set()}

        def enough() -> bool:
            for name in made:
                made[name] |= {i["metadata"]["name"] for i in runs_of(runs, name)}
            return len(made["good"]) >= 5 and len(made["poor"]) >= 4

        wait_for(enough, 90, 0.1, "five and four slots")
        for name in made:  # no new slots from here: what is kept can be compared with what was made
            runs.cp.kubectl(
                "patch", "ppsched", name, "-n", runs.namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
            )
        for name in made:
            made[name] |= {i["metadata"]["name"] for i in runs_of(runs, name)}

        def kept(name: str) -> list[str] | None:
            items = runs_of(runs, name)
            if any((i.get("status") or {}).get("runStatus") not in ("Succeeded", "Failed") for i in items):
                return None  # wait until every run has ended
            return [i["metadata"]["name"] for i in items]

        by_slot = {name: sorted(made[name], key=lambda n: int(n.rsplit("-", 1)[1])) for name in made}
        wait_for(lambda: kept("good") == by_slot["good"][-2:], 30, 0.2, "the two newest succeeded runs")
        wait_for(lambda: kept("poor") == by_slot["poor"][-1:], 30, 0.2, "the newest failed run")
        assert "SuccessfulDelete" in reasons(runs, "good") and "SuccessfulDelete" in reasons(runs, "poor")


# ---- completion CloudEvents ---------------------------------------------------------------------------------


class Sink:
    """A CloudEvents consumer on 127.0.0.1 that can go down (connection refused) and come back on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with sink.lock:
                    sink.events.append({"headers": headers, "data": json.loads(body)})
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def of(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["headers"]["ce-source"].endswith(f"/paipipelineruns/{name}")]


def launch(runs: Runs, name: str, pid: str, **spec: Any) -> None:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": pid}, **spec},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def test_one_cloudevent_per_ended_run_through_a_dead_sink_and_a_restart(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    sink = Sink()
    sink.up()
    env = {
        "PAIFLOW_NOTIFY_SINK": f"http://127.0.0.1:{sink.port}/",
        "PAIFLOW_NOTIFY_BACKOFF_BASE": "200ms",
        "PAIFLOW_NOTIFY_BACKOFF_MAX": "1s",
        "PAIFLOW_NOTIFY_TIMEOUT": "2",
    }
    ok = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    bad = pipeline(emulator, Timeline.of(("Running", 1), ("Failed", None, "OOM")))
    forever = pipeline(emulator, Timeline.running_forever())
    try:
        with own_operator(operator, runs.namespace, "notify", **env) as procs:
            launch(runs, "good", ok)
            launch(runs, "poor", bad)
            launch(runs, "stopped", forever)
            runs.wait_status("stopped", "Running", timeout=30)
            runs.cp.kubectl(
                "patch", "ppr", "stopped", "-n", runs.namespace, "--type=merge", "-p", '{"spec":{"terminate":true}}'
            )
            expected = {
                "good": "dev.paiflow-operator.pipelinerun.succeeded.v1",
                "poor": "dev.paiflow-operator.pipelinerun.failed.v1",
                "stopped": "dev.paiflow-operator.pipelinerun.terminated.v1",
            }
            wait_for(lambda: all(sink.of(n) for n in expected), 60, 0.2, "three events")
            for name, type_ in expected.items():
                (event,) = sink.of(name)
                status = runs.status(name)
                assert event["headers"]["ce-type"] == type_ and event["headers"]["ce-specversion"] == "1.0"
                assert event["headers"]["ce-subject"] == status["pipelineRunId"]
                assert event["headers"]["content-type"] == "application/json"
                assert event["data"]["runStatus"] == status["runStatus"]
                assert "authorization" not in event["headers"]
                wait_for(lambda n=name: runs.status(n).get("notification"), 10, 0.2, "the delivery record")
                assert runs.status(name)["notification"]["type"] == type_

            # The sink goes down; a run ends; the operator is killed and restarted while it is down; the sink
            # comes back: the event arrives, once.
            sink.down()
            launch(runs, "late", ok)
            runs.wait_status("late", "Succeeded", timeout=30)
            time.sleep(5)  # retried meanwhile (backoff capped at 1 s here)
            restart(procs, kill=True)
            time.sleep(5)
            assert not sink.of("late")
            sink.up()
            wait_for(lambda: sink.of("late"), 30, 0.2, "the late event")
            wait_for(lambda: runs.status("late").get("notification"), 10, 0.2, "its record")
            assert runs.status("late")["notification"]["attempts"] >= 1
            time.sleep(3)
            for name in [*expected, "late"]:
                assert len(sink.of(name)) == 1, (name, sink.of(name))
            assert not [line for line in procs[-1].log_text().splitlines() if "Traceback" in line]
    finally:
        sink.down()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule must be five cron fields"),
        ({"schedule": "* * * *"}, "spec.schedule must be five cron fields"),
        ({"schedule": "@every 5m"}, "spec.schedule must be five cron fields"),
        ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy"),
        ({"timeZone": "not a zone"}, "spec.timeZone"),
        ({"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds"),
        ({"runTemplate": {"spec": {"pipelineRunId": "flow-abc"}}}, "runTemplate.spec needs spec.launch"),
    ],
)
def test_the_api_server_refuses_a_bad_schedule_naming_the_field(runs: Runs, spec: dict[str, Any], message: str) -> None:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineSchedule",
        "metadata": {"name": "bad", "namespace": runs.namespace},
        "spec": {
            "schedule": "0 2 * * *",
            "runTemplate": {"spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": "p-1"}}},
            **spec,
        },
    }
    refused = runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr


def test_a_schedule_template_stays_editable(runs: Runs) -> None:
    apply_schedule(runs, "edit", "p-1", suspend=True)
    body = schedule(runs, "edit")
    body["spec"]["runTemplate"]["spec"]["launch"]["pipelineId"] = "p-2"
    body["spec"]["schedule"] = "@daily"
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert schedule(runs, "edit")["spec"]["runTemplate"]["spec"]["launch"]["pipelineId"] == "p-2"


def test_the_shipped_example_is_accepted(runs: Runs) -> None:
    body = yaml.safe_load((REPO / "deploy" / "examples" / "paipipelineschedule.yaml").read_text())
    body["metadata"]["namespace"] = runs.namespace
    body["spec"]["suspend"] = True  # accepted, not run: no operator acts on it in this test
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert schedule(runs, "nightly-train")["spec"]["timeZone"] == "Asia/Shanghai"


def test_a_run_picks_a_sink_its_namespace_policy_lists(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    """No operator-wide sink here: the URL comes from a PaiAccessPolicy (an admin's), the run names it."""
    team = Sink()
    team.up()
    policy = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiAccessPolicy",
        "metadata": {"name": f"sinks-{runs.namespace}"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": runs.namespace}},
            "workspaceIds": ["*"],
            "actions": ["Follow"],
            "sinks": [{"name": "team", "url": f"http://127.0.0.1:{team.port}/"}],
        },
    }
    ok = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    env = {"PAIFLOW_NOTIFY_BACKOFF_BASE": "200ms", "PAIFLOW_NOTIFY_BACKOFF_MAX": "1s"}
    try:
        runs.cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
        with own_operator(operator, runs.namespace, "notify-policy", **env):
            launch(runs, "chosen", ok, notify={"sink": "team"})
            launch(runs, "unlisted", ok, notify={"sink": "elsewhere"})
            launch(runs, "unnamed", ok)
            for name in ("chosen", "unlisted", "unnamed"):
                runs.wait_status(name, "Succeeded", timeout=30)
            wait_for(lambda: team.of("chosen"), 30, 0.2, "the chosen sink's event")
            wait_for(lambda: runs.status("chosen").get("notification"), 10, 0.2, "its record")
            assert runs.status("chosen")["notification"]["sink"] == "team"
            time.sleep(3)
            assert len(team.of("chosen")) == 1 and not team.of("unlisted") and not team.of("unnamed")
            assert "notification" not in runs.status("unlisted") and "notification" not in runs.status("unnamed")
    finally:
        runs.cp.kubectl("delete", "paiaccesspolicy", policy["metadata"]["name"], "--ignore-not-found", check=False)
        team.down()
