"""Identity at batch speed, with a realistic 10 ms on every AWS call: DynamoDB calls and wall time
of 100-message batches with 0, 5, 30 and 100 identifies, and of a 2,500-identify import of new
users, through the whole pipeline (ledger, identity graph, S3 write) on stand-in AWS clients.

Assumes the template's function: 15 s timeout, 512 MB. Targets, with no conflict: at most two
graph reads per 100 ids touched and one graph transaction per 100 items written (the ledger adds
its read and claim per 100 messages), and the import well inside the timeout (under 5 s).
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.identity_store import IdentityGraph
from collector.ingest import Collector, IncomingRequest
from collector.ledger import Ledger
from collector.sink import S3Sink

from .test_benchmark import FreshLedgerTable, MemoryStore

pytestmark = pytest.mark.bench

LATENCY = 0.010  # seconds added to every AWS call
MAX_IMPORT_SECONDS = 5.0
# A new person: two pointers, two memberships, its header, and its decision in the ledger.
# A person's items never straddle two transactions, so a transaction carries at least 95.
ITEMS_PER_NEW_PERSON = 6
ITEMS_PER_TRANSACTION = 100 - ITEMS_PER_NEW_PERSON + 1


class SlowTable(FreshLedgerTable):
    """Every id is new and every write succeeds, each call after LATENCY; calls are told apart
    by what they touch: the ledger's MSG# items or the identity graph's."""

    def __init__(self) -> None:
        super().__init__()
        self.graph_reads = self.graph_writes = self.ledger_calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        time.sleep(LATENCY)
        [request] = RequestItems.values()
        self._count(request["Keys"][0]["pk"]["S"], "graph_reads")
        return super().batch_get_item(RequestItems)

    def transact_write_items(self, TransactItems: list[Any]) -> dict[str, Any]:
        time.sleep(LATENCY)
        keys = [next(iter(item.values())) for item in TransactItems]
        pks = [(body.get("Key") or body["Item"])["pk"]["S"] for body in keys]
        self._count(next((pk for pk in pks if not pk.startswith("MSG#")), pks[0]), "graph_writes")
        return super().transact_write_items(TransactItems)

    def _count(self, pk: str, graph_counter: str) -> None:
        if pk.startswith("MSG#"):
            self.ledger_calls += 1
        else:
            setattr(self, graph_counter, getattr(self, graph_counter) + 1)


class SlowStore(MemoryStore):
    def put_new(self, key: str, body: bytes, metadata: Any = None) -> bool:
        time.sleep(LATENCY)
        return super().put_new(key, body, metadata)


def batch(messages: int, identifies: int, run: str) -> IncomingRequest:
    """A batch as segment-analytics-python builds it: `identifies` new users, the rest tracks.
    An import of 2,500 is sent lean (no context), as it must be to fit Segment's 500 KB."""
    client = Client("bench-key", send=False)
    built = [
        client.identify(f"{run}-user-{n}", {"plan": "pro"}, anonymous_id=f"{run}-anon-{n}")[1]
        for n in range(identifies)
    ]
    built += [
        client.track(f"{run}-user-{n}", "Viewed", {"n": n})[1] for n in range(messages - identifies)
    ]
    if messages > 100:
        lean = ("context", "integrations", "traits")
        built = [{k: v for k, v in m.items() if k not in lean and v is not None} for m in built]
    body = orjson.dumps({"batch": built, "writeKey": "bench-key"}, default=str)
    return IncomingRequest("import", base64.b64encode(body).decode(), True, f"bench-{run}")


def measure(messages: int, identifies: int) -> dict[str, Any]:
    table, store = SlowTable(), SlowStore()
    settings = Settings(events_bucket="bench", identity_table="bench")
    collector = Collector(
        settings,
        SourceCache(lambda _: Source("src", "bench"), ttl=3600),
        S3Sink(store, settings.gzip_level),
        IdentityGraph(table, "bench"),
        Ledger(table, "bench", window_seconds=86400, lease_seconds=30),
    )
    request = batch(messages, identifies, f"{messages}-{identifies}")
    start = time.perf_counter()
    result = collector.ingest(request)
    wall = time.perf_counter() - start
    assert result.accepted == messages
    assert result.identity_outcomes == ({"created": identifies} if identifies else {})
    return {
        "wall": wall,
        "graph_reads": table.graph_reads,
        "graph_writes": table.graph_writes,
        "ledger_calls": table.ledger_calls,
    }


SHAPES = [(100, 0), (100, 5), (100, 30), (100, 100), (2500, 2500)]


@pytest.mark.parametrize(("messages", "identifies"), SHAPES, ids=[f"{m}x{i}" for m, i in SHAPES])
def test_identity_calls_of_a_batch_cost_few_round_trips(messages: int, identifies: int) -> None:
    figures = measure(messages, identifies)
    print(
        f"\n{messages} messages, {identifies} identifies: {figures['wall'] * 1e3:.0f} ms wall at "
        f"{LATENCY * 1e3:.0f} ms per AWS call; graph reads {figures['graph_reads']}, "
        f"graph transactions {figures['graph_writes']}, ledger calls {figures['ledger_calls']}"
    )
    ids = 2 * identifies
    assert figures["graph_reads"] <= 2 * math.ceil(ids / 100)
    items = identifies * ITEMS_PER_NEW_PERSON
    assert figures["graph_writes"] <= math.ceil(items / ITEMS_PER_TRANSACTION)
    assert figures["ledger_calls"] <= 2 * math.ceil(messages / 100)
    if messages == 2500:
        assert figures["wall"] < MAX_IMPORT_SECONDS
