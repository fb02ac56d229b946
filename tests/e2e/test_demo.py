"""`make demo` is the newcomer's first command: prove it shows every run ending and cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.add(int(entry.name))
    return found


def test_demo_runs_to_the_end_and_leaves_nothing_behind() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.demo", "--exit-when-done", "--timeout", "180"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("PAIFLOW_TEST_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "every run has ended" in out, out[-3000:]
    assert "export KUBECONFIG=" in out
    # The table moved: each kind of ending appears, and the throttled run recovered.
    for word in ("Succeeded", "Failed", "Terminated", "Skipped", "Throttled"):
        assert word in out, word
    assert "OOMKilled" in out
    # The PaiWorkspace imported the second workspace's runs, which ended like the rest.
    assert "kubectl get paiworkspaces" in out and "team-imports" in out
    assert "flow-import-sdk-01" in out and "step eval: exit code 1" not in result.stderr
    assert "demo-secret-never-printed" not in out + result.stderr
    workdir = re.search(r"work dir (\S+?)\)", out)
    assert workdir, out[:500]
    # etcd, kube-apiserver and the operator all run with paths under the demo's work dir.
    assert not _processes_mentioning(workdir.group(1)), "the demo left processes running"
