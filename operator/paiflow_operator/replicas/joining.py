"""When a joining replica takes its share: once kopf's watch has fed it every run that existed at start.

Until then it holds a Lease but owns nothing, so the others keep polling; joining before the initial list is
over would leave the runs not yet listed unpolled by anyone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from paiflow_operator.replicas.membership import LeaseMembership

log = logging.getLogger(__name__)


class RunCounter(Protocol):
    async def count_runs(self, namespaces: list[str]) -> int | None: ...


@dataclass
class Listing:
    """A joining replica's progress through kopf's initial list. Shared by reference: kopf gives each
    resource's handlers a shallow copy of the memo, so attributes set there would not be seen elsewhere."""

    expected: int | None = None  # runs that existed when this replica started (None: could not be counted)
    fed: set[str | None] = field(default_factory=set)


async def join_when_listed(
    membership: LeaseMembership, listing: Listing, kube: RunCounter, namespaces: list[str], bound: float = 600
) -> None:
    """Joins once the watch has fed every run that existed at start (counted with one `limit=1` list per
    namespace scope: the API server's remainingItemCount), or after `bound` seconds whatever happens.

    Not a kopf index: an index makes kopf hold every handler of every object until the whole initial list is
    over, which at 10,000 objects outlasted the list's continue token and stopped the operator.
    """
    try:
        listing.expected = await kube.count_runs(namespaces)
    except Exception as exc:
        log.warning("could not count PaiPipelineRuns before joining (%s): joining after %.0f s", exc, bound)
    waited = 0.0
    while membership.joining and waited < bound:
        if listing.expected is not None and len(listing.fed) >= listing.expected:
            break
        await asyncio.sleep(0.5)
        waited += 0.5
    membership.ready()
