"""One request through the pipeline: decode, authenticate, validate, stamp, serialise, store."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import orjson

from .auth import Source, SourceCache, write_key_from
from .config import Settings
from .decoding import decompress, parse_object, request_bytes
from .errors import BadRequest, NotFound
from .identity_store import IdentityGraph
from .stamping import COLLECTOR_FIELD, RequestStamp, stamp
from .storage import (
    EVENTS_PREFIX,
    REJECTED_PREFIX,
    EventStore,
    earlier_hours,
    fingerprint,
    gzip_lines,
)
from .validation import InvalidMessage, parse_timestamp, validate_messages

# Route name -> message type; the one-letter names are analytics.js 2.0's short paths.
SINGLE_CALLS = {
    "identify": "identify",
    "i": "identify",
    "track": "track",
    "t": "track",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
}
BATCH_CALLS = frozenset({"batch", "b", "import"})
IDENTITY_TYPES = frozenset({"identify", "alias"})
# Applies one identify or alias message to the identity graph; returns the outcome record.
ResolveIdentity = Callable[[dict[str, Any]], dict[str, Any]]
_ENVELOPE_OBJECTS = ("context", "integrations")
_DUMPS_OPTIONS = orjson.OPT_UTC_Z


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """The parts of an API Gateway request that ingestion reads."""

    call: str
    body: str | None
    is_base64_encoded: bool
    request_id: str
    authorization: str | None = None
    content_encoding: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that was not stored as an event, and why (it is kept under rejected/)."""

    index: int
    message_id: str | None
    reasons: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "messageId": self.message_id, "reasons": self.reasons}


@dataclass(slots=True)
class Processed:
    """The messages of one request after validation and stamping, ready to store."""

    lines: list[bytes]
    rejected: list[tuple[Rejection, object]]
    # Accepted ids in order, then rejected ones: the request's identity for retries.
    message_ids: list[str]
    per_type: Counter[str]
    newest: datetime | None
    identity_outcomes: Counter[str]


@dataclass(frozen=True, slots=True)
class IngestResult:
    source: Source
    accepted: int
    rejected: list[Rejection]
    per_type: Counter[str]
    # The body after base64 and gzip were undone: what the client sent.
    body_bytes: int
    duplicate: bool
    # "merged", "refused:already_identified", ... -> how many of this request's calls had it.
    identity_outcomes: Counter[str]


class Collector:
    """Ingests requests for one deployment: its limits, its sources and its bucket."""

    def __init__(
        self,
        settings: Settings,
        sources: SourceCache,
        store: EventStore,
        identity: IdentityGraph | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._store = store
        self._identity = identity
        self._clock = clock

    def ingest(self, request: IncomingRequest) -> IngestResult:
        received_at = self._clock()
        call_type = _call_type(request.call)
        raw = decompress(
            request_bytes(request.body, request.is_base64_encoded),
            request.content_encoding,
            self._settings.max_request_bytes,
        )
        body = parse_object(raw)
        source = self._sources.source_for(write_key_from(request.authorization, body))
        if call_type is None:
            items, envelope_problems, stamp_ = self._unpack_batch(
                body, request, received_at, source
            )
        else:
            # The route says what the call is, whatever the body's type says.
            items, envelope_problems = [{**body, "type": call_type}], []
            stamp_ = RequestStamp(received_at, source.id, request.request_id, request.ip)
        resolve = None
        if self._identity is not None:
            resolve = partial(self._identity.resolve, allow_force=source.may_force_merge)
        processed = process(
            items, stamp_, self._settings.max_message_bytes, envelope_problems, resolve
        )
        duplicate = self._store_processed(processed, stamp_)
        return IngestResult(
            source=source,
            accepted=len(processed.lines),
            rejected=[rejection for rejection, _ in processed.rejected],
            per_type=processed.per_type,
            body_bytes=len(raw),
            duplicate=duplicate,
            identity_outcomes=processed.identity_outcomes,
        )

    def _unpack_batch(
        self, body: dict[str, Any], request: IncomingRequest, received_at: datetime, source: Source
    ) -> tuple[list[Any], list[str], RequestStamp]:
        items = body.get("batch")
        if not isinstance(items, list) or not items:
            raise BadRequest("invalid_batch", "batch must be a non-empty array of messages.")
        limit = self._settings.max_batch_messages
        if len(items) > limit:
            raise BadRequest(
                "batch_too_large",
                f"The batch has {len(items)} messages; at most {limit} are accepted per request.",
            )
        # A broken envelope rejects each message with the reason, so nothing sent is lost.
        problems: list[str] = []
        sent_at = None
        if body.get("sentAt") is not None:
            try:
                sent_at = _batch_timestamp(body["sentAt"])
            except InvalidMessage as exc:
                problems.extend(f"batch {reason}" for reason in exc.reasons)
        envelope = {name: body.get(name) for name in _ENVELOPE_OBJECTS}
        for name, value in envelope.items():
            if value is not None and not isinstance(value, dict):
                problems.append(f"batch {name}: must be an object")
                envelope[name] = None
        stamp_ = RequestStamp(
            received_at,
            source.id,
            request.request_id,
            request.ip,
            sent_at=sent_at,
            context=envelope["context"],
            integrations=envelope["integrations"],
        )
        return items, problems, stamp_

    def _store_processed(self, processed: Processed, request: RequestStamp) -> bool:
        """Write the events object and, when needed, the rejected one; True if all existed."""
        settings = self._settings
        request_fingerprint = fingerprint(request.source_id, processed.message_ids)
        earlier = (
            earlier_hours(request.received_at, processed.newest, settings.dedupe_lookback_hours)
            if processed.newest is not None
            else []
        )
        metadata = {"source-id": request.source_id, "request-id": request.request_id}
        objects = {
            EVENTS_PREFIX: processed.lines,
            REJECTED_PREFIX: [
                rejected_line(rej, item, request) for rej, item in processed.rejected
            ],
        }
        written = [
            self._store.put_once(
                prefix,
                request.received_at,
                request_fingerprint,
                gzip_lines(lines, settings.gzip_level),
                earlier,
                metadata,
            )[1]
            for prefix, lines in objects.items()
            if lines
        ]
        return not any(written)


def process(
    items: list[Any],
    request: RequestStamp,
    max_message_bytes: int,
    envelope_problems: list[str] | None = None,
    resolve_identity: ResolveIdentity | None = None,
) -> Processed:
    """Validate, stamp and serialise each message: the per-event hot path, no I/O in it but
    `resolve_identity` for identify and alias calls (tracks and the rest never reach it).

    Written as whole-list passes, which CPython runs faster than one loop doing everything per
    message (measured: 10% of this function); invalid messages are the exception.
    """
    if envelope_problems:
        results: list[Any] = [InvalidMessage(envelope_problems)] * len(items)
    else:
        results = validate_messages(items)
    problems = {i: result for i, result in enumerate(results) if isinstance(result, InvalidMessage)}
    accepted = (
        [i for i in range(len(items)) if i not in problems] if problems else [*range(len(items))]
    )
    messages = [stamp(results[i], request) for i in accepted]
    lines = _serialised(messages)
    suspects = [
        n
        for n, line in enumerate(lines)
        if not isinstance(line, bytes) or len(line) > max_message_bytes
    ]
    for n in reversed(suspects):
        problem = _line_problem(lines[n], items[accepted[n]], max_message_bytes)
        if problem is not None:
            problems[accepted[n]] = problem
            del accepted[n], messages[n], lines[n]
    rejected = [
        (Rejection(i, _client_message_id(items[i]), problems[i].reasons), items[i])
        for i in sorted(problems)
    ]
    types = [message["type"] for message in messages]
    outcomes: Counter[str] = Counter()
    if resolve_identity is not None and ("identify" in types or "alias" in types):
        outcomes = _resolve_identities(messages, lines, resolve_identity)
    return Processed(
        lines=cast(list[bytes], lines),  # every InvalidMessage was taken out above
        rejected=rejected,
        # No client id means no way to recognise a retry: the fingerprint becomes unique.
        message_ids=[message["messageId"] for message in messages]
        + [rejection.message_id or uuid.uuid4().hex for rejection, _ in rejected],
        per_type=Counter(types),
        identity_outcomes=outcomes,
        newest=max([message["timestamp"] for message in messages], default=None),
    )


def _resolve_identities(
    messages: list[dict[str, Any]], lines: list[Any], resolve: ResolveIdentity
) -> Counter[str]:
    """Apply each identify/alias to the graph in order and store its outcome with the event;
    counts the outcomes ("merged", "refused:already_identified", ...)."""
    counts: Counter[str] = Counter()
    for position, message in enumerate(messages):
        if message["type"] in IDENTITY_TYPES and message.get("userId") is not None:
            outcome = resolve(message)
            message[COLLECTOR_FIELD] = {**message[COLLECTOR_FIELD], "identity": outcome}
            lines[position] = orjson.dumps(message, option=_DUMPS_OPTIONS)
            reason = outcome.get("reason")
            counts[f"{outcome['outcome']}:{reason}" if reason else outcome["outcome"]] += 1
    return counts


def _serialised(messages: list[dict[str, Any]]) -> list[bytes | InvalidMessage]:
    """Each message as a JSON line, or why it cannot be one."""
    try:
        return [orjson.dumps(message, option=_DUMPS_OPTIONS) for message in messages]
    except orjson.JSONEncodeError:
        return [_serialised_alone(message) for message in messages]


def _serialised_alone(message: dict[str, Any]) -> bytes | InvalidMessage:
    try:
        return orjson.dumps(message, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        return InvalidMessage([f"cannot be stored as JSON: {_encode_problem(exc)}"])


def _line_problem(line: bytes | InvalidMessage, sent: object, limit: int) -> InvalidMessage | None:
    """Why a line cannot be stored; the size limit applies to the message as the client sent it.

    Stamps add a few hundred bytes, so only a line over the limit needs the exact client size.
    """
    if isinstance(line, InvalidMessage):
        return line
    size = len(orjson.dumps(sent))
    if size > limit:
        return InvalidMessage([f"message is {size} bytes; at most {limit} are accepted"])
    return None


def rejected_line(rejection: Rejection, item: object, request: RequestStamp) -> bytes:
    """A line under rejected/: the message as sent (minus its write key) and the reasons."""
    if isinstance(item, dict) and "writeKey" in item:
        item = {key: value for key, value in item.items() if key != "writeKey"}
    record = {
        **rejection.as_json(),
        "receivedAt": request.received_at,
        "collector": request.provenance,
        "message": item,
    }
    try:
        return orjson.dumps(record, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        # Only a message nested deeper than orjson writes lands here; keep the record itself.
        record["message"] = None
        record["reasons"] = [*rejection.reasons, f"message not kept: {_encode_problem(exc)}"]
        return orjson.dumps(record, option=_DUMPS_OPTIONS)


def _call_type(call: str) -> str | None:
    """The message type a route implies; None for batch routes."""
    if call in BATCH_CALLS:
        return None
    try:
        return SINGLE_CALLS[call]
    except KeyError:
        raise NotFound(
            "unknown_route",
            f"/v1/{call} is not a collector route; use /v1/batch or one of "
            f"/v1/{', /v1/'.join(name for name in SINGLE_CALLS if len(name) > 1)}.",
        ) from None


def _batch_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidMessage(["sentAt: must be an ISO-8601 string"])
    return parse_timestamp(value, "sentAt")


def _client_message_id(item: object) -> str | None:
    message_id = item.get("messageId") if isinstance(item, dict) else None
    if isinstance(message_id, str | int) and not isinstance(message_id, bool):
        return str(message_id)[:100] or None
    return None


def _encode_problem(exc: orjson.JSONEncodeError) -> str:
    text = str(exc)
    return "nested deeper than 254 levels" if "ecursion" in text else text
