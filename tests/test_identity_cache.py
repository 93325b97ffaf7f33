"""The warm Lambda's memory of settled links (collector.identity_cache.SettledLinks)."""

from __future__ import annotations

from collector.identity import IdentityCall
from collector.identity_cache import SettledLinks


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_link_answers_until_it_expires() -> None:
    clock = Clock()
    links = SettledLinks(ttl=10, clock=clock)
    call = IdentityCall("identify", "user-1", "anon-1")
    assert links.person_of(call) is None
    links.remember(call, "p1")
    assert links.person_of(call) == "p1"
    assert links.person_of(IdentityCall("identify", "user-1", None)) == "p1"
    clock.now = 10
    assert links.person_of(call) is None


def test_ids_of_two_persons_or_an_unknown_id_are_not_settled() -> None:
    links = SettledLinks()
    links.remember(IdentityCall("identify", "user-1", "anon-1"), "p1")
    links.remember(IdentityCall("identify", "user-2", "anon-2"), "p2")
    assert links.person_of(IdentityCall("identify", "user-1", "anon-2")) is None
    assert links.person_of(IdentityCall("identify", "user-1", "anon-new")) is None


def test_a_person_merged_away_is_forgotten_and_the_size_is_bounded() -> None:
    links = SettledLinks(limit=4)
    links.remember(IdentityCall("alias", "user-1", "anon-1"), "p1")
    links.remember(IdentityCall("alias", "user-2", "anon-2"), "p2")
    links.forget("p1")
    assert links.person_of(IdentityCall("alias", "user-1", "anon-1")) is None
    assert links.person_of(IdentityCall("alias", "user-2", "anon-2")) == "p2"
    links.remember(IdentityCall("alias", "user-3", "anon-3"), "p3")
    links.remember(IdentityCall("alias", "user-4", "anon-4"), "p4")  # over the limit: anew
    assert links.person_of(IdentityCall("alias", "user-2", "anon-2")) is None
    assert links.person_of(IdentityCall("alias", "user-4", "anon-4")) == "p4"
