"""The one Protocol of the PAI Flow calls the operator makes: PaiClient's signatures, written down once.

Everything above the client (pai_access, and through it every kind) types against this, and tests give it
fakes; a new call or a changed signature is an edit here and in client.py, nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .credentials import CredentialSource
from .models import (
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


class PaiApi(Protocol):
    async def get_pipeline_run(
        self,
        run_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        verbose: bool = False,
        manifest_type: str | None = None,
        token_id: str | None = None,
    ) -> PipelineRun: ...

    async def list_pipeline_runs_status(
        self, workspace_id: str, run_ids: Sequence[str], *, region: str, credentials: CredentialSource
    ) -> RunStatusList: ...

    async def list_pipeline_runs(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str | None = None,
        page_number: int = 1,
        page_size: int = 50,
        status: str | None = None,
        name: str | None = None,
        pipeline_run_id: str | None = None,
        pipeline_ids: str | None = None,
        source_type: str | None = None,
        source_id: str | None = None,
        user_id: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
    ) -> RunList: ...

    async def create_pipeline_run(
        self,
        *,
        region: str,
        credentials: CredentialSource,
        workspace_id: str,
        name: str,
        pipeline_id: str | None = None,
        pipeline_manifest: str | None = None,
        arguments: str | None = None,
        options: str | None = None,
        accessibility: str | None = None,
        no_confirm_required: bool = True,
        source_type: str | None = None,
        source_id: str | None = None,
    ) -> CreatedRun: ...

    async def start_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged: ...

    async def delete_pipeline_run(self, run_id: str, *, region: str, credentials: CredentialSource) -> Acknowledged: ...

    async def terminate_pipeline_run(
        self, run_id: str, *, region: str, credentials: CredentialSource
    ) -> Acknowledged: ...

    async def get_pipeline_run_node(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 2,
        token_id: str | None = None,
    ) -> PipelineRunNode: ...

    async def list_pipeline_run_node_status(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 2,
        token_id: str | None = None,
    ) -> NodeStatusList: ...

    async def list_pipeline_run_node_logs(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        offset: int = 0,
        page_size: int = 100,
        from_time: int | None = None,
        to_time: int | None = None,
        keyword: str | None = None,
        reverse: bool | None = None,
        token_id: str | None = None,
    ) -> NodeLogs: ...

    async def list_pipeline_run_node_outputs(
        self,
        run_id: str,
        node_id: str,
        *,
        region: str,
        credentials: CredentialSource,
        depth: int = 99999,
        page_number: int = 1,
        page_size: int = 50,
        output_type: str | None = None,
        name: str | None = None,
        sort_by: str | None = None,
        order: str | None = None,
        token_id: str | None = None,
    ) -> NodeOutputList: ...

    async def aclose(self) -> None: ...
