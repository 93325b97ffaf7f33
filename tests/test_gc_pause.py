"""The garbage collector held off while requests run, and restored as found."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import orjson
import pytest

from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.gc_pause import CollectionPause, collection_paused
from collector.ingest import Collector, IncomingRequest
from collector.sink import S3Sink

from .conftest import track
from .test_benchmark import MemoryStore


@pytest.fixture
def collecting() -> Iterator[None]:
    """Every test starts and ends with the collector enabled, as a process normally is."""
    gc.enable()
    yield
    assert gc.isenabled()


def test_disabled_inside_and_enabled_again_after(collecting: None) -> None:
    pause = CollectionPause()
    with pause:
        assert not gc.isenabled()
        with pause:  # reentrant: an inner holder leaving does not resume collection
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_still_resumes_collection(collecting: None) -> None:
    with pytest.raises(ValueError), collection_paused:
        raise ValueError("the request failed")
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled(collecting: None) -> None:
    gc.disable()
    try:
        with CollectionPause():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_threads_resume_collection_when_the_last_leaves(collecting: None) -> None:
    pause = CollectionPause()
    first_inside, second_inside, first_left = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    seen: list[bool] = []

    def first() -> None:
        with pause:
            first_inside.set()
            second_inside.wait(5)
        first_left.set()

    def second() -> None:
        first_inside.wait(5)
        with pause:
            second_inside.set()
            first_left.wait(5)
            seen.append(gc.isenabled())  # the first holder left; this one is still inside

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [False]


class RecordingStore(MemoryStore):
    """Notes whether the collector was collecting while the events were written."""

    def __init__(self) -> None:
        super().__init__()
        self.collecting: list[bool] = []

    def put_new(self, key: str, body: bytes, metadata: object = None) -> bool:
        self.collecting.append(gc.isenabled())
        return super().put_new(key, body, metadata)


def test_a_request_runs_without_collection_and_restores_it(collecting: None) -> None:
    settings = Settings(events_bucket="events", identity_table="identity")
    store = RecordingStore()
    sources = SourceCache(lambda key_hash: Source("src", "test"), ttl=60)
    collector = Collector(settings, sources, S3Sink(store, settings.gzip_level))
    body = orjson.dumps({"batch": [track(1), track(2)], "writeKey": "key"}).decode()
    request = IncomingRequest(
        call="batch", body=body, is_base64_encoded=False, request_id="r", ip=None
    )

    assert collector.ingest(request).accepted == 2
    assert store.collecting == [False]
    assert gc.isenabled()
