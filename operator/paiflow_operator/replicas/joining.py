"""When a joining replica takes its share: once its watch of runs has listed every run there was at start.

Until then it holds a Lease but owns nothing, so the others keep polling; joining before the initial list is
over would leave the runs not yet listed unpolled by anyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from paiflow_operator.replicas.membership import LeaseMembership

log = logging.getLogger(__name__)


async def join_when_listed(
    membership: LeaseMembership, listed: Callable[[], bool], bound: float = 600, step: float = 0.5
) -> None:
    """Joins once `listed()` (the runs' watch has fed its first list, every page: watching.Watch.listed), or
    after `bound` seconds whatever happens (a list that keeps failing must not keep the replica out for ever)."""
    waited = 0.0
    while membership.joining and not listed():
        if waited >= bound:
            log.warning("the runs' first list is not over after %.0f s: joining anyway", bound)
            break
        await asyncio.sleep(step)
        waited += step
    membership.ready()
