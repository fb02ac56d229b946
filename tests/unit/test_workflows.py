"""The GitHub Actions workflows pass actionlint (built from its Go module by `make tools-bin`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="module")
def actionlint() -> str:
    path = os.environ.get("PAIFLOW_ACTIONLINT", "")
    if not Path(path).is_file():
        pytest.fail(f"actionlint not built ({path or 'PAIFLOW_ACTIONLINT unset'}): run `make tools-bin`", pytrace=False)
    return path


def lint(actionlint: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint, "-no-color", *map(str, files)], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_every_workflow_passes_actionlint(actionlint: str) -> None:
    assert WORKFLOWS, "no workflow found"
    result = lint(actionlint, *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(actionlint: str, tmp_path: Path) -> None:
    """The lint can fail: an unknown expression context in the release workflow is reported."""
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        (REPO / ".github" / "workflows" / "release.yml")
        .read_text()
        .replace("steps.meta.outputs.tags", "step.meta.outputs.tags")
    )
    result = subprocess.run(
        [actionlint, "-no-color", str(broken)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "step" in result.stdout


def test_release_builds_both_platforms_tagged_with_the_package_version() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    steps = workflow["jobs"]["release"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    meta = next(s for s in steps if s.get("uses", "").startswith("docker/metadata-action@"))
    assert "type=raw,value=${{ steps.version.outputs.version }}" in meta["with"]["tags"]
    # What it publishes is what deploy/ and the chart install.
    version_step = next(s for s in steps if s.get("id") == "version")
    assert "ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/paiflow-operator" in version_step["run"]
