"""Identity rules: which ids may be linked, and what identify and alias do to the person graph.

Plain functions over plain values; `identity_store` applies the resulting plans to DynamoDB.
The contract, with the state diagram, is docs/identity.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, Literal

# PostHog's lists of ids that must never identify anyone (compared after trimming), and
# Segment's suggestions; a quoted form of any of them is refused too.
BLOCKED_ANY_CASE = frozenset(
    {
        "anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated",
        "email", "undefined", "true", "false", "null", "none", "nan", "-1", "[object object]",
        "nil", "(null)", "<nil>", "n/a",
    }
)  # fmt: skip
MAX_ID_LENGTH = 400
# DynamoDB keys an id as the sort key `ID#<id>`, which holds at most 1,024 bytes of UTF-8.
MAX_ID_BYTES = 1024 - len("ID#")
_ZEROS_AND_DASHES = re.compile(r"[0-]*")
# C0, DEL and C1: every character Unicode classes as a control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Quote marks an id arrives wrapped in: plain, typographic, and JSON-escaped (\" from an id
# serialised more than once).
_QUOTES = frozenset("'\"`\u2018\u2019\u201c\u201d\u00ab\u00bb")
_ESCAPED_QUOTE = re.compile(r"\\+(?=[\"'])")
DEFAULT_MAX_IDS_PER_PERSON = 1000

OutcomeCode = Literal["created", "attached", "merged", "already_linked", "refused"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an id may not take part in identity. The outcome stores the stable code
    (illegal_user_id, illegal_source_id) apart from `detail`, which may quote the id and so
    never reaches a log line or a metric."""

    detail: str


def refusal(distinct_id: str, blocked: frozenset[str] = BLOCKED_ANY_CASE) -> Refusal | None:
    """Why `distinct_id` may not take part in identity, or None if it may."""
    if len(distinct_id) > MAX_ID_LENGTH:
        return Refusal("longer than 400 characters")
    size = len(distinct_id.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        return Refusal(f"{size} bytes of UTF-8; DynamoDB keys at most {MAX_ID_BYTES}")
    if _CONTROL.search(distinct_id):
        return Refusal("contains control characters")
    seen = as_people_see_it(distinct_id)
    if not seen:
        return Refusal("blank")
    if seen.casefold() in blocked or _ZEROS_AND_DASHES.fullmatch(seen):
        return Refusal(f"{seen[:40]!r} is a placeholder, not an id")
    return None


def as_people_see_it(distinct_id: str) -> str:
    """The id as a person reads it: compatibility forms folded (NFKC: fullwidth letters become
    plain ones), invisible format characters (zero-width spaces, joiners) dropped, whitespace
    trimmed and every layer of quoting removed. Used only to compare, never stored."""
    text = unicodedata.normalize("NFKC", distinct_id)
    if not text.isascii():
        text = "".join(char for char in text if unicodedata.category(char) != "Cf")
    text = _ESCAPED_QUOTE.sub("", text).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True, slots=True)
class IdentityCall:
    """What an identify or alias asks for: link `source_id`'s cluster into `user_id`'s.

    identify: source is the anonymousId (or None); alias: source is the previousId.
    """

    kind: Literal["identify", "alias"]
    user_id: str
    source_id: str | None
    force: bool = False

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> IdentityCall:
        if message["type"] == "alias":
            options = (message.get("integrations") or {}).get("Collector")
            force = isinstance(options, dict) and options.get("mergeIdentified") is True
            return cls("alias", message["userId"], message["previousId"], force)
        return cls("identify", message["userId"], message.get("anonymousId"))


@dataclass(frozen=True, slots=True)
class Person:
    """A cluster of distinct ids as stored: `version` changes with every write to it."""

    id: str
    identified: bool
    size: int
    version: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do. `create` lists ids of a new person; `attach` ids to add to `target`;
    `merge` moves every id of `source` into `target`. Every person written is identified.
    """

    outcome: OutcomeCode
    reason: str | None = None
    create: tuple[str, ...] = ()
    attach: tuple[str, ...] = ()
    merge: bool = False

    @property
    def writes(self) -> bool:
        return bool(self.create or self.attach or self.merge)


def decide(
    call: IdentityCall, target: Person | None, source: Person | None, max_ids: int
) -> Decision:
    """The identity rules (docs/identity.md): `target` is user_id's person, `source` the other's.

    Every person holds a userId (only identify and alias make persons, and both name one), so
    every person is identified, whether identify or alias made it, and is never merged into
    another person unless the call forces it. No person grows past `max_ids` distinct ids.
    """
    other = call.source_id
    if other is None or other == call.user_id:
        return _ensure(call.user_id, target)
    if target is not None and source is not None and target.id == source.id:
        return Decision("already_linked")
    if source is not None and not call.force:
        # Someone else's person: the protective rule. The user id's own person still exists.
        return replace(
            _ensure(call.user_id, target), outcome="refused", reason="already_identified"
        )
    grown = (target.size if target else 1) + (source.size if source else 1)
    if grown > max_ids:
        return replace(_ensure(call.user_id, target), outcome="refused", reason="too_many_ids")
    if target is None and source is None:
        return Decision("created", create=(call.user_id, other))
    if source is None:
        assert target is not None
        return Decision("attached", attach=(other,))
    if target is None:
        # A forced alias: the user id joins the source's person, nothing moved.
        return Decision("attached", attach=(call.user_id,))
    return Decision("merged", merge=True)


def _ensure(user_id: str, target: Person | None) -> Decision:
    """The user id's own person exists."""
    if target is None:
        return Decision("created", create=(user_id,))
    return Decision("already_linked")
