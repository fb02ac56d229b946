"""`paiflow-operator` / `python -m paiflow_operator`: run the operator against the current cluster."""

from __future__ import annotations

import sys

import kopf

from paiflow_operator import handlers  # noqa: F401  (registers the kopf handlers)
from paiflow_operator.logs import configure_logging
from paiflow_operator.settings import get_settings


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
