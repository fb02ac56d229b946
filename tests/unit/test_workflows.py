"""The GitHub Actions workflows pass actionlint (built from its Go module by `make tools-bin`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
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


def test_every_action_is_pinned_by_full_commit_sha_naming_its_release() -> None:
    for workflow in WORKFLOWS:
        uses = [line.strip() for line in workflow.read_text().splitlines() if re.search(r"\buses:", line)]
        assert uses, workflow
        for line in uses:
            # A tag (v4) can be moved to other code; a commit cannot. The comment says which release it is.
            assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), line


def _version_step(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The release's version step as the runner runs it (bash -e), in a copy of the files it reads."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    script = next(s for s in workflow["jobs"]["release"]["steps"] if s.get("id") == "version")["run"]
    (tmp_path / "charts" / "paiflow-operator").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(REPO / "charts" / "paiflow-operator" / "Chart.yaml", tmp_path / "charts" / "paiflow-operator")
    output = tmp_path / "output"
    output.touch()
    full_env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), "GITHUB_REPOSITORY_OWNER": "Owner", **env}
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=full_env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("ref", "push", "published"),
    [
        ("refs/tags/v{v}", "true", True),  # the release itself
        ("refs/heads/main", "false", False),  # a manual build without push
        ("refs/heads/main", "true", None),  # a manual publish from a branch: refused
        ("refs/heads/v{v}", "true", None),  # a branch named like the tag is not the tag
        ("refs/tags/v0.0.0-other", "true", None),  # another tag
    ],
)
def test_a_version_is_published_only_from_its_own_tag(
    tmp_path: Path, ref: str, push: str, published: bool | None
) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    ref = ref.format(v=version)
    kind = "tag" if ref.startswith("refs/tags/") else "branch"
    result = _version_step(
        tmp_path,
        {"GITHUB_REF": ref, "GITHUB_REF_TYPE": kind, "GITHUB_REF_NAME": ref.split("/", 2)[2], "PUSH": push},
    )
    if published is None:
        assert result.returncode != 0 and "::error::" in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"version={version}" in (tmp_path / "output").read_text()
