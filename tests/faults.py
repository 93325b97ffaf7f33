"""Fault injection through botocore's event hooks: a share of a client's AWS calls fail the ways
AWS calls fail (500, 503, throttling, a refusal for capacity as a provisioned DynamoDB table
answers, a timeout before the call, a timeout after moto applied it, and for DynamoDB
transactions a cancellation for lack of capacity), on moto's clients and on the embedded engines
of `make dev` alike.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

from collector.tools.embedded import EmbeddedClient

# "capacity-exceeded" is how a PROVISIONED table (TableBillingMode) throttles a single call.
KINDS = (
    "500",
    "503",
    "throttled",
    "capacity-exceeded",
    "timeout-before",
    "timeout-after-applied",
)
# How DynamoDB throttles a transaction: cancelled, with ThrottlingError among its reasons.
TRANSACTION_KINDS = (*KINDS, "transaction-throttled")


class Faults:
    """Fails about `rate` of the calls of the clients it is installed on; seeded, countable."""

    def __init__(self, rate: float, seed: int = 7) -> None:
        self.rate = rate
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._applied_then_lost = threading.local()

    def install(self, client: Any) -> None:
        if isinstance(client, EmbeddedClient):
            client.meta.events.register("before-send", self._before_embedded_send)
            client.meta.events.register("response-received", self._after_embedded_work)
            return
        # First, so it runs before moto's own before-send handler answers the call.
        client.meta.events.register_first("before-send", self._before_send)

    def _draw(self, event_name: str) -> str | None:
        with self._lock:
            if not self.enabled or self._random.random() >= self.rate:
                return None
            transaction = event_name.endswith(".TransactWriteItems")
            kind = self._random.choice(TRANSACTION_KINDS if transaction else KINDS)
            self.injected[kind] += 1
            return kind

    def _before_embedded_send(self, event_name: str, **_: Any) -> None:
        """The same faults for the embedded engines: raised as botocore would raise them from
        the error answer; a timeout after the call is raised once the work is done."""
        kind = self._draw(event_name)
        if kind is None:
            return
        if kind == "timeout-before":
            raise ConnectTimeoutError(endpoint_url="local")
        if kind == "timeout-after-applied":
            self._applied_then_lost.pending = True
            return
        service = event_name.split(".")[1]
        raise ClientError(_error_body(service, kind), event_name.split(".")[2])

    def _after_embedded_work(self, **_: Any) -> None:
        if getattr(self._applied_then_lost, "pending", False):
            self._applied_then_lost.pending = False
            raise ReadTimeoutError(endpoint_url="local")

    def _before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        kind = self._draw(event_name)
        if kind is None:
            return None
        service = event_name.split(".")[1]
        if kind == "timeout-before":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == "timeout-after-applied":
            botocore_stubber(event_name=event_name, request=request)  # moto carries it out
            raise ReadTimeoutError(endpoint_url=request.url)
        return _error_response(service, kind, request.url)


def _status_and_code(service: str, kind: str) -> tuple[int, str]:
    if service == "s3":
        return {"500": (500, "InternalError")}.get(kind, (503, "SlowDown"))
    return {
        "500": (500, "InternalServerError"),
        "503": (503, "ServiceUnavailable"),
        "throttled": (400, "ThrottlingException"),
        "capacity-exceeded": (400, "ProvisionedThroughputExceededException"),
        "transaction-throttled": (400, "TransactionCanceledException"),
    }[kind]


def _error_response(service: str, kind: str, url: str) -> AWSResponse:
    status, code = _status_and_code(service, kind)
    if service == "s3":
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        headers = {"Content-Type": "application/xml"}
    else:
        error = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"}
        body = orjson.dumps({**error, **_cancellation(kind)})
        headers = {"Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(url, status, {**headers, "x-amzn-RequestId": "fault"}, MockRawResponse(body))


def _error_body(service: str, kind: str) -> dict[str, Any]:
    """What botocore parses `_error_response` into."""
    status, code = _status_and_code(service, kind)
    return {
        "Error": {"Code": code, "Message": "injected"},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **_cancellation(kind),
    }


def _cancellation(kind: str) -> dict[str, Any]:
    """A throttled transaction's reasons, as DynamoDB lists them (one per item; two here)."""
    if kind != "transaction-throttled":
        return {}
    throttled = {"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"}
    return {"CancellationReasons": [{"Code": "None"}, throttled]}


def throttle(client: Any, operation: str = "TransactWriteItems") -> Callable[[], None]:
    """Every `operation` call of `client` is throttled until the returned function is called:
    a transaction cancelled for lack of capacity, any other call refused for it."""
    event = f"before-send.dynamodb.{operation}"
    kind = "transaction-throttled" if operation == "TransactWriteItems" else "capacity-exceeded"

    def refuse(request: Any, **_: Any) -> AWSResponse:
        return _error_response("dynamodb", kind, request.url)

    client.meta.events.register_first(event, refuse)
    return lambda: client.meta.events.unregister(event, refuse)
