"""What the embedded engines share with botocore's clients: the event hooks
(`client.meta.events`, so fault injection and race tests drive both engines alike) and
`client.get_paginator(name).paginate(...)`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.hooks import HierarchicalEmitter

Page = dict[str, Any]
# botocore's standard retry mode, as the Lambda's clients are configured (collector.api).
MAX_ATTEMPTS = 3
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)


@dataclass(frozen=True, slots=True)
class OperationModel:
    """The part of botocore's OperationModel that event handlers read."""

    name: str


@dataclass(frozen=True, slots=True)
class ClientMeta:
    service_name: str
    events: HierarchicalEmitter = field(default_factory=HierarchicalEmitter)


class EmbeddedClient:
    """A client that behaves as a botocore client configured as the Lambda's is (standard
    retries, 3 attempts): `before-call` once, then per attempt `before-send`, the work, and
    `response-received`, then `after-call`, with the names and arguments botocore gives
    handlers. A transient failure (a 5xx or throttling code, a connection or read timeout,
    raised by the work or by a handler) is retried; `request` shapes before-call's `params`
    as botocore's serialised request dict."""

    def __init__(self, service: str, request: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.meta = ClientMeta(service)
        self._request = request

    def _call(self, operation: str, work: Callable[[], Page], params: dict[str, Any]) -> Page:
        events, event = self.meta.events, f"{self.meta.service_name}.{operation}"
        model = OperationModel(operation)
        context: dict[str, Any] = {}
        events.emit(
            f"before-call.{event}", model=model, params=self._request(params), context=context
        )
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                events.emit(f"before-send.{event}", request=None)
                answer = work()
                events.emit(f"response-received.{event}", parsed_response=answer, context=context)
                break
            except (ClientError, ConnectTimeoutError, ReadTimeoutError) as exc:
                if attempt == MAX_ATTEMPTS or not _transient(exc):
                    raise
        events.emit(
            f"after-call.{event}", http_response=None, parsed=answer, model=model, context=context
        )
        return answer


def _transient(exc: Exception) -> bool:
    """What botocore's standard retry mode retries."""
    if not isinstance(exc, ClientError):
        return True
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    return error.get("Code") in TRANSIENT_CODES or status >= 500


def operation(name: str) -> Callable[[Callable[..., Page]], Callable[..., Page]]:
    """Marks an EmbeddedClient method as the AWS operation `name`: its calls emit the events."""

    def decorate(method: Callable[..., Page]) -> Callable[..., Page]:
        @functools.wraps(method)
        def call(self: EmbeddedClient, **params: Any) -> Page:
            return self._call(name, lambda: method(self, **params), params)

        return call

    return decorate


class Paginator:
    """Calls `operation` until `next_token` finds no more pages; the token goes back in as
    the argument named `argument`, as botocore's paginators do."""

    def __init__(
        self,
        operation: Callable[..., Page],
        next_token: Callable[[Page], Any | None],
        argument: str,
    ) -> None:
        self._operation, self._next_token, self._argument = operation, next_token, argument

    def paginate(self, **arguments: Any) -> Iterator[Page]:
        while True:
            page = self._operation(**arguments)
            yield page
            token = self._next_token(page)
            if token is None:
                return
            arguments[self._argument] = token
