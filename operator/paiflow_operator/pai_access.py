"""The one door every PAI call of every kind leaves through: who is asking, their keys, the access check, a
concurrency slot and a rate token.

A call names the resource it is made for (a ``Caller``: namespace, kind, name, region, workspace, Secret
references and the action it serves); the door resolves that resource's keys (the operator's own default
chain, or the Secret in the resource's own namespace), authorizes the call, takes a slot among the calls in
flight and a rate token, and only then lets the request leave. Nothing else in the operator holds a PAI
client: the kinds (runs, workspaces) hold this door.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, Required, TypedDict, TypeVar, Unpack

from paiflow_operator import metrics
from paiflow_operator.access.identity import Identities
from paiflow_operator.access.policy import Allowed, Decision
from paiflow_operator.access.view import AccessDenied, AccessView
from paiflow_operator.api.policies import Action as PolicyAction
from paiflow_operator.api.runs import CredentialsSecretRef, SecretKeySelector
from paiflow_operator.guards.circuit import OPERATOR_IDENTITY
from paiflow_operator.guards.ratelimit import FairLimiter, FairSemaphore
from paiflow_operator.pai.api import PaiApi
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import CredentialSource, DefaultChainSource
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
from paiflow_operator.secret_credentials import SecretCredentials, SecretReader
from paiflow_operator.settings import Settings

T = TypeVar("T")

# Whose calls may share one PAI answer (a batched status query, a workspace scan): (namespace, Secret name, the
# three key names), the key names empty when no Secret is named (the policy's identity signs). The whole
# reference, key names included: one Secret may hold several key pairs. The namespace always: PAI's answers are
# never shared between tenants, whose policies (and identities) differ. (None is no longer produced.)
IdentityKey = tuple[str, str, str, str, str] | None


class Action(StrEnum):
    """Why a call is made: what a tenancy policy decides on."""

    FOLLOW = "Follow"  # read a run's status (GetPipelineRun, ListPipelineRunsStatus)
    VERBOSE = "Verbose"  # read a run with its manifest, arguments and options (spec.verbose)
    IMPORT = "Import"  # scan a workspace's runs (PaiWorkspace)
    LAUNCH = "Launch"  # look a launched run up, create it, start it, delete its unstarted duplicates
    TERMINATE = "Terminate"  # check a launched run is this resource's, terminate it
    INSPECT = "Inspect"  # read a run's nodes, a node's log lines, its outputs (the pipeline's own text and data)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the resource a PAI call is made for, and why."""

    namespace: str
    kind: str  # "PaiPipelineRun" or "PaiWorkspace"
    name: str
    action: Action
    region: str
    workspace_id: str | None = None
    credentials_ref: CredentialsSecretRef | None = None
    token_ref: SecretKeySelector | None = None

    @property
    def tenant(self) -> str:
        """Whose share of the rate limit the call takes: the resource's namespace."""
        return self.namespace


class ListQuery(TypedDict, total=False):
    """ListPipelineRuns' parameters (PaiApi.list_pipeline_runs); only those given are sent."""

    workspace_id: str | None
    page_number: int
    page_size: int
    status: str | None
    name: str | None
    pipeline_run_id: str | None
    pipeline_ids: str | None
    source_type: str | None
    source_id: str | None
    user_id: str | None
    sort_by: str | None
    order: str | None


class CreateRequest(TypedDict, total=False):
    """CreatePipelineRun's parameters (PaiApi.create_pipeline_run); workspace_id and name are required."""

    workspace_id: Required[str]
    name: Required[str]
    pipeline_id: str | None
    pipeline_manifest: str | None
    arguments: str | None
    options: str | None
    accessibility: str | None
    no_confirm_required: bool
    source_type: str | None
    source_id: str | None


class Limiter(Protocol):
    """A PAI call rate limit; ``tenant`` lets a fair limiter share the rate among namespaces."""

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None: ...


class Slots(Protocol):
    """The calls in flight; ``tenant`` lets a fair semaphore share the slots among namespaces."""

    def slot(self, tenant: str = "", weight: float = 1.0) -> contextlib.AbstractAsyncContextManager[None]: ...


def identity_key(namespace: str, ref: CredentialsSecretRef | None) -> IdentityKey:
    """Whose calls a resource's are: runs of one workspace share a status query (and a scan) only if equal, so
    only within one namespace, and with the same Secret if they name one."""
    if ref is None:
        return (namespace, "", "", "", "")
    return (namespace, ref.name, ref.accessKeyIdKey, ref.accessKeySecretKey, ref.securityTokenKey)


class PaiAccess:
    def __init__(
        self,
        settings: Settings,
        pai: PaiApi,
        secrets: SecretReader,
        default_credentials: CredentialSource,
        *,
        policies: AccessView,
        clock: Callable[[], float] = time.monotonic,
        limiter: Limiter | None = None,
        inside_limiter: Limiter | None = None,
        identities: Identities | None = None,
    ) -> None:
        """``policies``: the live PaiAccessPolicies every call is checked against (AccessView(allow_all=True)
        only for a single-team install, PAIFLOW_ALLOW_ALL_NAMESPACES)."""
        self.settings = settings
        self._pai = pai
        self.default_credentials = default_credentials
        self.policies = policies
        self.identities = identities or Identities(
            default_credentials,
            sts_endpoint=settings.sts_endpoint,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
        self.secrets = SecretCredentials(secrets, settings.secret_cache_ttl.total_seconds(), clock)
        # Both queues a flood of one namespace's calls would fill are shared between namespaces by weight.
        self.limiter: Limiter = limiter or FairLimiter(settings.qps, settings.burst, clock)
        self.in_flight: Slots = FairSemaphore(settings.concurrency)
        # The node, log and output calls' own budget, a share of the PAI QPS: they take a token here first, then
        # one of the global limit like any call, so however many there are they never take more than their
        # share of it, and status polling keeps the rest.
        self.inside_limiter: Limiter = inside_limiter or FairLimiter(
            settings.qps * settings.inside_qps_share, settings.inside_burst, clock
        )

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretReader, policies: AccessView) -> PaiAccess:
        """The operator's door: its one PaiClient, signed by the default credential chain (or a role assumed from
        it, as the policies say) unless a resource names a Secret."""
        client = PaiClient(
            endpoint_override=settings.endpoint_override,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.concurrency,
            observer=metrics.observe_pai_call,
            extra_regions=settings.extra_regions,
        )
        return cls(settings, client, secrets, DefaultChainSource(), policies=policies)

    async def aclose(self) -> None:
        await self._pai.aclose()

    def identity(self, who: Caller) -> str:
        """An opaque name of the identity that signs the caller's calls, for the circuit breaker (one circuit per
        region and identity): "operator", "role:<arn>" or "secret:<reference>" (access.policy.Identity.key).
        Never a key or a secret value."""
        decision = self.decide(who)
        if isinstance(decision, Allowed):
            return decision.identity.key
        # Refused callers make no call; they still need a circuit to be looked up in.
        if who.credentials_ref is None:
            return OPERATOR_IDENTITY
        return "secret:" + "/".join(identity_key(who.namespace, who.credentials_ref) or ())

    def region(self, region_id: str | None) -> str:
        """The region a resource's calls go to: its own regionId, else the operator's default."""
        return region_id or self.settings.default_region

    # ---- the PAI operations ------------------------------------------------------------------------------

    async def get_pipeline_run(
        self, who: Caller, run_id: str, *, verbose: bool = False, manifest_type: str | None = None
    ) -> PipelineRun:
        run = await self._send(
            who,
            lambda credentials, token_id: self._pai.get_pipeline_run(
                run_id,
                region=who.region,
                credentials=credentials,
                verbose=verbose,
                manifest_type=manifest_type,
                token_id=token_id,
            ),
            with_token=True,
        )
        # The run's workspace is what PAI says, not what the spec claims (or nothing, before the first answer):
        # checked before the caller can write any of it.
        if run.workspace_id and run.workspace_id != who.workspace_id:
            self._authorize(who, run.workspace_id)
        return run

    async def list_pipeline_runs_status(self, who: Caller, workspace_id: str, run_ids: Sequence[str]) -> RunStatusList:
        return await self._send(
            who,
            lambda credentials, _: self._pai.list_pipeline_runs_status(
                workspace_id, run_ids, region=who.region, credentials=credentials
            ),
        )

    async def list_pipeline_runs(self, who: Caller, **query: Unpack[ListQuery]) -> RunList:
        return await self._send(
            who,
            lambda credentials, _: self._pai.list_pipeline_runs(region=who.region, credentials=credentials, **query),
        )

    async def create_pipeline_run(
        self, who: Caller, *, ready: Callable[[], Awaitable[None]] | None = None, **request: Unpack[CreateRequest]
    ) -> CreatedRun:
        """``ready``: awaited once the slot and the rate token are held, right before the request leaves (a launch
        re-checks ownership and writes its claim there); if it raises, nothing is sent."""
        return await self._send(
            who,
            lambda credentials, _: self._pai.create_pipeline_run(region=who.region, credentials=credentials, **request),
            ready=ready,
        )

    async def start_pipeline_run(self, who: Caller, run_id: str) -> Acknowledged:
        return await self._send(
            who, lambda credentials, _: self._pai.start_pipeline_run(run_id, region=who.region, credentials=credentials)
        )

    async def delete_pipeline_run(self, who: Caller, run_id: str) -> Acknowledged:
        return await self._send(
            who,
            lambda credentials, _: self._pai.delete_pipeline_run(run_id, region=who.region, credentials=credentials),
        )

    async def terminate_pipeline_run(self, who: Caller, run_id: str) -> Acknowledged:
        return await self._send(
            who,
            lambda credentials, _: self._pai.terminate_pipeline_run(run_id, region=who.region, credentials=credentials),
        )

    # ---- priced calls: what a run holds inside (issue 19), on their own budget -------------------------------

    async def get_pipeline_run_node(self, who: Caller, run_id: str, node_id: str, *, depth: int) -> PipelineRunNode:
        return await self._send(
            who,
            lambda credentials, token_id: self._pai.get_pipeline_run_node(
                run_id, node_id, region=who.region, credentials=credentials, depth=depth, token_id=token_id
            ),
            with_token=True,
            priced=True,
        )

    async def list_pipeline_run_node_status(
        self, who: Caller, run_id: str, node_id: str, *, depth: int
    ) -> NodeStatusList:
        return await self._send(
            who,
            lambda credentials, token_id: self._pai.list_pipeline_run_node_status(
                run_id, node_id, region=who.region, credentials=credentials, depth=depth, token_id=token_id
            ),
            with_token=True,
            priced=True,
        )

    async def list_pipeline_run_node_logs(
        self, who: Caller, run_id: str, node_id: str, *, page_size: int, reverse: bool | None = None
    ) -> NodeLogs:
        return await self._send(
            who,
            lambda credentials, token_id: self._pai.list_pipeline_run_node_logs(
                run_id,
                node_id,
                region=who.region,
                credentials=credentials,
                page_size=page_size,
                reverse=reverse,
                token_id=token_id,
            ),
            with_token=True,
            priced=True,
        )

    async def list_pipeline_run_node_outputs(
        self, who: Caller, run_id: str, node_id: str, *, page_size: int, output_type: str | None = None
    ) -> NodeOutputList:
        return await self._send(
            who,
            lambda credentials, token_id: self._pai.list_pipeline_run_node_outputs(
                run_id,
                node_id,
                region=who.region,
                credentials=credentials,
                page_size=page_size,
                output_type=output_type,
                token_id=token_id,
            ),
            with_token=True,
            priced=True,
        )

    # ---- what every call passes through ------------------------------------------------------------------

    def decide(self, who: Caller, workspace_id: str | None = None) -> Decision:
        """What the PaiAccessPolicies say about this caller: Allowed (with the identity that signs, the tenant's
        weight and import cap), Denied or Conflict. A resource naming its own Secret acts on that Secret's
        authority and is never denied (the namespace's Secret-reader RoleBinding is the gate)."""
        workspace = workspace_id or who.workspace_id
        if who.credentials_ref is not None:
            secret = identity_key(who.namespace, who.credentials_ref)
            assert secret is not None
            return self.policies.for_secret(who.namespace, secret)
        named = workspace_id is None  # a workspace PAI told us may be another team's: never repeated
        extras: dict[Action, PolicyAction] = {Action.VERBOSE: "Verbose", Action.INSPECT: "Inspect"}
        extra = extras.get(who.action)
        action: PolicyAction = "Follow" if extra is not None else who.action.value
        decision = self.policies.decide(who.namespace, action, workspace, who.region, name_workspace=named)
        if extra is not None and isinstance(decision, Allowed):
            # Verbose mirrors a run's manifest, arguments and options, Inspect its nodes, log lines and outputs:
            # each an action of its own, on top of Follow (a team's code, parameters and output, not a status).
            decision = self.policies.decide(who.namespace, extra, workspace, who.region, name_workspace=named)
        return decision

    def _authorize(self, who: Caller, workspace_id: str | None = None) -> Allowed:
        """THE access check: every PAI call passes here before its keys are even read (and a run's answer again,
        on the workspace PAI names). Raises AccessDenied (reason PolicyDenied or PolicyConflict), which its
        resource shows like any refusal: Ready=False, Stalled=True, one Event, a slow retry, no PAI call."""
        decision = self.decide(who, workspace_id)
        if not isinstance(decision, Allowed):
            raise AccessDenied(decision)
        return decision

    async def _send(
        self,
        who: Caller,
        call: Callable[[CredentialSource, str | None], Awaitable[T]],
        *,
        with_token: bool = False,
        ready: Callable[[], Awaitable[None]] | None = None,
        priced: bool = False,
    ) -> T:
        allowed = self._authorize(who)
        credentials = await self._credentials_for(who, allowed)
        token_id = await self._token_id(who) if with_token else None
        if priced:
            # Before the slot: a priced call waiting for its budget holds no slot a status poll could use.
            await self.inside_limiter.acquire(who.tenant, allowed.weight)
        async with self._slot(who, credentials, allowed.weight):
            if ready is not None:
                await ready()
            return await call(credentials, token_id)

    async def credentials(self, who: Caller) -> CredentialSource:
        """The keys that sign the caller's calls: the Secret it names in its own namespace, else the identity its
        namespace's policies name (the operator's own, or a role assumed from it). Raises AccessDenied."""
        return await self._credentials_for(who, self._authorize(who))

    async def _credentials_for(self, who: Caller, allowed: Allowed) -> CredentialSource:
        if who.credentials_ref is not None:
            return await self.secrets.credentials(who.namespace, who.credentials_ref)
        if allowed.identity.type == "AssumeRole":
            return self.identities.credentials(allowed.identity)
        return self.default_credentials

    async def share_token(self, who: Caller) -> str | None:
        """The caller's share token (its tokenSecretRef), e.g. to keep it out of text shown to users."""
        return await self._token_id(who)

    async def _token_id(self, who: Caller) -> str | None:
        if who.token_ref is None:
            return None
        return await self.secrets.share_token(who.namespace, who.token_ref)

    @contextlib.asynccontextmanager
    async def _slot(self, who: Caller, credentials: CredentialSource, weight: float = 1.0) -> AsyncIterator[None]:
        """A slot among the calls in flight, then resolved credentials, then a rate-limit token, in that order.

        The token is taken last, right before the request leaves: a call that took its token and then waited
        (for a slot, or for the first credential lookup) would leave in a bunch with others and break the
        rate limit as PAI sees it.
        """
        async with self.in_flight.slot(who.tenant, weight):
            await credentials.get()  # cached afterwards: the client's own get() is then immediate
            await self.limiter.acquire(who.tenant, weight)
            yield
