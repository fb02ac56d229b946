"""The naive baseline: what most kopf operators for "mirror an external job's status" look like.

One `@kopf.timer(interval=30)` per resource; every tick calls GetPipelineRun and patches status, changed
or not. It shares the real operator's PAI client (signing, errors) so that the difference measured is the
scheduling and write policy, not the HTTP stack. No rate limit, no batching, no "finished" shortcut.

    python -m bench.naive_operator   # env: KUBECONFIG, PAIFLOW_ENDPOINT_OVERRIDE, ALIBABA_CLOUD_ACCESS_KEY_*
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import kopf

from paiflow_operator.api import runs as runs_api
from paiflow_operator.conditions import timestamp
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai.errors import PaiError

INTERVAL = float(os.environ.get("NAIVE_INTERVAL", "30"))
REGION = os.environ.get("PAIFLOW_DEFAULT_REGION", "cn-hangzhou")


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # The same kopf settings as the real operator, so kopf itself is configured alike in both runs.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    memo.pai = PaiClient(endpoint_override=os.environ.get("PAIFLOW_ENDPOINT_OVERRIDE"), max_connections=32)
    memo.credentials = StaticCredentialSource(
        os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"], os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    )


@kopf.timer(runs_api.GROUP, runs_api.VERSION, runs_api.PLURAL, interval=INTERVAL)
async def poll(spec: kopf.Spec, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    try:
        run = await memo.pai.get_pipeline_run(
            spec["pipelineRunId"], region=spec.get("regionId") or REGION, credentials=memo.credentials
        )
    except PaiError as exc:
        patch.status["message"] = f"PAI error: {exc}"
        return
    # Everything PAI said, every tick: the "simple" way, which rewrites the object even when nothing changed.
    patch.status.update(
        {
            "runStatus": run.raw_status or run.status.value,
            "message": run.message or None,
            "duration": run.duration,
            "startedAt": timestamp(run.started_at),
            "finishedAt": timestamp(run.finished_at),
            "name": run.name,
            "workspaceId": run.workspace_id,
            "requestId": run.request_id,
            "lastSyncTime": timestamp(datetime.now(UTC)),
        }
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.pai.aclose()


def main() -> int:
    # kopf logs a line per timer tick at INFO; WARNING keeps the baseline from being slowed by its own logs.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    port = os.environ.get("PAIFLOW_HEALTH_PORT", "8080")
    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=f"http://0.0.0.0:{port}/healthz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
