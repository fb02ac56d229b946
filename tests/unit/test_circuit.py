"""The per-region circuit breaker, on a fake clock."""

from __future__ import annotations

from paiflow_operator.guards.circuit import CircuitBreaker
from paiflow_operator.pai.errors import ServerError, ThrottledError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_threshold_failures_of_two_callers_or_more() -> None:
    breaker = CircuitBreaker(threshold=3, clock=Clock())
    for _ in range(10):
        assert not breaker.failed("cn-hangzhou", ServerError("x"), who="only-run")
    assert not breaker.is_open("cn-hangzhou"), "one run failing alone is not an outage"
    assert breaker.failed("cn-hangzhou", ThrottledError("x"), who="another-run")
    assert breaker.is_open("cn-hangzhou") and not breaker.is_open("cn-beijing")
    assert breaker.outage("cn-hangzhou") == 1


def test_any_answer_resets_the_streak_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, probe_base=5, probe_max=15, clock=clock)
    breaker.failed("r", ServerError("x"), who="a")
    assert not breaker.answered("r")
    breaker.failed("r", ServerError("x"), who="b")
    assert not breaker.is_open("r")
    breaker.failed("r", ServerError("x"), who="a")
    assert breaker.is_open("r")
    clock.t = 42
    assert breaker.open_for("r") == 42
    assert breaker.answered("r") and not breaker.is_open("r")


def test_one_prober_at_a_time_with_capped_backoff() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, probe_base=5, probe_max=15, clock=clock)
    breaker.failed("r", ServerError("x"), who="a")
    breaker.failed("r", ServerError("x"), who="b")
    assert breaker.claim_probe("r", "a") == 5
    assert breaker.claim_probe("r", "b") is None and breaker.is_prober("r", "a")
    delays = []
    for _ in range(4):
        breaker.failed("r", ServerError("x"), who="a")
        at = breaker.claim_probe("r", "a")
        assert at is not None
        delays.append(at - clock.t)
    assert delays == [10, 15, 15, 15]
    # The text a held run shows is the same for the whole outage: showing it costs one write per run.
    assert str(breaker.error("r")) == str(breaker.error("r")) and "PaiUnavailable" in str(breaker.error("r"))
