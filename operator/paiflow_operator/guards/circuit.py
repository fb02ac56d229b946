"""A circuit breaker per PAI region and identity: an outage that affects every run costs a probe, not a call
per run, and one tenant's throttled keys hold that tenant's calls only.

After `threshold` retryable failures in a row (5xx, throttling, timeouts, garbled answers) with no answer in
between, the circuit opens: runs that fall due are held instead of called, and one of them probes at a capped
backoff. The first answer of any kind (an error about one run is an answer: PAI is up) closes it, and the held
runs go at once. A circuit is a region and an identity (the operator's own credentials, a role, a Secret's
keys): PAI throttles per account and key, so a tenant whose keys are throttled, revoked into 5xx or out of
quota must not hold the polls of every other tenant of that region. Pure bookkeeping on a clock, no I/O: the
scheduler asks and reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from paiflow_operator.pai.errors import PaiError, ServerError

log = logging.getLogger(__name__)

OPERATOR_IDENTITY = "operator"  # the operator's own credentials (its RRSA role or its environment's keys)


class Circuit(NamedTuple):
    """What one circuit covers: calls to one region signed by one identity (an opaque key: "operator", a role
    ARN, a Secret reference; never a secret value)."""

    region: str
    identity: str = OPERATOR_IDENTITY

    def __str__(self) -> str:
        if self.identity == OPERATOR_IDENTITY:
            return self.region
        return f"{self.region} (identity {self.identity})"


def _circuit(key: Circuit | str) -> Circuit:
    # A region alone is the operator's own identity there.
    return key if isinstance(key, Circuit) else Circuit(key)


@dataclass
class _Region:
    failures: int = 0
    # Who failed in the current streak: one run failing on its own must not look like an outage.
    failing: set[object] = field(default_factory=set)
    opened_at: float | None = None
    outage: int = 0  # counts outages, so that what was done "once per outage" can tell them apart
    probe_delay: float = 0.0
    next_probe: float = 0.0
    prober: object | None = None
    last_error: str = ""


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        probe_base: float = 5.0,
        probe_max: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.probe_base = probe_base
        self.probe_max = probe_max
        self.clock = clock
        self._regions: dict[Circuit, _Region] = {}

    def _get(self, key: Circuit | str) -> _Region:
        return self._regions.setdefault(_circuit(key), _Region())

    def is_open(self, key: Circuit | str) -> bool:
        state = self._regions.get(_circuit(key))
        return state is not None and state.opened_at is not None

    def open_circuits(self) -> list[Circuit]:
        return [c for c, s in self._regions.items() if s.opened_at is not None]

    def open_regions(self) -> list[str]:
        """Regions with an open circuit for any identity."""
        return sorted({c.region for c in self.open_circuits()})

    def open_for(self, key: Circuit | str) -> float:
        state = self._regions.get(_circuit(key))
        return 0.0 if state is None or state.opened_at is None else self.clock() - state.opened_at

    def outage(self, key: Circuit | str) -> int:
        return self._get(key).outage

    def answered(self, key: Circuit | str) -> bool:
        """PAI answered (any answer but a retryable error). Returns True when this closes the circuit."""
        region = _circuit(key)
        state = self._get(region)
        state.failures = 0
        state.failing.clear()
        if state.opened_at is None:
            return False
        log.info("PAI Flow in %s answers again after %.0f s", region, self.clock() - state.opened_at)
        state.opened_at = None
        state.prober = None
        return True

    def failed(self, key: Circuit | str, error: PaiError, who: object = None) -> bool:
        """A retryable failure of a call for `who` (a run or a batch). Returns True when this opens the circuit:
        `threshold` failures in a row, of at least two different callers."""
        region = _circuit(key)
        state = self._get(region)
        state.failures += 1
        if len(state.failing) < 2:
            state.failing.add(who)
        state.last_error = error.kind.value
        now = self.clock()
        if state.opened_at is not None:
            state.probe_delay = min(state.probe_delay * 2, self.probe_max)
            state.next_probe = now + state.probe_delay
            state.prober = None
            return False
        if state.failures < self.threshold or len(state.failing) < 2:
            return False
        state.opened_at = now
        state.outage += 1
        state.probe_delay = self.probe_base
        state.next_probe = now + state.probe_delay
        state.prober = None
        log.warning(
            "PAI Flow in %s: %d calls in a row failed (last: %s); holding calls, probing every %.0f-%.0f s",
            region,
            state.failures,
            error.kind.value,
            self.probe_base,
            self.probe_max,
        )
        return True

    def claim_probe(self, key: Circuit | str, who: object) -> float | None:
        """Makes `who` the circuit's prober if there is none yet; returns when it should call."""
        state = self._get(key)
        if state.opened_at is None or state.prober is not None:
            return None
        state.prober = who
        return state.next_probe

    def is_prober(self, key: Circuit | str, who: object) -> bool:
        state = self._regions.get(_circuit(key))
        return state is not None and state.prober == who

    def error(self, key: Circuit | str) -> PaiError:
        """What a held run shows once the outage outlasts the grace. The same text for the whole outage, so that
        showing it costs one write per run. It names the identity (only ever shown to runs that use it)."""
        circuit = _circuit(key)
        state = self._get(circuit)
        whom = "" if circuit.identity == OPERATOR_IDENTITY else f" for {circuit.identity}"
        return ServerError(
            f"PAI Flow in {circuit.region} is not answering{whom} ({state.last_error}); calls are held and probed, "
            "the last good status is kept",
            code="PaiUnavailable",
        )
