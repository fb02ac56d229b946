"""An open circuit as bookkeeping: which runs an outage holds, which show it, which namespaces were told.

A circuit is a region and the identity that signs the calls (guards/circuit.py). While PAI in a region does not
answer (or not to these keys), its runs leave the heap (held here; one of them probes) instead of
each retrying on its own. Once the outage outlasts the error grace, every held run shows it once; one Event
per namespace and outage tells the story. sync.py does the calls and the writes.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from paiflow_operator import metrics
from paiflow_operator.conditions import Event
from paiflow_operator.guards.circuit import Circuit, CircuitBreaker
from paiflow_operator.pai.errors import PaiError
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.reconcile import Observation
from paiflow_operator.runs.tracked import Key, Tracked

log = logging.getLogger(__name__)


def _ready_message(status: Mapping[str, Any]) -> str | None:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return None if ready is None else ready.get("message")


def _ready_true(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


class Outage:
    def __init__(
        self,
        breaker: CircuitBreaker,
        runs: Mapping[Key, Tracked],
        due: DueQueue,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.breaker = breaker
        self._runs = runs
        self._due = due
        self._clock = clock
        self._rng = rng
        # Runs held while their circuit is open, by circuit: no calls, no heap entries.
        self._held: dict[Circuit, dict[Key, Tracked]] = defaultdict(dict)
        # Namespaces told about the current outage of a circuit by an Event: one Event per namespace per outage.
        self._told: set[tuple[Circuit, int, str, str]] = set()

    def is_held(self, tracked: Tracked, region: Circuit) -> bool:
        return tracked.key in self._held.get(region, ())

    def hold(self, tracked: Tracked, region: Circuit) -> None:
        """Keeps a run out of the heap while its region's circuit is open; the first one held becomes the probe."""
        tracked.busy = False
        probe_at = self.breaker.claim_probe(region, tracked.key)
        if probe_at is not None:
            self._held[region].pop(tracked.key, None)
            self._due.schedule(tracked, probe_at)
            return
        self._due.void(tracked)  # any heap entry of it is void now
        self._held[region][tracked.key] = tracked

    def release(self, region: Circuit) -> None:
        """The circuit closed: every held run goes now, spread over a moment (the rate limit paces the rest)."""
        # The gauge is per region: 1 while any identity's circuit there is open.
        metrics.PAI_CIRCUIT_OPEN.labels(region.region).set(int(region.region in self.breaker.open_regions()))
        held = self._held.pop(region, {})
        if held:
            log.info("resuming %d runs held while PAI Flow in %s did not answer", len(held), region)
        now = self._clock()
        for tracked in held.values():
            if self._runs.get(tracked.key) is tracked and not tracked.busy:
                self._due.schedule(tracked, now + self._rng.uniform(0, 1.0))

    def to_show(self, region: Circuit) -> tuple[list[Tracked], PaiError]:
        """The outage outlasted the grace: the held runs that must show it now (each once; they are busy then),
        and the error they show."""
        outage = self.breaker.outage(region)
        error = self.breaker.error(region)
        shown = error.describe(with_request_id=False)
        out = []
        for tracked in list(self._held.get(region, {}).values()):
            if tracked.busy or self._runs.get(tracked.key) is not tracked or _ready_message(tracked.status) == shown:
                continue
            tracked.outage_shown = outage
            tracked.busy = True
            self._held[region].pop(tracked.key, None)
            out.append(tracked)
        return out, error

    def as_outage(self, tracked: Tracked, region: Circuit, observation: Observation) -> Observation:
        """While its region's circuit is open, a failed call shows the outage, as the held runs do."""
        if isinstance(observation, PaiError) and observation.retryable and self.breaker.is_open(region):
            tracked.outage_shown = self.breaker.outage(region)
            return self.breaker.error(region)
        return observation

    def events_to_post(self, tracked: Tracked, region: Circuit, events: list[Event]) -> list[Event]:
        """While a region's circuit is open, and for the runs it held when it closes, one Event per namespace and
        outage tells the story; the others would be thousands of copies of it."""
        outage = self.breaker.outage(region)
        if not (tracked.outage_shown and tracked.outage_shown == outage and events):
            return events
        phase = "recovered" if _ready_true(tracked.status) else "down"
        if phase == "recovered":
            tracked.outage_shown = 0  # from now on its Events are its own again
        told = (region, outage, tracked.namespace, phase)
        keep = [] if told in self._told else events
        self._told.add(told)
        return keep
