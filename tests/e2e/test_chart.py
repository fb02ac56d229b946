"""The Helm chart and the kustomizations as users install them, with the real helm (built from its Go module by
`make tools-bin`) and kubectl against the real API server: lint, server-side dry runs, install, upgrade and
uninstall, the user's image everywhere, the same RBAC as deploy/base."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.controlplane import ControlPlane
from tests.support.monitoring import RULES
from tests.support.operator_process import REPO

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "paiflow-operator"
PUBLISHED = "ghcr.io/paiflow-operator/paiflow-operator"
USER_IMAGE = "registry.example.com:5000/ml-platform/paiflow-operator"
DIGEST = "sha256:" + "0123456789abcdef" * 4
ROLE_ARN = "acs:ram::1234567890123456:role/paiflow-operator-reader"
OIDC_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c5f0e1d2a3b4c5d6e"
RBAC_KINDS = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


class Helm:
    def __init__(self, binary: str, cp: ControlPlane, home: Path) -> None:
        self.binary = binary
        self.cp = cp
        # Helm's own config, cache and data (repositories, registry logins) stay out of the user's home.
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, f"--kubeconfig={self.cp.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=180, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def template(self, *args: str, release: str = "paiflow-operator", namespace: str = "paiflow-system") -> list[Any]:
        out = self("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def helm(installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = os.environ.get("PAIFLOW_HELM", "")
    if not Path(binary).is_file():
        pytest.fail(f"helm not built ({binary or 'PAIFLOW_HELM unset'}): run `make tools-bin`", pytrace=False)
    return Helm(binary, installed, tmp_path_factory.mktemp("helm-home"))


def kustomize(cp: ControlPlane, directory: Path, image: str | None = None) -> list[Any]:
    if image is None:
        out = cp.kubectl("kustomize", str(directory)).stdout
    else:
        env = {**os.environ, "KUBECTL": str(cp.kubectl_path)}
        out = subprocess.run(
            [str(REPO / "hack" / "kustomize-with-image.sh"), str(directory), image],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(docs: list[Any], kind: str) -> Any:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def image_of(docs: list[Any]) -> str:
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    image: str = container["image"]
    return image


def env_of(docs: list[Any]) -> dict[str, str]:
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def apply_dry_run(cp: ControlPlane, docs: list[Any]) -> str:
    return cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)).stdout


# ---- lint and render ------------------------------------------------------------------------------------------


def test_helm_lint_passes_with_defaults_and_with_everything_on(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART))
    helm(
        "lint",
        "--strict",
        str(CHART),
        *(
            "--set",
            "rrsa.enabled=true",
            "--set",
            f"rrsa.roleArn={ROLE_ARN}",
            "--set",
            f"rrsa.oidcProviderArn={OIDC_ARN}",
        ),
        *("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true"),
        *("--set", "metrics.grafanaDashboard.enabled=true", "--set", "networkPolicy.enabled=true"),
        *("--set", "secretReaderNamespaces={ml,etl}", "--set", "watchNamespaces={ml,etl}"),
    )


def test_chart_renders_every_setting_as_the_operators_environment(helm: Helm) -> None:
    docs = helm.template(
        "--set", "config.qps=4.5", "--set", "config.batchStatus=false", "--set", "config.defaultPollInterval=45s",
        "--set", "watchNamespaces={ml,etl}", "--set", "config.extraRegions={cn-chengdu,cn-guangzhou}",
    )  # fmt: skip
    env = env_of(docs)
    assert env["PAIFLOW_QPS"] == "4.5"
    assert env["PAIFLOW_BATCH_STATUS"] == "false"
    assert env["PAIFLOW_DEFAULT_POLL_INTERVAL"] == "45s"
    assert env["PAIFLOW_NAMESPACES"] == "ml,etl"
    assert env["PAIFLOW_EXTRA_REGIONS"] == "cn-chengdu,cn-guangzhou"  # lists as the comma-separated form
    assert env["PAIFLOW_LOG_FORMAT"] == "json"
    # Settings left null keep the operator's own default: no variable at all.
    assert "PAIFLOW_BURST" not in env


def test_chart_refuses_placeholders_and_missing_rrsa_values(helm: Helm) -> None:
    placeholder = helm(
        "template", "x", str(CHART), "--set", "rrsa.enabled=true",
        "--set", "rrsa.roleArn=acs:ram::<ACCOUNT_ID>:role/paiflow-operator-reader",
        "--set", "rrsa.oidcProviderArn=" + OIDC_ARN, check=False,
    )  # fmt: skip
    assert placeholder.returncode != 0
    assert "rrsa.roleArn still holds the placeholder <ACCOUNT_ID>" in placeholder.stderr
    missing = helm("template", "x", str(CHART), "--set", "rrsa.enabled=true", check=False)
    assert missing.returncode != 0 and "rrsa.roleArn is required" in missing.stderr
    in_config = helm(
        "template", "x", str(CHART), "--set", "config.endpointOverride=https://<VPC_ENDPOINT>", check=False
    )
    assert in_config.returncode != 0 and "config.endpointOverride still holds the placeholder" in in_config.stderr


def test_chart_prometheusrule_carries_the_tested_rules(helm: Helm) -> None:
    docs = helm.template("--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.serviceMonitor.enabled=true")
    assert only(docs, "PrometheusRule")["spec"] == yaml.safe_load(RULES.read_text())
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/part-of"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    # The label jobLabel names is on the Service and says paiflow-operator: the rules' job="paiflow-operator".
    assert only(docs, "Service")["metadata"]["labels"]["app.kubernetes.io/part-of"] == "paiflow-operator"


# ---- one image name ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"{USER_IMAGE}:1.2.3", f"{USER_IMAGE}:1.2.3"),
        (f"{USER_IMAGE}@{DIGEST}", f"{USER_IMAGE}@{DIGEST}"),
        ("paiflow-operator:dev", "paiflow-operator:dev"),
    ],
)
def test_kustomize_deploys_the_image_the_user_built(installed: ControlPlane, image: str, expected: str) -> None:
    docs = kustomize(installed, REPO / "deploy" / "base", image)
    assert image_of(docs) == expected
    assert "(server dry run)" in apply_dry_run(installed, docs)


def test_kustomize_base_without_an_image_deploys_the_published_release(installed: ControlPlane) -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    docs = kustomize(installed, REPO / "deploy" / "base")
    assert image_of(docs) == f"{PUBLISHED}:{version}"


def test_chart_deploys_the_image_the_user_built(helm: Helm) -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert image_of(helm.template()) == f"{PUBLISHED}:{version}"
    assert image_of(helm.template("--set", f"image.repository={USER_IMAGE}", "--set", "image.tag=1.2.3")) == (
        f"{USER_IMAGE}:1.2.3"
    )
    assert image_of(helm.template("--set", f"image.repository={USER_IMAGE}", "--set", f"image.digest={DIGEST}")) == (
        f"{USER_IMAGE}@{DIGEST}"
    )


# ---- RRSA overlay ------------------------------------------------------------------------------------------


@pytest.fixture
def rrsa_overlay(tmp_path: Path) -> Iterator[Path]:
    """A copy of deploy/ (so the repository's overlay stays without an rrsa.env)."""
    copy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", copy)
    shutil.copytree(REPO / "crds", tmp_path / "crds")
    yield copy / "overlays" / "rrsa"


def test_rrsa_overlay_stops_until_the_user_writes_rrsa_env(installed: ControlPlane, rrsa_overlay: Path) -> None:
    result = installed.kubectl("kustomize", str(rrsa_overlay), check=False)
    assert result.returncode != 0
    assert "rrsa.env" in result.stderr
    dry = installed.kubectl("apply", "--dry-run=server", "-k", str(rrsa_overlay), check=False)
    assert dry.returncode != 0 and "rrsa.env" in dry.stderr


def test_rrsa_overlay_with_the_users_values(installed: ControlPlane, rrsa_overlay: Path) -> None:
    (rrsa_overlay / "rrsa.env").write_text(
        f"ALIBABA_CLOUD_ROLE_ARN={ROLE_ARN}\nALIBABA_CLOUD_OIDC_PROVIDER_ARN={OIDC_ARN}\n"
    )
    docs = kustomize(installed, rrsa_overlay, f"{USER_IMAGE}:1.2.3")
    assert image_of(docs) == f"{USER_IMAGE}:1.2.3"
    config_map = only(docs, "ConfigMap")
    assert config_map["data"] == {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC_ARN}
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    # kustomize points the Deployment at the generated (hash-suffixed) ConfigMap, so a new value rolls it.
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    assert apply_dry_run(installed, docs)


def test_rrsa_example_still_holds_its_placeholders() -> None:
    """The example keeps <ACCOUNT_ID>/<CLUSTER_ID>, which both the operator and the chart refuse."""
    example = (REPO / "deploy" / "overlays" / "rrsa" / "rrsa.env.example").read_text()
    assert "<ACCOUNT_ID>" in example and "<CLUSTER_ID>" in example
    assert not (REPO / "deploy" / "overlays" / "rrsa" / "rrsa.env").exists()


# ---- components ----------------------------------------------------------------------------------------------


def test_components_add_monitoring_and_networkpolicy(installed: ControlPlane, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(REPO / "deploy" / "base", overlay)],
                "components": [
                    os.path.relpath(REPO / "deploy" / "components" / c, overlay)
                    for c in ("monitoring", "networkpolicy")
                ],
            }
        )
    )
    docs = kustomize(installed, overlay)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "ConfigMap"} <= kinds
    policy = only(docs, "NetworkPolicy")
    egress_ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)}
    # Objects whose API this server has (no Prometheus Operator here) pass a server-side dry run.
    served = [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    assert apply_dry_run(installed, served)


def test_chart_networkpolicy_limits_egress(helm: Helm, installed: ControlPlane) -> None:
    docs = helm.template("--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={10.0.0.1/32}")
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, api, pai = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert pai["ports"] == [{"protocol": "TCP", "port": 443}] and "to" not in pai
    assert apply_dry_run(installed, [policy])


# ---- RBAC --------------------------------------------------------------------------------------------------


def rbac(docs: list[Any]) -> dict[tuple[str, str, str], Any]:
    """RBAC objects by (kind, namespace, name), with what they grant and to whom."""
    out = {}
    for doc in docs:
        if doc["kind"] not in RBAC_KINDS:
            continue
        meta = doc["metadata"]
        out[(doc["kind"], meta.get("namespace", ""), meta["name"])] = {
            "rules": doc.get("rules"),
            "roleRef": doc.get("roleRef"),
            "subjects": doc.get("subjects"),
        }
    return out


def test_chart_and_kustomize_grant_exactly_the_same_rbac(helm: Helm, installed: ControlPlane) -> None:
    chart = rbac(helm.template())
    kustomized = rbac(kustomize(installed, REPO / "deploy" / "base"))
    assert kustomized, "no RBAC in deploy/base"
    assert chart == kustomized


def test_rbac_comparison_catches_a_drift(helm: Helm, installed: ControlPlane) -> None:
    chart = rbac(helm.template())
    docs = kustomize(installed, REPO / "deploy" / "base")
    only_role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "paiflow-operator")
    only_role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    assert chart != rbac(docs)


# ---- install, upgrade, uninstall ---------------------------------------------------------------------------


def test_template_passes_a_server_side_dry_run(helm: Helm, installed: ControlPlane, namespace: str) -> None:
    docs = helm.template(
        *(
            "--set",
            "rrsa.enabled=true",
            "--set",
            f"rrsa.roleArn={ROLE_ARN}",
            "--set",
            f"rrsa.oidcProviderArn={OIDC_ARN}",
        ),
        *("--set", f"secretReaderNamespaces={{{namespace}}}", "--set", "networkPolicy.enabled=true"),
        *("--set", "metrics.grafanaDashboard.enabled=true"),
        release=f"dry-{namespace}",
        namespace=namespace,
    )
    out = apply_dry_run(installed, docs)
    assert "deployment.apps/" in out and "(server dry run)" in out


def test_install_upgrade_uninstall(helm: Helm, installed: ControlPlane, namespace: str) -> None:
    release = f"pfo-{namespace[-6:]}"
    fullname = f"{release}-paiflow-operator"
    helm(
        "install", release, str(CHART), "--namespace", namespace,
        "--set", f"image.repository={USER_IMAGE}", "--set", "image.tag=1.2.3",
        "--set", f"secretReaderNamespaces={{{namespace}}}", "--set", "config.qps=7",
    )  # fmt: skip
    deployment = json.loads(installed.kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{USER_IMAGE}:1.2.3"
    assert {"name": "PAIFLOW_QPS", "value": "7"} in container["env"]
    # What the chart's RBAC grants the operator's ServiceAccount, asked of the API server's authorizer.
    sa = f"system:serviceaccount:{namespace}:{fullname}"

    def can(*args: str) -> bool:
        result = installed.kubectl("auth", "can-i", *args, f"--as={sa}", check=False)
        return result.stdout.strip() == "yes"

    assert can("watch", "paipipelineruns.paiflow-operator.dev", "--all-namespaces")
    assert can("patch", "paipipelineruns.paiflow-operator.dev", "--subresource=status", "-n", namespace)
    assert not can("update", "paipipelineruns.paiflow-operator.dev", "-n", namespace)
    assert can("get", "secrets", "-n", namespace)  # the per-namespace Secret-reader binding
    assert not can("get", "secrets", "-n", "default")
    assert not can("list", "secrets", "-n", namespace)

    helm("upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values", "--set", "config.qps=3")
    deployment = json.loads(installed.kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "PAIFLOW_QPS", "value": "3"} in container["env"]
    assert container["image"] == f"{USER_IMAGE}:1.2.3"
    history = json.loads(helm("history", release, "--namespace", namespace, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    helm("uninstall", release, "--namespace", namespace)
    for kind, name in (("deployment", fullname), ("clusterrole", fullname), ("clusterrolebinding", fullname)):
        args = (kind, name) if kind.startswith("cluster") else (kind, name, "-n", namespace)
        gone = installed.kubectl("get", *args, "--ignore-not-found", "-o", "name").stdout
        assert gone.strip() == "", f"{kind}/{name} left behind"
    # CRDs in the chart's crds/ are never deleted by helm (nor upgraded): the runs survive an uninstall.
    assert installed.kubectl("get", "crd", "paipipelineruns.paiflow-operator.dev", "-o", "name").stdout.strip()


def test_make_deploy_applies_the_crd_and_the_users_image(installed: ControlPlane, tmp_path: Path) -> None:
    """`make deploy IMAGE=...`, as the README writes it, against the API server (kubectl from PATH)."""
    image = f"{USER_IMAGE}:9.9.9"
    env = {
        **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        "PATH": f"{installed.kubectl_path.parent}:{os.environ['PATH']}",
        "KUBECONFIG": str(installed.kubeconfig),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy", f"IMAGE={image}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "customresourcedefinition.apiextensions.k8s.io/paipipelineruns.paiflow-operator.dev" in result.stdout
    deployment = json.loads(
        installed.kubectl("get", "deployment", "paiflow-operator", "-n", "paiflow-system", "-o", "json").stdout
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image


def test_chart_deployment_is_hardened_like_deploy_base(helm: Helm, installed: ControlPlane) -> None:
    chart = only(helm.template(), "Deployment")["spec"]
    base = only(kustomize(installed, REPO / "deploy" / "base"), "Deployment")["spec"]
    assert chart["replicas"] == base["replicas"] and chart["strategy"] == base["strategy"]
    chart_pod, base_pod = chart["template"]["spec"], base["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "terminationGracePeriodSeconds", "volumes"):
        assert chart_pod[key] == base_pod[key], key
    (chart_container,) = chart_pod["containers"]
    (base_container,) = base_pod["containers"]
    for key in ("securityContext", "ports", "livenessProbe", "readinessProbe", "resources", "volumeMounts"):
        assert chart_container[key] == base_container[key], key
    # Same settings by default (the chart lists every one; unset ones keep the operator's defaults).
    assert env_of(helm.template()) == {
        **env_of(kustomize(installed, REPO / "deploy" / "base")),
        "PAIFLOW_HEALTH_PORT": "8080",
        "PAIFLOW_METRICS_PORT": "9090",
    }


# ---- PaiAccessPolicies -------------------------------------------------------------------------------------


def test_access_policies_values_render_policies_the_api_server_accepts(helm: Helm, installed: ControlPlane) -> None:
    policies = [
        {
            "name": "team-ml",
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}},
                "workspaceIds": ["48213"],
                "actions": ["Follow", "Import"],
                "identity": {"type": "AssumeRole", "roleArn": "acs:ram::1234567890123456:role/team-ml-pai"},
                "limits": {"weight": 2},
            },
        }
    ]
    docs = helm.template("--set-json", f"accessPolicies={json.dumps(policies)}")
    rendered = [d for d in docs if d["kind"] == "PaiAccessPolicy"]
    assert [(d["metadata"]["name"], d["spec"]) for d in rendered] == [("team-ml", policies[0]["spec"])]
    assert "PaiAccessPolicy" not in {d["kind"] for d in helm.template()}  # none by default
    assert "paiaccesspolicy.paiflow-operator.dev/team-ml" in apply_dry_run(installed, rendered)
    # values.schema.json refuses a misspelt field or a bad value with its path, before anything is applied.
    for bad, field in [
        ({**policies[0]["spec"], "actoins": ["Follow"]}, "actoins"),
        ({**policies[0]["spec"], "actions": ["Delete"]}, "actions"),
        ({**policies[0]["spec"], "limits": {"weight": 0}}, "weight"),
    ]:
        result = helm(
            "template", "x", str(CHART), "--set-json", f"accessPolicies={json.dumps([{'name': 'p', 'spec': bad}])}",
            check=False,
        )  # fmt: skip
        assert result.returncode != 0 and field in result.stderr, result.stderr
