"""PAI Flow API client: signing, credentials, typed errors and response models."""

from .client import API_VERSION, DEFAULT_USER_AGENT, PaiClient, classify_error, default_endpoint
from .credentials import Credentials, CredentialSource, DefaultChainSource, StaticCredentialSource
from .errors import (
    RETRYABLE_KINDS,
    AuthError,
    BadRequestError,
    CredentialsError,
    ErrorKind,
    MalformedResponseError,
    NotFoundError,
    PaiError,
    ServerError,
    ThrottledError,
    TransportError,
)
from .models import TERMINAL_STATUSES, PipelineRun, RunList, RunStatus, RunStatusList, RunStatusSummary
from .paging import ALL_PAGES_ORDER, collect_pages
from .regions import PAI_REGIONS

__all__ = [
    "ALL_PAGES_ORDER",
    "API_VERSION",
    "DEFAULT_USER_AGENT",
    "PAI_REGIONS",
    "RETRYABLE_KINDS",
    "TERMINAL_STATUSES",
    "AuthError",
    "BadRequestError",
    "CredentialSource",
    "Credentials",
    "CredentialsError",
    "DefaultChainSource",
    "ErrorKind",
    "MalformedResponseError",
    "NotFoundError",
    "PaiClient",
    "PaiError",
    "PipelineRun",
    "RunList",
    "RunStatus",
    "RunStatusList",
    "RunStatusSummary",
    "ServerError",
    "StaticCredentialSource",
    "ThrottledError",
    "TransportError",
    "classify_error",
    "collect_pages",
    "default_endpoint",
]
