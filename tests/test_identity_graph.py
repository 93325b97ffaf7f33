"""The identity graph against DynamoDB (moto): every outcome, the cap, forced merges, chunked
merges and their roll-forward, the warm cache; and through the local server: the read API, the
outcomes stored with events in S3, the refusal metric, and tracks that never write."""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import requests

from collector import api
from collector.errors import StorageUnavailable
from collector.identity import BLOCKED_ANY_CASE, IdentityCall
from collector.identity_store import IdentityGraph
from collector.sources import SourceRegistry
from collector.tools.localapi import LocalApiGateway

from .conftest import Aws
from .test_identity_properties import write_unmarked_person

pytestmark = pytest.mark.engines

WRITES = frozenset({"PutItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem", "DeleteItem"})


def identify(user_id: str, anonymous_id: str | None = None) -> IdentityCall:
    return IdentityCall("identify", user_id, anonymous_id)


def alias(user_id: str, previous_id: str, force: bool = False) -> IdentityCall:
    return IdentityCall("alias", user_id, previous_id, force)


def graph(aws: Aws, **options: Any) -> IdentityGraph:
    return IdentityGraph(aws.dynamodb, aws.table, **options)


@pytest.fixture
def calls(aws: Aws) -> Iterator[list[str]]:
    """Names of the DynamoDB operations made through `aws.dynamodb` from now on."""
    made: list[str] = []

    def record(model: Any, **_: Any) -> None:
        made.append(model.name)

    aws.dynamodb.meta.events.register("before-call.dynamodb", record)
    yield made
    aws.dynamodb.meta.events.unregister("before-call.dynamodb", record)


def table_items(aws: Aws) -> list[dict[str, Any]]:
    pages = aws.dynamodb.get_paginator("scan").paginate(TableName=aws.table, ConsistentRead=True)
    return [item for page in pages for item in page["Items"]]


def partition(aws: Aws) -> dict[str, tuple[bool, frozenset[str]]]:
    """person id -> (identified, ids), after checking every item agrees with every other:
    each pointer has its membership and back, each person its header with the right count,
    and no merge is left half done."""
    headers: dict[str, dict[str, Any]] = {}
    members: dict[str, set[str]] = defaultdict(set)
    pointers: dict[str, str] = {}
    for item in table_items(aws):
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        if pk.startswith("ID#"):
            assert sk == "ID"
            pointers[pk[3:]] = item["personId"]["S"]
        elif pk.startswith("PERSON#"):
            if sk == "PERSON":
                headers[pk[7:]] = item
            else:
                assert sk.startswith("ID#")
                members[pk[7:]].add(sk[3:])
    assert set(headers) == set(members), "a person without ids, or ids without a person"
    for person_id, header in headers.items():
        assert "mergingInto" not in header, f"merge of {person_id} left half done"
        assert int(header["idCount"]["N"]) == len(members[person_id])
    memberships = {(i, p) for p, ids in members.items() for i in ids}
    assert set(pointers.items()) == memberships
    return {
        person_id: (header["isIdentified"]["BOOL"], frozenset(members[person_id]))
        for person_id, header in headers.items()
    }


def clusters(aws: Aws) -> set[frozenset[str]]:
    return {ids for _, ids in partition(aws).values()}


def check_view(
    g: IdentityGraph, distinct_id: str, person_id: str | None, identified: bool, ids: set[str]
) -> None:
    """`view()` agrees from every id of the person (from a few of them, for a big one)."""
    members = sorted(ids)
    for member in {distinct_id, *(members if len(members) <= 8 else members[:: len(members) // 4])}:
        view = g.view(member)
        assert view is not None, member
        if person_id is not None:
            assert view.person_id == person_id
        assert view.identified is identified
        assert view.distinct_ids == sorted(ids)


def numbered(size: int, prefix: str = "anon-") -> list[str]:
    """`size` ids that sort in creation order."""
    return [f"{prefix}{n:02d}" for n in range(size)]


def identified_cluster(g: IdentityGraph, size: int, prefix: str = "anon-") -> list[str]:
    """`size` ids in one (identified) person, built by aliases that each bring a new previousId
    into the first id's person. Chaining alias(new -> previous) no longer works: the previous
    id's person is identified, so the chain is refused (issue 7)."""
    ids = numbered(size, prefix)
    assert g.apply(alias(ids[0], ids[1]))["outcome"] == "created"
    for previous in ids[2:]:
        assert g.apply(alias(ids[0], previous))["outcome"] == "attached"
    return ids


def unmarked_person(aws: Aws, ids: list[str]) -> str:
    """`ids` in one person stored unmarked by a version before issue 7 (what its alias made)."""
    return write_unmarked_person(aws.dynamodb, aws.table, ids)


# --- every outcome, end to end ---------------------------------------------------------------


def test_identify_of_two_unknown_ids_creates_one_identified_person(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(identify("user-1", "anon-1"))
    assert outcome["outcome"] == "created"
    assert set(outcome) == {"outcome", "personId"}
    check_view(g, "user-1", outcome["personId"], True, {"user-1", "anon-1"})
    assert partition(aws) == {outcome["personId"]: (True, frozenset({"user-1", "anon-1"}))}


def test_alias_of_two_unknown_ids_creates_one_identified_person(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(alias("user-1", "anon-1"))
    assert outcome["outcome"] == "created"
    assert set(outcome) == {"outcome", "personId"}
    # It holds a userId, so it is identified: alias names someone as much as identify does.
    check_view(g, "anon-1", outcome["personId"], True, {"anon-1", "user-1"})
    assert partition(aws) == {outcome["personId"]: (True, frozenset({"user-1", "anon-1"}))}


def test_identify_alone_creates_then_links(aws: Aws) -> None:
    g = graph(aws)
    created = g.apply(identify("user-1"))
    assert created["outcome"] == "created"
    check_view(g, "user-1", created["personId"], True, {"user-1"})
    assert g.apply(identify("user-1")) == {
        "outcome": "already_linked",
        "personId": created["personId"],
    }


def test_identify_attaches_a_new_anonymous_id_to_a_known_user(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(identify("user-1", "anon-1"))["personId"]
    outcome = g.apply(identify("user-1", "anon-2"))
    assert outcome == {"outcome": "attached", "personId": person}
    check_view(g, "anon-2", person, True, {"user-1", "anon-1", "anon-2"})


# New data only ever makes identified persons. A person an older version stored unmarked
# (`isIdentified` false) holds a userId like any other, so it is treated as identified: an
# unforced link into it is refused and leaves it as it was. The first write that touches it
# (an attach to it, a merge into or out of it) marks it; nothing else does.


def unchanged(aws: Aws, before: list[dict[str, Any]], *ignored: str) -> None:
    """Every item of `before` is still there exactly as it was; new ones only for `ignored`."""
    after = table_items(aws)
    assert [item for item in before if item not in after] == []
    new = [item for item in after if item not in before]
    assert all(any(i in item["pk"]["S"] for i in ignored) for item in new), new


@pytest.mark.parametrize(
    "call",
    [identify("user-1", "anon-1"), alias("user-1", "anon-1")],
    ids=["identify", "alias"],
)
def test_a_new_user_is_refused_an_id_of_an_unmarked_person(aws: Aws, call: IdentityCall) -> None:
    g = graph(aws)
    unmarked = unmarked_person(aws, ["user-0", "anon-1"])  # what alias(anon-1 -> user-0) wrote
    check_view(g, "anon-1", unmarked, False, {"user-0", "anon-1"})
    before = table_items(aws)
    outcome = g.apply(call)
    assert (outcome["outcome"], outcome["reason"]) == ("refused", "already_identified")
    assert outcome["personId"] not in (None, unmarked)
    check_view(g, "user-1", outcome["personId"], True, {"user-1"})
    # The unmarked person is untouched: not joined, not marked.
    check_view(g, "anon-1", unmarked, False, {"user-0", "anon-1"})
    unchanged(aws, before, "user-1", outcome["personId"])
    assert graph(aws).apply(call) == outcome


def test_alias_attaches_a_new_previous_id_to_the_users_person(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(alias("user-1", "anon-1"))["personId"]
    assert g.apply(alias("user-1", "anon-2")) == {"outcome": "attached", "personId": person}
    check_view(g, "anon-2", person, True, {"user-1", "anon-1", "anon-2"})


@pytest.mark.parametrize(
    "call", [identify("user-1", "anon-1"), alias("user-1", "anon-1")], ids=["identify", "alias"]
)
def test_an_unmarked_person_is_never_merged_into_a_user_without_force(
    aws: Aws, call: IdentityCall
) -> None:
    g = graph(aws)
    user = g.apply(identify("user-1"))["personId"]
    unmarked = unmarked_person(aws, ["user-0", "anon-1"])
    before = table_items(aws)
    assert g.apply(call) == {"outcome": "refused", "personId": user, "reason": "already_identified"}
    unchanged(aws, before)
    assert partition(aws) == {
        user: (True, frozenset({"user-1"})),
        unmarked: (False, frozenset({"user-0", "anon-1"})),
    }


@pytest.mark.parametrize("source", ["aliased", "unmarked"])
def test_a_forced_alias_merges_the_previous_id_person_into_the_user(aws: Aws, source: str) -> None:
    g = graph(aws)
    user = g.apply(identify("user-1", "anon-1"))["personId"]
    if source == "aliased":
        source_id = g.apply(alias("anon-3", "anon-2"))["personId"]
    else:
        source_id = unmarked_person(aws, ["anon-2", "anon-3"])
    refused = g.apply(alias("user-1", "anon-2"))
    assert refused == {"outcome": "refused", "personId": user, "reason": "already_identified"}
    outcome = g.apply(alias("user-1", "anon-2", force=True))
    assert outcome == {"outcome": "merged", "personId": user, "forced": True}
    everyone = {"user-1", "anon-1", "anon-2", "anon-3"}
    check_view(g, "anon-3", user, True, everyone)
    assert partition(aws) == {user: (True, frozenset(everyone))}
    assert not [item for item in table_items(aws) if source_id in item["pk"]["S"]]


def test_a_call_within_an_unmarked_person_writes_nothing_and_leaves_it_unmarked(
    aws: Aws, calls: list[str]
) -> None:
    person = unmarked_person(aws, ["user-1", "anon-1"])  # what alias(anon-1 -> user-1) wrote
    before = table_items(aws)
    calls.clear()
    linked = {"outcome": "already_linked", "personId": person}
    for call in (
        identify("user-1", "anon-1"),
        identify("user-1"),
        alias("user-1", "anon-1"),
        alias("user-1", "user-1"),
        identify("anon-1", "user-1"),
        alias("user-1", "anon-1", force=True),
    ):
        assert graph(aws).apply(call) == {**linked, **({"forced": True} if call.force else {})}
    assert calls and not WRITES & set(calls)
    assert table_items(aws) == before
    check_view(graph(aws), "user-1", person, False, {"user-1", "anon-1"})


def test_a_refusal_leaves_an_unmarked_target_as_it_was(aws: Aws) -> None:
    g = graph(aws)
    g.apply(identify("user-1", "anon-1"))
    unmarked = unmarked_person(aws, ["user-2", "anon-2"])
    before = table_items(aws)
    refused = g.apply(identify("user-2", "anon-1"))
    assert refused == {"outcome": "refused", "personId": unmarked, "reason": "already_identified"}
    assert table_items(aws) == before
    check_view(g, "user-2", unmarked, False, {"user-2", "anon-2"})


# Each write that touches an unmarked person: (call, outcome, ids of the result), on a graph
# holding the unmarked person {user-0, anon-0} and the identified {user-9}.
TOUCHING = {
    "identify-attaches-to-it": (
        identify("user-0", "anon-new"),
        "attached",
        {"user-0", "anon-0", "anon-new"},
    ),
    "alias-attaches-to-it": (
        alias("user-0", "anon-new"),
        "attached",
        {"user-0", "anon-0", "anon-new"},
    ),
    "forced-alias-merges-into-it": (
        alias("user-0", "user-9", force=True),
        "merged",
        {"user-0", "anon-0", "user-9"},
    ),
    "forced-alias-merges-it-away": (
        alias("user-9", "anon-0", force=True),
        "merged",
        {"user-0", "anon-0", "user-9"},
    ),
    "forced-alias-attaches-a-new-user-to-it": (
        alias("user-new", "anon-0", force=True),
        "attached",
        {"user-0", "anon-0", "user-new"},
    ),
}


@pytest.mark.parametrize(("call", "expected", "ids"), TOUCHING.values(), ids=TOUCHING)
def test_the_first_write_that_touches_an_unmarked_person_marks_it(
    aws: Aws, call: IdentityCall, expected: str, ids: set[str]
) -> None:
    g = graph(aws)
    unmarked = unmarked_person(aws, ["user-0", "anon-0"])
    other = g.apply(identify("user-9"))["personId"]
    check_view(g, "anon-0", unmarked, False, {"user-0", "anon-0"})
    outcome = g.apply(call)
    assert outcome["outcome"] == expected
    person = unmarked if call.user_id != "user-9" else other
    assert outcome["personId"] == person
    check_view(graph(aws), "anon-0", person, True, ids)
    expected_partition = {person: (True, frozenset(ids))}
    if expected == "attached":
        expected_partition[other] = (True, frozenset({"user-9"}))
    assert partition(aws) == expected_partition
    # Marked, it is what any identified person is: settled, and a cold Lambda agrees.
    assert graph(aws).apply(identify("user-0", "anon-0")) == {
        "outcome": "already_linked",
        "personId": person,
    }


def test_replayed_identify_is_already_linked_and_writes_nothing(aws: Aws, calls: list[str]) -> None:
    person = graph(aws).apply(identify("user-1", "anon-1"))["personId"]
    before = table_items(aws)
    calls.clear()
    # A cold Lambda: it reads, and writes nothing.
    cold = graph(aws)
    assert cold.apply(identify("user-1", "anon-1")) == {
        "outcome": "already_linked",
        "personId": person,
    }
    assert cold.apply(alias("user-1", "anon-1")) == {
        "outcome": "already_linked",
        "personId": person,
    }
    assert calls and not WRITES & set(calls)
    assert table_items(aws) == before


def test_an_identified_anonymous_id_is_never_merged_into_another_user(aws: Aws) -> None:
    """The shared computer without reset(): the second user's identify is refused."""
    g = graph(aws)
    first = g.apply(identify("user-1", "anon-1"))["personId"]
    refused = g.apply(identify("user-2", "anon-1"))
    assert refused["outcome"] == "refused"
    assert refused["reason"] == "already_identified"
    second = refused["personId"]
    assert second not in (None, first)
    check_view(g, "anon-1", first, True, {"user-1", "anon-1"})
    check_view(g, "user-2", second, True, {"user-2"})
    assert clusters(aws) == {frozenset({"user-1", "anon-1"}), frozenset({"user-2"})}
    # Replaying it changes nothing.
    assert g.apply(identify("user-2", "anon-1")) == refused


def test_alias_of_an_identified_person_is_refused(aws: Aws) -> None:
    g = graph(aws)
    g.apply(identify("user-1", "anon-1"))
    user_2 = g.apply(identify("user-2"))["personId"]
    refused = g.apply(alias("user-2", "user-1"))
    assert refused == {"outcome": "refused", "personId": user_2, "reason": "already_identified"}
    refused = g.apply(alias("user-3", "anon-1"))
    assert (refused["outcome"], refused["reason"]) == ("refused", "already_identified")
    # The alias target still exists, identified: it holds a userId.
    check_view(g, "user-3", refused["personId"], True, {"user-3"})
    assert clusters(aws) == {
        frozenset({"user-1", "anon-1"}),
        frozenset({"user-2"}),
        frozenset({"user-3"}),
    }


# --- fusion: a person made by alias is identified (issue 7, item 3) ----------------------------


def test_alias_then_identify_as_someone_else_with_the_same_anonymous_id_is_refused(
    aws: Aws,
) -> None:
    """(a) alias(anon -> U), then identify(V, anon): U and V stay two people."""
    g = graph(aws)
    u = g.apply(alias("user-u", "anon"))["personId"]
    refused = g.apply(identify("user-v", "anon"))
    v = refused["personId"]
    assert refused == {"outcome": "refused", "personId": v, "reason": "already_identified"}
    assert v not in (None, u)
    check_view(g, "anon", u, True, {"user-u", "anon"})
    check_view(g, "user-v", v, True, {"user-v"})
    assert partition(aws) == {
        u: (True, frozenset({"user-u", "anon"})),
        v: (True, frozenset({"user-v"})),
    }
    # A cold Lambda decides the same, and the replay writes nothing.
    before = table_items(aws)
    assert graph(aws).apply(identify("user-v", "anon")) == refused
    assert table_items(aws) == before


def test_two_aliases_of_one_previous_id_to_different_users_are_refused(aws: Aws) -> None:
    """(b) alias(A -> U), then alias(A -> V): V gets its own person, A stays with U."""
    g = graph(aws)
    u = g.apply(alias("user-u", "anon-a"))["personId"]
    refused = g.apply(alias("user-v", "anon-a"))
    v = refused["personId"]
    assert refused == {"outcome": "refused", "personId": v, "reason": "already_identified"}
    assert v not in (None, u)
    check_view(g, "anon-a", u, True, {"user-u", "anon-a"})
    check_view(g, "user-v", v, True, {"user-v"})
    assert clusters(aws) == {frozenset({"user-u", "anon-a"}), frozenset({"user-v"})}
    assert graph(aws).apply(alias("user-v", "anon-a")) == refused


def test_identify_of_a_known_user_with_an_aliased_anonymous_id_is_refused(aws: Aws) -> None:
    """(c) identify(X), alias(anon2 -> Y), identify(X, anon2): X and Y stay two people."""
    g = graph(aws)
    x = g.apply(identify("user-x"))["personId"]
    y = g.apply(alias("user-y", "anon-2"))["personId"]
    assert y != x
    refused = g.apply(identify("user-x", "anon-2"))
    assert refused == {"outcome": "refused", "personId": x, "reason": "already_identified"}
    check_view(g, "user-x", x, True, {"user-x"})
    check_view(g, "anon-2", y, True, {"user-y", "anon-2"})
    assert partition(aws) == {
        x: (True, frozenset({"user-x"})),
        y: (True, frozenset({"user-y", "anon-2"})),
    }
    assert graph(aws).apply(identify("user-x", "anon-2")) == refused


def test_mixpanel_alias_before_identify_ends_in_one_identified_person(
    aws: Aws, calls: list[str]
) -> None:
    """alias(anon -> U) at signup, then identify(U, anon) on login: one person, identified by
    the alias already, so the identify is `already_linked` (no write, nothing to mark)."""
    g = graph(aws)
    aliased = g.apply(alias("user-u", "anon"))
    assert aliased == {"outcome": "created", "personId": aliased["personId"]}
    person = aliased["personId"]
    check_view(g, "anon", person, True, {"user-u", "anon"})
    calls.clear()
    linked = {"outcome": "already_linked", "personId": person}
    # A cold Lambda reads and writes nothing; a warm one answers from memory.
    assert graph(aws).apply(identify("user-u", "anon")) == linked
    assert calls and not WRITES & set(calls)
    calls.clear()
    assert g.apply(identify("user-u", "anon")) == linked
    assert g.apply(identify("user-u")) == linked
    assert calls == []
    assert partition(aws) == {person: (True, frozenset({"user-u", "anon"}))}


# --- refused ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        identify("null", "anon-1"),
        identify(" undefined ", "anon-1"),
        identify("'None'"),
        identify("0", "0"),
        identify("-1", "anon-1"),
        identify("", "anon-1"),
        identify("   ", "anon-1"),
        identify("user\x00", "anon-1"),
        identify("u" * 401, "anon-1"),
        alias("[object Object]", "anon-1"),
        alias("anonymous", "anon-1", force=True),
    ],
    ids=repr,
)
def test_a_refused_user_id_makes_no_dynamodb_call(
    aws: Aws, calls: list[str], call: IdentityCall
) -> None:
    g = graph(aws)
    outcome = g.apply(call)
    assert outcome["outcome"] == "refused"
    assert outcome["personId"] is None
    assert outcome["reason"] == "illegal_user_id"
    assert calls == []
    assert partition(aws) == {}


def test_a_refused_source_id_is_not_linked_but_the_user_is(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(identify("user-1", " 'undefined' "))
    assert outcome["outcome"] == "refused"
    assert outcome["reason"] == "illegal_source_id"
    check_view(g, "user-1", outcome["personId"], True, {"user-1"})
    assert g.view(" 'undefined' ") is None
    assert g.view("undefined") is None
    outcome = g.apply(alias("user-2", "000"))
    assert outcome["reason"] == "illegal_source_id"
    # Identified: alias's userId names a person as identify's does.
    check_view(g, "user-2", outcome["personId"], True, {"user-2"})
    assert clusters(aws) == {frozenset({"user-1"}), frozenset({"user-2"})}


def test_refused_user_ids_need_no_table_at_all(aws: Aws) -> None:
    g = IdentityGraph(aws.dynamodb, "no-such-table")
    assert g.apply(identify("null", "anon-1"))["outcome"] == "refused"


def test_an_extra_blocked_list_refuses_those_ids(aws: Aws, calls: list[str]) -> None:
    g = graph(aws, blocked=BLOCKED_ANY_CASE | {"shared-laptop"})
    assert g.apply(identify(" Shared-Laptop "))["outcome"] == "refused"
    assert g.apply(identify("null"))["outcome"] == "refused"
    assert calls == []
    outcome = g.apply(identify("user-1", "'SHARED-LAPTOP'"))
    assert (outcome["outcome"], outcome["reason"]) == ("refused", "illegal_source_id")
    assert clusters(aws) == {frozenset({"user-1"})}


# --- the cap -----------------------------------------------------------------------------------


def test_a_merge_past_the_cap_is_refused(aws: Aws) -> None:
    g = graph(aws, max_ids=4)
    person = g.apply(identify("user-1", "anon-1"))["personId"]
    assert g.apply(identify("user-1", "anon-2"))["outcome"] == "attached"
    other = g.apply(alias("anon-3", "anon-4"))["personId"]
    # Someone else's person: refused before the cap is even looked at.
    refused = g.apply(identify("user-1", "anon-3"))
    assert refused == {"outcome": "refused", "personId": person, "reason": "already_identified"}
    # A forced alias gets past that, not past the cap: 3 + 2 = 5 ids, one too many.
    refused = g.apply(alias("user-1", "anon-3", force=True))
    assert refused == {
        "outcome": "refused",
        "personId": person,
        "reason": "too_many_ids",
        "forced": True,
    }
    # Exactly at the cap: allowed.
    assert g.apply(identify("user-1", "anon-5"))["outcome"] == "attached"
    check_view(g, "user-1", person, True, {"user-1", "anon-1", "anon-2", "anon-5"})
    refused = g.apply(identify("user-1", "anon-6"))
    assert (refused["outcome"], refused["reason"]) == ("refused", "too_many_ids")
    assert g.view("anon-6") is None
    # A new user forced into a full person is refused too; the user still exists.
    full = graph(aws, max_ids=2)
    refused = full.apply(alias("user-2", "anon-3", force=True))
    assert (refused["outcome"], refused["reason"]) == ("refused", "too_many_ids")
    check_view(full, "user-2", refused["personId"], True, {"user-2"})
    check_view(full, "anon-3", other, True, {"anon-3", "anon-4"})
    # A forced alias is held to the cap too: 4 + 2 ids.
    g.apply(identify("user-3", "anon-7"))
    refused = g.apply(alias("user-1", "user-3", force=True))
    assert refused == {
        "outcome": "refused",
        "personId": person,
        "reason": "too_many_ids",
        "forced": True,
    }
    assert clusters(aws) == {
        frozenset({"user-1", "anon-1", "anon-2", "anon-5"}),
        frozenset({"anon-3", "anon-4"}),
        frozenset({"user-2"}),
        frozenset({"user-3", "anon-7"}),
    }


# --- forced merges -----------------------------------------------------------------------------


def test_a_forced_alias_merges_two_identified_people(aws: Aws) -> None:
    g = graph(aws)
    first = g.apply(identify("user-1", "anon-1"))["personId"]
    second = g.apply(identify("user-2", "anon-2"))["personId"]
    assert g.apply(alias("user-2", "user-1"))["reason"] == "already_identified"
    # The opt-in, as a client sends it.
    message = {
        "type": "alias",
        "userId": "user-2",
        "previousId": "user-1",
        "integrations": {"Collector": {"mergeIdentified": True}},
    }
    outcome = g.resolve(message)
    assert outcome == {"outcome": "merged", "personId": second, "forced": True}
    everyone = {"user-1", "anon-1", "user-2", "anon-2"}
    check_view(g, "user-1", second, True, everyone)
    assert partition(aws) == {second: (True, frozenset(everyone))}
    assert first not in partition(aws)


def test_a_forced_alias_attaches_a_new_user_to_an_identified_person(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(identify("user-1", "anon-1"))["personId"]
    outcome = g.apply(alias("user-1b", "user-1", force=True))
    assert outcome == {"outcome": "attached", "personId": person, "forced": True}
    check_view(g, "user-1b", person, True, {"user-1", "user-1b", "anon-1"})


def test_the_opt_in_on_identify_does_not_force(aws: Aws) -> None:
    g = graph(aws)
    g.apply(identify("user-1", "anon-1"))
    message = {
        "type": "identify",
        "userId": "user-2",
        "anonymousId": "anon-1",
        "integrations": {"Collector": {"mergeIdentified": True}},
    }
    outcome = g.resolve(message)
    assert (outcome["outcome"], outcome["reason"]) == ("refused", "already_identified")
    assert "forced" not in outcome


# --- chunked merges and their roll-forward ---------------------------------------------------

CLUSTER = 40  # more than the 32 ids one transaction carries


@pytest.mark.parametrize("unmarked", [False, True], ids=["aliased", "unmarked"])
def test_a_40_id_cluster_merges_into_an_identified_person(
    aws: Aws, calls: list[str], unmarked: bool
) -> None:
    """Only a forced alias merges a person: one aliases built, or one an older version stored
    unmarked (an unforced identify or alias of it is refused)."""
    g = graph(aws)
    user = g.apply(identify("user"))["personId"]
    if unmarked:
        ids = numbered(CLUSTER)
        unmarked_person(aws, ids)
    else:
        ids = identified_cluster(g, CLUSTER)
    source = g.view(ids[0])
    assert source is not None and source.identified is not unmarked
    assert len(source.distinct_ids) == CLUSTER
    for unforced in (identify("user", ids[17]), alias("user", ids[17])):
        assert g.apply(unforced)["reason"] == "already_identified"
    assert g.view(ids[0]) == source
    calls.clear()
    assert g.apply(alias("user", ids[17], force=True)) == {
        "outcome": "merged",
        "personId": user,
        "forced": True,
    }
    # Lock, two chunks of ids, delete the source: more than one transaction.
    assert calls.count("TransactWriteItems") >= 3
    everyone = {"user", *ids}
    check_view(g, ids[-1], user, True, everyone)
    assert partition(aws) == {user: (True, frozenset(everyone))}
    assert not [item for item in table_items(aws) if source.person_id in item["pk"]["S"]]


class LambdaDied(Exception):
    """The Lambda was stopped between two of its writes."""


def die_after(g: IdentityGraph, transactions: int) -> None:
    """`g` carries out `transactions` more write transactions, then its Lambda dies."""
    real = g._transact
    done = 0

    def transact(items: list[dict[str, Any]]) -> None:
        nonlocal done
        if done == transactions:
            raise LambdaDied
        done += 1
        real(items)

    g._transact = transact


def pointer_of(aws: Aws, distinct_id: str) -> str:
    key = {"pk": {"S": f"ID#{distinct_id}"}, "sk": {"S": "ID"}}
    return str(aws.dynamodb.get_item(TableName=aws.table, Key=key)["Item"]["personId"]["S"])


FORCED_MERGE = alias("user", "anon-00", force=True)


def half_merged(aws: Aws, transactions: int) -> tuple[str, str, list[str], list[str]]:
    """An identified `user` and a 40-id person aliases built, whose forced merge into `user`
    (FORCED_MERGE) died after `transactions` writes (1: the lock; 2: the lock and 32 ids moved;
    3: all ids moved). Returns the target and source person ids, the ids moved and not moved."""
    g = graph(aws)
    user = g.apply(identify("user"))["personId"]
    ids = identified_cluster(g, CLUSTER)
    source = pointer_of(aws, ids[0])
    assert partition(aws)[source] == (True, frozenset(ids))
    die_after(g, transactions)
    with pytest.raises(LambdaDied):
        g.apply(FORCED_MERGE)
    header = aws.dynamodb.get_item(
        TableName=aws.table, Key={"pk": {"S": f"PERSON#{source}"}, "sk": {"S": "PERSON"}}
    )["Item"]
    assert header["mergingInto"] == {"S": user}
    pointers = {distinct_id: pointer_of(aws, distinct_id) for distinct_id in ids}
    moved = [i for i in ids if pointers[i] == user]
    not_moved = [i for i in ids if pointers[i] == source]
    assert len(moved) + len(not_moved) == CLUSTER
    assert len(moved) == min(CLUSTER, 32 * (transactions - 1))
    return user, source, moved, not_moved


Finish = Callable[[IdentityGraph, list[str], list[str]], None]


def finish_by_view(g: IdentityGraph, moved: list[str], not_moved: list[str]) -> None:
    view = g.view(not_moved[-1])
    assert view is not None and len(view.distinct_ids) == CLUSTER + 1


def finish_by_identify(g: IdentityGraph, moved: list[str], not_moved: list[str]) -> None:
    assert g.apply(identify(not_moved[0]))["outcome"] == "already_linked"


def finish_by_alias(g: IdentityGraph, moved: list[str], not_moved: list[str]) -> None:
    assert g.apply(alias(not_moved[-1], "anon-new"))["outcome"] == "attached"


def finish_by_replay(g: IdentityGraph, moved: list[str], not_moved: list[str]) -> None:
    """The client retries the forced alias whose Lambda died."""
    outcome = g.apply(FORCED_MERGE)
    assert (outcome["outcome"], outcome["forced"]) == ("already_linked", True)
    view = g.view("anon-00")  # the replay finished the merge: this read finds nothing to do
    assert view is not None and outcome["personId"] == view.person_id


@pytest.mark.parametrize("transactions", [1, 2], ids=["after-lock", "after-one-chunk"])
@pytest.mark.parametrize(
    "finish",
    [finish_by_view, finish_by_identify, finish_by_alias],
    ids=["view", "identify", "alias"],
)
def test_a_merge_left_half_done_is_finished_by_a_reader_of_an_unmoved_id(
    aws: Aws, transactions: int, finish: Finish
) -> None:
    user, source, moved, not_moved = half_merged(aws, transactions)
    later = graph(aws)  # another Lambda
    finish(later, moved, not_moved)
    ids = {f"anon-{n:02d}" for n in range(CLUSTER)} | {"user"}
    if finish is finish_by_alias:
        ids.add("anon-new")
    check_view(later, "user", user, True, ids)
    assert partition(aws) == {user: (True, frozenset(ids))}
    assert not [item for item in table_items(aws) if source in item["pk"]["S"]]


def test_a_replayed_alias_finishes_a_merge_that_died_after_the_lock(aws: Aws) -> None:
    user, _, _, _ = half_merged(aws, 1)
    later = graph(aws)
    finish_by_replay(later, [], [])
    ids = {f"anon-{n:02d}" for n in range(CLUSTER)} | {"user"}
    assert partition(aws) == {user: (True, frozenset(ids))}


@pytest.mark.parametrize(
    "finish",
    [
        lambda g, moved, not_moved: g.view("user"),
        lambda g, moved, not_moved: g.apply(identify("user")),
        finish_by_replay,
        lambda g, moved, not_moved: g.view(moved[0]),
    ],
    ids=["view-target", "identify-target", "replay", "view-moved-id"],
)
def test_a_merge_left_half_done_is_finished_by_a_reader_of_the_target(
    aws: Aws, finish: Finish
) -> None:
    _, _, moved, not_moved = half_merged(aws, 2)
    later = graph(aws)
    finish(later, moved, not_moved)
    view = later.view("user")
    assert view is not None and len(view.distinct_ids) == CLUSTER + 1


def test_a_merge_that_died_before_deleting_the_source_reads_right(aws: Aws) -> None:
    user, _, _, not_moved = half_merged(aws, 3)
    assert not not_moved
    later = graph(aws)
    ids = {f"anon-{n:02d}" for n in range(CLUSTER)} | {"user"}
    check_view(later, "user", user, True, ids)
    assert later.apply(identify("user", "anon-39"))["outcome"] == "already_linked"


def test_a_merge_that_died_before_deleting_the_source_leaves_no_header(aws: Aws) -> None:
    _, source, _, _ = half_merged(aws, 3)
    later = graph(aws)
    later.view("user")
    later.apply(identify("user", "anon-39"))
    assert not [item for item in table_items(aws) if source in item["pk"]["S"]]


# --- the warm cache --------------------------------------------------------------------------


def test_a_warm_graph_answers_repeated_identifies_without_dynamodb(
    aws: Aws, calls: list[str]
) -> None:
    g = graph(aws)
    person = g.apply(identify("user-1", "anon-1"))["personId"]
    assert calls
    calls.clear()
    linked = {"outcome": "already_linked", "personId": person}
    assert g.apply(identify("user-1", "anon-1")) == linked
    assert g.apply(identify("user-1")) == linked
    assert g.resolve({"type": "identify", "userId": "user-1", "anonymousId": "anon-1"}) == linked
    assert calls == []
    # A new link is not in the cache.
    assert g.apply(identify("user-1", "anon-2"))["outcome"] == "attached"
    assert calls
    calls.clear()
    assert g.apply(identify("user-1", "anon-2")) == linked
    assert calls == []


def test_the_warm_cache_never_answers_what_is_not_settled(aws: Aws, calls: list[str]) -> None:
    g = graph(aws)
    # An unmarked person (stored by an older version) counts as identified: its link is read
    # once (nothing to write: the call does not mark it), then answered from memory.
    unmarked = unmarked_person(aws, ["user-1", "anon-1"])
    calls.clear()
    assert g.apply(identify("user-1", "anon-1")) == {
        "outcome": "already_linked",
        "personId": unmarked,
    }
    assert calls and not WRITES & set(calls)
    calls.clear()
    assert g.apply(identify("user-1", "anon-1")) == {
        "outcome": "already_linked",
        "personId": unmarked,
    }
    assert calls == []
    # What alias makes now is identified, so settled as soon as it is written.
    aliased = g.apply(alias("user-3", "anon-3"))["personId"]
    calls.clear()
    linked = {"outcome": "already_linked", "personId": aliased}
    assert g.apply(identify("user-3", "anon-3")) == linked
    assert calls == []
    g.apply(identify("user-2", "anon-2"))
    calls.clear()
    # A refusal is not cached: it is decided again (reading only), each time.
    refused = g.apply(identify("user-2", "anon-1"))
    assert refused["reason"] == "already_identified"
    assert calls and not WRITES & set(calls)
    calls.clear()
    assert g.apply(identify("user-2", "anon-1")) == refused
    assert calls and not WRITES & set(calls)


def test_a_warm_cache_does_not_outlive_a_forced_merge_elsewhere(aws: Aws) -> None:
    """The link stays true; the person id a warm Lambda reports catches up within its TTL."""
    now = [0.0]
    warm, other = graph(aws, cache_seconds=300, clock=lambda: now[0]), graph(aws)
    first = warm.apply(identify("user-1", "anon-1"))["personId"]
    second = warm.apply(identify("user-2", "anon-2"))["personId"]
    other.apply(alias("user-2", "user-1", force=True))
    assert warm.apply(identify("user-1")) == {"outcome": "already_linked", "personId": first}
    now[0] += 300
    assert warm.apply(identify("user-1")) == {"outcome": "already_linked", "personId": second}


# --- failures ----------------------------------------------------------------------------------


def test_a_missing_table_is_storage_unavailable(aws: Aws) -> None:
    g = IdentityGraph(aws.dynamodb, "no-such-table")
    with pytest.raises(StorageUnavailable):
        g.apply(identify("user-1", "anon-1"))
    with pytest.raises(StorageUnavailable):
        g.apply(alias("user-1", "anon-1"))
    with pytest.raises(StorageUnavailable):
        g.view("user-1")


# --- through the local server ----------------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(server: LocalApiGateway, key: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{server.url}{path}",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **basic(key)},
        timeout=10,
    )


def get_identity(server: LocalApiGateway, distinct_id: str) -> requests.Response:
    path = quote(distinct_id, safe="@")
    return requests.get(f"{server.url}/v1/identities/{path}", timeout=10)


@dataclass(frozen=True)
class Request:
    """One DynamoDB request the app made: its operation and the partition keys it names."""

    operation: str
    keys: tuple[str, ...]

    @property
    def kinds(self) -> frozenset[str]:
        """What the keys are: "MSG#" (the ledger), "ID#" / "PERSON#" (the identity graph),
        "writekey" (the source registry)."""
        return frozenset(key.split("#", 1)[0] + "#" if "#" in key else key for key in self.keys)


GRAPH = frozenset({"ID#", "PERSON#"})
WRITE_KEY_LOOKUP = Request("GetItem", ("writekey",))


def partition_keys(operation: str, params: dict[str, Any]) -> tuple[str, ...]:
    """Every pk a request reads or writes (a query's is its :pk)."""
    if operation == "BatchGetItem":
        tables = params["RequestItems"].values()
        return tuple(key["pk"]["S"] for table in tables for key in table["Keys"])
    if operation == "TransactWriteItems":
        bodies = [body for item in params["TransactItems"] for body in item.values()]
        return tuple((body.get("Key") or body["Item"])["pk"]["S"] for body in bodies)
    if operation in ("GetItem", "UpdateItem", "DeleteItem"):
        return (params["Key"]["pk"]["S"],)
    if operation == "PutItem":
        return (params["Item"]["pk"]["S"],)
    if operation == "Query":
        return (params["ExpressionAttributeValues"][":pk"]["S"],)
    raise AssertionError(f"the app made a DynamoDB {operation} this test does not expect")


@pytest.fixture
def app_dynamodb(aws: Aws) -> Iterator[list[Request]]:
    """The DynamoDB requests the app makes (through its one client) from now on, as sent."""
    made: list[Request] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        made.append(Request(model.name, partition_keys(model.name, orjson.loads(params["body"]))))

    client = api.aws_client("dynamodb")
    client.meta.events.register("before-call.dynamodb", record, unique_id="app-dynamodb")
    yield made
    client.meta.events.unregister("before-call.dynamodb", unique_id="app-dynamodb")


def ledger_only(requests: list[Request]) -> Counter[str]:
    """The operations of `requests`, after checking that none touches the identity graph and
    each names ledger items only (the write key's lookup aside). The profiles' own calls
    (PROFILE# items only, counted in tests/test_profiles.py) are left out."""
    requests = [r for r in requests if r.kinds != {"PROFILE#"}]
    assert [r for r in requests if r.kinds & GRAPH] == [], "the identity graph was touched"
    assert all(r.kinds == {"MSG#"} or r == WRITE_KEY_LOOKUP for r in requests), requests
    return Counter(r.operation for r in requests if r != WRITE_KEY_LOOKUP)


def test_identify_then_read_the_person(server: LocalApiGateway, aws: Aws, write_key: str) -> None:
    body = {"userId": "user-42@example.com", "anonymousId": "anon-42", "traits": {"plan": "pro"}}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    for distinct_id in ("user-42@example.com", "anon-42"):
        response = get_identity(server, distinct_id)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        person = response.json()
        assert set(person) == {
            "personId",
            "identified",
            "distinctIds",
            "traits",
            "firstSeen",
            "lastSeen",
        }
        assert isinstance(person["personId"], str) and person["personId"]
        assert person["identified"] is True
        assert person["distinctIds"] == ["anon-42", "user-42@example.com"]
        assert person["traits"] == {"plan": "pro"}
    [stored] = aws.stored()
    assert stored["collector"]["identity"] == {"outcome": "created", "personId": person["personId"]}


@pytest.mark.parametrize("distinct_id", ["anon 1", "ユーザー"])
def test_an_id_that_needs_percent_encoding_can_be_read(
    server: LocalApiGateway, aws: Aws, write_key: str, distinct_id: str
) -> None:
    body = {"userId": "user-1", "anonymousId": distinct_id}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    assert aws.stored()[0]["collector"]["identity"]["outcome"] == "created"
    response = get_identity(server, distinct_id)
    assert response.status_code == 200, response.text
    assert response.json()["distinctIds"] == sorted([distinct_id, "user-1"])


def test_an_unknown_id_is_404(server: LocalApiGateway, aws: Aws) -> None:
    response = get_identity(server, "nobody")
    assert response.status_code == 404
    body = response.json()
    assert (body["success"], body["code"]) == (False, "unknown_id")
    assert body["message"]


def test_every_stored_identify_and_alias_carries_its_outcome(
    server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    def message(n: int, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "messageId": f"m{n}", **fields}

    batch = [
        message(0, "identify", userId="user-1", anonymousId="anon-1"),
        message(1, "identify", userId="user-1", anonymousId="anon-1"),
        message(2, "identify", userId="user-2", anonymousId="anon-1"),
        message(3, "identify", userId="null", anonymousId="anon-3"),
        message(4, "identify", userId=0, anonymousId="anon-4"),
        message(5, "alias", userId="user-1", previousId="anon-5"),
        message(6, "identify", userId="user-6", anonymousId="undefined"),
        message(7, "alias", userId="user-1", previousId="user-2"),
        message(8, "track", event="Clicked", userId="user-1", anonymousId="anon-1"),
        message(9, "identify", anonymousId="anon-9"),
        message(10, "page", userId="user-1"),
    ]
    response = post(server, write_key, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    stored = {event["messageId"]: event for event in aws.stored()}
    assert sorted(stored) == sorted(m["messageId"] for m in batch)
    outcomes = {
        message_id: event["collector"].get("identity") for message_id, event in stored.items()
    }
    for message_id, outcome in outcomes.items():
        if stored[message_id]["type"] in ("identify", "alias") and message_id != "m9":
            assert outcome is not None, message_id
            assert "personId" in outcome and "outcome" in outcome
            assert ("reason" in outcome) == (outcome["outcome"] == "refused")
        else:
            assert outcome is None, message_id
    user_1 = outcomes["m0"]["personId"]
    assert outcomes["m0"] == {"outcome": "created", "personId": user_1}
    assert outcomes["m1"] == {"outcome": "already_linked", "personId": user_1}
    assert outcomes["m2"]["outcome"] == "refused"
    assert outcomes["m2"]["reason"] == "already_identified"
    assert outcomes["m2"]["personId"] not in (None, user_1)
    for refused_user in ("m3", "m4"):
        assert outcomes[refused_user]["outcome"] == "refused"
        assert outcomes[refused_user]["personId"] is None
        assert outcomes[refused_user]["reason"] == "illegal_user_id"
    assert outcomes["m5"] == {"outcome": "attached", "personId": user_1}
    assert outcomes["m6"]["reason"] == "illegal_source_id"
    assert outcomes["m6"]["personId"] not in (None, user_1)
    assert outcomes["m7"]["reason"] == "already_identified"
    assert outcomes["m7"]["personId"] == user_1
    person = get_identity(server, "anon-5").json()
    assert person["distinctIds"] == ["anon-1", "anon-5", "user-1"]
    assert get_identity(server, "anon-9").status_code == 404
    assert get_identity(server, "null").status_code == 404


def test_fifty_tracks_with_user_ids_never_touch_the_identity_graph(
    server: LocalApiGateway, aws: Aws, write_key: str, app_dynamodb: list[Request]
) -> None:
    """Tracks cost the ledger's two calls per request (one read, one claim, each carrying
    every message) and nothing in the identity graph: not even a read."""
    batch = [
        {"type": "track", "event": "Viewed", "userId": f"user-{n}", "anonymousId": f"anon-{n}"}
        for n in range(50)
    ]
    response = post(server, write_key, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert len(aws.stored()) == 50
    # New messages are claimed without a read: one transaction for the fifty.
    assert ledger_only(app_dynamodb) == {"TransactWriteItems": 1}
    assert [len(r.keys) for r in app_dynamodb if r.kinds == {"MSG#"}] == [50]
    for kind in ("page", "screen", "group"):
        app_dynamodb.clear()
        extra = {"groupId": "g-1"} if kind == "group" else {}
        body = {"userId": "user-1", "anonymousId": "anon-1", **extra}
        assert post(server, write_key, f"/v1/{kind}", body).status_code == 200
        # One message: its claim is a plain conditional write (1 WRU, not a transaction's 2).
        assert ledger_only(app_dynamodb) == {"PutItem": 1}, kind
    assert get_identity(server, "user-1").status_code == 404
    # The recorder sees graph calls when there are some: an identify makes them.
    app_dynamodb.clear()
    assert post(server, write_key, "/v1/identify", {"userId": "user-1"}).status_code == 200
    assert {"ID#", "PERSON#"} <= {kind for r in app_dynamodb for kind in r.kinds}


def test_a_repeated_identify_costs_no_identity_graph_call_in_a_warm_lambda(
    server: LocalApiGateway, aws: Aws, write_key: str, app_dynamodb: list[Request]
) -> None:
    """A warm repeat is answered from memory: the request pays only the ledger (its read, its
    claim and the record of the unchanged decision), never a graph read or write."""
    body = {"userId": "user-1", "anonymousId": "anon-1"}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    graph_writes = [r for r in app_dynamodb if r.operation in WRITES and r.kinds & GRAPH]
    assert graph_writes, "the first identify writes the graph"
    for _ in range(3):
        for repeat in (body, {"userId": "user-1"}):
            app_dynamodb.clear()
            assert post(server, write_key, "/v1/identify", repeat).status_code == 200
            # The claim, then the record of the unchanged decision: one item each.
            assert ledger_only(app_dynamodb) == {"PutItem": 1, "UpdateItem": 1}
    outcomes = Counter(event["collector"]["identity"]["outcome"] for event in aws.stored())
    assert outcomes == {"created": 1, "already_linked": 6}


def test_a_refused_identify_is_counted_as_a_metric(
    server: LocalApiGateway, aws: Aws, write_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"userId": "undefined", "anonymousId": "anon-1"}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    printed = [
        orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"
    ]
    emf = [line for line in printed if "IdentityRefusals" in line]
    assert len(emf) == 1
    assert emf[0]["IdentityRefusals"] in (1, 1.0, [1.0])
    names = {
        metric["Name"]
        for directive in emf[0]["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert "IdentityRefusals" in names
    [stored] = aws.stored()
    assert stored["collector"]["identity"]["outcome"] == "refused"


def test_an_accepted_identify_emits_no_refusal_metric(
    server: LocalApiGateway, aws: Aws, write_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"userId": "user-1", "anonymousId": "anon-1"}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    out = capsys.readouterr().out
    assert "AcceptedMessages" in out
    assert "IdentityRefusals" not in out


def test_the_deployment_settings_reach_the_graph(
    server: LocalApiGateway, aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_BLOCKED_IDS", " Shared-Laptop ,qa-user,")
    monkeypatch.setenv("IDENTITY_MAX_IDS", "2")
    batch = [
        {"type": "identify", "messageId": "m0", "userId": "QA-User", "anonymousId": "anon-0"},
        {"type": "identify", "messageId": "m1", "userId": "user-1", "anonymousId": "shared-laptop"},
        {"type": "identify", "messageId": "m2", "userId": "user-1", "anonymousId": "anon-2"},
        {"type": "identify", "messageId": "m3", "userId": "user-1", "anonymousId": "anon-3"},
    ]
    assert post(server, write_key, "/v1/batch", {"batch": batch}).status_code == 200
    outcomes = {e["messageId"]: e["collector"]["identity"] for e in aws.stored()}
    assert outcomes["m0"]["reason"] == "illegal_user_id"
    assert outcomes["m1"]["reason"] == "illegal_source_id"
    assert outcomes["m2"]["outcome"] == "attached"
    assert (outcomes["m3"]["outcome"], outcomes["m3"]["reason"]) == ("refused", "too_many_ids")
    assert get_identity(server, "user-1").json()["distinctIds"] == ["anon-2", "user-1"]
    for unknown in ("QA-User", "shared-laptop", "anon-3"):
        assert get_identity(server, unknown).status_code == 404


# --- forced merges need a source allowed to force them ---------------------------------------


@pytest.mark.parametrize("allowed", [False, True], ids=["browser-source", "trusted-source"])
def test_a_forced_alias_counts_only_from_a_source_allowed_to_force(
    server: LocalApiGateway, aws: Aws, write_key: str, allowed: bool
) -> None:
    _, key = SourceRegistry(aws.dynamodb, aws.table).add("backend", may_force_merge=allowed)
    for user, anonymous in (("user-1", "anon-1"), ("user-2", "anon-2")):
        body = {"userId": user, "anonymousId": anonymous}
        assert post(server, write_key, "/v1/identify", body).status_code == 200
    forced = {
        "previousId": "user-1",
        "userId": "user-2",
        "integrations": {"Collector": {"mergeIdentified": True}},
    }
    assert post(server, key, "/v1/alias", forced).status_code == 200
    [alias_event] = [event for event in aws.stored() if event["type"] == "alias"]
    outcome = alias_event["collector"]["identity"]
    merged = get_identity(server, "anon-1").json()["distinctIds"]
    if allowed:
        assert (outcome["outcome"], outcome.get("forced")) == ("merged", True)
        assert merged == ["anon-1", "anon-2", "user-1", "user-2"]
    else:
        assert (outcome["outcome"], outcome["reason"]) == ("refused", "already_identified")
        assert "forced" not in outcome
        assert merged == ["anon-1", "user-1"]
