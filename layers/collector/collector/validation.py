"""The Segment spec as pydantic models, and the checks that decide whether a message is valid."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Required

from pydantic import ConfigDict, Field, InstanceOf, StringConstraints, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt")

# Numbers are accepted wherever an id is expected and stored as strings, as Segment does.
_CONFIG = ConfigDict(extra="allow", coerce_numbers_to_str=True)
Id = Annotated[str, StringConstraints(min_length=1)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Name = Annotated[str, StringConstraints(min_length=1)]
# Checked, not copied: stamping copies the one object it changes (context).
JsonObject = InstanceOf[dict]  # type: ignore[type-arg]
# ISO-8601 strings, turned into datetimes by parse_timestamp after pydantic (see there).
Timestamp = str


class _Common(TypedDict, total=False):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    messageId: MessageId | None
    userId: Id | None
    anonymousId: Id | None
    timestamp: Timestamp | None
    originalTimestamp: Timestamp | None
    sentAt: Timestamp | None
    context: JsonObject | None
    integrations: JsonObject | None


class Identify(_Common, total=False):
    type: Required[Literal["identify"]]
    traits: JsonObject | None


class Track(_Common, total=False):
    type: Required[Literal["track"]]
    event: Required[Name]
    properties: JsonObject | None


class _View(_Common, total=False):
    name: str | None
    category: str | None
    properties: JsonObject | None


class Page(_View, total=False):
    type: Required[Literal["page"]]


class Screen(_View, total=False):
    type: Required[Literal["screen"]]


class Group(_Common, total=False):
    type: Required[Literal["group"]]
    groupId: Required[Id]
    traits: JsonObject | None


class Alias(_Common, total=False):
    type: Required[Literal["alias"]]
    previousId: Required[Id]


_Message = Annotated[Identify | Track | Page | Screen | Group | Alias, Field(discriminator="type")]
_MESSAGE: TypeAdapter[Any] = TypeAdapter(_Message)
_MESSAGES: TypeAdapter[Any] = TypeAdapter(list[_Message])


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
    for index, message in enumerate(validated):
        if isinstance(message, dict):
            # Inlined rather than two calls per message: this loop is on the hot path.
            get = message.get
            try:
                if get("userId") is None:
                    _check_identity(message)
                for field in TIMESTAMP_FIELDS:
                    value = get(field)
                    if value is not None:
                        message[field] = parse_timestamp(value, field)
            except InvalidMessage as exc:
                validated[index] = exc
    return validated


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO-8601 date-time as an aware datetime in UTC; one without an offset is taken as UTC.

    Years outside 1900-2199 are refused, which also keeps the skew arithmetic from overflowing.
    """
    if not isinstance(value, str):
        raise InvalidMessage([f"{field}: must be an ISO-8601 date-time string"])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage([f"{field}: {value[:40]!r} is not an ISO-8601 date-time"]) from None
    if not 1900 <= moment.year < 2200:
        raise InvalidMessage([f"{field}: {value[:40]!r} is outside the years 1900-2199"])
    if moment.tzinfo is UTC:
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
    return message


def _reason(error: ErrorDetails) -> str:
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return f"type: must be one of {', '.join(MESSAGE_TYPES)}"
    message = "must be a JSON object" if error["type"] == "is_instance_of" else error["msg"]
    # The first location element is the union tag (the message type); the field follows it.
    path = ".".join(str(part) for part in error["loc"][1:])
    return f"{path}: {message}" if path else message
