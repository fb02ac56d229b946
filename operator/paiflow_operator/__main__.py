"""`paiflow-operator` / `python -m paiflow_operator`: run the operator against the current cluster.

Everything that would only fail later, and then as a retry loop or an STS error far from its cause (no
kubeconfig, invalid settings, a placeholder such as `<ACCOUNT_ID>` left in the RRSA role ARN), is checked
before kopf starts: one clear message naming what to fix, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

# Exit statuses: 0 ok, 1 configuration error (what to fix is printed), 2 bad command line (argparse's own).
EXIT_CONFIG = 1

# The environment the operator's own credentials come from (alibabacloud-credentials' default chain).
# Values of the secret ones are never printed, not even the placeholder found in them.
CREDENTIAL_ENV = (
    "ALIBABA_CLOUD_ROLE_ARN",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
    "ALIBABA_CLOUD_ROLE_SESSION_NAME",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)
SECRET_ENV = frozenset({"ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"})
# `<ACCOUNT_ID>`, `<CLUSTER_ID>`, `<ACCESS_KEY_ID>`: the spelling of every placeholder in deploy/ and the chart.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


class ConfigurationError(Exception):
    """Something the operator cannot start with; the message says what and how to fix it."""


def package_version() -> str:
    try:
        return version("paiflow-operator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="paiflow-operator",
        description=(
            "Mirrors Alibaba Cloud PAI pipeline runs (PAI Flow) into PaiPipelineRun resources. Runs in a pod "
            "(in-cluster ServiceAccount) or against the current kubeconfig (KUBECONFIG or ~/.kube/config)."
        ),
        epilog=(
            "Settings come from the environment (PAIFLOW_*, e.g. PAIFLOW_DEFAULT_REGION, PAIFLOW_NAMESPACES, "
            "PAIFLOW_LOG_FORMAT=json; see the README), PAI credentials from alibabacloud-credentials' default "
            "chain (ALIBABA_CLOUD_* environment, RRSA)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"paiflow-operator {package_version()}")
    return parser.parse_args(argv)


def check_placeholders(environ: Mapping[str, str]) -> None:
    """Refuses settings still holding an example's placeholder: it would surface much later as an STS error."""
    names = [*CREDENTIAL_ENV, *sorted(k for k in environ if k.startswith("PAIFLOW_"))]
    for name in names:
        value = environ.get(name)
        if value is None or not (found := PLACEHOLDER.search(value)):
            continue
        what = "a placeholder" if name in SECRET_ENV else f"the placeholder {found.group()}"
        raise ConfigurationError(
            f"{name} still holds {what} from the example configuration: set it to your own value "
            "(kustomize: deploy/overlays/rrsa/rrsa.env; Helm: the rrsa.* values) and restart"
        )


def check_kubernetes_access(environ: Mapping[str, str]) -> None:
    """In a pod the ServiceAccount, elsewhere a kubeconfig: without either kopf would retry for ever."""
    import kubernetes

    from paiflow_operator.kube import load_client_configuration

    try:
        load_client_configuration()
    except (kubernetes.config.ConfigException, OSError) as exc:
        where = environ.get("KUBECONFIG") or "~/.kube/config"
        raise ConfigurationError(
            "no Kubernetes credentials: not running in a pod (no in-cluster ServiceAccount) and no usable "
            f"kubeconfig at {where} ({exc})"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parse_args(sys.argv[1:] if argv is None else argv)

    # Imported after the command line is parsed: --help and --version answer without loading kopf.
    import kopf
    import pydantic

    from paiflow_operator.logs import configure_logging
    from paiflow_operator.settings import get_settings

    try:
        settings = get_settings()
        check_placeholders(os.environ)
        check_kubernetes_access(os.environ)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"PAIFLOW_{'_'.join(str(p) for p in err['loc']).upper() or '(settings)'}: {err['msg']}"
            for err in exc.errors()
        )
        print(f"paiflow-operator: invalid settings: {problems}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigurationError as exc:
        print(f"paiflow-operator: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    from paiflow_operator import handlers, metrics  # noqa: F401  (handlers registers the kopf handlers)

    configure_logging(settings)
    metrics.DEFAULT_POLL_INTERVAL.set(settings.default_poll_interval.total_seconds())
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        kopf.run(
            loop=runner.get_loop(),
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
        )
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux), as kopf's own CLI does: at scale the operator's CPU
    is mostly the event loop's transports and callbacks (TLS reads, a request and a watch event per status
    write), and every core it spends is one the control plane does not get (issue 22). None: asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
