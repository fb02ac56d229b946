"""Offset paging through a workspace's ListPipelineRuns rows, newest modification first (pure but for the fetch).

PAI pages by offset, so rows can shift while we page: a run modified mid-scan jumps to page 1, which was
already read. A scan of more than one page therefore ends by reading page 1 again, and the next scan's
cut-off is taken from the first page of this one. New rows pushing others down only cause duplicates (the
newest modification of a run wins).

Each page's rows can be handed on as the page arrives (``on_page``): a first sync of thousands of runs starts its
status writes after one page per workspace rather than after every page of every workspace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from paiflow_operator.pai.models import PipelineRun, RunList


@dataclass
class ScanPages:
    rows: dict[str, PipelineRun] = field(default_factory=dict)
    pages: int = 0
    # The newest GmtModifiedTime on the first page read: the next scan's cut-off (minus the overlap).
    first_page_newest: datetime | None = None


def _modified(row: PipelineRun) -> datetime | None:
    return row.gmt_modified_time or row.gmt_create_time


def _keep(rows: dict[str, PipelineRun], row: PipelineRun, request_id: str | None) -> PipelineRun | None:
    """Keeps the row if it is the newest of its run so far; returns it if it is news (a run not seen in this
    scan, or modified since), not a row pushed onto the next page by another's move."""
    seen = rows.get(row.pipeline_run_id)
    new, old = _modified(row), _modified(seen) if seen is not None else None
    if seen is None or (new is not None and (old is None or new >= old)):
        # A row becomes an observation: it carries the RequestId of the page it came on.
        kept = rows[row.pipeline_run_id] = row.model_copy(update={"request_id": request_id})
        return kept if seen is None or old is None or (new is not None and new > old) else None
    return None


def _take_page(out: ScanPages, answer: RunList, on_page: Callable[[dict[str, PipelineRun]], None] | None) -> None:
    fresh = {}
    for row in answer.pipeline_runs:
        kept = _keep(out.rows, row, answer.request_id)
        if kept is not None:
            fresh[kept.pipeline_run_id] = kept
    if on_page is not None and fresh:
        on_page(fresh)


async def scan_pages(
    fetch: Callable[[int], Awaitable[RunList]],
    cutoff: datetime | None,
    page_size: int,
    max_pages: int,
    on_page: Callable[[dict[str, PipelineRun]], None] | None = None,
) -> ScanPages:
    """Pages through rows sorted by GmtModifiedTime DESC until a row older than ``cutoff`` (None: to the end).
    ``on_page`` gets each page's rows that are the newest of their run so far, as the page arrives."""
    out = ScanPages()
    page = 1
    while True:
        answer = await fetch(page)
        out.pages += 1
        batch = answer.pipeline_runs
        _take_page(out, answer, on_page)
        if page == 1:
            stamps = [m for m in (_modified(r) for r in batch) if m is not None]
            out.first_page_newest = max(stamps) if stamps else None
        last = _modified(batch[-1]) if batch else None
        done = (
            len(batch) < page_size
            or page * page_size >= answer.total_count
            or (cutoff is not None and last is not None and last < cutoff)
            or page >= max_pages
        )
        if done:
            break
        page += 1
    if out.pages > 1:
        # Whatever changed while we paged sits at the top now: one more look at page 1.
        answer = await fetch(1)
        out.pages += 1
        _take_page(out, answer, on_page)
    return out
