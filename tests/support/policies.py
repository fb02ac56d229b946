"""The PaiAccessPolicy the test and bench clusters carry, so that tests written before policies existed keep
their namespaces allowed: every namespace but those a policy test makes (label POLICY_TEST_LABEL), which start
with no policy at all, as a new team's namespace does in production."""

from __future__ import annotations

import json
from typing import Any

POLICY_TEST_LABEL = "paiflow-operator.dev/policy-test"
TEST_POLICY_NAME = "tests-allow-all"

TEST_POLICY: dict[str, Any] = {
    "apiVersion": "paiflow-operator.dev/v1alpha1",
    "kind": "PaiAccessPolicy",
    "metadata": {"name": TEST_POLICY_NAME},
    "spec": {
        "namespaceSelector": {"matchExpressions": [{"key": POLICY_TEST_LABEL, "operator": "DoesNotExist"}]},
        "workspaceIds": ["*"],
        "actions": ["Follow", "Import", "Launch", "Terminate", "Verbose", "Inspect"],
    },
}


def test_policy_json() -> str:
    return json.dumps(TEST_POLICY)


def install_test_policy(cp: Any) -> None:
    """Applies TEST_POLICY once the PaiAccessPolicy CRD is served (``cp``: a tests.support ControlPlane)."""
    cp.kubectl("wait", "--for=condition=Established", "crd/paiaccesspolicies.paiflow-operator.dev", "--timeout=60s")
    cp.kubectl("apply", "-f", "-", input=test_policy_json())
