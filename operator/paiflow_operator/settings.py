"""Operator settings, read once from the environment (prefix PAIFLOW_)."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from paiflow_operator.api.runs import REGION_PATTERN, parse_duration
from paiflow_operator.pai.credentials import check_sts_endpoint
from paiflow_operator.pai.regions import PAI_REGIONS, REGION_RE


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAIFLOW_", frozen=True, extra="ignore")

    default_region: str = Field(default="cn-hangzhou", pattern=REGION_PATTERN)
    # PAI Flow regions beyond the twelve documented ones (pai/regions.py): only these ever receive the
    # operator's credentials, so a resource's regionId cannot send them to another host.
    extra_regions: Annotated[list[str], NoDecode, BeforeValidator(_csv)] = Field(default_factory=list)
    # Only the operator's administrator may redirect PAI calls (VPC endpoint, emulator): the STS token
    # travels in a header, so a user-controlled endpoint would leak it.
    endpoint_override: str | None = None
    # Single-team installs only: every watched namespace may have the operator do anything in any workspace with
    # its own credentials, PaiAccessPolicies unenforced. Off by default: a shared operator must not be a way
    # into another team's PAI workspaces (README, Multi-tenancy).
    allow_all_namespaces: bool = Field(
        default=False, description="Single-team installs only: no PaiAccessPolicy needed (default off)."
    )
    # Where AssumeRole (PaiAccessPolicy identity type AssumeRole) is sent: Alibaba Cloud's STS only (a VPC or
    # regional STS host), or http on loopback for the emulator. The request carries the operator's own key id
    # and STS token, so no resource may choose it.
    sts_endpoint: str = "sts.aliyuncs.com"
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)

    default_poll_interval: Duration = timedelta(seconds=30)
    min_poll_interval: Duration = timedelta(seconds=5)
    max_poll_interval: Duration = timedelta(hours=1)
    # How long to wait before retrying what needs a human: run not found, credentials refused.
    slow_retry_interval: Duration = timedelta(minutes=5)
    backoff_base: Duration = timedelta(seconds=5)
    backoff_max: Duration = timedelta(minutes=5)
    # A retryable PAI error (5xx, throttling, timeout) shows in a resource's conditions once it has lasted this
    # long: a blip costs no write, an outage still shows. Three poll intervals, as the staleness alert.
    error_grace: Duration = timedelta(seconds=90)
    # Retryable failures in a row, in one region, that open its circuit: calls are then held and one probes.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_probe_interval: Duration = timedelta(seconds=5)
    circuit_probe_max: Duration = timedelta(seconds=15)
    # A status unchanged for this long is confirmed with one write of status.lastSyncTime. Coarse on purpose:
    # at 10,000 active runs, one hour is ~3 writes a second; freshness at finer grain is a metric
    # (paiflow_oldest_status_age_seconds), which costs no write.
    heartbeat_interval: Duration = timedelta(hours=1)
    # Batched polls only say the status; a status change always fetches the details at once, and this
    # refresh only catches a message that changed without one. It costs N/refresh GetPipelineRun calls.
    detail_refresh_interval: Duration = timedelta(hours=6)
    # Creation of many resources at once spreads their first polls over this window.
    initial_jitter: Duration = timedelta(seconds=5)

    qps: float = Field(default=10.0, gt=0, description="Global PAI call rate limit (token bucket).")
    burst: int = Field(default=20, ge=1)
    concurrency: int = Field(default=32, ge=1, description="PAI calls in flight at most.")
    # 16: the operator's writes then go as fast as a lean client's with 16 in flight (bench/ceiling.py).
    kube_concurrency: int = Field(
        default=16,
        ge=1,
        description="Kubernetes writes in flight at most (reads and Lease renewals have lanes of their own).",
    )
    # PAI documents no maximum; a batch it refuses as a bad request falls back to one call per run.
    batch_size: int = Field(default=200, ge=1, le=1000, description="Run ids per ListPipelineRunsStatus.")
    batch_status: bool = True
    # What a run holds inside (issue 19): node, log and output calls are priced. They take at most this share of
    # `qps` (a budget of their own, on top of the global limit), progress of active runs is refreshed at this
    # slower cadence, and failure details and outputs are read once when a run ends.
    inside: bool = Field(
        default=True, description="Read progress, failure details and outputs of runs that leave spec.inside unset."
    )
    inside_qps_share: float = Field(default=0.2, gt=0, le=0.5, description="Share of qps for node/log/output calls.")
    inside_burst: int = Field(default=2, ge=1)
    progress_interval: Duration = timedelta(minutes=2)
    # GetPipelineRunNode's Depth: levels of nested Dags read in one call (PAI's default, 2, is the root's children).
    inside_depth: int = Field(default=10, ge=2, le=32)
    # Runs due within this window are polled together so that their status queries batch.
    batch_window: Duration = timedelta(seconds=2)

    # A launch whose CreatePipelineRun outcome is unknown (timeout, crash) waits this long after its claim
    # before looking the run up again (longer than a create can be in flight: connect + read timeout), and then
    # looks for duplicates that create made at doubling intervals starting at this. Safety does not rest on it
    # (runs are created unstarted and only the recorded one is started); it saves second creates.
    launch_settle_time: Duration = timedelta(seconds=60)
    # How long after its last claim a launch keeps looking for (and deleting) unstarted duplicates that a create
    # of unknown outcome made and that PAI lists late. With the doubling, about log2(window / settle) lists.
    launch_orphan_window: Duration = timedelta(hours=1)
    # PaiWorkspace scans (workspace_scan.py). One ListPipelineRuns scan per workspace per interval answers
    # for all its runs; the batched status poll of those runs drops to the safety-net interval, which bounds
    # how stale a status gets should PAI not move GmtModifiedTime on a change.
    workspace_scan_interval: Duration = timedelta(seconds=30)
    workspace_safety_net_interval: Duration = timedelta(minutes=5)
    # Every so often a scan reads the whole import window again (imports what a shifting page hid).
    workspace_full_scan_interval: Duration = timedelta(minutes=10)
    # Re-read this much below the previous scan's newest GmtModifiedTime (clock skew, equal timestamps).
    workspace_scan_overlap: Duration = timedelta(seconds=30)
    workspace_page_size: int = Field(default=100, ge=1, le=1000, description="Rows per ListPipelineRuns page.")
    workspace_max_pages: int = Field(default=200, ge=1, description="Pages per scan at most.")
    workspace_create_qps: float = Field(default=50.0, gt=0, description="PaiPipelineRun creations per second.")
    workspace_create_burst: int = Field(default=50, ge=1)
    # Imported PaiPipelineRuns a namespace holds at most, all its PaiWorkspaces together, whatever their maxRuns
    # ask: a hard ceiling on what one tenant can make this operator track (an access policy may set a lower one).
    max_imported_runs_per_namespace: int = Field(default=20_000, ge=0)
    # lastScanTime alone is written at most this often (a change of anything else writes at once).
    workspace_status_heartbeat: Duration = timedelta(minutes=5)

    # PaiPipelineSchedules (schedules/controller.py). A schedule is re-read at least this often (ownership moves,
    # a missed wake-up), besides its next slot and every change of it or its runs.
    schedule_resync_interval: Duration = timedelta(seconds=30)
    # Test only: the schedules' clock runs `schedule_clock_rate` times as fast as the wall clock from
    # `schedule_clock_anchor` on (every replica and restart agrees on it), so tests see many slots in seconds.
    schedule_clock_rate: float = Field(default=1.0, gt=0, le=3600)
    schedule_clock_anchor: datetime | None = None

    # Completion notifications (runs/notify.py): a CloudEvent per ended run, POSTed to this sink (http(s) URL;
    # unset: none). Only the operator's administrator sets it, as for Tekton's default-cloud-events-sink.
    notify_sink: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2048)
    notify_timeout: float = Field(default=10.0, gt=0)
    notify_backoff_base: Duration = timedelta(seconds=2)
    notify_backoff_max: Duration = timedelta(minutes=5)
    notify_concurrency: int = Field(default=4, ge=1, le=64)
    # Pending deliveries held at most; past it new ones wait for the next restart's pass (counted in a metric).
    notify_queue_size: int = Field(default=10_000, ge=1)
    # A run found ended with no delivery recorded (after a restart, a new sink) is notified only if it ended this
    # recently: turning a sink on must not replay a year of history.
    notify_window: Duration = timedelta(hours=24)

    list_chunk_size: int = Field(
        default=500, ge=1, description="Objects per page of the initial lists (the runs' own watch and kopf's)."
    )
    watch_idle_timeout: Duration = Field(
        default=timedelta(milliseconds=500),
        description="How long kopf keeps an object's worker (and its last event) waiting for more events.",
    )
    gc_freeze: bool = Field(
        default=True,
        description="Freeze what survives each full garbage collection, so the next ones skip it (process_memory.py).",
    )
    gc_thaw_interval: Duration = Field(
        default=timedelta(minutes=10),
        description="How often frozen objects are thawed, so one full collection walks everything again.",
    )
    max_text_field_bytes: int = Field(default=64 * 1024, ge=1024, le=256 * 1024)
    secret_cache_ttl: Duration = timedelta(seconds=60)

    namespaces: Annotated[list[str], NoDecode, BeforeValidator(_csv)] = Field(
        default_factory=list, description="Namespaces to watch; empty means all."
    )
    # Static shards: an override of the Lease membership below (each replica configured by hand).
    shard_count: int = Field(default=1, ge=1)
    shard_index: int = Field(default=0, ge=0)
    # Lease membership (membership.py): replicas share the runs among themselves, with no per-replica setting.
    leases: bool = Field(default=True, description="Share runs among replicas through Leases (off: own all).")
    lease_duration: Duration = timedelta(seconds=15)
    lease_renew_interval: Duration = timedelta(seconds=3)
    lease_group: str = Field(default="paiflow-operator", pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
    # The Deployment passes both through the downward API; outside a pod: this default and hostname-pid.
    operator_namespace: str = Field(
        default="paiflow-system", validation_alias=AliasChoices("PAIFLOW_OPERATOR_NAMESPACE", "POD_NAMESPACE")
    )
    pod_name: str | None = Field(default=None, validation_alias=AliasChoices("PAIFLOW_POD_NAME", "POD_NAME"))

    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    health_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)

    @field_validator("sts_endpoint")
    @classmethod
    def _sts_endpoint(cls, value: str) -> str:
        return check_sts_endpoint(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.min_poll_interval <= self.default_poll_interval <= self.max_poll_interval:
            raise ValueError("default_poll_interval must lie between min_poll_interval and max_poll_interval")
        for name in (
            "min_poll_interval",
            "backoff_base",
            "slow_retry_interval",
            "heartbeat_interval",
            "progress_interval",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.backoff_base > self.backoff_max:
            raise ValueError("backoff_base must not exceed backoff_max")
        bad = [r for r in self.extra_regions if not REGION_RE.fullmatch(r)]
        if bad:
            raise ValueError(f"extra_regions: not region ids: {', '.join(bad)}")
        if self.default_region not in self.allowed_regions:
            raise ValueError(f"default_region {self.default_region} is not a known PAI region; add it to extra_regions")
        if self.shard_index >= self.shard_count:
            raise ValueError("shard_index must be smaller than shard_count")
        if self.lease_duration < timedelta(seconds=1) or self.lease_duration % timedelta(seconds=1):
            raise ValueError("lease_duration must be a whole number of seconds (a Lease holds seconds)")
        if self.lease_renew_interval <= timedelta(0) or 3 * self.lease_renew_interval > self.lease_duration:
            raise ValueError("lease_renew_interval must be positive and at most a third of lease_duration")
        return self

    @property
    def allowed_regions(self) -> frozenset[str]:
        return PAI_REGIONS | frozenset(self.extra_regions)

    def poll_interval_for(self, requested: str | None) -> timedelta:
        """The spec's interval clamped to the operator's bounds (the CRD enforces wider static ones)."""
        if requested is None:
            return self.default_poll_interval
        return min(max(parse_duration(requested), self.min_poll_interval), self.max_poll_interval)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
