"""Refusals: an HTTP status, a stable code and a message a developer can act on."""

from __future__ import annotations

from typing import Any, ClassVar


class RequestRefused(Exception):
    """The whole request is refused; nothing from it was stored."""

    status: ClassVar[int] = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class BadRequest(RequestRefused):
    status = 400


class Unauthorized(RequestRefused):
    status = 401


class PayloadTooLarge(RequestRefused):
    status = 413


class UnsupportedMediaType(RequestRefused):
    status = 415


class StorageUnavailable(Exception):
    """S3 or DynamoDB failed in a way a retry of the same request can fix."""

    code = "storage_unavailable"
    retry_after: float | None = None


class OutOfTime(StorageUnavailable):
    """The invocation would end before the request could finish: answered 503 in time, with
    the work done so far kept for the retry."""

    code = "out_of_time"


class MessagesInFlight(StorageUnavailable):
    """Some messages are being stored by a concurrent request; retry once its lease ends."""

    code = "messages_in_flight"

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class NotFound(RequestRefused):
    status = 404
