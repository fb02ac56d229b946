"""Log setup: JSON or text, one level for the operator and kopf alike."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import kopf

from paiflow_operator.settings import Settings

# Fields the operator's own lines carry (logging's `extra`), so that a log pipeline can filter on them.
CONTEXT_FIELDS = ("namespace", "resource", "run_id", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if settings.log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    # Per-request lines from the HTTP libraries add nothing at INFO and would drown the operator's own.
    # kopf.objects logs every handled watch event at INFO: 10,000 lines per relist at scale.
    for noisy in ("httpx", "httpcore", "urllib3", "aiohttp.access", "apscheduler", "kopf.objects"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
