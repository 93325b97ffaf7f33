"""Measures what docs/cost.md derives the AWS bill from; `python -m tests.measure_cost`.

Per request, for browser traffic (one analytics.js call) and server-side batching (100 calls):
CPU time through `Collector.ingest` and through the whole Lambda handler (Powertools resolver,
logs, EMF metrics) with an in-memory store in place of S3; bytes written to the function's log
(CloudWatch Logs ingestion) and to S3 (gzip); and, against moto, the DynamoDB calls and items
of identify and alias calls. Prints a JSON document and a readable summary.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

ROUNDS = 300
BATCH = 100

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "collector")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EventCollector")
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "EVENTS_BUCKET": "cost-events",
    "IDENTITY_TABLE": "cost-identity",
}.items():
    os.environ[_name] = _value


class CountingStdout(io.TextIOBase):
    """Stands in for stdout (what Lambda ships to CloudWatch Logs) and counts its bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def writable(self) -> bool:
        return True


# Powertools' Logger binds sys.stdout when collector.api is imported: count from the start.
LOG = CountingStdout()
REAL_STDOUT = sys.stdout
sys.stdout = LOG

from collector import api  # noqa: E402
from collector.auth import Source, SourceCache  # noqa: E402
from collector.config import Settings  # noqa: E402
from collector.ingest import Collector, IncomingRequest  # noqa: E402
from collector.sink import S3Sink  # noqa: E402
from collector.tools.localapi import LambdaContext, proxy_event  # noqa: E402

from .test_benchmark import MemoryStore, browser_track  # noqa: E402


def server_track(rng: random.Random) -> dict[str, Any]:
    """A segment-analytics-python track, with ids and values that vary as real ones do (the
    gzip ratio, hence S3 bytes per event, depends on it)."""
    moment = datetime.now(UTC) - timedelta(milliseconds=rng.randrange(60_000))
    return {
        "integrations": {},
        "userId": f"usr_{rng.randrange(10**6):06x}",
        "event": rng.choice(["Order Completed", "Product Viewed", "Cart Updated", "Signed In"]),
        "properties": {
            "orderId": f"ord_{rng.getrandbits(40):010x}",
            "revenue": round(rng.uniform(5, 500), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "sku": f"SKU-{rng.randrange(10**5):05d}",
        },
        "timestamp": moment.isoformat(),
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "type": "track",
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }


def requests() -> dict[str, tuple[str, str, list[tuple[str, str]], bytes]]:
    """Scenario -> (method, path, headers, body) as clients send them."""
    auth = "Basic " + base64.b64encode(b"cost-key:").decode()
    browser = json.dumps(browser_track(1), separators=(",", ":")).encode()
    rng = random.Random(4)
    batch = json.dumps(
        {
            "batch": [server_track(rng) for _ in range(BATCH)],
            "sentAt": datetime.now(UTC).isoformat(),
        }
    ).encode()
    return {
        "browser, 1 event/request (/v1/t)": (
            "POST",
            "/v1/t",
            [("Content-Type", "text/plain")],
            browser,
        ),
        f"server, {BATCH} events/request (/v1/batch)": (
            "POST",
            "/v1/batch",
            [("Content-Type", "application/json"), ("Authorization", auth)],
            batch,
        ),
    }


def best_and_median(run: Callable[[], object]) -> tuple[float, float]:
    run()
    times = []
    for _ in range(ROUNDS):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times), statistics.median(times)


def memory_collector() -> tuple[Collector, MemoryStore]:
    store = MemoryStore()
    settings = Settings(events_bucket="cost-events", identity_table="cost-identity")
    sources = SourceCache(lambda _hash: Source("src", "cost"), ttl=3600)
    return Collector(settings, sources, S3Sink(store, settings.gzip_level)), store


def measure_requests() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (method, path, headers, body) in requests().items():
        event = proxy_event(method, path, "", headers, body, "198.51.100.7")
        assert event is not None
        collector, store = memory_collector()
        incoming = IncomingRequest(
            call=path.rsplit("/", 1)[-1],
            body=event["body"],
            is_base64_encoded=event["isBase64Encoded"],
            request_id="cost",
            authorization=dict(headers).get("Authorization"),
            ip="198.51.100.7",
        )
        ingest_best, ingest_median = best_and_median(lambda c=collector, r=incoming: c.ingest(r))
        object_bytes = len(store.puts[-1][1])

        handler_collector, _ = memory_collector()
        api.collector = lambda c=handler_collector: c  # type: ignore[assignment,misc]
        answer = api.lambda_handler(event, LambdaContext(aws_request_id="cost"))
        assert answer["statusCode"] == 200, answer
        before = LOG.bytes
        handler_best, handler_median = best_and_median(
            lambda e=event: api.lambda_handler(e, LambdaContext(aws_request_id="cost"))
        )
        log_bytes = (LOG.bytes - before) / (ROUNDS + 1)
        events = BATCH if "batch" in path else 1
        results[name] = {
            "events_per_request": events,
            "request_body_bytes": len(body),
            "ingest_cpu_ms": {"best": ingest_best * 1e3, "median": ingest_median * 1e3},
            "handler_cpu_ms": {"best": handler_best * 1e3, "median": handler_median * 1e3},
            "function_log_bytes_per_request": round(log_bytes),
            "s3_object_bytes": object_bytes,
            "s3_bytes_per_event": round(object_bytes / events),
        }
    preflight = proxy_event(
        "OPTIONS",
        "/v1/t",
        "",
        [
            ("Origin", "https://www.example.com"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ],
        b"",
        "198.51.100.7",
    )
    before = LOG.bytes
    best, median = best_and_median(
        lambda: api.lambda_handler(preflight, LambdaContext(aws_request_id="cost"))
    )
    results["CORS preflight (OPTIONS /v1/t)"] = {
        "handler_cpu_ms": {"best": best * 1e3, "median": median * 1e3},
        "function_log_bytes_per_request": round((LOG.bytes - before) / (ROUNDS + 1)),
    }
    return results


def measure_identity_calls() -> dict[str, Any]:
    """DynamoDB operations (and items in them) per identify/alias, from cold and warm caches."""
    import boto3
    from moto import mock_aws

    from collector.identity_store import IdentityGraph
    from collector.tools.resources import create_table

    calls: Counter[str] = Counter()

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        calls[name] += 1
        if name == "BatchGetItem":
            calls["BatchGetItem items"] += sum(
                len(t["Keys"]) for t in params["RequestItems"].values()
            )
        if name == "TransactWriteItems":
            calls["TransactWriteItems items"] += len(params["TransactItems"])

    def delta(action: Callable[[], object]) -> dict[str, int]:
        calls.clear()
        action()
        return dict(calls)

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table(dynamodb, "cost-identity")
        dynamodb.meta.events.register("provide-client-params.dynamodb.*", count)
        warm = IdentityGraph(dynamodb, "cost-identity")

        def identify(graph: IdentityGraph, user: str, anonymous: str) -> dict[str, Any]:
            return graph.resolve({"type": "identify", "userId": user, "anonymousId": anonymous})

        def alias(graph: IdentityGraph, user: str, previous: str) -> dict[str, Any]:
            return graph.resolve({"type": "alias", "userId": user, "previousId": previous})

        return {
            "identify, new user and new anonymousId (creates a person)": delta(
                lambda: identify(warm, "u1", "a1")
            ),
            "same identify again, warm Lambda": delta(lambda: identify(warm, "u1", "a1")),
            "same identify again, cold Lambda": delta(
                lambda: identify(IdentityGraph(dynamodb, "cost-identity"), "u1", "a1")
            ),
            "identify, known user on a new device (attaches the anonymousId)": delta(
                lambda: identify(warm, "u1", "a2")
            ),
            "alias, previousId new (attaches it)": delta(lambda: alias(warm, "u1", "p1")),
        }


def measure_client_cpu() -> dict[str, float]:
    """CPU of the AWS calls a request makes after its own work, as the sinks make them:
    botocore's PutObject (S3 sink), PutRecordBatch and the receipt's PutItem (Firehose sink),
    each against a local HTTP server that answers like the service: the client thread's CPU
    only (serialise, checksum, sign, send, parse; no TLS)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from botocore.config import Config
    from botocore.session import Session

    from collector.config import AWS_CLIENT_CONFIG
    from collector.firehose_sink import DeliveryReceipts, FirehoseSink
    from collector.ledger import Ledger
    from collector.stamping import RequestStamp
    from collector.storage import EventStore

    class Service(BaseHTTPRequestHandler):
        # HTTP/1.1: keep-alive as with AWS, and botocore's Expect: 100-continue is answered.
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:  # S3
            self.rfile.read(int(self.headers["Content-Length"]))
            self.answer(b"", {"ETag": '"0"'})

        def do_POST(self) -> None:  # JSON protocols: Firehose, DynamoDB
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "Records" in sent:
                results = [{"RecordId": "r"}] * len(sent["Records"])
                body = {"FailedPutCount": 0, "RequestResponses": results}
            else:
                body = {}
            self.answer(json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"})

        def answer(self, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(200)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    session = Session()

    def client(service: str, **config: Any) -> Any:
        # As Lambda's clients are configured (collector/config.py: no parameter validation).
        merged = AWS_CLIENT_CONFIG.merge(Config(**config))
        return session.create_client(service, endpoint_url=url, config=merged)

    objects = S3Sink(EventStore(client("s3", s3={"addressing_style": "path"}), "cost"), 5)
    receipts = DeliveryReceipts(client("dynamodb"), "cost-identity", 86400)
    firehose = FirehoseSink(client("firehose"), "cost-stream", receipts, objects)
    ledger = Ledger(client("dynamodb"), "cost-identity", window_seconds=86400, lease_seconds=30)
    stamp = RequestStamp(datetime.now(UTC), "src", "req", None)
    calls = {
        "S3 PutObject, 1 event": lambda: objects.put_events("events/f.json.gz", [LINE], stamp),
        "S3 PutObject, 100 events": lambda: objects.put_events(
            "events/f.json.gz", BATCH_LINES, stamp
        ),
        "Firehose PutRecordBatch, 1 event (1 record)": lambda: firehose._put([LINE]),
        "Firehose PutRecordBatch, 100 events (1 record)": lambda: firehose._put(
            [b"\n".join(BATCH_LINES)]
        ),
        "DynamoDB PutItem (the receipt)": lambda: receipts.record("SENT#abc"),
        "DynamoDB TransactWriteItems (the claim of 100 messages)": lambda: ledger.claim(
            "src", CLAIMED, {}, "events/f.json.gz"
        ),
    }
    results = {}
    for name, call in calls.items():
        call()
        times = []
        for _ in range(ROUNDS):
            start = time.thread_time()
            call()
            times.append(time.thread_time() - start)
        results[name] = statistics.median(times) * 1e3
    server.shutdown()
    return results


# A stamped browser event's line (~600 B) and a server batch's (100 of ~550 B).
LINE = json.dumps({"type": "track", "event": "Viewed", "pad": "x" * 520}).encode()
BATCH_LINES = [LINE[:550]] * 100
CLAIMED = [f"6d1c2b3a-4f5e-4d7c-8b9a-{n:012d}" for n in range(100)]


def main() -> None:
    result = {
        "requests": measure_requests(),
        "aws_client_cpu_ms": measure_client_cpu(),
        "dynamodb": measure_identity_calls(),
    }
    sys.stdout = REAL_STDOUT
    print(json.dumps(result, indent=2))
    for name, numbers in result["requests"].items():
        if "events_per_request" not in numbers:
            continue
        per = numbers["events_per_request"]
        print(
            f"# {name}: handler {numbers['handler_cpu_ms']['median']:.2f} ms CPU/request "
            f"(ingest alone {numbers['ingest_cpu_ms']['median']:.2f}), "
            f"log {numbers['function_log_bytes_per_request']} B/request, "
            f"S3 {numbers['s3_object_bytes']} B/object ({per} events)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
