"""Who is sending: the write key (Basic auth or body) mapped to its source via a warm cache."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import Unauthorized


@dataclass(frozen=True, slots=True)
class Source:
    """A sender of events (a website, an app, a backend) that owns one or more write keys."""

    id: str
    name: str
    # Whether its alias calls may merge two identified people (write keys are public in
    # browsers, so only trusted server-side sources should get this).
    may_force_merge: bool = False


def hash_write_key(write_key: str) -> str:
    """What is stored instead of a key; keys are random 192-bit strings, so SHA-256 suffices."""
    return hashlib.sha256(write_key.encode()).hexdigest()


def write_key_from(authorization: str | None, body: dict[str, Any]) -> str:
    """The write key of a request: Basic auth username, `writeKey` in the body, or both alike."""
    header_key = _basic_username(authorization) if authorization else None
    body_key = body.get("writeKey")
    if body_key is not None and not isinstance(body_key, str):
        raise Unauthorized("invalid_write_key", "writeKey in the body must be a string.")
    if header_key and body_key and header_key != body_key:
        raise Unauthorized(
            "conflicting_write_keys",
            "The write key in the Authorization header and writeKey in the body differ; "
            "send one key.",
        )
    write_key = header_key or body_key
    if not write_key:
        raise Unauthorized(
            "missing_write_key",
            "No write key: send it as the Basic auth username or as writeKey in the body.",
        )
    return write_key


def _basic_username(authorization: str) -> str:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized(
            "unsupported_authorization",
            f"Authorization scheme {scheme!r} is not supported; use Basic with the write key "
            "as the username and an empty password.",
        )
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized(
            "invalid_authorization", "The Authorization header is not valid Basic credentials."
        ) from None
    return decoded.partition(":")[0]


class SourceCache:
    """Resolves write keys to sources, remembering answers (unknown keys too) for `ttl` seconds.

    At most `max_entries` are kept, oldest out first, so a flood of made-up keys cannot grow a
    warm Lambda's memory.
    """

    def __init__(
        self,
        lookup: Callable[[str], Source | None],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, Source | None]] = {}

    def source_for(self, write_key: str) -> Source:
        key_hash = hash_write_key(write_key)
        now = self._clock()
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] <= now:
            entry = (now + self._ttl, self._lookup(key_hash))
            self._entries.pop(key_hash, None)
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key_hash] = entry
        if entry[1] is None:
            raise Unauthorized("unknown_write_key", "The write key is unknown or revoked.")
        return entry[1]
