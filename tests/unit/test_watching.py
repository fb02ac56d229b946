"""The runs' own list-then-watch (watching.py) against a scripted API: what is fed, from which resourceVersion it
resumes, when it lists again and what it then says was deleted. The real API server's side is in
tests/e2e/test_runs_watch.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from paiflow_operator.kube import KubeError
from paiflow_operator.watching import Reflector, Scope

PATH = "/apis/paiflow-operator.dev/v1alpha1/paipipelineruns"


def run(name: str, rv: str, namespace: str = "team-a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": rv}}


class Stop(BaseException):
    """Ends the reflector's loop when the script runs out (not an Exception: the reflector outlives those)."""


class ScriptedApi:
    """List pages and watch streams handed out in order; each entry is a value, or an exception to raise."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.list_queries: list[list[tuple[str, str]]] = []
        self.watch_queries: list[dict[str, str]] = []

    async def list_page(self, path: str, query: list[tuple[str, str]], request_timeout: float = 60.0) -> Any:
        self.list_queries.append(query)
        if not self.lists:
            raise Stop
        page = self.lists.pop(0)
        if isinstance(page, Exception):
            raise page
        return page

    async def watch_events(
        self, path: str, query: list[tuple[str, str]], read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        self.watch_queries.append(dict(query))
        if not self.watches:
            raise Stop
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


class Fed:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str]] = []

    def __call__(self, body: Mapping[str, Any], event_type: str | None) -> None:
        self.events.append((event_type, body["metadata"]["name"]))


def page(items: list[dict[str, Any]], rv: str = "", cont: str = "") -> dict[str, Any]:
    return {"items": items, "metadata": {"resourceVersion": rv, "continue": cont}}


async def drive(api: ScriptedApi, fed: Fed, **kwargs: Any) -> Reflector:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    reflector = Reflector(api, PATH, fed, page_size=2, sleep=sleep, rng=lambda: 1.0, **kwargs)
    with pytest.raises(Stop):
        await reflector.run()
    reflector.slept = slept  # type: ignore[attr-defined]
    return reflector


async def test_pages_are_fed_as_listed_then_the_watch_resumes_from_the_last_version_it_saw() -> None:
    api = ScriptedApi(
        [page([run("a", "1"), run("b", "2")], cont="next"), page([run("c", "3")], rv="10")],
        [
            [
                {"type": "ADDED", "object": run("d", "11")},
                {"type": "MODIFIED", "object": run("a", "12")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [{"type": "DELETED", "object": run("b", "16")}],
        ],
    )
    fed = Fed()
    reflector = await drive(api, fed)
    assert fed.events == [(None, "a"), (None, "b"), (None, "c"), ("ADDED", "d"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert api.list_queries == [[("limit", "2")], [("limit", "2"), ("continue", "next")]]
    # The server ended the first watch: the next starts where it stopped (the bookmark), with no new list.
    assert [q["resourceVersion"] for q in api.watch_queries] == ["10", "15", "16"]
    assert api.watch_queries[0]["allowWatchBookmarks"] == "true"
    assert reflector.lists == 1 and reflector.listed.is_set()
    assert sorted(reflector.known) == ["uid-a", "uid-c", "uid-d"]


@pytest.mark.parametrize("how", ["error event", "http status"])
async def test_an_expired_version_lists_again_and_what_is_gone_meanwhile_is_fed_as_deleted(how: str) -> None:
    expired: list[Any] = (
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}]
        if how == "error event"
        else [KubeError(410, "Gone", "too old")]
    )
    api = ScriptedApi(
        [page([run("a", "1"), run("b", "2"), run("c", "3", "team-b")], rv="10"), page([run("b", "30")], rv="31")],
        [[{"type": "MODIFIED", "object": run("a", "11")}, *expired], []],
    )
    fed = Fed()
    reflector = await drive(api, fed)
    assert fed.events[-3:] == [(None, "b"), ("DELETED", "a"), ("DELETED", "c")]
    assert reflector.lists == 2 and reflector.known == {"uid-b": ("team-a", "b")}
    assert api.watch_queries[-1]["resourceVersion"] == "31"
    assert reflector.slept == []  # an expired version is no failure: listed again at once  # type: ignore[attr-defined]


async def test_a_deleted_run_is_fed_with_its_namespace_name_and_uid_when_only_a_new_list_tells() -> None:
    got: list[Mapping[str, Any]] = []
    api = ScriptedApi([page([run("a", "1")], rv="5"), page([], rv="9")], [[KubeError(410, "Gone", "")]])
    reflector = Reflector(api, PATH, lambda body, event_type: got.append(body), page_size=10)
    with pytest.raises(Stop):
        await reflector.run()
    assert got[-1] == {"metadata": {"namespace": "team-a", "name": "a", "uid": "uid-a"}}


async def test_a_lost_connection_resumes_the_watch_after_a_growing_backoff_without_listing_again() -> None:
    lost = KubeError(0, "ClientPayloadError", "the API server could not be reached")
    api = ScriptedApi(
        [page([run("a", "1")], rv="5")],
        [
            [{"type": "MODIFIED", "object": run("a", "6")}, lost],
            [lost],
            [{"type": "MODIFIED", "object": run("a", "8")}],
        ],
    )
    fed = Fed()
    reflector = await drive(api, fed)
    assert reflector.lists == 1
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "6", "6", "8"]
    assert reflector.slept == [1.0, 2.0]  # type: ignore[attr-defined]
    assert fed.events == [(None, "a"), ("MODIFIED", "a"), ("MODIFIED", "a")]


async def test_an_unforeseen_error_lists_again_after_the_backoff_and_logs_no_library_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An undecodable line (a proxy cutting a stream) raised ValueError out of the watch: the whole runs' watch
    # ended until the liveness probe restarted the pod.
    garbled = ValueError("Expecting value near token=sk-LEAKED")
    api = ScriptedApi(
        [page([run("a", "1"), run("b", "2")], rv="5"), page([run("a", "7")], rv="9")],
        [[{"type": "MODIFIED", "object": run("a", "6")}, garbled], [{"type": "MODIFIED", "object": run("a", "10")}]],
    )
    fed = Fed()
    with caplog.at_level(logging.DEBUG):
        reflector = await drive(api, fed)
    assert reflector.lists == 2 and reflector.slept == [1.0]  # type: ignore[attr-defined]
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "9", "10"]
    # b went while nobody watched: the new list tells, and it is fed as deleted once.
    assert fed.events == [(None, "a"), (None, "b"), ("MODIFIED", "a"), (None, "a"), ("DELETED", "b"), ("MODIFIED", "a")]
    assert "ValueError at test_watching.py:" in caplog.text
    assert "LEAKED" not in caplog.text and "Expecting" not in caplog.text


async def test_an_expired_continue_token_starts_the_list_over() -> None:
    api = ScriptedApi(
        [page([run("a", "1")], cont="t1"), KubeError(410, "Expired", "continue"), page([run("a", "1")], rv="7")],
        [[]],
    )
    fed = Fed()
    reflector = await drive(api, fed)
    assert api.list_queries == [[("limit", "2")], [("limit", "2"), ("continue", "t1")], [("limit", "2")]]
    assert reflector.lists == 1 and api.watch_queries[0]["resourceVersion"] == "7"


async def test_a_failing_list_is_retried_with_backoff_and_nothing_is_fed_twice_as_deleted() -> None:
    forbidden = KubeError(403, "Forbidden", "cannot list")
    api = ScriptedApi([forbidden, forbidden, page([run("a", "1")], rv="3")], [[]])
    fed = Fed()
    reflector = await drive(api, fed)
    assert reflector.slept == [1.0, 2.0]  # type: ignore[attr-defined]
    assert fed.events == [(None, "a")]
    assert reflector.listed.is_set() and reflector.lists == 1


async def test_a_feed_that_fails_is_logged_and_the_watch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def feed(body: Mapping[str, Any], event_type: str | None) -> None:
        seen.append(body["metadata"]["name"])
        if body["metadata"]["name"] == "bad":
            raise ValueError("boom")

    api = ScriptedApi(
        [page([run("bad", "1"), run("good", "2")], rv="3")], [[{"type": "ADDED", "object": run("new", "4")}]]
    )
    reflector = Reflector(api, PATH, feed, page_size=10)
    with pytest.raises(Stop):
        await reflector.run()
    assert seen == ["bad", "good", "new"]
    assert "feeding None team-a/bad failed" in caplog.text


async def test_patterns_watch_the_cluster_and_feed_only_the_namespaces_they_match() -> None:
    scope = Scope.of("/apis/g/v1", "runs", ["team-*", "!team-secret"])
    assert scope.paths == ("/apis/g/v1/runs",)
    api = ScriptedApi(
        [page([run("a", "1", "team-a"), run("b", "2", "other"), run("c", "3", "team-secret")], rv="4")],
        [[{"type": "ADDED", "object": run("d", "5", "other")}, {"type": "ADDED", "object": run("e", "6", "team-b")}]],
    )
    fed = Fed()
    await drive(api, fed, accepts=scope.accepts)
    assert fed.events == [(None, "a"), ("ADDED", "e")]
    assert api.watch_queries[-1]["resourceVersion"] == "6"  # versions of what is not fed still count


def test_named_namespaces_are_each_watched_on_their_own_and_none_means_the_cluster() -> None:
    named = Scope.of("/apis/g/v1", "runs", ["a", "b"])
    assert named.paths == ("/apis/g/v1/namespaces/a/runs", "/apis/g/v1/namespaces/b/runs")
    assert named.accepts("anything")
    assert Scope.of("/apis/g/v1", "runs", []).paths == ("/apis/g/v1/runs",)


async def test_stopping_the_watch_cancels_every_reflector() -> None:
    from paiflow_operator.watching import Watch

    never = asyncio.Event()

    class Hanging(ScriptedApi):
        async def list_page(self, path: str, query: list[tuple[str, str]], request_timeout: float = 60.0) -> Any:
            await never.wait()

    watch = Watch(Hanging([], []), Scope.of("/apis/g/v1", "runs", ["a", "b"]), Fed())
    watch.start()
    await asyncio.sleep(0)
    assert watch.task is not None and not watch.task.done() and not watch.listed
    await watch.stop()
    assert watch.task.done()
