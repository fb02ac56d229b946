"""process_memory.GcFreezer: survivors of a full collection are frozen (later collections skip them), and a thaw
lets cyclic garbage among them be collected after all."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from paiflow_operator.process_memory import GcFreezer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def freezer() -> Iterator[tuple[GcFreezer, Clock]]:
    clock = Clock()
    made = GcFreezer(thaw_every=600, clock=clock)
    made.install()
    try:
        yield made, clock
    finally:
        made.uninstall()
        gc.collect()


def test_a_full_collection_freezes_its_survivors_and_a_young_one_does_not(freezer: tuple[GcFreezer, Clock]) -> None:
    f, _ = freezer
    gc.unfreeze()
    gc.collect(0)
    assert f.freezes == 0 and gc.get_freeze_count() == 0
    gc.collect()
    assert f.freezes == 1 and gc.get_freeze_count() > 0


def test_later_full_collections_skip_what_is_frozen(freezer: tuple[GcFreezer, Clock]) -> None:
    """Timed as a ratio within this run: the same heap of half a million objects, collected before and after
    (the frozen one at its best of three, so that a hiccup of a noisy machine cannot make it look slow)."""
    f, _ = freezer
    held = [{"i": i} for i in range(500_000)]
    f.uninstall()  # first a full collection that walks them all
    started = time.perf_counter()
    gc.collect()
    walked_all = time.perf_counter() - started
    f.install()
    gc.collect()  # frozen now
    frozen = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        frozen.append(time.perf_counter() - started)
    print(f"full collection: {walked_all * 1000:.1f} ms walking them all, {min(frozen) * 1000:.2f} ms frozen")
    assert min(frozen) < walked_all / 5
    assert len(held) == 500_000


def test_cyclic_garbage_frozen_while_alive_is_collected_after_a_thaw(freezer: tuple[GcFreezer, Clock]) -> None:
    f, clock = freezer
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect()  # alive: frozen with the rest
    del a, b
    gc.collect()
    assert gone() is not None, "frozen: not walked, so its cycle is not found"
    clock.now = 599
    assert not f.thaw_if_due()
    clock.now = 600
    assert f.thaw_if_due() and f.thaws == 1
    gc.collect()
    assert gone() is None


def test_uninstall_thaws_and_stops_freezing() -> None:
    f = GcFreezer(thaw_every=600)
    f.install()
    gc.collect()
    assert gc.get_freeze_count() > 0
    f.uninstall()
    assert gc.get_freeze_count() == 0 and f not in gc.callbacks
    gc.collect()
    assert gc.get_freeze_count() == 0
