"""``python -m paiflow_emulator --port 0 --keys AK:SECRET [--scenario demo|file.json] [--latency 0.05]``.

Prints the base URL on the first line of stdout (and writes it to ``--url-file``), then serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import scenario
from .server import Emulator


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            left, sep, right = item.partition(":")
            if not sep or not left or not right:
                raise SystemExit(f"--{what} expects LEFT:RIGHT, got {item!r}")
            out[left] = right
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paiflow-emulator", description="PAI Flow API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--keys", action="append", default=[], help="ACCESS_KEY_ID:SECRET (repeatable)")
    parser.add_argument("--sts", action="append", default=[], help="SECURITY_TOKEN:ACCESS_KEY_ID (repeatable)")
    parser.add_argument("--scenario", help="'demo' or a JSON scenario file")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--qps-limit", type=float, default=None, help="global QPS limit (Throttling.User)")
    parser.add_argument("--qps-burst", type=float, default=None)
    parser.add_argument("--max-skew", type=float, default=900.0)
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--sample-quirks", action="store_true", help="trailing newlines as in the docs")
    parser.add_argument(
        "--modified-time",
        choices=("transition", "never", "read"),
        default="transition",
        help="how GmtModifiedTime moves: on status changes, never, or on every read of an active run",
    )
    parser.add_argument(
        "--list-lag",
        type=float,
        default=0.0,
        help="seconds a run made by CreatePipelineRun stays out of ListPipelineRuns",
    )
    parser.add_argument("--url-file", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        _pairs(args.keys, "keys"),
        _pairs(args.sts, "sts"),
        latency=args.latency,
        max_skew=args.max_skew,
        host=args.host,
        port=args.port,
        region=args.region,
        qps_limit=args.qps_limit,
        qps_burst=args.qps_burst,
        sample_quirks=args.sample_quirks,
        modified_time=args.modified_time,
        list_lag=args.list_lag,
    )
    if args.scenario:
        emulator.load_scenario(scenario.load(args.scenario))
    url = await emulator.start()
    if args.url_file:
        # Written whole then renamed, so a reader polling for the file never sees half a URL.
        tmp = args.url_file.with_suffix(args.url_file.suffix + ".tmp")
        tmp.write_text(url + "\n", encoding="utf-8")
        tmp.replace(args.url_file)
    print(url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
        if args.url_file:
            with contextlib.suppress(FileNotFoundError):
                args.url_file.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
