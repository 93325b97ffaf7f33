"""The warm Lambda's memory of settled links: which distinct ids are one person already.

Links only ever join clusters, so "x and y are one identified person" stays true, and a warm
Lambda answers repeats of it without DynamoDB. Only the person's *id* can change (a forced
merge elsewhere), so entries expire; a merge this Lambda makes forgets the person merged away.
As `SourceCache` is to `SourceRegistry`, this is to `IdentityGraph`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .identity import IdentityCall

DEFAULT_LIMIT = 100_000


class SettledLinks:
    """distinct id -> (person id, expiry), at most `limit` of them (then it starts over)."""

    def __init__(
        self,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._ttl, self._clock, self._limit = ttl, clock, limit
        self._settled: dict[str, tuple[str, float]] = {}

    def person_of(self, call: IdentityCall) -> str | None:
        """The person of a call whose link is already settled in one identified person."""
        now = self._clock()
        user = self._settled.get(call.user_id)
        if user is None or user[1] <= now:
            return None
        if call.source_id is not None:
            source = self._settled.get(call.source_id)
            if source is None or source[1] <= now or source[0] != user[0]:
                return None
        return user[0]

    def remember(self, call: IdentityCall, person_id: str) -> None:
        """The call's ids share `person_id` (every person is identified, so only a forced merge
        can change which person that is)."""
        if len(self._settled) >= self._limit:
            self._settled.clear()
        expiry = self._clock() + self._ttl
        for distinct_id in (call.user_id, call.source_id):
            if distinct_id is not None:
                self._settled[distinct_id] = (person_id, expiry)

    def forget(self, person_id: str) -> None:
        """A person merged away: its remembered ids now belong to the target."""
        for distinct_id in [d for d, (p, _) in self._settled.items() if p == person_id]:
            del self._settled[distinct_id]
