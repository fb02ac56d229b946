"""`kubectl paiflow`: a user-side kubectl plugin showing a PaiPipelineRun's nodes, logs and outputs.

    kubectl paiflow nodes   ppr/NAME [-n NS] [--context C] [--kubeconfig F] [--depth D]
    kubectl paiflow logs    ppr/NAME [--node N] [-f] [--tail N]
    kubectl paiflow outputs ppr/NAME [-o table|json]

This is the user's tool, not the operator's: it never goes through the operator's door (pai_access) and never
uses the operator's keys. It reads the resource with the user's own kube credentials (kubeconfig, -n,
--context), takes the run id from it, and calls PAI with the user's **own** Alibaba Cloud credentials from the
standard default chain (ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET[/SECURITY_TOKEN] in the environment, then the
``aliyun`` CLI's ~/.aliyun/config.json profile, ...), so a user sees in PAI exactly what their RAM identity
allows. For a shared run, the share token is read from the resource's tokenSecretRef Secret when the user may
read it. The region is spec.regionId, else --region, else ALIBABA_CLOUD_REGION_ID, else cn-hangzhou.
PAIFLOW_ENDPOINT_OVERRIDE (or --endpoint) points it elsewhere, as it does the operator (the emulator).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, NoReturn

from paiflow_operator.api import runs as runs_api
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import CredentialSource, DefaultChainSource
from paiflow_operator.pai.errors import CredentialsError, PaiError
from paiflow_operator.pai.models import TERMINAL_STATUSES, PipelineRunNode, RunStatus

PROG = "kubectl-paiflow"
DEFAULT_REGION = "cn-hangzhou"
RESOURCE_KINDS = frozenset(
    {
        runs_api.PLURAL,
        runs_api.SINGULAR,
        runs_api.KIND.lower(),
        f"{runs_api.PLURAL}.{runs_api.GROUP}",
        f"{runs_api.SINGULAR}.{runs_api.GROUP}",
        *runs_api.SHORT_NAMES,
    }
)
NO_CREDENTIALS = (
    "no Alibaba Cloud credentials found: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, "
    "or configure a profile with `aliyun configure` (~/.aliyun/config.json); this plugin calls PAI as you, "
    "never with the operator's keys"
)
LOG_PAGE = 500
MAX_LOG_PAGES = 2000  # a million lines: a log beyond that is PAI's console's job
MAX_OUTPUT_PAGES = 20


class PluginError(Exception):
    """A one-line error for the user; the exit status is 1."""


@dataclass(frozen=True)
class Target:
    """What the resource says about its run, read with the user's kube credentials."""

    namespace: str
    name: str
    run_id: str
    region: str
    node_id: str | None
    token: str | None


# ------------------------------------------------------------------------------------------------ kube side


def parse_resource(text: str) -> str:
    """``ppr/NAME`` (any of the kind's names, with or without the group) or a bare ``NAME``."""
    kind, slash, name = text.partition("/")
    if not slash:
        kind, name = runs_api.PLURAL, text
    if kind.lower() not in RESOURCE_KINDS:
        raise PluginError(f"{text}: not a PaiPipelineRun (use ppr/NAME)")
    if not name:
        raise PluginError(f"{text}: no name")
    return name


def load_target(args: argparse.Namespace) -> Target:
    import kubernetes

    ApiException = kubernetes.client.exceptions.ApiException
    ConfigException = kubernetes.config.ConfigException
    name = parse_resource(args.resource)
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig
        )
        chosen = next((c for c in contexts if c["name"] == args.context), None) if args.context else active
        if args.context and chosen is None:
            raise PluginError(f"context {args.context!r} not found in the kubeconfig")
        namespace = args.namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
        api_client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context
        )
    except (ConfigException, OSError) as exc:
        raise PluginError(f"cannot load the kubeconfig: {exc}") from None
    with api_client:
        custom = kubernetes.client.CustomObjectsApi(api_client)
        try:
            obj: Any = custom.get_namespaced_custom_object(
                runs_api.GROUP, runs_api.VERSION, namespace, runs_api.PLURAL, name
            )
        except ApiException as exc:
            raise PluginError(_kube_error(exc, f"{runs_api.PLURAL}/{name} in namespace {namespace}")) from None
        except Exception as exc:  # unreachable server, TLS: the library's text says which
            raise PluginError(f"cannot reach the Kubernetes API server: {type(exc).__name__}") from None
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        run_id = status.get("pipelineRunId") or spec.get("pipelineRunId")
        if not run_id:
            raise PluginError(f"{runs_api.PLURAL}/{name} has no PAI run yet (status.pipelineRunId is empty)")
        token = _share_token(kubernetes.client.CoreV1Api(api_client), namespace, spec.get("tokenSecretRef"))
    region = spec.get("regionId") or args.region or os.environ.get("ALIBABA_CLOUD_REGION_ID") or DEFAULT_REGION
    return Target(namespace, name, str(run_id), str(region), status.get("nodeId"), token)


def _share_token(core: Any, namespace: str, ref: dict[str, Any] | None) -> str | None:
    """The share token, when the resource names one and the user may read its Secret (else PAI decides)."""
    import kubernetes

    if not ref or not ref.get("name"):
        return None
    try:
        secret = core.read_namespaced_secret(ref["name"], namespace)
    except kubernetes.client.exceptions.ApiException as exc:
        warn(f"share token not used: {_kube_error(exc, 'secret/' + ref['name'])}")
        return None
    raw = (secret.data or {}).get(ref.get("key") or "token")
    if not raw:
        warn(f"share token not used: secret/{ref['name']} has no key {ref.get('key') or 'token'!r}")
        return None
    return base64.b64decode(raw).decode("utf-8", errors="replace").strip() or None


def _kube_error(exc: Any, what: str) -> str:
    status = getattr(exc, "status", 0)
    if status == 404:
        return f"{what}: not found"
    if status in (401, 403):
        return f"{what}: forbidden for your kube credentials (HTTP {status})"
    return f"{what}: the API server answered HTTP {status} {getattr(exc, 'reason', '')}".rstrip()


# ------------------------------------------------------------------------------------------------ PAI side


class Session:
    """The PAI calls of one command, as the user."""

    def __init__(self, client: PaiClient, credentials: CredentialSource, target: Target) -> None:
        self.client = client
        self.credentials = credentials
        self.target = target

    def _kw(self) -> dict[str, Any]:
        return {"region": self.target.region, "credentials": self.credentials, "token_id": self.target.token}

    async def root_id(self) -> str:
        if self.target.node_id:
            return self.target.node_id
        run = await self.client.get_pipeline_run(self.target.run_id, **self._kw())
        if not run.node_id:
            raise PluginError(f"PAI gives run {self.target.run_id} no root node yet")
        return run.node_id

    async def tree(self, depth: int) -> PipelineRunNode:
        return await self.client.get_pipeline_run_node(
            self.target.run_id, await self.root_id(), depth=depth, **self._kw()
        )


async def _check_credentials(source: CredentialSource) -> None:
    try:
        await source.get()
    except CredentialsError:
        raise PluginError(NO_CREDENTIALS) from None


# ------------------------------------------------------------------------------------------------ commands


def _seconds(node: PipelineRunNode, now: datetime) -> str:
    start, end = node.status_info.started_at, node.status_info.finished_at
    if start is None:
        return ""
    return f"{int(((end or now) - start).total_seconds())}s"


def _flatten(node: PipelineRunNode, level: int = 0) -> list[tuple[int, PipelineRunNode]]:
    rows = [(level, node)]
    for child in node.children:
        rows.extend(_flatten(child, level + 1))
    return rows


def render_nodes(root: PipelineRunNode, now: datetime) -> list[str]:
    rows = [("NAME", "TYPE", "STATUS", "PROGRESS", "STARTED", "DURATION", "NODE ID")]
    for level, node in _flatten(root):
        name = "  " * level + (node.display_name or node.name or node.node_id)
        if node.is_dag and not node.children and level > 0:
            name += " (+, deeper: --depth)"
        started = node.status_info.started_at
        rows.append(
            (
                name,
                node.node_type or "",
                node.status_info.raw_status or node.status_info.status.value,
                node.status_info.progress or "",
                started.strftime("%Y-%m-%dT%H:%M:%SZ") if started else "",
                _seconds(node, now),
                node.node_id,
            )
        )
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _leaves(root: PipelineRunNode) -> list[PipelineRunNode]:
    return [node for _, node in _flatten(root) if not node.children and node is not root]


def pick_node(root: PipelineRunNode, wanted: str | None) -> PipelineRunNode:
    """--node by name, display name or id; without it, the only leaf, the first failed one, or the only running one."""
    nodes = [node for _, node in _flatten(root)]
    if wanted:
        for node in nodes:
            if wanted in (node.node_id, node.name, node.display_name):
                return node
        raise PluginError(f"no node {wanted!r} in the run (kubectl paiflow nodes lists them)")
    leaves = _leaves(root)
    if len(leaves) == 1:
        return leaves[0]
    failed = [n for n in leaves if n.status_info.status is RunStatus.FAILED]
    if failed:
        return min(failed, key=lambda n: n.status_info.finished_at or datetime.max.replace(tzinfo=UTC))
    running = [n for n in leaves if n.status_info.status is RunStatus.RUNNING]
    if len(running) == 1:
        return running[0]
    names = ", ".join((n.name or n.node_id) for n in leaves[:20])
    raise PluginError(f"the run has several nodes; pick one with --node ({names})")


async def cmd_nodes(session: Session, args: argparse.Namespace, out: IO[str]) -> int:
    root = await session.tree(args.depth)
    for line in render_nodes(root, datetime.now(UTC)):
        print(line, file=out)
    return 0


async def cmd_logs(session: Session, args: argparse.Namespace, out: IO[str]) -> int:
    run_id = session.target.run_id
    node = pick_node(await session.tree(args.depth), args.node)
    kw = session._kw()
    client = session.client

    async def page(offset: int, size: int = LOG_PAGE, reverse: bool | None = None) -> tuple[list[str], int]:
        got = await client.list_pipeline_run_node_logs(
            run_id, node.node_id, offset=offset, page_size=size, reverse=reverse, **kw
        )
        return got.logs, got.total_count

    printed = 0
    if args.tail is not None:
        if args.tail > 0:
            lines, total = await page(0, min(args.tail, 1000), reverse=True)
            for line in reversed(lines):
                print(line, file=out)
        else:
            _, total = await page(0, 1)
        printed = total
    else:
        printed = await _drain(page, 0, out)
    if not args.follow:
        return 0
    # Follow: new lines by offset (PAI pages oldest first), until the node has ended; then a last read.
    while True:
        ended = await _node_ended(session, node.node_id)
        printed = await _drain(page, printed, out)
        if ended:
            return 0
        await asyncio.sleep(args.poll_interval)


async def _drain(page: Callable[..., Any], offset: int, out: IO[str]) -> int:
    for _ in range(MAX_LOG_PAGES):
        lines, total = await page(offset)
        for line in lines:
            print(line, file=out)
        out.flush()
        offset += len(lines)
        if not lines or offset >= total:
            return offset
    return offset


async def _node_ended(session: Session, node_id: str) -> bool:
    node = await session.client.get_pipeline_run_node(session.target.run_id, node_id, depth=1, **session._kw())
    return node.status_info.status in TERMINAL_STATUSES


async def cmd_outputs(session: Session, args: argparse.Namespace, out: IO[str]) -> int:
    root_id = await session.root_id()
    rows: list[dict[str, Any]] = []
    for number in range(1, MAX_OUTPUT_PAGES + 1):
        got = await session.client.list_pipeline_run_node_outputs(
            session.target.run_id, root_id, depth=99999, page_number=number, page_size=100, **session._kw()
        )
        rows.extend(o.model_dump(mode="json", exclude_none=True) for o in got.outputs)
        if not got.outputs or len(rows) >= got.total_count:
            break
    if args.output == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False), file=out)
        return 0
    if not rows:
        print("no outputs (yet): PAI lists an output once the node that makes it has succeeded", file=out)
        return 0
    from paiflow_operator.runs.inside import location

    table = [("NAME", "TYPE", "NODE", "URI")]
    table += [
        (r.get("name", ""), r.get("type", ""), r.get("producer", ""), location(r.get("info")) or "") for r in rows
    ]
    for line in _table(table):
        print(line, file=out)
    return 0


COMMANDS = {"nodes": cmd_nodes, "logs": cmd_logs, "outputs": cmd_outputs}


# ------------------------------------------------------------------------------------------------ entry


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a flag given before the command is not reset by the command's own parser.
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace of the PaiPipelineRun")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path of the kubeconfig")
    common.add_argument("--region", default=argparse.SUPPRESS, help="PAI region when spec.regionId is not set")
    common.add_argument("--endpoint", default=argparse.SUPPRESS, help="PAI endpoint (default: the region's)")
    parser = argparse.ArgumentParser(prog="kubectl paiflow", parents=[common], description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    nodes = sub.add_parser("nodes", parents=[common], help="the run's node tree: status, progress, durations")
    logs = sub.add_parser("logs", parents=[common], help="a node's log (-f follows until the node ends)")
    outputs = sub.add_parser("outputs", parents=[common], help="the run's outputs (Model, DataSet, Metrics)")
    for each in (nodes, logs, outputs):
        each.add_argument("resource", help="ppr/NAME")
    for each in (nodes, logs):
        each.add_argument("--depth", type=int, default=10, help="node levels to read (default 10)")
    logs.add_argument("--node", help="node name or id (default: the only, first failed or only running leaf)")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the node ends")
    logs.add_argument("--tail", type=int, help="the last N lines (at most 1000)")
    logs.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    outputs.add_argument("-o", "--output", choices=("table", "json"), default="table")
    return parser


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def fail(message: str) -> NoReturn:
    warn(message.replace("\n", " "))
    raise SystemExit(1)


async def run(args: argparse.Namespace, out: IO[str]) -> int:
    target = load_target(args)
    credentials = DefaultChainSource()
    await _check_credentials(credentials)
    endpoint = args.endpoint or os.environ.get("PAIFLOW_ENDPOINT_OVERRIDE") or None
    try:
        client = PaiClient(endpoint_override=endpoint)
    except ValueError as exc:
        raise PluginError(f"endpoint: {exc}") from None
    async with client:
        return await COMMANDS[args.command](Session(client, credentials, target), args, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("namespace", "context", "kubeconfig", "region", "endpoint"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        return asyncio.run(run(args, sys.stdout))
    except PluginError as exc:
        fail(str(exc))
    except CredentialsError:
        fail(NO_CREDENTIALS)
    except PaiError as exc:
        fail(f"PAI: {exc.describe()}")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
