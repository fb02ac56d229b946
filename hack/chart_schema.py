"""Writes the `config` part of charts/paiflow-operator/values.schema.json from settings.py, and its
`accessPolicies` part from the PaiAccessPolicy model (api/policies.py) (`make crds` runs it).

Every operator setting becomes a typed, optional chart value (null: the operator's default), and nothing else is
accepted, so a misspelt setting fails `helm install` instead of being ignored. tests/unit/test_packaging.py fails
when the committed schema and settings.py disagree.
"""

from __future__ import annotations

import json
import sys
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

from paiflow_operator.api.policies import PaiAccessPolicySpec
from paiflow_operator.crdgen import _structural
from paiflow_operator.settings import Settings

SCHEMA = Path(__file__).resolve().parents[1] / "charts" / "paiflow-operator" / "values.schema.json"
# The subset of Go durations settings.py parses (resource.parse_duration).
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def value_schema(annotation: Any) -> dict[str, Any]:
    args = typing.get_args(annotation)
    base = args[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    if base is timedelta:
        return {"type": ["string", "null"], "pattern": DURATION, "description": "Go-style duration: 30s, 5m, 1h"}
    if base is bool:
        return {"type": ["boolean", "null"]}
    if base is int:
        return {"type": ["integer", "null"]}
    if base is float:
        # `--set` passes decimals as strings.
        return {"type": ["number", "string", "null"], "pattern": r"^[0-9]+(\.[0-9]+)?$"}
    if typing.get_origin(base) is typing.Literal:
        return {"enum": [*typing.get_args(base), None]}
    if typing.get_origin(base) is list:
        return {"type": ["array", "null"], "items": {"type": "string"}}
    return {"type": ["string", "null"]}


def config_schema() -> dict[str, Any]:
    properties = {}
    for name, field in Settings.model_fields.items():
        if name == "namespaces":
            continue  # the chart's watchNamespaces
        schema = value_schema(field.annotation)
        if field.description:
            schema["description"] = field.description
        properties[camel(name)] = schema
    return {
        "type": "object",
        "description": "Operator settings (PAIFLOW_<NAME>); null keeps the operator's default.",
        "properties": properties,
        "additionalProperties": False,
    }


def _closed(node: Any) -> Any:
    """Every object with named properties refuses others (a misspelt policy field fails `helm install`)."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items() if k != "x-kubernetes-validations"}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def access_policies_schema() -> dict[str, Any]:
    raw = PaiAccessPolicySpec.model_json_schema(by_alias=True)
    spec = _closed(_structural(raw, raw.get("$defs", {})))
    return {
        "type": "array",
        "description": "PaiAccessPolicies the chart renders (name + spec, as in deploy/examples/paiaccesspolicy.yaml).",
        "items": {
            "type": "object",
            "required": ["name", "spec"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                "spec": spec,
            },
        },
    }


def render() -> str:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = config_schema()
    schema["properties"]["accessPolicies"] = access_policies_schema()
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    SCHEMA.write_text(render())
    print(f"wrote {SCHEMA}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
