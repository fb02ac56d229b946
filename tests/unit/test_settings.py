"""Operator settings from the environment (PAIFLOW_*): parsing, rejected combinations, interval clamping."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from pydantic import ValidationError

from paiflow_operator.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Start every test from the defaults, whatever the developer's shell exports.
    for name in list(os.environ):
        if name.startswith("PAIFLOW_"):
            monkeypatch.delenv(name)


def from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"PAIFLOW_{name.upper()}", value)
    return Settings()


def test_defaults_are_consistent() -> None:
    s = Settings()
    assert s.min_poll_interval <= s.default_poll_interval <= s.max_poll_interval
    assert (s.default_poll_interval, s.namespaces, s.shard_count, s.shard_index) == (timedelta(seconds=30), [], 1, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), ("team-a", ["team-a"]), ("", [])],
)
def test_namespaces_is_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    assert from_env(monkeypatch, namespaces=value).namespaces == expected


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("default_poll_interval", "2m", timedelta(minutes=2)),
        ("default_poll_interval", "45s", timedelta(seconds=45)),
        ("backoff_max", "1m30s", timedelta(seconds=90)),
        ("heartbeat_interval", "1.5h", timedelta(minutes=90)),
        ("batch_window", "500ms", timedelta(milliseconds=500)),
        ("initial_jitter", "0s", timedelta(0)),
    ],
)
def test_durations_parse_go_style(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: timedelta) -> None:
    assert getattr(from_env(monkeypatch, **{name: value}), name) == expected


def test_scalars_and_case_insensitive_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    s = from_env(monkeypatch, qps="2.5", burst="4", batch_status="false", log_level="debug", default_region="us-west-1")
    assert (s.qps, s.burst, s.batch_status, s.log_level, s.default_region) == (2.5, 4, False, "DEBUG", "us-west-1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"default_poll_interval": "2h"}, "default_poll_interval must lie between"),
        ({"default_poll_interval": "1s"}, "default_poll_interval must lie between"),
        ({"min_poll_interval": "1m", "default_poll_interval": "30s"}, "default_poll_interval must lie between"),
        ({"backoff_base": "10m", "backoff_max": "5m"}, "backoff_base must not exceed backoff_max"),
        ({"shard_count": "2", "shard_index": "2"}, "shard_index must be smaller than shard_count"),
        ({"shard_count": "0"}, "shard_count"),
        ({"default_region": "Hangzhou"}, "default_region"),
        ({"default_region": "cn_hangzhou"}, "default_region"),
        ({"default_poll_interval": "30"}, "not a duration: '30'"),
        ({"default_poll_interval": "1d"}, "not a duration"),
        ({"batch_size": "5000"}, "batch_size"),
        ({"qps": "0"}, "qps"),
        ({"log_format": "xml"}, "log_format"),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "",
)
def test_invalid_settings_are_rejected_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        from_env(monkeypatch, **env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, timedelta(seconds=30)),  # the operator's default
        ("10s", timedelta(seconds=10)),
        ("5s", timedelta(seconds=5)),
        ("1s", timedelta(seconds=5)),  # below the minimum: clamped up
        ("500ms", timedelta(seconds=5)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("3h", timedelta(hours=1)),  # above the maximum: clamped down
    ],
)
def test_poll_interval_for_clamps_to_the_operator_bounds(requested: str | None, expected: timedelta) -> None:
    assert Settings().poll_interval_for(requested) == expected


def test_poll_interval_for_uses_the_operators_own_tighter_bounds() -> None:
    s = Settings(min_poll_interval="20s", default_poll_interval="1m", max_poll_interval="5m")
    assert [s.poll_interval_for(v) for v in (None, "5s", "30s", "1h")] == [
        timedelta(minutes=1),
        timedelta(seconds=20),
        timedelta(seconds=30),
        timedelta(minutes=5),
    ]


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().qps = 1  # type: ignore[misc]
