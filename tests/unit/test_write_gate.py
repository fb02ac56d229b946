"""WriteGate: writes that fail because of the API server wait together and go again together."""

from __future__ import annotations

import asyncio

import pytest

from paiflow_operator.guards.write_gate import WriteGate, is_transient
from paiflow_operator.kube import KubeError


class ApiServer:
    def __init__(self) -> None:
        self.up = True
        self.attempts = 0
        self.stored: list[int] = []

    async def write(self, value: int) -> int:
        self.attempts += 1
        await asyncio.sleep(0)
        if not self.up:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        self.stored.append(value)
        return value


async def test_writes_held_through_an_outage_all_land_right_after_the_first_probe_succeeds() -> None:
    server = ApiServer()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if sum(slept) >= 20:
            server.up = True  # back after ~20 s of probing
        await asyncio.sleep(0)

    gate = WriteGate(base=0.5, cap=4.0, sleep=fake_sleep)
    server.up = False
    results = await asyncio.gather(*(gate.write(lambda i=i: server.write(i)) for i in range(50)))
    assert sorted(results) == list(range(50)) and sorted(server.stored) == list(range(50))
    # One prober backs off (0.5, 1, 2, 4, 4, ...), capped; the others did not hammer the server.
    assert max(slept) == 4.0 and slept[:4] == [0.5, 1.0, 2.0, 4.0]
    assert server.attempts <= 50 + 50 + len(slept)
    assert gate.is_open and gate.closed_count == 1


@pytest.mark.parametrize("status", [404, 409, 422])
async def test_an_error_about_the_object_is_raised_at_once(status: int) -> None:
    gate = WriteGate()

    async def refuse() -> None:
        raise KubeError(status, "X", "no")

    with pytest.raises(KubeError):
        await gate.write(refuse)
    assert gate.is_open


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (KubeError(503, "ServiceUnavailable", ""), True),
        (KubeError(403, "Forbidden", "RBAC warming up"), True),
        (KubeError(0, "", "connection"), True),
        (ConnectionResetError(), True),
        (KubeError(422, "Invalid", ""), False),
        (KubeError(404, "NotFound", ""), False),
    ],
)
def test_what_counts_as_the_api_servers_trouble(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient
