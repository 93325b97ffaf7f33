"""One request through the pipeline: decode, authenticate, validate, stamp, serialise, store."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import orjson
import pybase64

from .auth import Source, SourceCache, write_key_from
from .config import Settings
from .decoding import ParsedBody, decompress, parse_object, request_bytes
from .errors import BadRequest, MessagesInFlight, NotFound, OutOfTime, StorageUnavailable
from .gc_deferral import deferred_collection
from .identity_store import DecisionLog, IdentityGraph
from .ledger import ClaimLost, Ledger, Plan, RequestDecisions, plan
from .profiles import ProfileStore
from .sink import EventSink
from .stamping import COLLECTOR_FIELD, RequestStamp, stamp_all
from .storage import fingerprint
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
_ENVELOPE_OBJECTS = ("context", "integrations")
_MERGED_ENVELOPE = frozenset({("context",), ("integrations",), ("sentAt",)})
# A message's datetimes are naive UTC (validation), written as RFC 3339 with a Z.
_DUMPS_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_TYPE, _MESSAGE_ID = itemgetter("type"), itemgetter("messageId")


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
    # Seconds the invocation has left (the Lambda context's clock); None: no deadline.
    time_left: Callable[[], float] | None = None


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

    messages: list[dict[str, Any]]
    lines: list[bytes]
    rejected: list[tuple[Rejection, object]]
    # The accepted messages' ids, in order.
    message_ids: list[str]
    # Positions of the identify and alias calls that name a userId: the graph's business.
    identity_calls: list[int]
    # Positions of the messages this request wrote to events/ (not duplicates, not busy ones).
    stored: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IngestResult:
    source: Source
    accepted: int
    rejected: list[Rejection]
    # The body after base64 and gzip were undone: what the client sent.
    body_bytes: int
    # Accepted messages an earlier request had stored already (not written again).
    duplicates: int
    # "merged", "refused:already_identified", ... -> how many of this request's calls had it.
    identity_outcomes: Counter[str]
    # Distinct ids whose profile change was dropped (best effort: the events are stored).
    profile_failures: int = 0


class Collector:
    """Ingests requests for one deployment: its limits, its sources, its sink and its ledger.

    Without a ledger, messages are deduplicated per request only (a retry of the same batch in
    the same hour); with one, per message over the ledger's window.
    """

    def __init__(
        self,
        settings: Settings,
        sources: SourceCache,
        sink: EventSink,
        identity: IdentityGraph | None = None,
        ledger: Ledger | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        profiles: ProfileStore | None = None,
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._sink = sink
        self._identity = identity
        self._ledger = ledger
        self._clock = clock
        self._profiles = profiles

    def ingest(self, request: IncomingRequest) -> IngestResult:
        """Store the request's valid messages and keep its rejected ones; raises the refusal
        (BadRequest, NotFound, ...) or the failure (StorageUnavailable, ...) it answers with."""
        with deferred_collection:
            return self._ingest(request)

    def _ingest(self, request: IncomingRequest) -> IngestResult:
        received_at = self._clock()
        call_type = _call_type(request.call)
        raw = decompress(
            request_bytes(request.body, request.is_base64_encoded),
            request.content_encoding,
            self._settings.max_request_bytes,
        )
        try:
            parsed = parse_object(raw)
        except BadRequest as exc:
            self._keep_unreadable(raw, exc, request, received_at)
            raise
        body = parsed.value
        source = self._sources.source_for(write_key_from(request.authorization, body))
        if call_type is None:
            items, envelope_problems, stamp_ = self._unpack_batch(
                body, request, received_at, source
            )
            item_problems = _batch_flaws(parsed, envelope_problems)
        else:
            # The route says what the call is, whatever the body's type says.
            items, envelope_problems = [{**body, "type": call_type}], []
            stamp_ = RequestStamp(received_at, source.id, request.request_id, request.ip)
            item_problems = {0: [flaw.reason() for flaw in parsed.flaws]} if parsed.flaws else {}
        processed = process(
            items, stamp_, self._settings.max_message_bytes, envelope_problems, item_problems
        )
        outcomes: Counter[str] = Counter()
        duplicates = profile_failures = 0
        if processed.lines:
            deadline = _Deadline(request.time_left, self._settings.deadline_margin_seconds)
            try:
                duplicates, outcomes = self._store_events(processed, stamp_, source, deadline)
            finally:
                # Also when some messages were stored and others are in flight (a 503).
                profile_failures = self._record_profiles(processed, deadline)
        if processed.rejected:
            self._store_rejected(processed, stamp_)
        return IngestResult(
            source=source,
            accepted=len(processed.lines),
            rejected=[rejection for rejection, _ in processed.rejected],
            body_bytes=len(raw),
            duplicates=duplicates,
            identity_outcomes=outcomes,
            profile_failures=profile_failures,
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

    def _store_events(
        self, processed: Processed, request: RequestStamp, source: Source, deadline: _Deadline
    ) -> tuple[int, Counter[str]]:
        """Store each accepted message once: claim it in the ledger, decide its identity call,
        hand it to the sink. Returns how many were stored before, and the identity outcomes."""
        ids = processed.message_ids

        def place_for(chosen: list[str]) -> str:
            # The set, not the order: an attempt storing the same messages names the same place.
            name = fingerprint(request.source_id, sorted(chosen))
            return self._sink.place(name, request.received_at)

        lease_until = None
        if self._ledger is None:
            # Per request only: a retry of the same batch sends its ids in the same order.
            name = fingerprint(request.source_id, ids)
            todo, key = Plan(write=[*range(len(ids))]), self._sink.place(name, request.received_at)
        else:
            todo, key, lease_until = self._claim(self._ledger, ids, request, place_for)
        outcomes: Counter[str] = Counter()
        if todo.write:
            outcomes = self._write(processed, todo, key, lease_until, request, source, deadline)
            processed.stored = todo.write
        if todo.busy:
            wait = todo.busy_until - request.received_at.timestamp()
            raise MessagesInFlight(f"{len(todo.busy)} messages are being stored elsewhere", wait)
        return len(todo.duplicates), outcomes

    def _claim(
        self,
        ledger: Ledger,
        ids: list[str],
        request: RequestStamp,
        place_for: Callable[[list[str]], str],
    ) -> tuple[Plan, str, float | None]:
        """Claim the messages to write for the object they go to; returns the plan, the
        object's key and the claim's lease. Most requests carry only new messages, so the claim
        is tried first, with no read; one that meets a message claimed before (a retry, a
        recomposed batch) reads the ledger, plans, and claims what it planned."""
        if len(set(ids)) == len(ids):
            key = place_for(ids)
            try:
                lease_until = ledger.claim(request.source_id, ids, {}, key)
            except ClaimLost:
                pass  # nothing is left claimed: the claim lets its own chunks go again
            else:
                return Plan(write=[*range(len(ids))]), key, lease_until
        todo, key = plan(
            ids,
            ledger.read(request.source_id, ids),
            _memoised(self._sink.holds),
            place_for,
            request.received_at.timestamp(),
        )
        if not todo.write:
            return todo, key, None
        claimed = [ids[p] for p in todo.write]
        previous = {ids[p]: entry for p, entry in todo.previous.items()}
        try:
            return todo, key, ledger.claim(request.source_id, claimed, previous, key)
        except ClaimLost:
            raise MessagesInFlight("a concurrent request claimed these messages", 1) from None

    def _write(
        self,
        processed: Processed,
        todo: Plan,
        key: str,
        lease_until: float | None,
        request: RequestStamp,
        source: Source,
        deadline: _Deadline,
    ) -> Counter[str]:
        """Decide and write the claimed messages; a failure leaves nothing half done that a
        retry cannot finish (the claims keep the identity decisions made)."""
        ledger = self._ledger
        ids = processed.message_ids
        claimed = [ids[p] for p in todo.write] if todo.duplicates or todo.busy else ids
        try:
            outcomes = self._decide_identities(processed, todo, key, source, deadline)
            deadline.check()
            if lease_until is not None and ledger is not None:
                ledger.check_lease(lease_until)
            lines = (
                processed.lines
                if len(claimed) == len(ids)
                else [processed.lines[p] for p in todo.write]
            )
            self._sink.put_events(key, lines, request)
        except StorageUnavailable:
            # Answered 503 even if the events got stored after all: the retry finds them.
            if ledger is not None and _absent(self._sink, key):
                ledger.release(request.source_id, claimed, key)
            raise
        return outcomes

    def _decide_identities(
        self, processed: Processed, todo: Plan, key: str, source: Source, deadline: _Deadline
    ) -> Counter[str]:
        """Apply each identify/alias to the graph in order (or take the decision an earlier
        attempt recorded) and store the outcome with its event; counts the outcomes."""
        counts: Counter[str] = Counter()
        graph = self._identity
        if graph is None or not processed.identity_calls:
            return counts
        writing = set(todo.write)
        positions = [p for p in processed.identity_calls if p in writing]
        ledger = self._ledger
        decisions = None if ledger is None else RequestDecisions(ledger, source.id, key)
        try:
            outcomes = self._decide(processed, positions, todo, source, decisions, deadline)
        except StorageUnavailable:
            # What was decided is kept for the retry, as far as DynamoDB still answers.
            if decisions is not None:
                with suppress(StorageUnavailable):
                    decisions.flush()
            raise
        if decisions is not None:
            decisions.flush()
        for position, outcome in zip(positions, outcomes, strict=True):
            message = processed.messages[position]
            message[COLLECTOR_FIELD] = {**message[COLLECTOR_FIELD], "identity": outcome}
            processed.lines[position] = orjson.dumps(message, option=_DUMPS_OPTIONS)
            reason = outcome.get("reason")
            counts[f"{outcome['outcome']}:{reason}" if reason else outcome["outcome"]] += 1
        return counts

    def _decide(
        self,
        processed: Processed,
        positions: list[int],
        todo: Plan,
        source: Source,
        decisions: RequestDecisions | None,
        deadline: _Deadline,
    ) -> list[dict[str, Any]]:
        """The outcome of each of these identity calls: the one an earlier attempt recorded,
        else the graph's, decided for all of them together."""
        recorded = {p: entry.identity for p, entry in todo.previous.items() if entry.identity}
        undecided = [p for p in positions if p not in recorded]
        if undecided:
            assert self._identity is not None
            messages = [processed.messages[p] for p in undecided]
            logs: list[DecisionLog | None] = [
                None if decisions is None else decisions.about(message["messageId"])
                for message in messages
            ]
            decided = self._identity.resolve_batch(
                messages, source.may_force_merge, logs, deadline.allows_more
            )
            recorded.update(zip(undecided, decided, strict=True))
        return [recorded[p] for p in positions]

    def _record_profiles(self, processed: Processed, deadline: _Deadline) -> int:
        """The profile changes of the messages stored (best effort: see profiles.py)."""
        if self._profiles is None or not processed.stored:
            return 0
        stored = [processed.messages[position] for position in processed.stored]
        return self._profiles.record(stored, deadline.allows_more)

    def _store_rejected(self, processed: Processed, request: RequestStamp) -> None:
        # No client id means no way to recognise a retry: the name becomes unique.
        ids = processed.message_ids + [
            rejection.message_id or uuid.uuid4().hex for rejection, _ in processed.rejected
        ]
        lines = [rejected_line(rej, item, request) for rej, item in processed.rejected]
        self._sink.put_rejected(fingerprint(request.source_id, ids), lines, request)

    def _keep_unreadable(
        self, raw: bytes, problem: BadRequest, request: IncomingRequest, received_at: datetime
    ) -> None:
        """A body that is not a JSON object, from a client that authenticated by header: kept
        under rejected/ as it arrived, so nothing an authenticated client sent is lost."""
        if not request.authorization:
            return
        source = self._sources.source_for(write_key_from(request.authorization, {}))
        stamp_ = RequestStamp(received_at, source.id, request.request_id, request.ip)
        record = {
            "reasons": [f"{problem.code}: {problem.message}"],
            "receivedAt": received_at,
            "collector": stamp_.provenance,
            "bodyBase64": pybase64.b64encode(raw).decode(),
        }
        name = fingerprint(source.id, [hashlib.sha256(raw).hexdigest()])
        self._sink.put_rejected(name, [orjson.dumps(record, option=_DUMPS_OPTIONS)], stamp_)


def process(
    items: list[Any],
    request: RequestStamp,
    max_message_bytes: int,
    envelope_problems: list[str] | None = None,
    item_problems: dict[int, list[str]] | None = None,
) -> Processed:
    """Validate, stamp and serialise each message: the per-event hot path, no I/O in it.

    Written as whole-list passes, which CPython runs faster than one loop doing everything per
    message (measured: 10% of this function); invalid messages are the exception, so what
    finds them is a C-level scan (counting `type`s by identity, which unlike `in` never calls
    `__eq__`) before any Python-level pass.
    """
    if envelope_problems:
        results: list[Any] = [InvalidMessage(envelope_problems)] * len(items)
    else:
        results = validate_messages(items)
        for index, reasons in (item_problems or {}).items():
            results[index] = InvalidMessage(reasons)
    problems: dict[int, InvalidMessage] = {}
    if list(map(type, results)).count(dict) != len(results):
        problems = {i: r for i, r in enumerate(results) if isinstance(r, InvalidMessage)}
        accepted = [i for i in range(len(items)) if i not in problems]
        messages = stamp_all([results[i] for i in accepted], request)
    else:
        accepted, messages = [*range(len(items))], stamp_all(results, request)
    lines = _serialised(messages)
    failed = list(map(type, lines)).count(bytes) != len(lines)
    if failed or max(map(len, cast(list[bytes], lines)), default=0) > max_message_bytes:
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
    types = list(map(_TYPE, messages))
    identity_calls = []
    if "identify" in types or "alias" in types:
        identity_calls = [
            n
            for n, message in enumerate(messages)
            if message["type"] in IDENTITY_TYPES and message.get("userId") is not None
        ]
    return Processed(
        messages=messages,
        lines=cast(list[bytes], lines),  # every InvalidMessage was taken out above
        rejected=rejected,
        message_ids=list(map(_MESSAGE_ID, messages)),
        identity_calls=identity_calls,
    )


@dataclass(frozen=True, slots=True)
class _Deadline:
    """When a request must stop working and answer 503, so that it never outlives its Lambda:
    `margin` seconds before the invocation's end leaves room to record, release and answer."""

    time_left: Callable[[], float] | None
    margin: float

    def allows_more(self) -> bool:
        return self.time_left is None or self.time_left() > self.margin

    def check(self) -> None:
        if not self.allows_more():
            raise OutOfTime("the invocation ran short of time before its write")


def _batch_flaws(parsed: ParsedBody, envelope_problems: list[str]) -> dict[int, list[str]]:
    """Each message's unrepresentable values. One in the envelope that is merged into every
    message (context, integrations, sentAt) spoils them all; elsewhere it is never stored."""
    problems: dict[int, list[str]] = {}
    for flaw in parsed.flaws:
        path = flaw.path
        if len(path) >= 2 and path[0] == "batch" and isinstance(path[1], int):
            problems.setdefault(path[1], []).append(flaw.reason(skip=2))
        elif path[:1] in _MERGED_ENVELOPE:
            envelope_problems.append(f"batch {flaw.reason()}")
    return problems


def _memoised(exists: Callable[[str], bool]) -> Callable[[str], bool]:
    """One look-up per place within a request, however many of its messages a plan asks
    about."""
    known: dict[str, bool] = {}

    def cached(key: str) -> bool:
        if key not in known:
            known[key] = exists(key)
        return known[key]

    return cached


def _absent(sink: EventSink, place: str) -> bool:
    """True only if the sink says `place` is not stored; a failing sink leaves it unknown."""
    try:
        return not sink.holds(place)
    except StorageUnavailable:
        return False


def _serialised(messages: list[dict[str, Any]]) -> list[bytes | InvalidMessage]:
    """Each message as a JSON line, or why it cannot be one. `map` with the options passed by
    position is a C-level loop, with no keyword to match per call (5% of serialising)."""
    try:
        return list(map(orjson.dumps, messages, repeat(None), repeat(_DUMPS_OPTIONS)))
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
