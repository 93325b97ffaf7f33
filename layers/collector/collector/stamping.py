"""Stamp a validated message with what the collector knows: ids, the four timestamps, ip, source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson

# The one place a stored message says where it came from; a client value there is replaced.
COLLECTOR_FIELD = "collector"


@dataclass(frozen=True, slots=True)
class RequestStamp:
    """Everything one request contributes to each of its messages, worked out once."""

    received_at: datetime
    source_id: str
    request_id: str
    ip: str | None = None
    # Batch-level values: each message's own value wins over them.
    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    provenance: dict[str, str] = field(init=False)
    # receivedAt - sentAt for the batch-level sentAt: the clock skew (plus latency) to take out.
    skew: timedelta | None = field(init=False)
    # The same for every message, so formatted once rather than per message.
    received_text: str = field(init=False)
    sent_text: str | None = field(init=False)

    def __post_init__(self) -> None:
        derived = {
            "provenance": {"sourceId": self.source_id, "requestId": self.request_id},
            "skew": None if self.sent_at is None else self.received_at - self.sent_at,
            "received_text": iso_utc(self.received_at),
            "sent_text": None if self.sent_at is None else iso_utc(self.sent_at),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def stamp(message: dict[str, Any], request: RequestStamp) -> dict[str, Any]:
    """Add the stamps to `message`, a validated copy, in place (its context too) and return it.

    timestamp = receivedAt - (sentAt - originalTimestamp); without sentAt it is
    originalTimestamp, without both receivedAt. Validation has parsed the client's timestamps
    and bounded their years, so nothing here can fail. On the per-event hot path.
    """
    get = message.get
    message.pop("writeKey", None)
    if not get("messageId"):
        message["messageId"] = str(uuid4())
    received_at = request.received_at
    message["receivedAt"] = request.received_text
    sent_at = get("sentAt")
    if sent_at is None:
        skew = request.skew
        if skew is not None:
            message["sentAt"] = request.sent_text
    else:
        skew = received_at - sent_at
    original = get("originalTimestamp") or get("timestamp")
    if original is None:
        message["timestamp"] = received_at
    else:
        message["originalTimestamp"] = original
        message["timestamp"] = original if skew is None else original + skew
    # Batch-level context under the message's own; the request's ip unless the client set one.
    context = get("context")
    if request.context:
        context = {**request.context, **context} if context else dict(request.context)
        message["context"] = context
    if request.ip is not None:
        if context is None:
            message["context"] = {"ip": request.ip}
        elif context.get("ip") is None:
            context["ip"] = request.ip
    if request.integrations:
        own = get("integrations")
        message["integrations"] = {**request.integrations, **own} if own else request.integrations
    message[COLLECTOR_FIELD] = request.provenance
    return message


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as orjson writes the per-message timestamps."""
    return orjson.dumps(moment.astimezone(UTC), option=orjson.OPT_UTC_Z)[1:-1].decode()
