"""Young-generation collections deferred while requests run, the thresholds restored as found."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import orjson
import pytest

from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.gc_deferral import YOUNG_THRESHOLD, DeferredCollection, deferred_collection
from collector.ingest import Collector, IncomingRequest
from collector.sink import S3Sink

from .conftest import track
from .test_benchmark import MemoryStore


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """CPython's defaults for the test, whatever the process had; checked unchanged after it."""
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield (700, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(*found)


def test_raised_inside_and_restored_after(thresholds: tuple[int, int, int]) -> None:
    deferred = DeferredCollection()
    with deferred:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        with deferred:  # reentrant: an inner holder leaving restores nothing
            pass
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == thresholds


def test_collection_still_runs_inside() -> None:
    """Deferred, not stopped: cycles made inside are collected before the block ends."""
    collected: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["collected"])

    gc.callbacks.append(count)
    try:
        with DeferredCollection(threshold=1_000):
            for _ in range(5_000):
                cycle: list[object] = []
                cycle.append(cycle)
                del cycle
    finally:
        gc.callbacks.remove(count)
    assert sum(collected) > 0


def test_an_error_inside_still_restores_the_thresholds(thresholds: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError), deferred_collection:
        raise ValueError("the request failed")
    assert gc.get_threshold() == thresholds


def test_a_higher_threshold_set_before_is_kept(thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(10 * YOUNG_THRESHOLD, 10, 10)
    with DeferredCollection():
        assert gc.get_threshold()[0] == 10 * YOUNG_THRESHOLD
    assert gc.get_threshold()[0] == 10 * YOUNG_THRESHOLD
    gc.set_threshold(*thresholds)


def test_overlapping_threads_restore_when_the_last_leaves(
    thresholds: tuple[int, int, int],
) -> None:
    deferred = DeferredCollection()
    first_inside, second_inside, first_left = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    seen: list[int] = []

    def first() -> None:
        with deferred:
            first_inside.set()
            second_inside.wait(5)
        first_left.set()

    def second() -> None:
        first_inside.wait(5)
        with deferred:
            second_inside.set()
            first_left.wait(5)
            seen.append(gc.get_threshold()[0])  # the first holder left; this one is inside

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [YOUNG_THRESHOLD]


class RecordingStore(MemoryStore):
    """Notes the youngest generation's threshold while the events are written."""

    def __init__(self) -> None:
        super().__init__()
        self.thresholds: list[int] = []

    def put_new(self, key: str, body: bytes, metadata: object = None) -> bool:
        self.thresholds.append(gc.get_threshold()[0])
        return super().put_new(key, body, metadata)


def test_a_request_runs_with_collection_deferred(thresholds: tuple[int, int, int]) -> None:
    settings = Settings(events_bucket="events", identity_table="identity")
    store = RecordingStore()
    sources = SourceCache(lambda key_hash: Source("src", "test"), ttl=60)
    collector = Collector(settings, sources, S3Sink(store, settings.gzip_level))
    body = orjson.dumps({"batch": [track(1), track(2)], "writeKey": "key"}).decode()
    request = IncomingRequest(
        call="batch", body=body, is_base64_encoded=False, request_id="r", ip=None
    )

    assert collector.ingest(request).accepted == 2
    assert store.thresholds == [YOUNG_THRESHOLD]
    assert gc.get_threshold() == thresholds
