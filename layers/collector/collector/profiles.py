"""Profiles: when each distinct id was first and last seen, and the traits its identify calls
set, kept in the identity table so that GET /v1/identities shows the whole person.

Profile data belongs to a distinct id, not to a person, so a merge of persons moves nothing: a
person's profile is the merge of its ids' items, made when it is read.
  PROFILE#<distinct id> / SEEN     firstSeen, lastSeen, profileVersion
  PROFILE#<distinct id> / TRAITS   traits (JSON {name: [timestamp, value]}), profileVersion

The rules are those of tools/sql/profiles.sql: a trait's value is its latest non-null value by
event time (the message's `timestamp`), from `traits` or else `context.traits`; first and last
seen are the earliest and latest event naming the id (userId, anonymousId or previousId). Both
merges are commutative and idempotent (min/max; per trait the later timestamp, a tie broken by
the value itself), so arrival order and a message applied twice change nothing.

Writes: a request's stored messages are folded into one change per item, the items read in one
BatchGetItem per 100 keys, and only the changed ones written, each conditional on the version
read, in TransactWriteItems of 100 (a chunk of up to three as plain PutItems, half the write
units). A writer that lost a race re-reads and merges again. Two items per id keep a track's
write small however many traits the id has. lastSeen is written only when it moves by at least
`seen_resolution` seconds, and a warm Lambda remembers what it knows is stored, so a repeat
within that resolution costs nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .dynamodb import ITEMS_PER_TRANSACTION, ConditionsFailed, chunks, get_many, transact, write_one
from .errors import StorageUnavailable
from .identity import BLOCKED_ANY_CASE, refusal
from .stamping import iso_utc

SEEN, TRAITS = "SEEN", "TRAITS"
_ID_FIELDS = ("userId", "anonymousId", "previousId")
# Chunks this small go as PutItems: 1 write unit each instead of a transaction's 2. Three is
# what one identify or alias names (userId and anonymousId or previousId seen, userId's
# traits), so a browser's one-event request does not pay for a transaction.
_SINGLE_WRITES = 3
# DynamoDB holds at most 400 KB per item; a traits item nearing that is not grown further.
_MAX_TRAITS_BYTES = 350_000
_CACHE_LIMIT = 100_000

Traits = dict[str, tuple[str, Any]]  # name -> (timestamp as _text, value)


@dataclass(frozen=True, slots=True)
class Seen:
    """The earliest and latest event time of an id (as _text: fixed width, so text order is
    time order)."""

    first: str
    last: str

    def union(self, other: Seen) -> Seen:
        return Seen(min(self.first, other.first), max(self.last, other.last))


@dataclass(frozen=True, slots=True)
class Profile:
    """A person's merged profile, as GET /v1/identities adds it to the person."""

    traits: dict[str, Any]
    seen: Seen | None

    def as_json(self) -> dict[str, Any]:
        first, last = (None, None) if self.seen is None else (self.seen.first, self.seen.last)
        return {"traits": self.traits, "firstSeen": _iso(first), "lastSeen": _iso(last)}


@dataclass(slots=True)
class Changes:
    """What a request's stored messages say about each distinct id."""

    seen: dict[str, Seen] = field(default_factory=dict)
    traits: dict[str, Traits] = field(default_factory=dict)


def changes(
    messages: Iterable[Mapping[str, Any]], blocked: frozenset[str] = BLOCKED_ANY_CASE
) -> Changes:
    """The stored messages folded into one change per id. Ids the identity graph refuses
    (placeholders such as "null") are skipped: they are no one's, and would be hot keys."""
    found = Changes()
    allowed: dict[str, bool] = {}

    def usable(distinct_id: object) -> str | None:
        if not isinstance(distinct_id, str):
            return None
        if distinct_id not in allowed:
            allowed[distinct_id] = refusal(distinct_id, blocked) is None
        return distinct_id if allowed[distinct_id] else None

    for message in messages:
        moment = _text(message["timestamp"])
        at = Seen(moment, moment)
        for name in _ID_FIELDS:
            distinct_id = usable(message.get(name))
            if distinct_id is not None:
                known = found.seen.get(distinct_id)
                found.seen[distinct_id] = at if known is None else known.union(at)
        if message.get("type") != "identify":
            continue
        sent = message.get("traits")
        if sent is None:
            # rudder-sdk-python sends an identify's traits in context.traits.
            sent = (message.get("context") or {}).get("traits")
        # The event's person is its userId's, or its anonymousId's when the userId is refused
        # (person_events.sql): the traits go with that id.
        owner = usable(message.get("userId")) or usable(message.get("anonymousId"))
        if isinstance(sent, dict) and sent and owner is not None:
            merge_traits(found.traits.setdefault(owner, {}), moment, sent)
    return found


def merge_traits(into: Traits, moment: str, sent: Mapping[str, Any]) -> bool:
    """Merge one identify's traits (at `moment`) into `into`; True if anything changed."""
    return _absorb(into, ((name, (moment, value)) for name, value in sent.items()))


def merged(items: Iterable[Traits]) -> Traits:
    """Several ids' traits as one person's."""
    result: Traits = {}
    for traits in items:
        _absorb(result, traits.items())
    return result


def _absorb(into: Traits, entries: Iterable[tuple[str, tuple[str, Any]]]) -> bool:
    """Keep each entry that is newer than what `into` has (nulls never count); True if any."""
    changed = False
    for name, entry in entries:
        if entry[1] is not None and _newer(entry, into.get(name)):
            into[name] = entry
            changed = True
    return changed


def _newer(entry: tuple[str, Any], than: tuple[str, Any] | None) -> bool:
    """The later value wins; at the same time, the greater JSON text, so that the result never
    depends on which of the two arrived first."""
    if than is None or entry[0] != than[0]:
        return than is None or entry[0] > than[0]
    return _sort_key(entry[1]) > _sort_key(than[1])


class KnownSeen:
    """The warm Lambda's memory of seen times it knows are stored (read or written). Stored
    first seen only goes down and last seen only up, so what it remembers never misleads: an
    event inside it, or less than the resolution after it, needs no DynamoDB call."""

    def __init__(self, resolution: timedelta, limit: int = _CACHE_LIMIT) -> None:
        self._resolution, self._limit = resolution, limit
        self._known: dict[str, tuple[datetime, datetime]] = {}

    def covers(self, distinct_id: str, seen: Seen) -> bool:
        known = self._known.get(distinct_id)
        return known is not None and _within(seen, known, self._resolution)

    def remember(self, distinct_id: str, seen: Seen) -> None:
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[distinct_id] = (_moment(seen.first), _moment(seen.last))


@dataclass(frozen=True, slots=True)
class _Write:
    """One item to put, conditional on the version it was merged from (0: it did not exist)."""

    key: tuple[str, str]
    item: dict[str, Any]
    version: int
    seen: Seen | None = None

    def put(self, table: str) -> dict[str, Any]:
        """As a transaction's Put item (or, alone, a PutItem's request)."""
        request: dict[str, Any] = {"TableName": table, "Item": self.item}
        if self.version == 0:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "profileVersion = :version"
            request["ExpressionAttributeValues"] = {":version": {"N": str(self.version)}}
        return {"Put": request}


class ProfileStore:
    """Records the profile changes of a request's stored messages and reads a person's."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        blocked: frozenset[str] = BLOCKED_ANY_CASE,
        seen_resolution: float = 3600.0,
        attempts: int = 4,
    ) -> None:
        self._db, self._table, self._blocked, self._attempts = dynamodb, table, blocked, attempts
        self._resolution = timedelta(seconds=seen_resolution)
        self._known = KnownSeen(self._resolution)

    def record(
        self, messages: Iterable[Mapping[str, Any]], in_time: Callable[[], bool] = lambda: True
    ) -> int:
        """Apply what these stored messages say; returns how many ids' changes were dropped
        (DynamoDB failing, the invocation short of time, or a race lost every attempt). Never
        raises for DynamoDB: the events are stored already, and profiles are derived data
        that tools/sql/profiles.sql recomputes from them."""
        found = changes(messages, self._blocked)
        pending: dict[tuple[str, str], Any] = {
            (distinct_id, SEEN): seen
            for distinct_id, seen in found.seen.items()
            if not self._known.covers(distinct_id, seen)
        }
        pending.update(((distinct_id, TRAITS), t) for distinct_id, t in found.traits.items())
        for _ in range(self._attempts):
            if not pending or not in_time():
                break
            try:
                stored = self._read(list(pending))
                writes = [w for w in map(self._merge, pending.items(), stored) if w is not None]
                done = set(pending) - {write.key for write in writes}
                done |= self._put(writes, in_time)
            except StorageUnavailable:
                break
            for key in done:
                del pending[key]
        return len({distinct_id for distinct_id, _ in pending})

    def read(self, distinct_ids: list[str]) -> Profile:
        """The merged profile of a person holding these ids (2 keys an id, 100 keys a call)."""
        keys = [_key(distinct_id, kind) for distinct_id in distinct_ids for kind in (SEEN, TRAITS)]
        seen: Seen | None = None
        traits: list[Traits] = []
        for item in get_many(self._db, self._table, keys):
            if item["sk"]["S"] == SEEN:
                found = _seen(item)
                seen = found if seen is None else seen.union(found)
            else:
                traits.append(_traits(item))
        person = merged(traits)
        return Profile({name: value for name, (_, value) in sorted(person.items())}, seen)

    def _read(self, keys: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """The stored item at each key, in order (None where there is none)."""
        found = get_many(self._db, self._table, [_key(*key) for key in keys])
        by_key = {(item["pk"]["S"][len("PROFILE#") :], item["sk"]["S"]): item for item in found}
        return [by_key.get(key) for key in keys]

    def _merge(
        self, change: tuple[tuple[str, str], Any], stored: dict[str, Any] | None
    ) -> _Write | None:
        """The write that merges `change` into the stored item, or None if it changes nothing
        worth writing (the warm memory learns what is stored either way)."""
        (distinct_id, kind), value = change
        version = 0 if stored is None else int(stored["profileVersion"]["N"])
        attributes: dict[str, Any]
        if kind == SEEN:
            before = None if stored is None else _seen(stored)
            if before is not None and _within(value, _moments(before), self._resolution):
                self._known.remember(distinct_id, before)
                return None
            after = value if before is None else before.union(value)
            attributes = {"firstSeen": {"S": after.first}, "lastSeen": {"S": after.last}}
            return _write(distinct_id, kind, attributes, version, after)
        traits = {} if stored is None else _traits(stored)
        if not _absorb(traits, value.items()):
            return None
        text = orjson.dumps({name: list(entry) for name, entry in traits.items()})
        if len(text) > _MAX_TRAITS_BYTES:
            return None  # kept as it is rather than refused by DynamoDB for good
        return _write(distinct_id, kind, {"traits": {"S": text.decode()}}, version)

    def _put(self, writes: list[_Write], in_time: Callable[[], bool]) -> set[tuple[str, str]]:
        """Write what can be written; returns the keys written (the others lost a race)."""
        written: set[tuple[str, str]] = set()
        for chunk in chunks(writes, ITEMS_PER_TRANSACTION):
            if not in_time():
                break
            if len(chunk) <= _SINGLE_WRITES:
                written |= {write.key for write in chunk if self._put_one(write)}
                continue
            try:
                transact(self._db, [write.put(self._table) for write in chunk])
            except ConditionsFailed:
                continue
            written |= {write.key for write in chunk}
        for write in writes:
            if write.seen is not None and write.key in written:
                self._known.remember(write.key[0], write.seen)
        return written

    def _put_one(self, write: _Write) -> bool:
        """Write one item by itself; False if it lost a race."""
        try:
            write_one(self._db, write.put(self._table))
        except ConditionsFailed:
            return False
        return True


def _write(
    distinct_id: str, kind: str, attributes: dict[str, Any], version: int, seen: Seen | None = None
) -> _Write:
    item = {**_key(distinct_id, kind), **attributes, "profileVersion": {"N": str(version + 1)}}
    return _Write((distinct_id, kind), item, version, seen)


def _within(seen: Seen, known: tuple[datetime, datetime], resolution: timedelta) -> bool:
    """Nothing in `seen` needs writing over `known`: not earlier than its first, and not
    `resolution` or more after its last (a later time at all when the resolution is 0)."""
    first, last = known
    latest = _moment(seen.last)
    return _moment(seen.first) >= first and (latest <= last or latest - last < resolution)


def _key(distinct_id: str, kind: str) -> dict[str, Any]:
    return {"pk": {"S": f"PROFILE#{distinct_id}"}, "sk": {"S": kind}}


def _seen(item: dict[str, Any]) -> Seen:
    return Seen(item["firstSeen"]["S"], item["lastSeen"]["S"])


def _traits(item: dict[str, Any]) -> Traits:
    stored = orjson.loads(item["traits"]["S"])
    return {name: (moment, value) for name, (moment, value) in stored.items()}


def _text(moment: datetime) -> str:
    """Fixed width (microseconds always written), so that text order is time order. A message's
    datetimes are naive UTC (validation); an aware one is converted."""
    in_utc = moment if moment.tzinfo is None else moment.astimezone(UTC)
    return in_utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _moments(seen: Seen) -> tuple[datetime, datetime]:
    return _moment(seen.first), _moment(seen.last)


def _iso(text: str | None) -> str | None:
    """As the events' own timestamps are written (RFC 3339 UTC with a Z)."""
    return None if text is None else iso_utc(_moment(text))


def _sort_key(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
