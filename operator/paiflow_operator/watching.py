"""The runs' own list-then-watch, as client-go's reflector does it: pages fed as they arrive, then one watch
from the list's resourceVersion, resumed where it stopped, listed again only when the server has forgotten that
version (410 Gone) or after an unforeseen error, and then every run gone meanwhile is fed as deleted.

Why not kopf's watch for runs, as for the other kinds: kopf gives every event of every object its own worker,
Body, Patch, loggers and handler bookkeeping. The operator's own status writes come back as events, one per
write, and in a mass finish of 10,000 runs kopf's per-event machinery was 27% of the operator's CPU (py-spy),
on the two cores the API server needs for those writes. Here an event costs one json.loads and the feed.
kopf still watches policies, namespaces, workspaces and schedules (a few events each) and runs the probes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from paiflow_operator.kube import KubeError

log = logging.getLogger(__name__)

Feed = Callable[[Mapping[str, Any], str | None], None]

# As kopf's own watches are set (handlers.py): the server ends a watch after this, the client gives up later.
SERVER_TIMEOUT = 300
CLIENT_TIMEOUT = 330
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class WatchApi(Protocol):
    async def list_page(self, path: str, query: list[tuple[str, str]], request_timeout: float = 60.0) -> Any: ...

    def watch_events(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]: ...


class Gone(Exception):
    """The server no longer has the resourceVersion asked for (or the list's continue token): list again."""


@dataclass(frozen=True)
class Scope:
    """What one operator watches: a path per namespace named, or the whole cluster, filtered here when the
    namespaces are patterns (kopf's syntax: globs, `!` excludes)."""

    paths: tuple[str, ...]
    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, collection: str, plural: str, namespaces: list[str]) -> Scope:
        if namespaces and not any(set(ns) & set("*?[!") for ns in namespaces):
            return cls(tuple(f"{collection}/namespaces/{ns}/{plural}" for ns in namespaces))
        return cls((f"{collection}/{plural}",), tuple(namespaces))

    def accepts(self, namespace: str) -> bool:
        if not self.patterns:
            return True
        includes = [p for p in self.patterns if not p.startswith("!")]
        excludes = [p[1:] for p in self.patterns if p.startswith("!")]
        included = not includes or any(fnmatch.fnmatchcase(namespace, p) for p in includes)
        return included and not any(fnmatch.fnmatchcase(namespace, p) for p in excludes)


def where(exc: BaseException) -> str:
    """An exception's type and the file and line it was raised at, without its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    return f"{type(exc).__name__} at {PurePath(frames[-1].filename).name}:{frames[-1].lineno}"


class Reflector:
    """One path's list-then-watch, fed to `feed(body, event_type)` with kopf.on.event's types: None for a
    listed object, then ADDED, MODIFIED, DELETED."""

    def __init__(
        self,
        kube: WatchApi,
        path: str,
        feed: Feed,
        *,
        accepts: Callable[[str], bool] = lambda namespace: True,
        page_size: int = 500,
        server_timeout: int = SERVER_TIMEOUT,
        client_timeout: float = CLIENT_TIMEOUT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.kube, self.path, self.feed, self.accepts = kube, path, feed, accepts
        self.page_size, self.server_timeout, self.client_timeout = page_size, server_timeout, client_timeout
        self.sleep, self.rng = sleep, rng
        # uid -> (namespace, name) of every object fed and not deleted: what a new list no longer has was deleted
        # while nobody watched. Names only, not bodies: bodies of 10,000 runs are what the watch must not keep.
        self.known: dict[str, tuple[str, str]] = {}
        self.resource_version: str | None = None
        self.listed = asyncio.Event()  # set once the first list is over (every object there was, fed)
        self.lists = 0

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    self.listed.set()
                await self._watch()
                failures = 0
            except Gone:
                log.info("watch of %s: resourceVersion expired, listing again", self.path)
                self.resource_version = None
            except KubeError as exc:
                failures += 1
                delay = self._backoff(failures)
                level = logging.WARNING if failures > 1 or exc.status else logging.INFO
                log.log(level, "watch of %s: %s %s; again in %.1f s", self.path, exc.status, exc.reason, delay)
                await self.sleep(delay)
            except Exception as exc:
                # Anything unforeseen (an undecodable line from a proxy, a bug): as client-go's reflector, the
                # watch starts over from a new list after the backoff, rather than ending and leaving every
                # run unwatched until the liveness probe restarts the pod. The error's type and place only: a
                # library's text is not trusted to be clean.
                failures += 1
                delay = self._backoff(failures)
                log.error("watch of %s failed (%s); listing again in %.1f s", self.path, where(exc), delay)
                self.resource_version = None
                await self.sleep(delay)

    def _backoff(self, failures: int) -> float:
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (failures - 1)) * (0.5 + self.rng() / 2)

    async def _list(self) -> None:
        seen: dict[str, tuple[str, str]] = {}
        token = ""
        while True:
            query = [("limit", str(self.page_size))] + ([("continue", token)] if token else [])
            try:
                page = await self.kube.list_page(self.path, query)
            except KubeError as exc:
                if exc.status == 410:  # the continue token expired: the list starts over
                    raise Gone from None
                raise
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                namespace, uid = meta.get("namespace", ""), meta.get("uid", "")
                if self.accepts(namespace):
                    seen[uid] = (namespace, meta.get("name", ""))
                    self._deliver(item, None)
            page_meta = page.get("metadata") or {}
            token = page_meta.get("continue") or ""
            if not token:
                break
        self.lists += 1
        for uid, (namespace, name) in self.known.items():
            if uid not in seen:
                self._deliver({"metadata": {"namespace": namespace, "name": name, "uid": uid}}, "DELETED")
        self.known = seen
        self.resource_version = str(page_meta.get("resourceVersion") or "") or None
        if self.resource_version is None:
            raise KubeError(0, "NoResourceVersion", "the list gave no resourceVersion to watch from")

    async def _watch(self) -> None:
        assert self.resource_version is not None
        query = [
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", self.resource_version),
            ("timeoutSeconds", str(int(self.server_timeout))),
        ]
        try:
            async for event in self.kube.watch_events(self.path, query, self.client_timeout):
                self._observe(event)
        except KubeError as exc:
            if exc.status == 410:
                raise Gone from None
            raise

    def _observe(self, event: Mapping[str, Any]) -> None:
        event_type, body = event.get("type"), event.get("object") or {}
        if event_type == "ERROR":
            code = int(body.get("code") or 0)
            if code == 410:
                raise Gone
            raise KubeError(code, str(body.get("reason", "")), str(body.get("message", "")))
        meta = body.get("metadata") or {}
        self.resource_version = meta.get("resourceVersion") or self.resource_version
        if event_type == "BOOKMARK" or event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        namespace, uid = meta.get("namespace", ""), meta.get("uid", "")
        if not self.accepts(namespace):
            return
        if event_type == "DELETED":
            self.known.pop(uid, None)
        else:
            self.known[uid] = (namespace, meta.get("name", ""))
        self._deliver(body, event_type)

    def _deliver(self, body: Mapping[str, Any], event_type: str | None) -> None:
        try:
            self.feed(body, event_type)
        except Exception:
            # As kopf does for a failing handler: logged, and the watch goes on with the next event.
            meta = body.get("metadata") or {}
            log.exception("feeding %s %s/%s failed", event_type, meta.get("namespace"), meta.get("name"))


class Watch:
    """Every path of a scope, each its own reflector, in one task."""

    def __init__(self, kube: WatchApi, scope: Scope, feed: Feed, page_size: int = 500) -> None:
        self.reflectors = [
            Reflector(kube, path, feed, accepts=scope.accepts, page_size=page_size) for path in scope.paths
        ]
        self.task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="paiflow-runs-watch")

    async def _run(self) -> None:
        await asyncio.gather(*(reflector.run() for reflector in self.reflectors))

    @property
    def listed(self) -> bool:
        return all(r.listed.is_set() for r in self.reflectors)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
