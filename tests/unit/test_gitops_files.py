"""The GitOps files in deploy/ agree with each other: the argocd-cm snippet installs exactly health.lua, laid out as
in Argo CD's resource_customizations, and the Flux example waits on PaiPipelineRuns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CUSTOMIZATION = DEPLOY / "argocd" / "resource_customizations" / "paiflow-operator.dev" / "PaiPipelineRun"
CM_KEY = "resource.customizations.health.paiflow-operator.dev_PaiPipelineRun"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def test_argocd_cm_snippet_is_health_lua_byte_for_byte() -> None:
    (patch,) = load_all(DEPLOY / "argocd" / "argocd-cm-patch.yaml")
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "ConfigMap")
    assert (patch["metadata"]["name"], patch["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    lua = (CUSTOMIZATION / "health.lua").read_bytes()
    assert lua.endswith(b"\n") and not lua.endswith(b"\n\n"), "a YAML | block keeps exactly one final newline"
    assert list(patch["data"]) == [CM_KEY]
    assert patch["data"][CM_KEY].encode("utf-8") == lua, (
        "deploy/argocd/argocd-cm-patch.yaml must inline health.lua unchanged (indent it by four spaces)"
    )


def test_argocd_customization_is_laid_out_like_argo_cds_own() -> None:
    assert sorted(p.name for p in CUSTOMIZATION.iterdir()) == ["health.lua", "health_test.yaml", "testdata"]
    tests = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text(encoding="utf-8"))["tests"]
    inputs = [t["inputPath"] for t in tests]
    assert sorted(inputs) == sorted(f"testdata/{p.name}" for p in (CUSTOMIZATION / "testdata").glob("*.yaml"))
    for test in tests:
        assert set(test) == {"healthStatus", "inputPath"}
        assert set(test["healthStatus"]) == {"status", "message"} and test["healthStatus"]["message"]
    statuses = {t["healthStatus"]["status"] for t in tests}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= statuses
    for path in (CUSTOMIZATION / "testdata").glob("*.yaml"):
        (obj,) = load_all(path)
        assert (obj["apiVersion"], obj["kind"]) == ("paiflow-operator.dev/v1alpha1", "PaiPipelineRun"), path
        assert "uid" not in obj["metadata"] and "managedFields" not in obj["metadata"], path


def test_flux_example_waits_on_paipipelineruns() -> None:
    docs = load_all(DEPLOY / "flux" / "kustomization.yaml")
    assert docs and all(d["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1" for d in docs)
    assert all(d["kind"] == "Kustomization" for d in docs)
    assert any(d["spec"].get("wait") is True for d in docs)
    checks = [c for d in docs for c in d["spec"].get("healthChecks") or []]
    assert checks and all(
        (c["apiVersion"], c["kind"]) == ("paiflow-operator.dev/v1alpha1", "PaiPipelineRun") and c["name"]
        for c in checks
    )
