"""What the benchmark watches: the resources (a watch of its own), the emulator's counters, /proc, and the
API server's own request counters. Each runs on a thread so that sampling never waits on the others."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import ProcSample, read_proc

RESOURCE_PATH = "/apis/paiflow-operator.dev/v1alpha1/paipipelineruns"
Key = tuple[str, str]


def admin_tls(workdir: Path) -> ssl.SSLContext:
    """Admin (system:masters) client certificate from the control plane's own PKI: the benchmark's
    identity, never the operator's."""
    pki = workdir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def kube_client(workdir: Path, server: str, timeout: float | None = 60.0) -> httpx.Client:
    return httpx.Client(
        base_url=server,
        verify=admin_tls(workdir),
        timeout=timeout,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )


def kube_async_client(workdir: Path, server: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server,
        verify=admin_tls(workdir),
        timeout=120.0,
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    at: float  # epoch seconds when the benchmark read it
    type: str
    key: Key
    run_status: str | None
    status_changed: bool  # runStatus differs from what the previous event showed
    fields: tuple[str, ...] = ()  # status fields that differ from the previous event (MODIFIED only)


class ResourceWatch(threading.Thread):
    """A watch on all PaiPipelineRuns: when each status first showed, and every resourceVersion bump."""

    def __init__(self, workdir: Path, server: str) -> None:
        super().__init__(name="bench-watch", daemon=True)
        self._client = kube_client(workdir, server, timeout=None)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self.events: list[WatchEvent] = []
        self.status: dict[Key, str | None] = {}
        self.uids: dict[Key, str] = {}
        # The last status seen per resource, to name what each write changed.
        self.last: dict[Key, dict[str, Any]] = {}
        # (key, runStatus) -> when the watch first showed it.
        self.first_seen: dict[tuple[Key, str], float] = {}
        self.resource_version = ""
        self.error: str | None = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._stream()
            except Exception as exc:
                if self._stop_event.is_set():
                    return
                self.error = repr(exc)
                time.sleep(0.5)

    def _list(self) -> None:
        response = self._client.get(RESOURCE_PATH)
        response.raise_for_status()
        data = response.json()
        now = time.time()
        with self._lock:
            for item in data["items"]:
                self._record(now, "LISTED", item)
            self.resource_version = data["metadata"]["resourceVersion"]

    def _stream(self) -> None:
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": "900",
        }
        with self._client.stream("GET", RESOURCE_PATH, params=params) as response:
            self._response = response
            response.raise_for_status()
            for line in response.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: list again
                        self.resource_version = ""
                    return
                now = time.time()
                with self._lock:
                    self.resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._record(now, kind, obj)

    def _record(self, now: float, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        status = obj.get("status") or {}
        run_status = status.get("runStatus")
        changed = run_status != self.status.get(key)
        fields = _changed_fields(self.last.get(key, {}), status) if kind == "MODIFIED" else ()
        self.last[key] = status
        self.status[key] = run_status
        self.uids[key] = meta.get("uid", "")
        if run_status is not None:
            self.first_seen.setdefault((key, run_status), now)
        self.events.append(WatchEvent(now, kind, key, run_status, changed and kind == "MODIFIED", fields))

    def stop(self) -> None:
        self._stop_event.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()
        self._client.close()

    def snapshot(self) -> dict[Key, str | None]:
        with self._lock:
            return dict(self.status)

    def count_with_status(self) -> int:
        with self._lock:
            return sum(1 for s in self.status.values() if s is not None)

    def events_between(self, start: float, end: float) -> list[WatchEvent]:
        with self._lock:
            return [e for e in self.events if start <= e.at < end]


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """Top-level status fields that differ; conditions by type (`conditions.Ready`)."""
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        if name == "conditions":
            before = {c.get("type"): c for c in old.get(name) or []}
            after = {c.get("type"): c for c in new.get(name) or []}
            out += [f"conditions.{t}" for t in sorted(set(before) | set(after)) if before.get(t) != after.get(t)]
        elif old.get(name) != new.get(name):
            out.append(name)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CounterSample:
    at: float  # epoch
    total: int
    throttled: int
    actions: dict[str, int]


class EmulatorCounters(threading.Thread):
    """Samples an emulator's call counters every `period` seconds (without the per-run table: cheap)."""

    def __init__(self, url: str, period: float = 0.1) -> None:
        super().__init__(name="bench-counters", daemon=True)
        self.url = url
        self.period = period
        self.samples: list[CounterSample] = []
        self._stop_event = threading.Event()
        self._client = httpx.Client(base_url=url, timeout=10)

    def fetch(self, runs: bool = False, seconds: bool = False) -> dict[str, Any]:
        params = {"runs": "1" if runs else "0", "seconds": "1" if seconds else "0"}
        response = self._client.get("/_emulator/counters", params=params)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def per_run(self) -> Counter[str]:
        return Counter(self.fetch(runs=True)["runs"])

    def run(self) -> None:
        client = httpx.Client(base_url=self.url, timeout=5)
        try:
            while not self._stop_event.wait(self.period):
                with contextlib.suppress(httpx.HTTPError):
                    data = client.get("/_emulator/counters", params={"runs": "0"}).json()
                    throttled = int(data["outcomes"].get("Throttling.User", 0))
                    self.samples.append(CounterSample(time.time(), int(data["total"]), throttled, data["actions"]))
        finally:
            client.close()

    def stop(self) -> None:
        self._stop_event.set()
        self._client.close()

    def at(self, epoch: float) -> CounterSample:
        """The last sample taken at or before `epoch` (the first sample if none was)."""
        best = self.samples[0]
        for sample in self.samples:
            if sample.at > epoch:
                break
            best = sample
        return best

    def max_in_one_second(self, start: float, end: float) -> int:
        """Most calls the emulator answered in any 1-second window starting at a sample in [start, end)."""
        samples = [s for s in self.samples if start <= s.at <= end + 1.0]
        best = 0
        j = 0
        for i, first in enumerate(samples):
            if first.at >= end:
                break
            j = max(j, i)
            while j + 1 < len(samples) and samples[j + 1].at <= first.at + 1.0:
                j += 1
            best = max(best, samples[j].total - first.total)
        return best


class ProcSampler(threading.Thread):
    """/proc samples of one process every `period` seconds until it exits or stop() is called."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        super().__init__(name=f"bench-proc-{pid}", daemon=True)
        self.pid = pid
        self.period = period
        self.samples: list[ProcSample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            sample = read_proc(self.pid)
            if sample is None:
                return
            self.samples.append(sample)
            if self._stop_event.wait(self.period):
                return

    def stop(self) -> None:
        self._stop_event.set()

    def window(self, start_mono: float, end_mono: float) -> list[ProcSample]:
        return [s for s in self.samples if start_mono <= s.at <= end_mono]


def apiserver_requests(client: httpx.Client) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total summed over codes, keyed by (verb, resource, subresource)."""
    text = client.get("/metrics").text
    out: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            out[(labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))] += int(
                sample.value
            )
    return out


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
