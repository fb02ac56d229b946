"""Generates crds/ from the pydantic models in api/ (runs.py, workspaces.py, policies.py, schedules.py) (the way
controller-gen does for Go types): one YAML file per CRD.

`make crds` writes the YAML; a unit test regenerates it in memory and fails when a committed file drifts.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from paiflow_operator.api import policies as policies_api
from paiflow_operator.api import runs as runs_api
from paiflow_operator.api import schedules as schedules_api
from paiflow_operator.api import workspaces as workspaces_api


@dataclass(frozen=True)
class CrdSource:
    model: type[BaseModel]
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    categories: list[str]
    printer_columns: list[dict[str, Any]]
    module: str
    selectable_fields: list[dict[str, Any]] | None = None
    scope: str = "Namespaced"
    # Properties (a path of property names) holding an embedded spec whose transition rules (oldSelf) apply to
    # the kind it describes, not to this one: a schedule's run template stays editable.
    embedded: tuple[tuple[str, ...], ...] = ()

    @property
    def filename(self) -> str:
        return f"{runs_api.GROUP}_{self.plural}.yaml"


RUNS = CrdSource(
    runs_api.PaiPipelineRun,
    runs_api.KIND,
    runs_api.PLURAL,
    runs_api.SINGULAR,
    runs_api.SHORT_NAMES,
    runs_api.CATEGORIES,
    runs_api.PRINTER_COLUMNS,
    "api/runs.py",
    runs_api.SELECTABLE_FIELDS,
)
WORKSPACES = CrdSource(
    workspaces_api.PaiWorkspace,
    workspaces_api.KIND,
    workspaces_api.PLURAL,
    workspaces_api.SINGULAR,
    workspaces_api.SHORT_NAMES,
    workspaces_api.CATEGORIES,
    workspaces_api.PRINTER_COLUMNS,
    "api/workspaces.py",
    workspaces_api.SELECTABLE_FIELDS,
)
POLICIES = CrdSource(
    policies_api.PaiAccessPolicy,
    policies_api.KIND,
    policies_api.PLURAL,
    policies_api.SINGULAR,
    policies_api.SHORT_NAMES,
    policies_api.CATEGORIES,
    policies_api.PRINTER_COLUMNS,
    "api/policies.py",
    scope="Cluster",
)
SCHEDULES = CrdSource(
    schedules_api.PaiPipelineSchedule,
    schedules_api.KIND,
    schedules_api.PLURAL,
    schedules_api.SINGULAR,
    schedules_api.SHORT_NAMES,
    schedules_api.CATEGORIES,
    schedules_api.PRINTER_COLUMNS,
    "api/schedules.py",
    embedded=(("spec", "runTemplate", "spec"),),
)
SOURCES = (RUNS, WORKSPACES, POLICIES, SCHEDULES)
CRD_FILENAME = RUNS.filename
_DROP_KEYS = {"title", "$defs"}
_CEL = "x-kubernetes-validations"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turns a pydantic JSON schema into a Kubernetes structural schema: refs inlined, Optional unwrapped."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        # A field's CEL rules add to its type's own rules instead of replacing them.
        rules = [*target.get(_CEL, []), *schema.get(_CEL, [])]
        if rules:
            merged[_CEL] = rules
        return _structural(merged, defs)
    if "anyOf" in schema:
        # Optional[X] arrives as anyOf [X, null]; the API server wants X (absence means null).
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return _structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            # A copy: a type used twice would otherwise share its lists, which YAML prints as &anchors.
            out[key] = copy.deepcopy(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("x-kubernetes-preserve-unknown-fields"):
        # dict[str, Any] arrives as additionalProperties: true, which a structural schema may not say.
        out.pop("additionalProperties", None)
    return out


def _without_transition_rules(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    if _CEL in out:
        rules = [r for r in out[_CEL] if "oldSelf" not in r["rule"]]
        if rules:
            out[_CEL] = rules
        else:
            del out[_CEL]
    if "properties" in out:
        out["properties"] = {k: _without_transition_rules(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _without_transition_rules(out["items"])
    return out


def openapi_schema(source: CrdSource = RUNS) -> dict[str, Any]:
    raw = source.model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    body = _structural(raw, defs)
    body.pop("description", None)
    for path in source.embedded:
        parent = body
        for name in path[:-1]:
            parent = parent["properties"][name]
        parent["properties"][path[-1]] = _without_transition_rules(parent["properties"][path[-1]])
    properties = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **body["properties"],
    }
    schema: dict[str, Any] = {
        "type": "object",
        "description": source.model.__doc__,
        "required": ["spec"],
        "properties": properties,
    }
    if _CEL in body:
        schema[_CEL] = body[_CEL]  # rules on the whole object (they may compare spec with status)
    return schema


def crd(source: CrdSource = RUNS) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{source.plural}.{runs_api.GROUP}",
            "annotations": {"paiflow-operator.dev/generated-by": "make crds (paiflow_operator.crdgen)"},
        },
        "spec": {
            "group": runs_api.GROUP,
            "scope": source.scope,
            "names": {
                "kind": source.kind,
                "listKind": f"{source.kind}List",
                "plural": source.plural,
                "singular": source.singular,
                "shortNames": source.short_names,
                "categories": source.categories,
            },
            "versions": [
                {
                    "name": runs_api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": source.printer_columns,
                    **({"selectableFields": source.selectable_fields} if source.selectable_fields else {}),
                    "schema": {"openAPIV3Schema": openapi_schema(source)},
                }
            ],
        },
    }


def render(source: CrdSource = RUNS) -> str:
    header = f"# Generated by `make crds` from operator/paiflow_operator/{source.module}. Do not edit.\n"
    return header + yaml.safe_dump(crd(source), sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("crds"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        target = args.output / source.filename
        target.write_text(render(source))
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
