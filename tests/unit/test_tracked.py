"""The per-run record keeps statuses compact: the same content, strings shared between records."""

from __future__ import annotations

import json

from paiflow_operator.runs.tracked import SHARED_STRING_LENGTH, compact


def _decoded(run_id: str) -> dict[str, object]:
    status = {
        "pipelineRunId": run_id,
        "runStatus": "Succeeded",
        "duration": 60,
        "failure": {"log": "x" * (SHARED_STRING_LENGTH + 1)},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Synced", "message": "Status is in sync with PAI"},
            {"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "PAI run is Succeeded"},
        ],
    }
    return json.loads(json.dumps(status))  # as a watch event or a write's answer brings it: every string its own


def test_compact_keeps_the_content() -> None:
    status = _decoded("flow-1")
    assert compact(status) == status
    assert compact({}) == {}


def test_two_records_share_their_keys_and_short_values() -> None:
    a, b = _decoded("flow-1"), _decoded("flow-2")
    assert a["runStatus"] is not b["runStatus"]  # what compact() is for
    ca, cb = compact(a), compact(b)
    assert ca["runStatus"] is cb["runStatus"]
    key_a = next(k for k in ca if k == "conditions")
    key_b = next(k for k in cb if k == "conditions")
    assert key_a is key_b
    cond_a, cond_b = ca["conditions"][1], cb["conditions"][1]  # type: ignore[index]
    assert cond_a["message"] is cond_b["message"]
    # Long texts (a failed node's log tail) are left as they are: rarely equal, costly to hash.
    assert ca["failure"]["log"] is a["failure"]["log"]  # type: ignore[index]


def test_compact_is_a_copy() -> None:
    status = _decoded("flow-1")
    kept = compact(status)
    status["conditions"][0]["status"] = "False"  # type: ignore[index]
    assert kept["conditions"][0]["status"] == "True"  # type: ignore[index]
