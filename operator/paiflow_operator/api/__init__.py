"""The CRD types: pydantic models of every kind, the single source of truth for crds/."""
