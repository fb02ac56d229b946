"""Walking every page of a ListPipelineRuns query, one call per page, bounded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from .models import PipelineRun, RunList

# The order every walk over all pages asks for: PAI pages by offset, and GmtCreateTime never changes, so a run
# created during the walk lands after the rows already read instead of shifting them.
ALL_PAGES_ORDER: Final = {"sort_by": "GmtCreateTime", "order": "ASC"}


async def collect_pages(
    page: Callable[[int, int], Awaitable[RunList]], *, page_size: int = 50, max_pages: int = 20
) -> RunList:
    """Every row of a ListPipelineRuns walk: ``page(number, size)`` is called for pages 1, 2, ... (each its own
    call, so that a caller can pass each through its rate limit), at most ``max_pages`` of them; ask each page
    in ALL_PAGES_ORDER. ``total_count`` is PAI's: fewer rows than that means the bound stopped the walk."""
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be at least 1")
    rows: dict[str, PipelineRun] = {}
    total = 0
    request_id: str | None = None
    for number in range(1, max_pages + 1):
        answer = await page(number, page_size)
        total, request_id = answer.total_count, answer.request_id
        for row in answer.pipeline_runs:
            rows.setdefault(row.pipeline_run_id, row)
        if len(answer.pipeline_runs) < page_size or len(rows) >= total:
            break
    return RunList.model_validate(
        {"RequestId": request_id, "TotalCount": max(total, len(rows)), "PipelineRuns": list(rows.values())}
    )
