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


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    """`make demo`'s program, run once for this module's tests."""
    return subprocess.run(
        [sys.executable, "-m", "tests.support.demo", "--exit-when-done", "--timeout", "180"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("PAIFLOW_TEST_")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_runs_to_the_end_and_leaves_nothing_behind(demo: subprocess.CompletedProcess[str]) -> None:
    result = demo
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "every run has ended" in out, out[-3000:]
    assert "export KUBECONFIG=" in out
    # The table moved: each kind of ending appears, and the throttled run recovered.
    for word in ("Succeeded", "Failed", "Terminated", "Skipped", "Throttled"):
        assert word in out, word
    assert "OOMKilled" in out
    # A launched run next to the followed ones, created once and followed to its end.
    launched = re.search(r"\[demo\] (train-resnet50-\w+) launched PAI run (flow-\w+) \(PAI name [^,]+, 1 create", out)
    assert launched, out[-3000:]
    assert re.search(rf"{launched.group(1)}\s+{launched.group(2)}\s+Succeeded", out), out[-3000:]
    # The PaiWorkspace imported the second workspace's runs, which ended like the rest.
    assert "kubectl get paiworkspaces" in out and "team-imports" in out
    assert "flow-import-sdk-01" in out and "step eval: exit code 1" not in result.stderr
    assert "demo-secret-never-printed" not in out + result.stderr
    workdir = re.search(r"work dir (\S+?)\)", out)
    assert workdir, out[:500]
    # etcd, kube-apiserver and the operator all run with paths under the demo's work dir.
    assert not _processes_mentioning(workdir.group(1)), "the demo left processes running"


def _table_rows(text: str) -> list[dict[str, str]]:
    """Rows of every `kubectl get paipipelineruns` table in text, as {column: value} (cut at header positions)."""
    rows: list[dict[str, str]] = []
    header: list[tuple[str, int]] = []
    for line in text.splitlines():
        if line.startswith("NAME ") and "RUN ID" in line:
            starts = [m.start() for m in re.finditer(r"(?<=\s\s)\S|^\S", line)]
            header = [
                (line[a:b].strip() if b else line[a:].strip(), a)
                for a, b in zip(starts, [*starts[1:], None], strict=True)
            ]
            continue
        if line.startswith(("$", "[")):
            header = []
        elif header and line.strip() and not line.startswith(" "):
            cells = {}
            for i, (name, start) in enumerate(header):
                end = header[i + 1][1] if i + 1 < len(header) else None
                cells[name] = (line[start:end] if end else line[start:]).strip()
            rows.append(cells)
        elif not line.strip():
            header = []
    return rows


def test_readme_sample_table_is_what_the_demo_prints(demo: subprocess.CompletedProcess[str]) -> None:
    readme = (REPO / "README.md").read_text()
    sample = readme.split("```console\n", 1)[1].split("```", 1)[0]
    sample_rows = _table_rows(sample)
    assert len(sample_rows) >= 4, sample
    result = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Times (STARTED, AGE) differ from run to run; everything else must be a row the demo printed.
    stable = ("NAME", "RUN ID", "STATUS", "DURATION", "READY", "REASON")
    printed = {tuple(row.get(c, "") for c in stable) for row in _table_rows(result.stdout)}
    for row in sample_rows:
        assert tuple(row[c] for c in stable) in printed, f"README row not printed by the demo: {row}"
    # The demo says why the operator's Deployment shows 0/1.
    assert "stays 0/1 with no pods" in result.stdout
