"""WriteGate: writes that fail because of the API server wait together and go again together."""

from __future__ import annotations

import asyncio

import pytest

from paiflow_operator.guards.write_gate import Trouble, WriteGate, classify, is_too_large, is_transient
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


# ---- one object's refusals are its own -------------------------------------------------------------------------

ADMISSION_403 = KubeError(
    403,
    "Forbidden",
    "paipipelineruns.paiflow-operator.dev \"r1\" is forbidden: ValidatingAdmissionPolicy 'no-status' with binding "
    "'no-status' denied request: status writes are frozen",
)
WEBHOOK_403 = KubeError(403, "Forbidden", 'admission webhook "policy.example.com" denied the request: no')
RBAC_403 = KubeError(
    403,
    "Forbidden",
    'paipipelineruns.paiflow-operator.dev "r1" is forbidden: User "system:serviceaccount:x:y" cannot patch resource',
)
TOO_LARGE = KubeError(
    500, "InternalError", "rpc error: code = ResourceExhausted desc = etcdserver: request is too large"
)


class Objects:
    """An API server that refuses some objects' writes with their own error and takes the rest."""

    def __init__(self) -> None:
        self.refuse: dict[str, Exception] = {}
        self.down: Exception | None = None
        self.stored: list[str] = []
        self.attempts: dict[str, int] = {}

    async def write(self, name: str) -> str:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        await asyncio.sleep(0)
        if self.down is not None:
            raise self.down
        if name in self.refuse:
            raise self.refuse[name]
        self.stored.append(name)
        return name


@pytest.mark.parametrize(
    "error",
    [
        ADMISSION_403,
        WEBHOOK_403,
        TOO_LARGE,
        KubeError(413, "RequestEntityTooLarge", "limit is 3145728"),
        KubeError(422, "Invalid", "x"),
    ],
)
async def test_an_objects_own_refusal_is_raised_at_once_and_others_write_without_waiting(error: KubeError) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    server = Objects()
    server.refuse["bad"] = error
    gate = WriteGate(sleep=sleep)
    for _ in range(5):
        with pytest.raises(KubeError):
            await gate.write(lambda: server.write("bad"), "bad")
        # Between the bad object's refusals, other objects' writes go straight through.
        assert await gate.write(lambda: server.write("good"), "good") == "good"
    assert gate.is_open and gate.closed_count == 0 and slept == []
    assert server.attempts["bad"] == 5, "each refusal is one attempt: the retry is the writer's own"


def test_what_is_the_objects_trouble_and_what_the_servers() -> None:
    assert classify(ADMISSION_403) is Trouble.OBJECT and classify(WEBHOOK_403) is Trouble.OBJECT
    assert classify(RBAC_403) is Trouble.SERVER
    assert classify(TOO_LARGE) is Trouble.OBJECT and is_too_large(TOO_LARGE)
    assert classify(KubeError(500, "InternalError", "etcdserver: leader changed")) is Trouble.SERVER
    assert classify(KubeError(0, "", "unreachable")) is Trouble.UNREACHABLE
    assert classify(TimeoutError()) is Trouble.UNREACHABLE
    assert not is_too_large(KubeError(422, "Invalid", "x"))


async def test_a_server_error_of_one_object_alone_does_not_close_the_gate() -> None:
    server = Objects()
    server.refuse["bad"] = KubeError(500, "InternalError", 'failed calling webhook "only-for-bad"')
    gate = WriteGate()
    for _ in range(3):
        with pytest.raises(KubeError):
            await gate.write(lambda: server.write("bad"), "bad")
    assert gate.is_open and gate.closed_count == 0
    assert await gate.write(lambda: server.write("good"), "good") == "good"


async def test_server_errors_of_two_objects_close_the_gate_and_the_writes_land_after() -> None:
    server = Objects()
    server.down = KubeError(503, "ServiceUnavailable", "")
    probes = 0

    async def sleep(seconds: float) -> None:
        nonlocal probes
        probes += 1
        if probes == 3:
            server.down = None
        await asyncio.sleep(0)

    gate = WriteGate(sleep=sleep)
    first = asyncio.create_task(gate.write(lambda: server.write("a"), "a"))
    second = asyncio.create_task(gate.write(lambda: server.write("b"), "b"))
    results = await asyncio.gather(first, second, return_exceptions=True)
    # "a" failed alone first (raised: its own retry), "b" made two objects: the gate closed, and "b" landed after.
    assert gate.closed_count == 1 and gate.is_open
    assert "b" in results and "b" in server.stored


async def test_probers_take_turns_so_one_failing_object_cannot_keep_the_gate_closed() -> None:
    server = Objects()
    server.down = ConnectionRefusedError()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            # The API server is back, but "bad" now fails on its own with a server-kind error (a webhook that
            # times out for this object only). Before, "bad" was the only prober and every write waited for ever.
            server.down = None
            server.refuse["bad"] = KubeError(504, "Timeout", "webhook timed out for bad")
        await asyncio.sleep(0)

    gate = WriteGate(sleep=sleep)
    writers = [asyncio.create_task(gate.write(lambda n=n: server.write(n), n)) for n in ["bad", *map(str, range(20))]]
    results = await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 5)
    assert isinstance(results[0], KubeError), "the failing object's write comes back to its own retry"
    assert sorted(server.stored) == sorted(map(str, range(20)))
    assert gate.is_open and len(slept) <= 4, slept


async def test_a_write_that_met_an_outage_once_is_not_held_a_second_time() -> None:
    server = Objects()
    server.down = ConnectionResetError()

    async def sleep(seconds: float) -> None:
        server.down = None
        server.refuse["flaky"] = ConnectionResetError()  # back, but this object's connection resets again
        server.stored.clear()
        await asyncio.sleep(0)

    gate = WriteGate(sleep=sleep)
    other = asyncio.create_task(gate.write(lambda: server.write("other"), "other"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(gate.write(lambda: server.write("flaky"), "flaky"), 5)
    assert await other == "other"
