"""Log setup: JSON lines a log pipeline can parse, and kopf's per-event chatter kept out of INFO."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from paiflow_operator.settings import Settings
from paiflow_operator.logs import configure_logging
configure_logging(Settings(log_format="{fmt}", log_level="INFO"))
logging.getLogger("paiflow_operator.runs.scheduler").info("synced %s", "ml/train")
logging.getLogger("paiflow_operator.runs.scheduler").warning(
    "ml/train run=flow-1 Failed: boom",
    extra={{"namespace": "ml", "resource": "train", "run_id": "flow-1", "reason": "Failed"}},
)
logging.getLogger("kopf.objects").info("Handler 'watch' succeeded.")
logging.getLogger("kopf.activities").warning("kopf warning")
"""


def _run(fmt: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(fmt=fmt)], capture_output=True, text=True, check=True, timeout=60
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


def test_json_format_emits_one_json_object_per_line() -> None:
    lines = _run("json")
    records = [json.loads(line) for line in lines]
    assert {
        "logger": "paiflow_operator.runs.scheduler",
        "message": "synced ml/train",
        "level": "INFO",
    }.items() <= records[0].items()
    assert any(r["message"] == "kopf warning" for r in records)
    # A status transition carries its context as fields a log pipeline can filter on.
    transition = next(r for r in records if r["message"].startswith("ml/train run="))
    assert {
        "namespace": "ml",
        "resource": "train",
        "run_id": "flow-1",
        "reason": "Failed",
    }.items() <= transition.items()


def test_per_event_kopf_lines_are_not_logged_at_info() -> None:
    for fmt in ("json", "text"):
        text = "\n".join(_run(fmt))
        assert "synced ml/train" in text
        assert "Handler 'watch' succeeded." not in text
