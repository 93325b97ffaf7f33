"""Fault injection through botocore's event hooks: a share of a client's AWS calls fail the ways
AWS calls fail (500, 503, throttling, a timeout before the call, a timeout after moto applied it).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import orjson
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from moto.core.botocore_stubber import MockRawResponse
from moto.core.models import botocore_stubber

KINDS = ("500", "503", "throttled", "timeout-before", "timeout-after-applied")


class Faults:
    """Fails about `rate` of the calls of the clients it is installed on; seeded, countable."""

    def __init__(self, rate: float, seed: int = 7) -> None:
        self.rate = rate
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def install(self, client: Any) -> None:
        # First, so it runs before moto's own before-send handler answers the call.
        client.meta.events.register_first("before-send", self._before_send)

    def _before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        with self._lock:
            if not self.enabled or self._random.random() >= self.rate:
                return None
            kind = self._random.choice(KINDS)
            self.injected[kind] += 1
        service = event_name.split(".")[1]
        if kind == "timeout-before":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == "timeout-after-applied":
            botocore_stubber(event_name=event_name, request=request)  # moto carries it out
            raise ReadTimeoutError(endpoint_url=request.url)
        return _error_response(service, kind, request.url)


def _error_response(service: str, kind: str, url: str) -> AWSResponse:
    if service == "s3":
        status, code = {"500": (500, "InternalError"), "503": (503, "SlowDown")}.get(
            kind, (503, "SlowDown")
        )
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        headers = {"Content-Type": "application/xml"}
    else:
        status, code = {
            "500": (500, "InternalServerError"),
            "503": (503, "ServiceUnavailable"),
            "throttled": (400, "ThrottlingException"),
        }[kind]
        body = orjson.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "x"})
        headers = {"Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(url, status, {**headers, "x-amzn-RequestId": "fault"}, MockRawResponse(body))
