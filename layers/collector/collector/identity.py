"""Identity rules: which ids may be linked, and what identify and alias do to the person graph.

Plain functions over plain values; `identity_store` applies the resulting plans to DynamoDB.
The contract, with the state diagram, is docs/identity.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

# PostHog's lists of ids that must never identify anyone (compared after trimming), and
# Segment's suggestions; a quoted form of any of them is refused too.
BLOCKED_ANY_CASE = frozenset(
    {
        "anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated",
        "email", "undefined", "true", "false", "null", "none", "nan", "-1", "[object object]",
    }
)  # fmt: skip
MAX_ID_LENGTH = 400
_ZEROS_AND_DASHES = re.compile(r"[0-]*")
# C0, DEL and C1: every character Unicode classes as a control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
DEFAULT_MAX_IDS_PER_PERSON = 1000

Outcome = Literal["created", "attached", "merged", "identified", "already_linked", "refused"]


def refusal_reason(distinct_id: str, blocked: frozenset[str] = BLOCKED_ANY_CASE) -> str | None:
    """Why `distinct_id` may not take part in identity, or None if it may."""
    if len(distinct_id) > MAX_ID_LENGTH:
        return "illegal_id: longer than 400 characters"
    if _CONTROL.search(distinct_id):
        return "illegal_id: contains control characters"
    trimmed = distinct_id.strip()
    if trimmed[:1] in ("'", '"') and trimmed[-1:] == trimmed[:1] and len(trimmed) >= 2:
        trimmed = trimmed[1:-1].strip()
    if not trimmed:
        return "illegal_id: blank"
    if trimmed.casefold() in blocked or _ZEROS_AND_DASHES.fullmatch(trimmed):
        return f"illegal_id: {trimmed[:40]!r} is a placeholder, not an id"
    return None


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
    `merge` moves every id of `source` into `target`; `identify` marks the result identified.
    """

    outcome: Outcome
    reason: str | None = None
    create: tuple[str, ...] = ()
    attach: tuple[str, ...] = ()
    merge: bool = False
    identify: bool = False

    @property
    def writes(self) -> bool:
        return bool(self.create or self.attach or self.merge or self.identify)


def decide(
    call: IdentityCall, target: Person | None, source: Person | None, max_ids: int
) -> Decision:
    """The identity rules (docs/identity.md): `target` is user_id's person, `source` the other's.

    Never merges an identified source into another person unless the call forces it, and never
    lets a person grow past `max_ids` distinct ids.
    """
    identify = call.kind == "identify"
    other = call.source_id
    if other is None or other == call.user_id:
        return _ensure(call.user_id, target, identify)
    if target is not None and source is not None and target.id == source.id:
        if identify and not target.identified:
            return Decision("identified", identify=True)
        return Decision("already_linked")
    if source is not None and source.identified and not call.force:
        # Someone else's identified person: the protective rule. The target still exists.
        ensured = _ensure(call.user_id, target, identify)
        return Decision(
            "refused",
            "already_identified",
            create=ensured.create,
            identify=ensured.identify,
        )
    grown = (target.size if target else 1) + (source.size if source else 1)
    if grown > max_ids:
        ensured = _ensure(call.user_id, target, identify)
        return Decision("refused", "too_many_ids", create=ensured.create, identify=ensured.identify)
    becomes_identified = identify or bool(source and source.identified)
    if target is None and source is None:
        return Decision("created", create=(call.user_id, other), identify=becomes_identified)
    if source is None:
        assert target is not None
        return Decision("attached", attach=(other,), identify=becomes_identified)
    if target is None:
        # The user id joins the source's cluster: the same partition as a merge, nothing moved.
        return Decision("attached", attach=(call.user_id,), identify=becomes_identified)
    return Decision("merged", merge=True, identify=becomes_identified)


def _ensure(user_id: str, target: Person | None, identify: bool) -> Decision:
    """The user id's own person exists (and is identified, for identify)."""
    if target is None:
        return Decision("created", create=(user_id,), identify=identify)
    if identify and not target.identified:
        return Decision("identified", identify=True)
    return Decision("already_linked")
