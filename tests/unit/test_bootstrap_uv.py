"""`make` on a stock Debian 12 / Ubuntu 24.04: the system Python is externally managed (PEP 668) and refuses
`pip install`; uv is bootstrapped into a private venv instead, or taken from PATH when it is there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "hack" / "bootstrap-uv.sh"
UV_VERSION = next(
    line.split("==")[1].split()[0]
    for line in (REPO / "hack" / "uv-requirements.txt").read_text().splitlines()
    if line.startswith("uv==")
)


def externally_managed_python() -> Path | None:
    """The distribution's own python3 when it is marked externally managed (as on Debian 12/Ubuntu 24.04)."""
    for candidate in ("/usr/bin/python3",):
        path = Path(candidate)
        if not path.exists():
            continue
        stdlib = subprocess.run(
            [str(path), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
            return path
    return None


def path_without_uv(tmp_path: Path) -> str:
    """PATH with only the basics the scripts use (no uv, no pyenv shims)."""
    bin_dir = tmp_path / "path-bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "sed", "awk", "grep", "mkdir", "rm", "mv", "dirname", "cat", "touch", "make"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.fixture(scope="module")
def system_python() -> Path:
    python = externally_managed_python()
    if python is None:
        pytest.skip("no externally managed system python3 here (not Debian 12/Ubuntu 24.04)")
    return python


def test_system_python_refuses_pip_install(system_python: Path, tmp_path: Path) -> None:
    """The premise: this interpreter is one that PEP 668 protects, so `pip install uv` fails on it."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INPUT": "1"}
    result = subprocess.run(
        [str(system_python), "-m", "pip", "install", "--dry-run", "--no-index", "uv"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if "No module named pip" in result.stderr:
        pytest.skip("this system python3 has no pip at all (python3-pip not installed)")
    assert result.returncode != 0
    assert "externally-managed-environment" in result.stderr


def test_bootstrap_installs_pinned_uv_beside_an_externally_managed_python(system_python: Path, tmp_path: Path) -> None:
    venv = tmp_path / "cache" / f"uv-{UV_VERSION}"
    result = subprocess.run(
        [str(BOOTSTRAP), str(system_python), str(venv)],
        capture_output=True,
        text=True,
        env={"PATH": path_without_uv(tmp_path), "HOME": str(tmp_path)},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    uv = venv / "bin" / "uv"
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"uv {UV_VERSION}")
    # The system Python was not touched: still no uv module there.
    probe = subprocess.run([str(system_python), "-c", "import uv"], capture_output=True, text=True, check=False)
    assert probe.returncode != 0


def test_makefile_bootstraps_uv_when_none_is_on_path(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = subprocess.run(
        ["make", "-n", "-W", "uv.lock", "install", f"CACHE={cache}", "PYTHON=/usr/bin/python3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": path_without_uv(tmp_path), "HOME": str(tmp_path)},
        check=True,
    )
    assert f'hack/bootstrap-uv.sh "/usr/bin/python3" "{cache}/uv-{UV_VERSION}"' in result.stdout
    assert f"{cache}/uv-{UV_VERSION}/bin/uv sync --frozen --extra dev" in result.stdout
    assert "python3 -m pip" not in result.stdout and "-m uv" not in result.stdout


def test_makefile_prefers_a_uv_binary_on_path(tmp_path: Path) -> None:
    fake_uv = tmp_path / "standalone" / "uv"
    fake_uv.parent.mkdir()
    fake_uv.write_text("#!/bin/sh\necho uv 0.0.0\n")
    fake_uv.chmod(0o755)
    result = subprocess.run(
        ["make", "-n", "-W", "uv.lock", "install", f"CACHE={tmp_path / 'cache'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": f"{fake_uv.parent}:{path_without_uv(tmp_path)}", "HOME": str(tmp_path)},
        check=True,
    )
    assert f"{fake_uv} sync --frozen --extra dev" in result.stdout
    assert "bootstrap-uv.sh" not in result.stdout


def python_without_venv(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The running python3, made to look like Debian's without python3-venv (ensurepip fails to import)."""
    shadow = tmp_path / "shadow"
    (shadow / "ensurepip").mkdir(parents=True)
    (shadow / "ensurepip" / "__init__.py").write_text("raise ImportError('ensurepip is not available')\n")
    python = sysconfig.get_config_var("BINDIR") + "/python3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAIFLOW_")}
    env.update(PYTHONPATH=str(shadow), HOME=str(tmp_path))
    return python, env


def test_bootstrap_without_venv_fetches_the_pinned_wheel(tmp_path: Path) -> None:
    """A stock Debian 12 python3 has neither venv's ensurepip nor pip: uv's wheel is fetched and hash-checked."""
    python, env = python_without_venv(tmp_path)
    venv = tmp_path / "uv-venv"
    result = subprocess.run(
        [str(BOOTSTRAP), python, str(venv)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "no venv/ensurepip" in result.stderr and "fetch_uv: uv-" in result.stderr
    version = subprocess.run([str(venv / "bin" / "uv"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(f"uv {UV_VERSION}")


def test_fetch_refuses_a_wheel_whose_hash_is_not_pinned(tmp_path: Path) -> None:
    tampered = tmp_path / "uv-requirements.txt"
    text = (REPO / "hack" / "uv-requirements.txt").read_text()
    tampered.write_text(re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, text))
    result = subprocess.run(
        [sys.executable, str(REPO / "hack" / "fetch_uv.py"), str(tampered), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "is not pinned" in result.stderr and "refusing" in result.stderr
    assert not (tmp_path / "out" / "bin" / "uv").exists()


def test_bootstrap_explains_what_to_do_when_nothing_works(tmp_path: Path) -> None:
    """No venv module and PyPI unreachable: a clear way out, nothing half-installed."""
    python, env = python_without_venv(tmp_path)
    env["PAIFLOW_PYPI_SIMPLE"] = "http://127.0.0.1:9/simple"  # discard port: refused at once
    venv = tmp_path / "uv-venv"
    result = subprocess.run([str(BOOTSTRAP), python, str(venv)], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert "could not get uv" in result.stderr
    assert "apt-get install python3-venv" in result.stderr and "uv binary on PATH" in result.stderr
    assert not venv.exists() and not Path(f"{venv}.tmp").exists()
