"""The one door to PAI (pai_access): every PAI call of the operator passes its access check, its keys, a slot and
a rate token, and nothing else in the package can reach a PAI client."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_launcher import Factory, harness
from tests.unit.test_scheduler import DEFAULT_KEYS, FakeKube

from paiflow_operator.access.policy import Allowed
from paiflow_operator.access.view import AccessView
from paiflow_operator.api.runs import CredentialsSecretRef
from paiflow_operator.pai.api import PaiApi
from paiflow_operator.pai.models import (
    Acknowledged,
    CreatedRun,
    NodeLogs,
    NodeOutputList,
    NodeStatusList,
    PipelineRun,
    PipelineRunNode,
    RunList,
    RunStatusList,
)
from paiflow_operator.pai_access import Action, Caller, PaiAccess
from paiflow_operator.settings import Settings

# Unit tests of the door and what uses it: every namespace allowed (policies: tests/unit/test_access_*.py).
ALLOW_ALL = AccessView(allow_all=True)

__all__ = ["harness"]  # the fixture, imported for pytest

PACKAGE = Path(__file__).parents[2] / "operator" / "paiflow_operator"
# The client library itself, and the door that holds its one instance.
# kubectl_plugin.py is the user's tool, run on the user's machine with the user's own keys: not an operator call.
MAY_HOLD_A_CLIENT = {"pai_access.py", "kubectl_plugin.py"}
CLIENT_MODULES = {"paiflow_operator.pai.client", "paiflow_operator.pai.api"}
PAI_CALLS = sorted(
    name for name, _ in inspect.getmembers(PaiApi, inspect.iscoroutinefunction) if not name.startswith("_")
)
OPERATIONS = [name for name in PAI_CALLS if name != "aclose"]


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "pai" or str(relative) in MAY_HOLD_A_CLIENT:
            continue
        out.append((str(relative), ast.parse(path.read_text(encoding="utf-8"))))
    return out


def test_no_module_but_the_door_imports_or_builds_a_pai_client() -> None:
    offenders = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                imported = {base} | {f"{base}.{alias.name}" for alias in node.names}
            else:
                continue
            # "from paiflow_operator.pai import PaiClient" reaches the client through the package.
            if imported & (CLIENT_MODULES | {"paiflow_operator.pai.PaiClient", "paiflow_operator.pai.PaiApi"}):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
    door = ast.parse((PACKAGE / "pai_access.py").read_text(encoding="utf-8"))
    built = [n for n in ast.walk(door) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "PaiClient"]
    assert len(built) == 1, "the door builds the operator's one PaiClient"


class RecordingPai:
    """Every PaiApi operation, recording the order of events with the door's check and limiter."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def get_pipeline_run(self, run_id: str, **kwargs: Any) -> PipelineRun:
        self.log.append(f"get_pipeline_run token={kwargs.get('token_id')}")
        return PipelineRun.from_wire({"PipelineRunId": run_id, "Status": "Running"})

    async def list_pipeline_runs_status(self, workspace_id: str, run_ids: Any, **kwargs: Any) -> RunStatusList:
        self.log.append("list_pipeline_runs_status")
        return RunStatusList.model_validate({"RequestId": "r", "PipelineRuns": []})

    async def list_pipeline_runs(self, **kwargs: Any) -> RunList:
        self.log.append("list_pipeline_runs")
        return RunList.model_validate({"RequestId": "r", "TotalCount": 0, "PipelineRuns": []})

    async def create_pipeline_run(self, **kwargs: Any) -> CreatedRun:
        self.log.append("create_pipeline_run")
        return CreatedRun.model_validate({"RequestId": "r", "PipelineRunId": "flow-1"})

    async def start_pipeline_run(self, run_id: str, **kwargs: Any) -> Acknowledged:
        self.log.append("start_pipeline_run")
        return Acknowledged.model_validate({"RequestId": "r"})

    async def delete_pipeline_run(self, run_id: str, **kwargs: Any) -> Acknowledged:
        self.log.append("delete_pipeline_run")
        return Acknowledged.model_validate({"RequestId": "r"})

    async def terminate_pipeline_run(self, run_id: str, **kwargs: Any) -> Acknowledged:
        self.log.append("terminate_pipeline_run")
        return Acknowledged.model_validate({"RequestId": "r"})

    async def get_pipeline_run_node(self, run_id: str, node_id: str, **kwargs: Any) -> PipelineRunNode:
        self.log.append(f"get_pipeline_run_node token={kwargs.get('token_id')}")
        return PipelineRunNode.from_wire({"Metadata": {"NodeId": node_id}})

    async def list_pipeline_run_node_status(self, run_id: str, node_id: str, **kwargs: Any) -> NodeStatusList:
        self.log.append("list_pipeline_run_node_status")
        return NodeStatusList.model_validate({"Status": []})

    async def list_pipeline_run_node_logs(self, run_id: str, node_id: str, **kwargs: Any) -> NodeLogs:
        self.log.append("list_pipeline_run_node_logs")
        return NodeLogs.model_validate({"Logs": []})

    async def list_pipeline_run_node_outputs(self, run_id: str, node_id: str, **kwargs: Any) -> NodeOutputList:
        self.log.append("list_pipeline_run_node_outputs")
        return NodeOutputList.model_validate({"Outputs": []})

    async def aclose(self) -> None:
        self.log.append("aclose")


class RecordingLimiter:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
        self.log.append(f"token {tenant}")


ARGS: dict[str, Callable[[Caller], tuple[Any, ...]]] = {
    "get_pipeline_run": lambda who: ("flow-1",),
    "list_pipeline_runs_status": lambda who: ("ws-1", ["flow-1"]),
    "list_pipeline_runs": lambda who: (),
    "create_pipeline_run": lambda who: (),
    "start_pipeline_run": lambda who: ("flow-1",),
    "delete_pipeline_run": lambda who: ("flow-1",),
    "terminate_pipeline_run": lambda who: ("flow-1",),
    "get_pipeline_run_node": lambda who: ("flow-1", "node-1"),
    "list_pipeline_run_node_status": lambda who: ("flow-1", "node-1"),
    "list_pipeline_run_node_logs": lambda who: ("flow-1", "node-1"),
    "list_pipeline_run_node_outputs": lambda who: ("flow-1", "node-1"),
}
KWARGS: dict[str, dict[str, Any]] = {
    "create_pipeline_run": {"workspace_id": "ws-1", "name": "n", "pipeline_id": "p"},
    "get_pipeline_run_node": {"depth": 3},
    "list_pipeline_run_node_status": {"depth": 3},
    "list_pipeline_run_node_logs": {"page_size": 10},
    "list_pipeline_run_node_outputs": {"page_size": 10},
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_operation_is_authorized_then_keyed_then_slotted_then_rate_limited(
    operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(ARGS) == set(OPERATIONS), "a new PAI call needs a door operation (and a line here)"
    log: list[str] = []
    kube = FakeKube()
    kube.secrets[("team-a", "keys")] = {"id": b"LTAIteam", "secret": b"team-secret"}
    access = PaiAccess(
        Settings(), RecordingPai(log), kube, DEFAULT_KEYS, limiter=RecordingLimiter(log), policies=ALLOW_ALL
    )
    checked: list[Caller] = []
    real = access._authorize

    def authorize(who: Caller, workspace_id: str | None = None) -> Allowed:
        log.append("authorize")
        checked.append(who)
        return real(who, workspace_id)

    monkeypatch.setattr(access, "_authorize", authorize)
    ref = CredentialsSecretRef(name="keys", accessKeyIdKey="id", accessKeySecretKey="secret")
    who = Caller("team-a", "PaiPipelineRun", "r", Action.FOLLOW, access.region(None), "ws-1", ref)
    await getattr(access, operation)(who, *ARGS[operation](who), **KWARGS.get(operation, {}))
    assert log[0] == "authorize" and checked == [who]
    assert kube.secret_reads == [("team-a", "keys")], "the caller's own Secret signs its call"
    assert log[1] == "token team-a", "a rate token for the caller's tenant, right before the call leaves"
    assert log[2].split()[0] == operation and len(log) == 3


async def test_a_refusal_at_the_check_reads_no_keys_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from paiflow_operator.pai.errors import AuthError

    log: list[str] = []
    kube = FakeKube()
    access = PaiAccess(
        Settings(), RecordingPai(log), kube, DEFAULT_KEYS, limiter=RecordingLimiter(log), policies=ALLOW_ALL
    )

    def refuse(who: Caller, workspace_id: str | None = None) -> Allowed:
        raise AuthError(f"namespace {who.namespace} may not {who.action}", code="Forbidden")

    monkeypatch.setattr(access, "_authorize", refuse)
    ref = CredentialsSecretRef(name="keys", accessKeyIdKey="id", accessKeySecretKey="secret")
    who = Caller("team-a", "PaiPipelineRun", "r", Action.LAUNCH, "cn-hangzhou", "ws-1", ref)
    with pytest.raises(AuthError):
        await access.terminate_pipeline_run(who, "flow-1")
    assert log == [] and kube.secret_reads == []


async def test_every_pai_call_of_a_launch_and_its_polls_passes_the_door(harness: Factory) -> None:
    h = await harness()
    sent: list[str] = []
    authorized: list[Action] = []
    for name in OPERATIONS:
        real = getattr(h.pai, name, None)
        if real is None:
            continue

        def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            sent.append(_name)
            return _real(*args, **kwargs)

        setattr(h.pai, name, counting)
    real_authorize = h.access._authorize

    def authorize(who: Caller, workspace_id: str | None = None) -> Allowed:
        if workspace_id is None:  # once per call (a run's answer is checked once more, on its workspace)
            authorized.append(who.action)
        return real_authorize(who, workspace_id)

    h.access._authorize = authorize  # type: ignore[method-assign]
    key = h.launch("stop", deletionPolicy="Terminate")
    await h.advance(0.1)
    h.echo(key)
    await h.advance(60)
    h.deleting.add(key)
    h.echo(key)
    await h.advance(0.1)
    assert {"create_pipeline_run", "start_pipeline_run", "get_pipeline_run", "terminate_pipeline_run"} <= set(sent)
    assert len(authorized) == len(sent)
    assert {Action.LAUNCH, Action.FOLLOW, Action.TERMINATE} <= set(authorized)


async def test_a_create_runs_its_ready_step_with_slot_and_token_held_and_is_not_sent_if_it_raises() -> None:
    log: list[str] = []
    access = PaiAccess(
        Settings(), RecordingPai(log), FakeKube(), DEFAULT_KEYS, limiter=RecordingLimiter(log), policies=ALLOW_ALL
    )
    who = Caller("team-a", "PaiPipelineRun", "r", Action.LAUNCH, access.region(None), "ws-1")

    async def ready() -> None:
        log.append("ready")

    await access.create_pipeline_run(who, ready=ready, workspace_id="ws-1", name="n", pipeline_id="p")
    assert log == ["token team-a", "ready", "create_pipeline_run"]

    async def refuse() -> None:
        raise RuntimeError("not the owner any more")

    log.clear()
    with pytest.raises(RuntimeError):
        await access.create_pipeline_run(who, ready=refuse, workspace_id="ws-1", name="n", pipeline_id="p")
    assert log == ["token team-a"]
    # The slot was given back: the next call goes through.
    await access.create_pipeline_run(who, workspace_id="ws-1", name="n", pipeline_id="p")
    assert log[-1] == "create_pipeline_run"


PRICED = [name for name in OPERATIONS if "_node" in name]


@pytest.mark.parametrize("operation", PRICED)
async def test_priced_calls_take_their_own_budget_before_a_slot_and_the_global_token(operation: str) -> None:
    log: list[str] = []

    class Budget:
        async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
            log.append(f"budget {tenant}")

    access = PaiAccess(
        Settings(),
        RecordingPai(log),
        FakeKube(),
        DEFAULT_KEYS,
        limiter=RecordingLimiter(log),
        inside_limiter=Budget(),
        policies=ALLOW_ALL,
    )
    who = Caller("team-a", "PaiPipelineRun", "r", Action.INSPECT, access.region(None))
    await getattr(access, operation)(who, *ARGS[operation](who), **KWARGS.get(operation, {}))
    assert log[:2] == ["budget team-a", "token team-a"] and log[2].split()[0] == operation


async def test_status_calls_never_wait_for_the_priced_budget() -> None:
    log: list[str] = []

    class Budget:
        async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
            log.append("budget")

    access = PaiAccess(
        Settings(),
        RecordingPai(log),
        FakeKube(),
        DEFAULT_KEYS,
        limiter=RecordingLimiter(log),
        inside_limiter=Budget(),
        policies=ALLOW_ALL,
    )
    who = Caller("team-a", "PaiPipelineRun", "r", Action.FOLLOW, access.region(None))
    for operation in sorted(set(OPERATIONS) - set(PRICED)):
        await getattr(access, operation)(who, *ARGS[operation](who), **KWARGS.get(operation, {}))
    assert "budget" not in log


async def test_the_priced_budget_is_a_share_of_qps() -> None:
    clock = [0.0]
    access = PaiAccess(
        Settings(qps=10, inside_qps_share=0.2, inside_burst=1),
        RecordingPai([]),
        FakeKube(),
        DEFAULT_KEYS,
        clock=lambda: clock[0],
        policies=ALLOW_ALL,
    )
    who = Caller("team-a", "PaiPipelineRun", "r", Action.INSPECT, access.region(None))
    import asyncio

    await access.get_pipeline_run_node(who, "flow-1", "node-1", depth=2)  # the burst
    second = asyncio.ensure_future(access.get_pipeline_run_node(who, "flow-1", "node-1", depth=2))
    await asyncio.sleep(0.01)
    assert not second.done()  # 2 calls a second: the next token is 0.5 s away
    clock[0] += 0.5
    await asyncio.wait_for(second, 2)
