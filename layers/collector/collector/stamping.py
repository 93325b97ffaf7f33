"""Stamp a validated message with what the collector knows: ids, the four timestamps, ip, source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson

from .validation import naive_utc

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
    # received_at as the messages' own datetimes are: naive, in UTC (validation says why).
    received_naive: datetime = field(init=False)
    # The same for every message, so formatted once rather than per message.
    received_text: str = field(init=False)
    sent_text: str | None = field(init=False)

    def __post_init__(self) -> None:
        derived = {
            "provenance": {"sourceId": self.source_id, "requestId": self.request_id},
            "skew": None if self.sent_at is None else self.received_at - self.sent_at,
            "received_naive": naive_utc([self.received_at])[0],
            "received_text": iso_utc(self.received_at),
            "sent_text": None if self.sent_at is None else iso_utc(self.sent_at),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def stamp_all(messages: list[dict[str, Any]], request: RequestStamp) -> list[dict[str, Any]]:
    """Add the stamps to each of `messages`, validated copies, in place (their contexts too);
    returns the list.

    timestamp = receivedAt - (sentAt - originalTimestamp); without sentAt it is
    originalTimestamp, without both receivedAt. Validation has parsed the client's timestamps
    (naive, in UTC) and bounded their years, so nothing here can fail. The per-event hot path:
    one loop with the request's values in locals costs a fifth less than a call per message,
    and `message.get(...)` written out 6% less than a bound `get` in a local (Python 3.11
    calls a method without making the bound method).
    """
    received_at, received_text = request.received_naive, request.received_text
    batch_skew, sent_text = request.skew, request.sent_text
    batch_context, batch_integrations = request.context, request.integrations
    ip, provenance = request.ip, request.provenance
    for message in messages:
        if "writeKey" in message:
            del message["writeKey"]
        if not message.get("messageId"):
            message["messageId"] = str(uuid4())
        message["receivedAt"] = received_text
        sent_at = message.get("sentAt")
        if sent_at is None:
            skew = batch_skew
            if skew is not None:
                message["sentAt"] = sent_text
        else:
            skew = received_at - sent_at
        original = message.get("originalTimestamp") or message.get("timestamp")
        if original is None:
            message["timestamp"] = received_at
        else:
            message["originalTimestamp"] = original
            message["timestamp"] = original if skew is None else original + skew
        # Batch-level context under the message's own; the request's ip unless the client set
        # one.
        context = message.get("context")
        if batch_context:
            context = {**batch_context, **context} if context else dict(batch_context)
            message["context"] = context
        if ip is not None:
            if context is None:
                message["context"] = {"ip": ip}
            elif context.get("ip") is None:
                context["ip"] = ip
        if batch_integrations:
            own = message.get("integrations")
            message["integrations"] = {**batch_integrations, **own} if own else batch_integrations
        message[COLLECTOR_FIELD] = provenance
    return messages


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as orjson writes the per-message timestamps."""
    return orjson.dumps(moment.astimezone(UTC), option=orjson.OPT_UTC_Z)[1:-1].decode()
