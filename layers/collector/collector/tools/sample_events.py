"""Sample API Gateway events for `sam local invoke -e events/<name>.json`, one per route.

Dev tooling: `python -m collector.tools.sample_events events/` regenerates events/ from this
module. The events come from `localapi.proxy_event`, the local gateway's own REST (payload v1)
proxy event, so bodies are base64-encoded as with `BinaryMediaTypes: */*`. Ids, times and
bodies are fixed, so regenerating gives identical files (tests/test_events.py checks that).

Server calls look like segment-analytics-python's (JSON, Basic auth with the write key); the
short paths look like analytics.js 2.0's (`text/plain`, writeKey and `_metadata` in the body,
`ajs-next-...` message ids). All use the dev server's default write key.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .localapi import proxy_event
from .resources import TEMPLATE

WRITE_KEY = "local-dev-write-key"
SOURCE_IP = "198.51.100.23"
HOST = "localhost:3000"
# When API Gateway "received" every sample request (2025-11-20T14:03:27.845Z).
REQUEST_TIME_EPOCH_MS = 1_763_647_407_845
_REQUEST_ID_NAMESPACE = uuid.UUID("6f1f2d4e-3b8a-4c5d-9e7f-0a1b2c3d4e5f")

# segment-analytics-python: millisecond timestamps with an offset, sentAt with microseconds.
PY_VERSION = "2.4.0"
PY_TIMESTAMP = "2025-11-20T14:03:26.512+00:00"
PY_SENT_AT = "2025-11-20T14:03:27.801442+00:00"
PY_USER_ID = "usr_7f3a9c"
PY_ANONYMOUS_ID = "0b6e4d2a-5c1f-4e8b-9a3d-7f2e1c0b9a8d"

# analytics.js 2.0 in a browser.
AJS_VERSION = "next-1.81.1"
AJS_TIMESTAMP = "2025-11-20T14:03:27.512Z"
AJS_SENT_AT = "2025-11-20T14:03:27.530Z"
AJS_ANONYMOUS_ID = "d3b07384-d9a0-4c9b-8f3e-1a2b3c4d5e6f"
AJS_USER_ID = "usr_7f3a9c"
ORIGIN = "https://www.example.com"
BROWSER_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def sample_events() -> dict[str, dict[str, Any]]:
    """File stem -> API Gateway event, in a fixed order."""
    requests: dict[str, tuple[str, str, list[tuple[str, str]], bytes]] = {}
    for call, message in _server_messages().items():
        body = _python_json({**message, "sentAt": PY_SENT_AT})
        requests[call] = ("POST", f"/v1/{call}", _python_headers(body), body)
    batch = _python_json(
        {
            "batch": list(_server_messages().values()),
            "sentAt": PY_SENT_AT,
            "writeKey": WRITE_KEY,
        }
    )
    requests["batch"] = ("POST", "/v1/batch", _python_headers(batch), batch)
    requests["import"] = ("POST", "/v1/import", _python_headers(batch), batch)
    zipped = gzip.compress(batch, compresslevel=9, mtime=0)
    requests["batch-gzip"] = (
        "POST",
        "/v1/batch",
        _python_headers(zipped, [("Content-Encoding", "gzip")]),
        zipped,
    )
    for call, message in _browser_messages().items():
        body = _browser_json({**message, "writeKey": WRITE_KEY, "sentAt": AJS_SENT_AT})
        requests[call] = ("POST", f"/v1/{call}", _browser_headers(body), body)
    browser_batch = _browser_json(
        {
            "writeKey": WRITE_KEY,
            "batch": [
                {**message, "writeKey": WRITE_KEY}
                for call, message in _browser_messages().items()
                if call in ("p", "t", "i")
            ],
            "sentAt": AJS_SENT_AT,
        }
    )
    requests["b"] = ("POST", "/v1/b", _browser_headers(browser_batch), browser_batch)
    telemetry = _browser_json({"series": _telemetry_series()})
    requests["m"] = ("POST", "/v1/m", _browser_headers(telemetry), telemetry)
    requests["options-preflight"] = ("OPTIONS", "/v1/t", _preflight_headers(), b"")
    return {name: _event(name, *request) for name, request in requests.items()}


def write_events(directory: Path) -> list[Path]:
    """Write every sample event to `directory` as `<name>.json`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, event in sample_events().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=TEMPLATE.parent / "events",
        help="where to write the events (default: the repository's events/)",
    )
    args = parser.parse_args(argv)
    for path in write_events(args.directory):
        print(path)


def _event(
    name: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    event = proxy_event(method, path, "", headers, body, SOURCE_IP)
    if event is None:
        raise ValueError(f"{method} {path} is not a route of the API")
    request_id = str(uuid.uuid5(_REQUEST_ID_NAMESPACE, name))
    context = event["requestContext"]
    context["requestId"] = request_id
    context["extendedRequestId"] = base64.b64encode(uuid.UUID(request_id).bytes[:11]).decode()
    context["requestTimeEpoch"] = REQUEST_TIME_EPOCH_MS
    context["requestTime"] = time.strftime(
        "%d/%b/%Y:%H:%M:%S +0000", time.gmtime(REQUEST_TIME_EPOCH_MS / 1000)
    )
    return event


def _server_messages() -> dict[str, dict[str, Any]]:
    """One message of each type as segment-analytics-python's Client builds it."""
    return {
        "identify": _python_message(
            "identify",
            "5b0f3f1c-8d2a-4e61-9c57-2f4b8e1a7d30",
            userId=PY_USER_ID,
            anonymousId=PY_ANONYMOUS_ID,
            traits={"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"},
        ),
        "track": _python_message(
            "track",
            "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            userId=PY_USER_ID,
            event="Order Completed",
            properties={
                "orderId": "ord_20251120_0042",
                "revenue": 42.5,
                "currency": "EUR",
                "products": [{"sku": "SKU-123", "quantity": 2, "price": 21.25}],
            },
        ),
        "page": _python_message(
            "page",
            "1e2d3c4b-5a69-4788-97a6-b5c4d3e2f1a0",
            userId=PY_USER_ID,
            category="Docs",
            name="Install",
            properties={"path": "/docs/install", "url": "https://www.example.com/docs/install"},
        ),
        "screen": _python_message(
            "screen",
            "2f3e4d5c-6b7a-4899-a8b7-c6d5e4f3a2b1",
            userId=PY_USER_ID,
            category="Settings",
            name="Profile",
            properties={"tab": 2},
        ),
        "group": _python_message(
            "group",
            "3a4b5c6d-7e8f-4a9b-8c0d-1e2f3a4b5c6d",
            userId=PY_USER_ID,
            groupId="org_4711",
            traits={"name": "Example GmbH", "employees": 120, "plan": "enterprise"},
        ),
        "alias": _python_message(
            "alias",
            "4b5c6d7e-8f9a-4b0c-9d1e-2f3a4b5c6d7e",
            previousId=PY_ANONYMOUS_ID,
            userId=PY_USER_ID,
        ),
    }


def _python_message(kind: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "integrations": {},
        **fields,
        "timestamp": PY_TIMESTAMP,
        "context": {"library": {"name": "analytics-python", "version": PY_VERSION}},
        "type": kind,
        "messageId": message_id,
    }


def _browser_messages() -> dict[str, dict[str, Any]]:
    """One message per short path as analytics.js 2.0's Segment.io plugin sends it."""
    return {
        "p": _browser_message(
            "page",
            "ajs-next-1763647407512-6d1c2b3a-4f5e-4d7c-8b9a-0e1f2a3b4c5d",
            userId=None,
            name="Pricing",
            properties={
                "name": "Pricing",
                "path": "/pricing",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google",
                "title": "Pricing — Example",
                "url": "https://www.example.com/pricing?utm_source=google",
            },
        ),
        "t": _browser_message(
            "track",
            "ajs-next-1763647407513-7e2d3c4b-5a6f-4e8d-9c0b-1f2a3b4c5d6e",
            userId=None,
            event="Plan Selected",
            properties={"plan": "pro", "billing": "annual", "price": 490},
        ),
        "i": _browser_message(
            "identify",
            "ajs-next-1763647407514-8f3e4d5c-6b7a-4f9e-8d1c-2a3b4c5d6e7f",
            userId=AJS_USER_ID,
            traits={"email": "ada@example.com", "firstName": "Ada"},
        ),
        "s": _browser_message(
            "screen",
            "ajs-next-1763647407515-9a4f5e6d-7c8b-4a0f-9e2d-3b4c5d6e7f8a",
            userId=AJS_USER_ID,
            name="Checkout",
            properties={"step": 2},
        ),
        "g": _browser_message(
            "group",
            "ajs-next-1763647407516-0b5a6f7e-8d9c-4b1a-8f3e-4c5d6e7f8a9b",
            userId=AJS_USER_ID,
            groupId="org_4711",
            traits={"name": "Example GmbH"},
        ),
        "a": _browser_message(
            "alias",
            "ajs-next-1763647407517-1c6b7a8f-9e0d-4c2b-9a4f-5d6e7f8a9b0c",
            userId=AJS_USER_ID,
            previousId=AJS_ANONYMOUS_ID,
        ),
    }


def _browser_message(kind: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": AJS_TIMESTAMP,
        "integrations": {},
        "type": kind,
        **fields,
        "context": {
            "page": {
                "path": "/pricing",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google",
                "title": "Pricing — Example",
                "url": "https://www.example.com/pricing?utm_source=google",
            },
            "userAgent": BROWSER_UA,
            "userAgentData": {
                "brands": [
                    {"brand": "Google Chrome", "version": "131"},
                    {"brand": "Chromium", "version": "131"},
                    {"brand": "Not_A Brand", "version": "24"},
                ],
                "mobile": False,
                "platform": "macOS",
            },
            "locale": "en-US",
            "library": {"name": "analytics.js", "version": AJS_VERSION},
            "timezone": "Europe/Berlin",
            "campaign": {"source": "google"},
        },
        "messageId": message_id,
        "anonymousId": AJS_ANONYMOUS_ID,
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }


def _telemetry_series() -> list[dict[str, Any]]:
    """What analytics.js posts to /v1/m about itself."""
    tags = {"library": "analytics.js", "library_version": f"npm:{AJS_VERSION}"}
    return [
        {
            "type": "Counter",
            "metric": "analytics_js.invoke",
            "value": 1,
            "tags": {**tags, "method": method},
        }
        for method in ("page", "track")
    ]


def _python_json(body: dict[str, Any]) -> bytes:
    # json.dumps with its default separators, as segment-analytics-python sends it.
    return json.dumps(body).encode()


def _browser_json(body: dict[str, Any]) -> bytes:
    # JSON.stringify: no spaces, UTF-8.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _python_headers(
    body: bytes, extra: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    credentials = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return [
        ("Host", HOST),
        ("User-Agent", f"analytics-python/{PY_VERSION}"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Accept", "*/*"),
        ("Content-Type", "application/json"),
        ("Authorization", f"Basic {credentials}"),
        *(extra or []),
        ("Content-Length", str(len(body))),
    ]


def _browser_headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Host", HOST),
        ("User-Agent", BROWSER_UA),
        ("Accept", "*/*"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Content-Type", "text/plain"),
        ("Origin", ORIGIN),
        ("Referer", f"{ORIGIN}/"),
        ("Content-Length", str(len(body))),
    ]


def _preflight_headers() -> list[tuple[str, str]]:
    return [
        ("Host", HOST),
        ("User-Agent", BROWSER_UA),
        ("Accept", "*/*"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization,content-type,x-retry-count"),
        ("Origin", ORIGIN),
        ("Referer", f"{ORIGIN}/"),
    ]


if __name__ == "__main__":
    main()
