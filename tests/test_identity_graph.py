"""The identity graph against DynamoDB (moto): every outcome, the cap, forced merges, chunked
merges and their roll-forward, the warm cache; and through the local server: the read API, the
outcomes stored with events in S3, the refusal metric, and tracks that never write."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import botocore.client
import orjson
import pytest
import requests

from collector.errors import StorageUnavailable
from collector.identity import BLOCKED_ANY_CASE, IdentityCall
from collector.identity_store import IdentityGraph
from collector.sources import SourceRegistry
from collector.tools.localapi import LocalApiGateway

from .conftest import Aws

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


def anonymous_cluster(g: IdentityGraph, size: int, prefix: str = "anon-") -> list[str]:
    """`size` anonymous ids in one person, linked by aliases (ids sort in creation order)."""
    ids = [f"{prefix}{n:02d}" for n in range(size)]
    assert g.apply(alias(ids[1], ids[0]))["outcome"] == "created"
    for previous, new in itertools.pairwise(ids[1:]):
        assert g.apply(alias(new, previous))["outcome"] == "attached"
    return ids


# --- every outcome, end to end ---------------------------------------------------------------


def test_identify_of_two_unknown_ids_creates_one_identified_person(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(identify("user-1", "anon-1"))
    assert outcome["outcome"] == "created"
    assert set(outcome) == {"outcome", "personId"}
    check_view(g, "user-1", outcome["personId"], True, {"user-1", "anon-1"})
    assert partition(aws) == {outcome["personId"]: (True, frozenset({"user-1", "anon-1"}))}


def test_alias_of_two_unknown_ids_creates_one_anonymous_person(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(alias("anon-2", "anon-1"))
    assert outcome["outcome"] == "created"
    check_view(g, "anon-1", outcome["personId"], False, {"anon-1", "anon-2"})


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


def test_identify_attaches_a_new_user_to_a_known_anonymous_person(aws: Aws) -> None:
    g = graph(aws)
    anonymous = g.apply(alias("anon-2", "anon-1"))["personId"]
    outcome = g.apply(identify("user-1", "anon-1"))
    assert outcome == {"outcome": "attached", "personId": anonymous}
    check_view(g, "user-1", anonymous, True, {"user-1", "anon-1", "anon-2"})


def test_alias_attaches_without_identifying(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(alias("anon-2", "anon-1"))["personId"]
    assert g.apply(alias("anon-3", "anon-2")) == {"outcome": "attached", "personId": person}
    check_view(g, "anon-3", person, False, {"anon-1", "anon-2", "anon-3"})


def test_identify_merges_an_anonymous_person_into_the_user(aws: Aws) -> None:
    g = graph(aws)
    user = g.apply(identify("user-1"))["personId"]
    anonymous = g.apply(alias("anon-2", "anon-1"))["personId"]
    outcome = g.apply(identify("user-1", "anon-1"))
    assert outcome == {"outcome": "merged", "personId": user}
    check_view(g, "anon-2", user, True, {"user-1", "anon-1", "anon-2"})
    assert anonymous not in partition(aws)
    assert not [item for item in table_items(aws) if anonymous in item["pk"]["S"]]


def test_alias_merges_the_previous_id_person_into_the_user(aws: Aws) -> None:
    g = graph(aws)
    user = g.apply(identify("user-1", "anon-1"))["personId"]
    g.apply(alias("anon-3", "anon-2"))
    outcome = g.apply(alias("user-1", "anon-2"))
    assert outcome == {"outcome": "merged", "personId": user}
    check_view(g, "anon-3", user, True, {"user-1", "anon-1", "anon-2", "anon-3"})


def test_identify_names_an_anonymous_person(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(alias("user-1", "anon-1"))["personId"]
    check_view(g, "user-1", person, False, {"user-1", "anon-1"})
    assert g.apply(identify("user-1", "anon-1")) == {"outcome": "identified", "personId": person}
    check_view(g, "user-1", person, True, {"user-1", "anon-1"})
    assert g.apply(identify("user-1")) == {"outcome": "already_linked", "personId": person}


def test_identify_alone_names_an_anonymous_person(aws: Aws) -> None:
    g = graph(aws)
    person = g.apply(alias("user-1", "anon-1"))["personId"]
    assert g.apply(identify("user-1")) == {"outcome": "identified", "personId": person}
    check_view(g, "anon-1", person, True, {"user-1", "anon-1"})


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
    # The alias target still exists, anonymous: alias never identifies.
    check_view(g, "user-3", refused["personId"], False, {"user-3"})
    assert clusters(aws) == {
        frozenset({"user-1", "anon-1"}),
        frozenset({"user-2"}),
        frozenset({"user-3"}),
    }


def test_an_identify_refused_as_already_identified_still_identifies_the_target(
    aws: Aws,
) -> None:
    g = graph(aws)
    g.apply(identify("user-1", "anon-1"))
    anonymous = g.apply(alias("user-2", "anon-2"))["personId"]
    refused = g.apply(identify("user-2", "anon-1"))
    assert refused == {"outcome": "refused", "personId": anonymous, "reason": "already_identified"}
    check_view(g, "user-2", anonymous, True, {"user-2", "anon-2"})


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
    assert outcome["reason"].startswith("userId illegal_id:")
    assert calls == []
    assert partition(aws) == {}


def test_a_refused_source_id_is_not_linked_but_the_user_is(aws: Aws) -> None:
    g = graph(aws)
    outcome = g.apply(identify("user-1", " 'undefined' "))
    assert outcome["outcome"] == "refused"
    assert outcome["reason"].startswith("sourceId illegal_id:")
    check_view(g, "user-1", outcome["personId"], True, {"user-1"})
    assert g.view(" 'undefined' ") is None
    assert g.view("undefined") is None
    outcome = g.apply(alias("user-2", "000"))
    assert outcome["reason"].startswith("sourceId illegal_id:")
    check_view(g, "user-2", outcome["personId"], False, {"user-2"})
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
    assert (outcome["outcome"], outcome["reason"][:18]) == ("refused", "sourceId illegal_i")
    assert clusters(aws) == {frozenset({"user-1"})}


# --- the cap -----------------------------------------------------------------------------------


def test_a_merge_past_the_cap_is_refused(aws: Aws) -> None:
    g = graph(aws, max_ids=4)
    person = g.apply(identify("user-1", "anon-1"))["personId"]
    assert g.apply(identify("user-1", "anon-2"))["outcome"] == "attached"
    g.apply(alias("anon-4", "anon-3"))
    # 3 + 2 = 5 ids: one past the cap.
    refused = g.apply(identify("user-1", "anon-3"))
    assert refused == {"outcome": "refused", "personId": person, "reason": "too_many_ids"}
    # Exactly at the cap: allowed.
    assert g.apply(identify("user-1", "anon-5"))["outcome"] == "attached"
    check_view(g, "user-1", person, True, {"user-1", "anon-1", "anon-2", "anon-5"})
    refused = g.apply(identify("user-1", "anon-6"))
    assert (refused["outcome"], refused["reason"]) == ("refused", "too_many_ids")
    assert g.view("anon-6") is None
    # A new user joining a full anonymous person is refused too; the user still exists.
    full = graph(aws, max_ids=2)
    refused = full.apply(identify("user-2", "anon-3"))
    assert (refused["outcome"], refused["reason"]) == ("refused", "too_many_ids")
    check_view(full, "user-2", refused["personId"], True, {"user-2"})
    assert clusters(aws) == {
        frozenset({"user-1", "anon-1", "anon-2", "anon-5"}),
        frozenset({"anon-3", "anon-4"}),
        frozenset({"user-2"}),
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


def test_a_40_id_anonymous_cluster_merges_into_an_identified_person(
    aws: Aws, calls: list[str]
) -> None:
    g = graph(aws)
    user = g.apply(identify("user"))["personId"]
    ids = anonymous_cluster(g, CLUSTER)
    source = g.view(ids[0])
    assert source is not None and not source.identified
    assert len(source.distinct_ids) == CLUSTER
    calls.clear()
    assert g.apply(identify("user", ids[17])) == {"outcome": "merged", "personId": user}
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


def anonymous_cluster_by_hand(aws: Aws, size: int, prefix: str = "anon-") -> tuple[str, list[str]]:
    """What `anonymous_cluster` builds, written directly (quicker): header, pointers, members."""
    person_id = uuid.uuid4().hex
    ids = [f"{prefix}{n:02d}" for n in range(size)]
    items: list[dict[str, Any]] = [
        {
            "pk": {"S": f"PERSON#{person_id}"},
            "sk": {"S": "PERSON"},
            "isIdentified": {"BOOL": False},
            "idCount": {"N": str(size)},
            "personVersion": {"N": str(size)},
            "createdAt": {"S": "2026-01-01T00:00:00.000+00:00"},
        }
    ]
    for distinct_id in ids:
        items.append(
            {"pk": {"S": f"ID#{distinct_id}"}, "sk": {"S": "ID"}, "personId": {"S": person_id}}
        )
        items.append({"pk": {"S": f"PERSON#{person_id}"}, "sk": {"S": f"ID#{distinct_id}"}})
    for start in range(0, len(items), 25):
        requests_ = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        aws.dynamodb.batch_write_item(RequestItems={aws.table: requests_})
    return person_id, ids


def pointer_of(aws: Aws, distinct_id: str) -> str:
    key = {"pk": {"S": f"ID#{distinct_id}"}, "sk": {"S": "ID"}}
    return str(aws.dynamodb.get_item(TableName=aws.table, Key=key)["Item"]["personId"]["S"])


def half_merged(aws: Aws, transactions: int) -> tuple[str, str, list[str], list[str]]:
    """An identified `user` and a 40-id anonymous cluster whose merge into it died after
    `transactions` writes (1: the lock; 2: the lock and 32 ids moved; 3: all ids moved).
    Returns the target and source person ids, the ids moved and the ids not moved."""
    g = graph(aws)
    user = g.apply(identify("user"))["personId"]
    source, ids = anonymous_cluster_by_hand(aws, CLUSTER)
    assert partition(aws)[source] == (False, frozenset(ids))
    die_after(g, transactions)
    with pytest.raises(LambdaDied):
        g.apply(identify("user", ids[0]))
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
    """The client retries the identify whose Lambda died."""
    assert g.apply(identify("user", "anon-00"))["outcome"] == "already_linked"


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


def test_a_replayed_identify_finishes_a_merge_that_died_after_the_lock(aws: Aws) -> None:
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
    anonymous = g.apply(alias("user-1", "anon-1"))["personId"]
    calls.clear()
    # Anonymous links can still change: an identify of them must reach DynamoDB.
    assert g.apply(identify("user-1", "anon-1")) == {"outcome": "identified", "personId": anonymous}
    assert calls
    g.apply(identify("user-2", "anon-2"))
    calls.clear()
    # A refusal is not cached either: it is decided again (reading only).
    refused = g.apply(identify("user-2", "anon-1"))
    assert refused["reason"] == "already_identified"
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


@pytest.fixture
def dynamodb_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """DynamoDB operations made by any boto3 client in this process (the app's included)."""
    made: list[str] = []
    real = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            made.append(operation_name)
        return real(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return made


def test_identify_then_read_the_person(server: LocalApiGateway, aws: Aws, write_key: str) -> None:
    body = {"userId": "user-42@example.com", "anonymousId": "anon-42", "traits": {"plan": "pro"}}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    for distinct_id in ("user-42@example.com", "anon-42"):
        response = get_identity(server, distinct_id)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        person = response.json()
        assert set(person) == {"personId", "identified", "distinctIds"}
        assert isinstance(person["personId"], str) and person["personId"]
        assert person["identified"] is True
        assert person["distinctIds"] == ["anon-42", "user-42@example.com"]
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
        assert outcomes[refused_user]["reason"].startswith("userId illegal_id")
    assert outcomes["m5"] == {"outcome": "attached", "personId": user_1}
    assert outcomes["m6"]["reason"].startswith("sourceId illegal_id")
    assert outcomes["m6"]["personId"] not in (None, user_1)
    assert outcomes["m7"]["reason"] == "already_identified"
    assert outcomes["m7"]["personId"] == user_1
    person = get_identity(server, "anon-5").json()
    assert person["distinctIds"] == ["anon-1", "anon-5", "user-1"]
    assert get_identity(server, "anon-9").status_code == 404
    assert get_identity(server, "null").status_code == 404


def test_fifty_tracks_with_user_ids_make_no_dynamodb_write(
    server: LocalApiGateway, aws: Aws, write_key: str, dynamodb_calls: list[str]
) -> None:
    dynamodb_calls.clear()
    batch = [
        {"type": "track", "event": "Viewed", "userId": f"user-{n}", "anonymousId": f"anon-{n}"}
        for n in range(50)
    ]
    response = post(server, write_key, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert len(aws.stored()) == 50
    assert not WRITES & set(dynamodb_calls)
    # Not even an identity read: only the write key's lookup.
    assert set(dynamodb_calls) <= {"GetItem"}
    dynamodb_calls.clear()
    for kind in ("page", "screen", "group"):
        extra = {"groupId": "g-1"} if kind == "group" else {}
        body = {"userId": "user-1", "anonymousId": "anon-1", **extra}
        assert post(server, write_key, f"/v1/{kind}", body).status_code == 200
    assert dynamodb_calls == []
    assert get_identity(server, "user-1").status_code == 404


def test_a_repeated_identify_costs_no_dynamodb_call_in_a_warm_lambda(
    server: LocalApiGateway, aws: Aws, write_key: str, dynamodb_calls: list[str]
) -> None:
    body = {"userId": "user-1", "anonymousId": "anon-1"}
    assert post(server, write_key, "/v1/identify", body).status_code == 200
    assert WRITES & set(dynamodb_calls)
    dynamodb_calls.clear()
    for _ in range(3):
        assert post(server, write_key, "/v1/identify", body).status_code == 200
        assert post(server, write_key, "/v1/identify", {"userId": "user-1"}).status_code == 200
    assert dynamodb_calls == []
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
    assert outcomes["m0"]["reason"].startswith("userId illegal_id")
    assert outcomes["m1"]["reason"].startswith("sourceId illegal_id")
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
