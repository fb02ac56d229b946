"""What every CRD type shares: the models' base (unknown fields ignored, as the API server may add some) and
the shape of a CEL validation rule."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


def _cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
