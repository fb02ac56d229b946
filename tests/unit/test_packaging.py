"""What ships: one image name everywhere, a hardened image recipe, a wheel without the test emulator, a chart
that carries every operator setting and the CRD as generated."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from paiflow_operator import crdgen
from paiflow_operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "paiflow-operator"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE_REPOSITORY = "ghcr.io/paiflow-operator/paiflow-operator"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# ---- one image name ---------------------------------------------------------------------------------------


def test_kustomize_base_deploys_the_published_image_at_the_package_version() -> None:
    kustomization = yaml.safe_load((REPO / "deploy" / "base" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": IMAGE_REPOSITORY, "newTag": VERSION}]
    deployment = yaml.safe_load((REPO / "deploy" / "base" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The name kustomize's images entry matches; the tag comes from the entry alone.
    assert container["image"] == IMAGE_REPOSITORY


def test_chart_versions_and_image_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["version"] == VERSION and chart["appVersion"] == VERSION
    assert values["image"]["repository"] == IMAGE_REPOSITORY
    assert values["image"]["tag"] == ""  # empty: the appVersion above


def test_makefile_builds_and_deploys_the_same_image_variable() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert f"IMAGE ?= {IMAGE_REPOSITORY}:$(VERSION)" in makefile
    assert "$(CONTAINER_ENGINE) build -t $(IMAGE) ." in makefile
    assert 'hack/kustomize-with-image.sh "deploy/$(OVERLAY)" "$(IMAGE)"' in makefile
    # The kustomize helper's images entry names the image of deploy/base.
    assert f"- name: {IMAGE_REPOSITORY}" in (REPO / "hack" / "kustomize-with-image.sh").read_text()


# ---- the image recipe ---------------------------------------------------------------------------------------


def test_dockerfile_pins_base_image_by_digest_and_installs_only_hashed_tools() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    # One image named on a FROM line (where Dependabot looks), pinned by digest; both stages take the BASE build
    # argument, whose default is that image (the image tests pass a stand-in).
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.MULTILINE)
    (default,) = re.findall(r"^ARG BASE=(\S+)$", dockerfile, re.MULTILINE)
    assert froms == [(froms[0][0], default), ("${BASE}", "build"), ("${BASE}", "")], froms
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", froms[0][0])
    first_from = re.search(r"^FROM ", dockerfile, re.MULTILINE)
    assert first_from and dockerfile.index("\nARG BASE=") < first_from.start()  # global: usable on every FROM line
    # Every pip/uv install either takes hashes or installs the wheel built from this very source.
    installs = re.findall(r"(?:pip|\$UV pip) install [^\n\\]*", dockerfile)
    assert installs, "no install step found"
    for line in installs:
        assert "--require-hashes" in line or "/tmp/dist/*.whl" in line, line
    assert "--no-build-isolation" not in dockerfile  # the backend comes from build-requirements.txt via hatchling


def test_runtime_stage_removes_pip_and_never_receives_it() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    runtime = re.split(r"\nFROM \S+\n", dockerfile)[-1]
    assert runtime.startswith("# The base image's own pip")
    assert "rm -rf /usr/local/bin/pip*" in runtime and "site-packages/pip " in runtime
    # /opt/venv is made by uv, which puts no pip in it, and it is all the runtime stage copies.
    assert "$UV venv --python /usr/local/bin/python3 /opt/venv" in dockerfile
    assert re.findall(r"^COPY .*", runtime, re.MULTILINE) == ["COPY --from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("name", ["uv-requirements.txt", "build-requirements.txt"])
def test_tool_requirements_pin_one_version_with_hashes(name: str) -> None:
    text = (REPO / "hack" / name).read_text()
    requirements = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.MULTILINE)
    assert requirements
    for package, _ in requirements:
        block = text.split(f"{package}==", 1)[1].split("\n\n")[0]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), package


# Locked runtime packages PyPI has only as an sdist, and the backend each one's build needs (its pyproject's
# build-system, or setuptools for a setup.py). A new one fails the test below until its backend is pinned.
SDIST_BACKENDS = {"alibabacloud-tea": "setuptools"}


def _runtime_packages() -> set[str]:
    """What the image installs: the operator's dependencies in uv.lock, transitively, without the dev group."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    by_name = {p["name"]: p for p in lock["package"]}
    todo = [d["name"] for d in by_name[PYPROJECT["project"]["name"]].get("dependencies", [])]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [d["name"] for d in by_name[name].get("dependencies", [])]
    return {n for n in seen if n in by_name}


def test_every_sdist_the_image_builds_has_its_backend_pinned_with_hashes() -> None:
    lock = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    sdist_only = {name for name in _runtime_packages() if not lock[name].get("wheels")}
    assert sdist_only == set(SDIST_BACKENDS), "pin the build backend of each new sdist in hack/build-requirements.txt"
    pinned = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", (REPO / "hack" / "build-requirements.txt").read_text(), re.M)
    )
    for backend in SDIST_BACKENDS.values():
        assert backend in pinned, backend
    # ...and the runtime install builds them with exactly those files: hashes required, the file as constraints.
    dockerfile = (REPO / "Dockerfile").read_text()
    install = re.search(r"\$UV pip install --python /opt/venv/bin/python [^\n]*\n[^\n]*", dockerfile)
    assert install is not None
    assert "--require-hashes" in install[0] and "--build-constraint /tmp/build-requirements.txt" in install[0]


def test_uv_is_the_same_version_for_the_image_and_for_make() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "UV_VERSION := $(shell sed -n 's/^uv==\\([^ ]*\\) .*/\\1/p' hack/uv-requirements.txt)" in makefile


# ---- the wheel ---------------------------------------------------------------------------------------------


def test_production_wheel_holds_the_operator_but_not_the_emulator(tmp_path: Path) -> None:
    uv = os.environ.get("PAIFLOW_UV") or shutil.which("uv")
    if not uv:
        pytest.fail("no uv: run through `make test` (which exports PAIFLOW_UV) or put uv on PATH", pytrace=False)
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("paiflow_operator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "paiflow_operator/__main__.py" in names
    assert not [n for n in names if n.startswith("paiflow_emulator")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "paiflow-operator = paiflow_operator.__main__:main" in text and "emulator" not in text
    # The kubectl plugin ships with the package, named so that kubectl finds it on PATH.
    assert "kubectl-paiflow = paiflow_operator.kubectl_plugin:main" in text


# ---- the chart ---------------------------------------------------------------------------------------------


def test_chart_has_a_value_for_every_operator_setting() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = {camel(name) for name in Settings.model_fields} - {"namespaces"}
    assert set(values["config"]) == settings, "add the new setting to charts/paiflow-operator/values.yaml config:"
    # Namespaces are a list of their own, rendered as PAIFLOW_NAMESPACES.
    assert values["watchNamespaces"] == []


def test_chart_carries_the_generated_crd() -> None:
    assert (CHART / "crds" / crdgen.CRD_FILENAME).read_text() == (REPO / "crds" / crdgen.CRD_FILENAME).read_text(), (
        "the chart's CRD differs from crds/: run `make crds` and commit the result"
    )


def test_chart_schema_knows_every_setting_and_nothing_else() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("chart_schema", REPO / "hack" / "chart_schema.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (CHART / "values.schema.json").read_text() == generator.render(), "run `make crds` and commit the result"
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert config["additionalProperties"] is False  # a misspelt setting is refused, not silently ignored
    assert set(config["properties"]) == {camel(name) for name in Settings.model_fields} - {"namespaces"}
