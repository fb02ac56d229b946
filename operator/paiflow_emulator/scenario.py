"""Ready-made scenarios: ``demo`` (one run of every kind, for the local demo) and JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEMO_WORKSPACE = "demo"

# Fixed ids so the demo's manifests can name them. Durations are seconds from the emulator's start.
DEMO: dict[str, Any] = {
    "runs": [
        {
            "id": "flow-demo-succeeds",
            "name": "train-resnet",
            "timeline": [["Initialized", 5], ["Running", 40], ["Succeeded", None]],
            "nodes": [
                {"name": "prepare", "duration": 8, "logs": ["reading oss://demo/images/", "12,800 images"]},
                {
                    "name": "features",
                    "children": [
                        {"name": "augment", "start": 8, "duration": 8},
                        {"name": "normalize", "start": 8, "duration": 6},
                    ],
                },
                {
                    "name": "train",
                    "start": 16,
                    "duration": 18,
                    "logs": [[2, "epoch 1/3 loss=1.92"], [8, "epoch 2/3 loss=0.88"], [16, "epoch 3/3 loss=0.41"]],
                    "outputs": [
                        {"name": "resnet50", "type": "Model", "info": {"uri": "oss://demo/models/resnet50/v7/"}}
                    ],
                },
                {
                    "name": "evaluate",
                    "start": 34,
                    "duration": 6,
                    "outputs": [{"name": "accuracy", "type": "Metrics", "info": {"uri": "oss://demo/metrics/v7.json"}}],
                },
            ],
        },
        {
            "id": "flow-demo-fails",
            "name": "etl-daily",
            "timeline": [
                ["Initialized", 5],
                ["Running", 25],
                ["Failed", None, "Node 'transform' exited with code 137 (OOMKilled)"],
            ],
            "nodes": [
                {"name": "extract", "duration": 8, "logs": ["SELECT * FROM sales_daily", "3,120,044 rows"]},
                {
                    "name": "transform",
                    "start": 8,
                    "duration": 17,
                    "fail": True,
                    "logs": [
                        [1, "join sales_daily x stores"],
                        [6, "shuffle: 48 GiB in memory"],
                        [15, "java.lang.OutOfMemoryError: Java heap space"],
                        [16.5, "Killed (exit code 137, OOMKilled)"],
                    ],
                },
                {"name": "load", "start": 25, "duration": 5},
            ],
        },
        {
            "id": "flow-demo-terminated",
            "name": "hyperparam-sweep",
            "timeline": [["Initialized", 5], ["Running", 30], ["Terminating", 5], ["Terminated", None]],
        },
        {
            "id": "flow-demo-suspended",
            "name": "batch-inference",
            "timeline": [
                ["Initialized", 5],
                ["Running", 15],
                ["Suspended", 20],
                ["Running", 15],
                ["Succeeded", None],
            ],
        },
        {"id": "flow-demo-skipped", "name": "conditional-export", "timeline": [["Initialized", 10], ["Skipped"]]},
        {"id": "flow-demo-long", "name": "stream-features", "timeline": [["Initialized", 5], ["Running", None]]},
        {
            "id": "flow-demo-shared",
            "name": "shared-eval",
            "shareToken": "demo-share-token",
            "accessibility": "PUBLIC",
            "timeline": [["Initialized", 5], ["Running", 35], ["Succeeded", None]],
        },
    ]
}


def demo() -> dict[str, Any]:
    runs = [{"workspaceId": DEMO_WORKSPACE, **run} for run in DEMO["runs"]]
    return {"runs": runs}


def load(name_or_path: str) -> dict[str, Any]:
    """``demo`` or the path of a JSON scenario document (see Emulator.load_scenario)."""
    if name_or_path == "demo":
        return demo()
    data = json.loads(Path(name_or_path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{name_or_path}: a scenario must be a JSON object")
    return data
