"""The per-region circuit breaker, on a fake clock."""

from __future__ import annotations

from paiflow_operator.guards.circuit import Circuit, CircuitBreaker
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


def test_a_circuit_is_a_region_and_an_identity() -> None:
    breaker = CircuitBreaker(threshold=2, clock=Clock())
    team_b = Circuit("cn-hangzhou", "secret:team-b/pai-keys")
    for who in ("b1", "b2", "b3"):
        breaker.failed(team_b, ThrottledError("x"), who=who)
    assert breaker.is_open(team_b)
    # The operator's own identity in the same region, and another tenant's role, stay closed.
    assert not breaker.is_open("cn-hangzhou") and not breaker.is_open(Circuit("cn-hangzhou"))
    assert not breaker.is_open(Circuit("cn-hangzhou", "acs:ram::1:role/team-a"))
    assert breaker.open_circuits() == [team_b] and breaker.open_regions() == ["cn-hangzhou"]
    assert breaker.claim_probe(Circuit("cn-hangzhou"), "a1") is None, "nothing to probe where nothing is open"
    # Only the runs using these keys see the outage text, and it names whose calls are held.
    assert "secret:team-b/pai-keys" in str(breaker.error(team_b)) and "identity" not in str(breaker.error("r"))
    assert breaker.answered(team_b) and not breaker.is_open(team_b)


def test_failures_of_different_identities_do_not_add_up() -> None:
    breaker = CircuitBreaker(threshold=3, clock=Clock())
    for i in range(10):
        # Each identity fails twice, with two callers each: below the threshold of any one circuit.
        circuit = Circuit("cn-hangzhou", f"role-{i}")
        breaker.failed(circuit, ServerError("x"), who="x")
        breaker.failed(circuit, ServerError("x"), who="y")
    assert breaker.open_circuits() == []
