"""The per-event budget: decode, validate, stamp, serialise, compress a 500-message batch.

Ratios are against a floor measured in the same run (parse + serialise + compress the same data),
because these machines are noisy; the absolute figure is CPU time per message.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.ingest import Collector, IncomingRequest
from collector.ledger import Ledger
from collector.sink import S3Sink
from collector.storage import gzip_lines

pytestmark = pytest.mark.bench

MESSAGES = 500
MAX_RATIO = 1.8
# Every bound is against the floor of the same run, so a slower or busier machine (seen here:
# the same floor at 4.1 ms and at 6.5 ms an hour apart) moves the bound with the work. On the
# development machine's 8.2 µs-a-message floor these are 20 µs a message with the ledger, and
# 2.5 µs for the ledger's own work.
MAX_RATIO_WITH_LEDGER = 2.4
# The messageId ledger's own work (its DynamoDB requests built, the plan made), as a share of
# the floor; botocore's serialisation of those requests is AWS-call CPU, like the S3 PUT's,
# measured in tests/measure_cost.py.
MAX_LEDGER_SHARE = 0.3
ROUNDS = 60
ATTEMPTS = 5


class MemoryStore:
    """Stands in for S3 so only CPU is measured; counts the PUTs it is asked for."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, bytes]] = []

    def put_new(self, key: str, body: bytes, metadata: Any = None) -> bool:
        self.puts.append((key.split("/", 1)[0], body))
        return True

    def exists(self, key: str) -> bool:
        return False


class FreshLedgerTable:
    """Stands in for the DynamoDB client under the ledger: every message is new, every claim
    succeeds; counts the calls, so the benchmark measures the ledger's own CPU per message."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("BatchGetItem")
        return {"Responses": {table: [] for table in RequestItems}}

    def transact_write_items(self, TransactItems: list[Any]) -> dict[str, Any]:
        self.calls.append("TransactWriteItems")
        return {}


def client_batch() -> bytes:
    """A ~300 KB batch exactly as segment-analytics-python builds and serialises it."""
    client = Client("bench-key", send=False)
    messages = []
    for n in range(MESSAGES):
        _, message = client.track(
            f"user-{n % 50}",
            "Order Completed",
            {
                "orderId": f"order-{n}",
                "revenue": 19.99 + n,
                "currency": "EUR",
                "products": [{"sku": f"sku-{n}", "name": "Espresso cups", "price": 9.5}],
            },
            context={
                "page": {
                    "url": f"https://shop.example/checkout/{n}?step=pay",
                    "referrer": "https://shop.example/cart",
                },
                "userAgent": "Mozilla/5.0 (X11; Linux aarch64) Gecko/20100101 Firefox/131.0",
            },
        )
        messages.append(message)
    body = {"batch": messages, "sentAt": datetime.now(UTC).isoformat(), "writeKey": "bench-key"}
    return json.dumps(body).encode()


def best_cpu_seconds(*runs: Callable[[], object]) -> list[float]:
    """The least CPU time of each run over ROUNDS interleaved rounds, so noise hits all alike."""
    best = [float("inf")] * len(runs)
    for _ in range(ROUNDS):
        for position, run in enumerate(runs):
            start = time.process_time()
            run()
            best[position] = min(best[position], time.process_time() - start)
    return best


@dataclass(frozen=True)
class Measurement:
    batch_bytes: int
    floor_seconds: float
    pipeline_seconds: float
    # The same pipeline with the messageId ledger (DedupeScope=message) on a stand-in table.
    with_ledger_seconds: float
    source_lookups: int
    puts: list[str]
    ledger_calls: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.pipeline_seconds / self.floor_seconds

    @property
    def ratio_with_ledger(self) -> float:
        return self.with_ledger_seconds / self.floor_seconds

    @property
    def ledger_share(self) -> float:
        return (self.with_ledger_seconds - self.pipeline_seconds) / self.floor_seconds

    @property
    def microseconds_per_message(self) -> float:
        return self.with_ledger_seconds / MESSAGES * 1e6

    @property
    def ledger_microseconds_per_message(self) -> float:
        return (self.with_ledger_seconds - self.pipeline_seconds) / MESSAGES * 1e6

    def within_budget(self) -> bool:
        return (
            self.ratio <= MAX_RATIO
            and self.ratio_with_ledger <= MAX_RATIO_WITH_LEDGER
            and self.ledger_share <= MAX_LEDGER_SHARE
        )


def measure() -> Measurement:
    """One interpreter's measurement: the floor and the pipeline without and with the ledger,
    interleaved. The ratio to the floor is the hot path's own work, without the ledger's AWS
    requests (as without the S3 PUT's); the ledger's work is measured as the difference."""
    raw = client_batch()
    settings = Settings(events_bucket="bench", identity_table="bench")
    lookups: list[str] = []

    def lookup(key_hash: str) -> Source:
        lookups.append(key_hash)
        return Source("src", "bench")

    store, table = MemoryStore(), FreshLedgerTable()
    ledger = Ledger(table, "bench", window_seconds=86400, lease_seconds=30)
    sources = SourceCache(lookup, ttl=3600)
    sink = S3Sink(store, settings.gzip_level)
    collector = Collector(settings, sources, sink)
    deduplicating = Collector(settings, sources, sink, ledger=ledger)
    request = IncomingRequest(
        call="batch",
        body=base64.b64encode(raw).decode(),  # as API Gateway hands it over
        is_base64_encoded=True,
        request_id="bench",
        ip="203.0.113.9",
    )

    def floor() -> bytes:
        batch = orjson.loads(raw)["batch"]
        return gzip_lines([orjson.dumps(message) for message in batch], settings.gzip_level)

    def pipeline() -> None:
        assert collector.ingest(request).accepted == MESSAGES

    def with_ledger() -> None:
        assert deduplicating.ingest(request).accepted == MESSAGES

    pipeline()  # warm: the source is cached from here on
    with_ledger()
    store.puts.clear()
    table.calls.clear()
    floor_seconds, pipeline_seconds, with_ledger_seconds = best_cpu_seconds(
        floor, pipeline, with_ledger
    )
    return Measurement(
        len(raw),
        floor_seconds,
        pipeline_seconds,
        with_ledger_seconds,
        len(lookups),
        [p for p, _ in store.puts],
        dict(Counter(table.calls)),
    )


def test_batch_pipeline_stays_within_budget() -> None:
    """Each attempt runs in a fresh interpreter: its hash seed and memory layout move the ratio
    by about 5% (measured 1.66-1.93 over 10 processes on one quiet machine), so an unlucky layout
    gets another look.
    """
    for _ in range(ATTEMPTS):
        done = subprocess.run(
            [sys.executable, "-m", "tests.test_benchmark"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        result = Measurement(**json.loads(done.stdout.splitlines()[-1]))
        print(
            f"\nbatch {result.batch_bytes} B, {MESSAGES} messages: "
            f"floor {result.floor_seconds * 1e3:.2f} ms, "
            f"pipeline {result.pipeline_seconds * 1e3:.2f} ms, ratio {result.ratio:.2f}; "
            f"with the ledger {result.with_ledger_seconds * 1e3:.2f} ms, ratio "
            f"{result.ratio_with_ledger:.2f}, {result.microseconds_per_message:.1f} us/message "
            f"CPU (ledger {result.ledger_microseconds_per_message:.2f} us/message, "
            f"{result.ledger_share:.2f} of the floor)"
        )
        assert 250_000 < result.batch_bytes < 350_000
        assert result.source_lookups == 1, "a cached source needs no DynamoDB call"
        assert result.puts == ["events"] * 2 * ROUNDS, "one PUT per request"
        # 500 new messages: five claims of 100 items (DynamoDB's limit), no read.
        assert result.ledger_calls == {"TransactWriteItems": 5 * ROUNDS}
        if result.within_budget():
            break
    assert result.ratio <= MAX_RATIO
    assert result.ratio_with_ledger <= MAX_RATIO_WITH_LEDGER
    assert result.ledger_share <= MAX_LEDGER_SHARE


if __name__ == "__main__":
    print(json.dumps(asdict(measure())))
