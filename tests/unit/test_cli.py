"""The command line: --help and --version answer and exit 0; what cannot work stops at once with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paiflow_operator.__main__ import ConfigurationError, check_placeholders

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, home: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAIFLOW_", "ALIBABA_CLOUD_", "KUBE"))}
    # No kubeconfig anywhere: a HOME of our own, no KUBECONFIG, not in a pod.
    base.update(HOME=str(home), ALIBABA_CLOUD_ECS_METADATA_DISABLED="true")
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "paiflow_operator", *args],
        env=base,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_prints_usage_and_exits_zero(tmp_path: Path) -> None:
    result = run_cli("--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: paiflow-operator")
    assert "--version" in result.stdout and "PAIFLOW_" in result.stdout


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_cli("--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"paiflow-operator {version('paiflow-operator')}"


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--no-such-flag", home=tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_missing_kubeconfig_is_one_clear_error_and_a_non_zero_exit(tmp_path: Path) -> None:
    result = run_cli(home=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("paiflow-operator: no Kubernetes credentials")
    assert "~/.kube/config" in lines[0]


def test_kubeconfig_named_but_absent_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config"
    result = run_cli(home=tmp_path, env={"KUBECONFIG": str(missing)})
    assert result.returncode == 1
    assert str(missing) in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "placeholder"),
    [
        ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::<ACCOUNT_ID>:role/paiflow-operator-reader", "<ACCOUNT_ID>"),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "acs:ram::1234:oidc-provider/ack-rrsa-<CLUSTER_ID>", "<CLUSTER_ID>"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "<ACCESS_KEY_ID>", "<ACCESS_KEY_ID>"),
        ("PAIFLOW_ENDPOINT_OVERRIDE", "https://<VPC_ENDPOINT>", "<VPC_ENDPOINT>"),
    ],
)
def test_a_placeholder_stops_the_operator_naming_the_setting(
    tmp_path: Path, name: str, value: str, placeholder: str
) -> None:
    result = run_cli(home=tmp_path, env={name: value})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{name} still holds the placeholder {placeholder}" in result.stderr
    # Checked before the kubeconfig: the first thing to fix is the one reported.
    assert "Kubernetes" not in result.stderr


def test_a_placeholder_in_a_secret_setting_is_reported_without_its_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_placeholders({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cr3t-<ACCESS_KEY_SECRET>-tail"})
    message = str(caught.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET still holds a placeholder" in message
    assert "s3cr3t" not in message and "<ACCESS_KEY_SECRET>" not in message and "tail" not in message


def test_real_values_pass_the_placeholder_check() -> None:
    check_placeholders(
        {
            "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1234567890123456:role/paiflow-operator-reader",
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee",
            "PAIFLOW_NAMESPACES": "ml,etl",
            # Not a setting of ours: never looked at.
            "PS1": "<HOST>$ ",
        }
    )


def test_invalid_settings_are_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli(home=tmp_path, env={"PAIFLOW_QPS": "-1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "paiflow-operator: invalid settings: PAIFLOW_QPS: Input should be greater than 0"
    ]


def test_the_operator_runs_on_uvloop_where_it_is_installed_and_on_asyncio_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    import uvloop

    from paiflow_operator.__main__ import event_loop_factory

    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a platform without it: import fails
    assert event_loop_factory() is None
