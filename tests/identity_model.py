"""A plain in-memory reference model of the identity rules (issue 3, docs/identity.md).

Written from the rules in words, not from `collector.identity.decide`; only
`collector.identity.refusal` (which ids may take part in identity at all) is shared.

Outcome strings returned by `IdentityModel.apply`:
  created | attached | merged | already_linked                  the call's own outcome
  refused:already_identified | refused:too_many_ids             a refused link
  refused:illegal_user_id                                          the userId itself is refused
  refused:illegal_source_id     the other id is refused; the call acted as if it were absent
  none                                                          track/page/screen/group
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.identity import BLOCKED_ANY_CASE, DEFAULT_MAX_IDS_PER_PERSON, refusal


@dataclass
class ModelPerson:
    ids: set[str]
    user_ids: set[str]

    @property
    def identified(self) -> bool:
        """Identified as soon as it holds a userId, whichever call brought it in."""
        return bool(self.user_ids)


@dataclass
class IdentityModel:
    max_ids: int = DEFAULT_MAX_IDS_PER_PERSON
    blocked: frozenset[str] = BLOCKED_ANY_CASE
    person_of: dict[str, int] = field(default_factory=dict)
    persons: dict[int, ModelPerson] = field(default_factory=dict)
    _next_key: int = 0

    # --- queries -----------------------------------------------------------------------------

    def partition(self) -> set[frozenset[str]]:
        return {frozenset(person.ids) for person in self.persons.values()}

    def identified(self) -> set[frozenset[str]]:
        return {frozenset(p.ids) for p in self.persons.values() if p.identified}

    def cluster(self, distinct_id: str) -> frozenset[str] | None:
        key = self.person_of.get(distinct_id)
        return None if key is None else frozenset(self.persons[key].ids)

    # --- the rules ---------------------------------------------------------------------------

    def apply(
        self, kind: str, user_id: str | None, other_id: str | None, force: bool = False
    ) -> str:
        """One call: identify(userId, anonymousId), alias(previousId=other, userId), or an event
        that never changes the graph (track, page, screen, group)."""
        if kind not in ("identify", "alias"):
            return "none"
        assert user_id is not None
        if refusal(user_id, self.blocked) is not None:
            return "refused:illegal_user_id"
        if other_id is not None and refusal(other_id, self.blocked) is not None:
            # Acts as if the other id were absent; the call still reports the refusal.
            self._act(kind, user_id, None, force)
            return "refused:illegal_source_id"
        return self._act(kind, user_id, other_id, force)

    def _act(self, kind: str, user: str, other: str | None, force: bool) -> str:
        forced = kind == "alias" and force
        if other is None or other == user:
            return self._ensure(user)
        u_key, o_key = self.person_of.get(user), self.person_of.get(other)
        if u_key is not None and u_key == o_key:
            return "already_linked"
        other_person = self.persons[o_key] if o_key is not None else None
        if other_person is not None and other_person.identified and not forced:
            self._ensure(user)
            return "refused:already_identified"
        u_size = len(self.persons[u_key].ids) if u_key is not None else 1
        o_size = len(other_person.ids) if other_person is not None else 1
        if u_size + o_size > self.max_ids:
            self._ensure(user)
            return "refused:too_many_ids"
        if u_key is None and o_key is None:
            self._new(user, other)
            return "created"
        if o_key is None:
            assert u_key is not None
            self._add(u_key, other)
            return "attached"
        if u_key is None:
            self._add(o_key, user, is_user=True)
            return "attached"
        target, source = self.persons[u_key], self.persons.pop(o_key)
        for distinct_id in source.ids:
            self._add(u_key, distinct_id)
        target.user_ids |= source.user_ids
        return "merged"

    def _ensure(self, user: str) -> str:
        if user in self.person_of:
            return "already_linked"
        self._new(user)
        return "created"

    def _new(self, user: str, *others: str) -> None:
        self._next_key += 1
        self.persons[self._next_key] = ModelPerson(set(), set())
        self._add(self._next_key, user, is_user=True)
        for distinct_id in others:
            self._add(self._next_key, distinct_id)

    def _add(self, key: int, distinct_id: str, is_user: bool = False) -> None:
        self.persons[key].ids.add(distinct_id)
        if is_user:
            self.persons[key].user_ids.add(distinct_id)
        self.person_of[distinct_id] = key
