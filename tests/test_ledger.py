"""The messageId ledger: how a request's messages are planned (pure) and claimed (on moto)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.ledger import ClaimLost, Entry, Ledger, plan

pytestmark = pytest.mark.engines

NOW = 1_800_000_000.0


def key_for(ids: list[str]) -> str:
    return "obj:" + ",".join(sorted(ids))


def planned(
    ids: list[str],
    entries: dict[str, Entry],
    stored: frozenset[str] = frozenset(),
) -> tuple[Any, str]:
    return plan(ids, entries, stored.__contains__, key_for, NOW)


def test_fresh_messages_are_all_written_to_the_object_named_by_their_set() -> None:
    todo, key = planned(["b", "a"], {})
    assert (todo.write, todo.duplicates, todo.busy) == ([0, 1], [], [])
    assert key == "obj:a,b"
    assert todo.previous == {}


def test_messages_whose_object_exists_are_duplicates() -> None:
    entries = {"a": Entry("old", NOW + 10, None)}
    todo, key = planned(["a", "b"], entries, stored={"old"})
    assert (todo.write, todo.duplicates, todo.busy) == ([1], [0], [])
    assert key == "obj:b"


def test_a_message_twice_in_one_request_is_written_once() -> None:
    todo, key = planned(["a", "b", "a"], {})
    assert (todo.write, todo.duplicates) == ([0, 1], [2])
    assert key == "obj:a,b"


def test_a_claim_for_the_same_object_is_our_own_earlier_attempt() -> None:
    entries = {"a": Entry("obj:a,b", NOW + 10, {"outcome": "created"})}
    todo, key = planned(["a", "b"], entries)
    assert (todo.write, todo.busy) == ([0, 1], [])
    assert todo.previous[0] == entries["a"]
    assert key == "obj:a,b"


def test_a_live_claim_for_another_object_is_busy_and_the_rest_is_written() -> None:
    entries = {"a": Entry("obj:a", NOW + 12, None)}
    todo, key = planned(["a", "b", "c"], entries)
    assert (todo.write, todo.busy, todo.busy_until) == ([1, 2], [0], NOW + 12)
    assert key == "obj:b,c"


def test_a_lapsed_claim_whose_object_never_appeared_is_taken_over() -> None:
    entries = {"a": Entry("obj:a", NOW - 1, {"outcome": "attached"})}
    todo, key = planned(["a", "b"], entries)
    assert (todo.write, todo.busy) == ([0, 1], [])
    assert todo.previous[0] == entries["a"]  # its decision travels with it
    assert key == "obj:a,b"


def test_own_claims_stop_being_own_when_the_set_shrinks() -> None:
    """`a` was claimed for {a, b} by a request that may still run; `b` is busy elsewhere, so
    this request would write {a} alone: a different object, so `a` is busy too."""
    entries = {"a": Entry("obj:a,b", NOW + 5, None), "b": Entry("obj:b,x", NOW + 9, None)}
    todo, _ = planned(["a", "b"], entries)
    assert todo.write == []
    assert sorted(todo.busy) == [0, 1]
    assert todo.busy_until == NOW + 9


# --- on moto -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def ledger(aws: Any, clock: list[float]) -> Ledger:
    return Ledger(
        aws.dynamodb, aws.table, window_seconds=86400, lease_seconds=30, clock=lambda: clock[0]
    )


def test_claims_are_read_back_and_a_second_claim_of_a_message_is_lost(ledger: Ledger) -> None:
    ids = [f"m{n}" for n in range(250)]  # three reads and three transactions
    ledger.claim("src", ids, {}, "obj-1")
    entries = ledger.read("src", ids)
    assert set(entries) == set(ids)
    assert entries["m7"] == Entry("obj-1", NOW + 30, None)
    with pytest.raises(ClaimLost):
        ledger.claim("src", ["m7"], {}, "obj-2")
    assert ledger.read("other-source", ids) == {}


def test_the_lease_returned_is_the_lease_stored_never_past_the_lease_time(
    ledger: Ledger, clock: list[float]
) -> None:
    clock[0] = NOW + 0.0127  # between two milliseconds
    lease_until = ledger.claim("src", ["m"], {}, "obj-1")
    assert ledger.read("src", ["m"])["m"].lease_until == lease_until == NOW + 30.012


def test_a_lapsed_claim_is_taken_over_once(ledger: Ledger, clock: list[float]) -> None:
    ledger.claim("src", ["m"], {}, "obj-1")
    clock[0] += 31
    lapsed = ledger.read("src", ["m"])["m"]
    ledger.claim("src", ["m"], {"m": lapsed}, "obj-2")
    with pytest.raises(ClaimLost):
        ledger.claim("src", ["m"], {"m": lapsed}, "obj-3")  # as read: no longer true
    assert ledger.read("src", ["m"])["m"].object_key == "obj-2"


def test_release_ends_the_lease_and_keeps_the_decision(ledger: Ledger) -> None:
    ledger.claim("src", ["m"], {}, "obj-1")
    ledger.record_identities("src", "obj-1", {"m": {"outcome": "created", "personId": "p"}})
    ledger.release("src", ["m"], "obj-1")
    assert ledger.read("src", ["m"])["m"] == Entry(
        "obj-1", 0, {"outcome": "created", "personId": "p"}
    )


def test_a_decision_is_recorded_once(ledger: Ledger) -> None:
    ledger.claim("src", ["m"], {}, "obj-1")
    ledger.record_identities("src", "obj-1", {"m": {"outcome": "created"}})
    ledger.record_identities("src", "obj-1", {"m": {"outcome": "already_linked"}})
    assert ledger.recorded_identity("src", "m") == {"outcome": "created"}


def test_entries_past_the_window_read_as_absent_and_can_be_claimed_again(
    ledger: Ledger, clock: list[float]
) -> None:
    ledger.claim("src", ["m"], {}, "obj-1")
    clock[0] += 86400 + 1  # moto never expires items: the ledger must not trust them
    assert ledger.read("src", ["m"]) == {}
    ledger.claim("src", ["m"], {}, "obj-2")
    assert ledger.read("src", ["m"])["m"].object_key == "obj-2"


def test_a_claim_lost_in_a_later_chunk_lets_the_earlier_chunks_go(
    ledger: Ledger, clock: list[float]
) -> None:
    """250 messages claim in three transactions; the third meets a message claimed elsewhere.
    The first two are released, so the retry does not wait for its own lease."""
    ids = [f"m{n}" for n in range(250)]
    ledger.claim("src", ["m249"], {}, "elsewhere")
    with pytest.raises(ClaimLost):
        ledger.claim("src", ids, {}, "obj-1")
    entries = ledger.read("src", ids)
    assert entries["m249"].object_key == "elsewhere"
    assert {entries[f"m{n}"].lease_until for n in range(200)} == {0}
