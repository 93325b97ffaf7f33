"""The Segment spec as a pydantic-core schema, and the checks that decide if a message is valid.

The schema is pydantic v2's own validator (pydantic-core) given its schema directly rather than
derived from pydantic `TypedDict` models: the validation, its errors and the key order of what it
returns are the same, but a cold start no longer imports pydantic's model machinery and builds
the models (~150 ms of the handler's import, measured with `python -X importtime`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import repeat
from operator import add, attrgetter, setitem, sub
from typing import Any

from pydantic_core import ErrorDetails, SchemaValidator, ValidationError
from pydantic_core import core_schema as schema

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
_YEAR, _TZINFO = attrgetter("year"), attrgetter("tzinfo")
# The years a timestamp may have (parse_timestamp says why), as a set: a subset test is C-level.
_YEARS = frozenset(range(1900, 2200))
_YEAR_RANGE = f"{min(_YEARS)}-{max(_YEARS)}"
_UTC_EPOCH, _NAIVE_EPOCH = datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 1)

_Fields = dict[str, schema.TypedDictField]


def _required(field: schema.CoreSchema) -> schema.TypedDictField:
    return schema.typed_dict_field(field, required=True)


def _optional(field: schema.CoreSchema) -> schema.TypedDictField:
    """A field that may be absent or null."""
    return schema.typed_dict_field(schema.nullable_schema(field), required=False)


_ID = schema.str_schema(min_length=1)
_TEXT = schema.str_schema()
# Checked, not copied: stamping copies the one object it changes (context).
_OBJECT = schema.is_instance_schema(dict)
# ISO-8601 strings, turned into datetimes by parse_timestamp after validation (see there).
_TIMESTAMP = _TEXT

# Every message's fields. The order is the order of the keys a validated message has (its
# unknown fields follow them, as sent), hence of the stored lines: keep it.
_COMMON: _Fields = {
    "messageId": _optional(schema.str_schema(min_length=1, max_length=100)),
    "userId": _optional(_ID),
    "anonymousId": _optional(_ID),
    "timestamp": _optional(_TIMESTAMP),
    "originalTimestamp": _optional(_TIMESTAMP),
    "sentAt": _optional(_TIMESTAMP),
    "context": _optional(_OBJECT),
    "integrations": _optional(_OBJECT),
}
_VIEW: _Fields = {
    "name": _optional(_TEXT),
    "category": _optional(_TEXT),
    "properties": _optional(_OBJECT),
}
_CONFIG = schema.CoreConfig(
    # Unknown fields are put back after validation, as sent (see _with_unknown).
    extra_fields_behavior="ignore",
    # Numbers are accepted wherever an id is expected and stored as strings, as Segment does.
    coerce_numbers_to_str=True,
)


def _type(name: str) -> schema.TypedDictField:
    return _required(schema.literal_schema([name]))


def _message(fields: _Fields) -> schema.TypedDictSchema:
    """One message type: the common fields, then its own."""
    return schema.typed_dict_schema({**_COMMON, **fields}, extra_behavior="ignore", config=_CONFIG)


# A union tagged by `type`, so an error names the field (`event: Field required`) rather than
# listing six models.
_MESSAGE_SCHEMA = schema.tagged_union_schema(
    {
        "identify": _message({"type": _type("identify"), "traits": _optional(_OBJECT)}),
        "track": _message(
            {"type": _type("track"), "event": _required(_ID), "properties": _optional(_OBJECT)}
        ),
        "page": _message({**_VIEW, "type": _type("page")}),
        "screen": _message({**_VIEW, "type": _type("screen")}),
        "group": _message(
            {"type": _type("group"), "groupId": _required(_ID), "traits": _optional(_OBJECT)}
        ),
        "alias": _message({"type": _type("alias"), "previousId": _required(_ID)}),
    },
    discriminator="type",
)
_MESSAGE = SchemaValidator(_MESSAGE_SCHEMA)
_MESSAGES = SchemaValidator(schema.list_schema(_MESSAGE_SCHEMA))


class InvalidMessage(Exception):
    """One message breaks the spec; `reasons` say how, one line per problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def validate_messages(items: list[Any]) -> list[dict[str, Any] | InvalidMessage]:
    """For each item, a validated copy (unknown fields kept as sent), or why it is invalid.

    The whole batch goes through pydantic in one call; only a batch holding an invalid message
    pays for validating message by message.
    """
    try:
        validated: list[Any] = _MESSAGES.validate_python(items)
    except ValidationError:
        validated = [_validate_alone(item) for item in items]
    else:
        # Unknown fields are rare; comparing sizes finds them without a Python-level pass.
        if list(map(len, validated)) != list(map(len, items)):
            validated = list(map(_with_unknown, validated, items))
    if not _checked_in_bulk(validated):
        _check_one_by_one(validated)
    return validated


def _checked_in_bulk(validated: list[Any]) -> bool:
    """The common batch (every message valid, each timestamp field either absent everywhere or
    a UTC time in range everywhere) checked and its timestamps parsed in C-level passes, one per
    field, rather than a Python-level loop per message. False, with nothing changed, for any
    other batch: `_check_one_by_one` then decides and explains.

    The scans count identities (`list.count`), which never call `__eq__`: `x in` a list of
    strings or types compares each by value, several times the cost.
    """
    size = len(validated)
    if list(map(type, validated)).count(dict) != size:
        return False  # an InvalidMessage among them
    # userId is None or a non-empty string (min_length=1), so all() finds the anonymous ones.
    if not all(map(dict.get, validated, repeat("userId"))):
        try:
            for message in validated:
                if message.get("userId") is None:
                    _check_identity(message)
        except InvalidMessage:
            return False
    parsed: list[tuple[str, list[datetime]]] = []
    for field in TIMESTAMP_FIELDS:
        values: list[Any] = list(map(dict.get, validated, repeat(field)))
        if not any(values) and values.count(None) == size:
            continue  # absent from every message
        try:
            moments = list(map(datetime.fromisoformat, values))
        except (TypeError, ValueError):  # absent from some messages (None), or not ISO-8601
            return False
        years = set(map(_YEAR, moments))
        if list(map(_TZINFO, moments)).count(UTC) != size or not years <= _YEARS:
            return False
        parsed.append((field, naive_utc(moments)))
    for field, moments in parsed:
        # operator.setitem, not dict.__setitem__: a builtin's call, not a slot wrapper's.
        deque(map(setitem, validated, repeat(field), moments), maxlen=0)
    return True


def _check_one_by_one(validated: list[Any]) -> None:
    """Each message's identity rule and timestamps, in place; a message that breaks one becomes
    the InvalidMessage saying why. The rarer batches only: the common one is `_checked_in_bulk`."""
    for index, message in enumerate(validated):
        if isinstance(message, InvalidMessage):
            continue
        get = message.get
        try:
            if get("userId") is None:
                _check_identity(message)
            for field in TIMESTAMP_FIELDS:
                value = get(field)
                if value is not None:
                    [message[field]] = naive_utc([parse_timestamp(value, field)])
        except InvalidMessage as exc:
            validated[index] = exc


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO-8601 date-time as an aware datetime in UTC; one without an offset is taken as UTC.

    Years outside 1900-2199 (_YEARS) are refused, which also keeps the skew arithmetic from
    overflowing.
    """
    if not isinstance(value, str):
        raise InvalidMessage([f"{field}: must be an ISO-8601 date-time string"])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage([f"{field}: {value[:40]!r} is not an ISO-8601 date-time"]) from None
    if moment.year not in _YEARS:
        raise InvalidMessage([f"{field}: {value[:40]!r} is outside the years {_YEAR_RANGE}"])
    if moment.tzinfo is UTC:
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def naive_utc(moments: Iterable[datetime]) -> list[datetime]:
    """Aware UTC times as a validated message holds them: naive, in UTC. orjson writes a naive
    time several times faster (for an aware one it first probes the tzinfo for pendulum's and
    pytz's methods): a third of serialising a stamped message. Through the difference from an
    epoch because `replace(tzinfo=None)`, with its keyword, costs ten times as much."""
    return list(map(add, repeat(_NAIVE_EPOCH), map(sub, moments, repeat(_UTC_EPOCH))))


def _check_identity(message: dict[str, Any]) -> None:
    """The rule the schema cannot express: whom the message is about."""
    if message.get("userId") is None:
        if message["type"] == "alias":
            raise InvalidMessage(["userId: required for alias (the id previousId becomes)"])
        if message.get("anonymousId") is None:
            raise InvalidMessage(["userId or anonymousId is required"])


def _validate_alone(item: object) -> dict[str, Any] | InvalidMessage:
    if not isinstance(item, dict):
        return InvalidMessage(["a message must be a JSON object"])
    try:
        message: dict[str, Any] = _MESSAGE.validate_python(item)
    except ValidationError as exc:
        return InvalidMessage([_reason(error) for error in exc.errors()])
    return _with_unknown(message, item)


def _with_unknown(message: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """The validated known fields, then the item's unknown ones as sent: what pydantic's
    extra="allow" returns, without its cost of looking up every key of every message (a
    fifth of the hot path's validation)."""
    if len(message) != len(item):
        message.update({key: value for key, value in item.items() if key not in message})
    return message


def _reason(error: ErrorDetails) -> str:
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return f"type: must be one of {', '.join(MESSAGE_TYPES)}"
    message = "must be a JSON object" if error["type"] == "is_instance_of" else error["msg"]
    # The first location element is the union tag (the message type); the field follows it.
    path = ".".join(str(part) for part in error["loc"][1:])
    return f"{path}: {message}" if path else message
