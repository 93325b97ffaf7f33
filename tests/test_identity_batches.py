"""A request's identity calls decided together (`IdentityGraph.apply_batch`): the same outcomes
and graph as calling the rules one by one, race-safe between batches, in few DynamoDB calls."""

from __future__ import annotations

import math
import threading
from collections import Counter
from contextlib import suppress
from typing import Any

import boto3
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from moto import mock_aws

from collector.identity import IdentityCall
from collector.identity_store import IdentityGraph
from collector.ingest import IDENTITY_TYPES

from .conftest import Aws
from .identity_model import IdentityModel
from .test_identity_properties import (
    MAX_IDS,
    PROPERTY,
    FreshTables,
    calls,
    message,
    outcome_key,
    read_graph,
)

pytestmark = pytest.mark.engines

Step = tuple[str, str, str | None, bool]


def test_batches_match_calling_the_rules_one_by_one() -> None:
    seen: Counter[str] = Counter()
    with mock_aws():
        tables = FreshTables(boto3.client("dynamodb", region_name="us-east-1"))

        @PROPERTY
        @given(batches=st.lists(st.lists(calls(), min_size=1, max_size=10), min_size=1, max_size=4))
        def check(batches: list[list[Step]]) -> None:
            with tables.table() as table:
                run_batches(tables.dynamodb, table, batches, seen)

        check()
    for kind in ("created", "attached", "already_linked", "refused:already_identified"):
        assert seen[kind] > 0, f"no {kind} outcome in the whole run: {seen}"


def run_batches(dynamodb: Any, table: str, batches: list[list[Step]], seen: Counter[str]) -> None:
    graph = IdentityGraph(dynamodb, table, max_ids=MAX_IDS)
    model = IdentityModel(max_ids=MAX_IDS)
    for number, steps in enumerate(batches):
        identity = [step for step in steps if step[0] in IDENTITY_TYPES]
        messages = [message(*step) for step in identity]
        records = graph.resolve_batch(messages, True, [None] * len(messages))
        expected = [model.apply(*step) for step in identity]
        note(f"batch {number}: {identity} -> {records}")
        seen.update(expected)
        assert [outcome_key(record) for record in records] == expected, f"batch {number}"
        state = read_graph(dynamodb, table)
        assert state.partition() == model.partition(), f"batch {number}: partition differs"
        assert state.identified() == model.identified(), f"batch {number}: identified differs"


@pytest.mark.parametrize("boundary", [1, 2, 3])
def test_two_batches_claiming_the_same_anonymous_ids_have_one_winner_each(
    atomic: Aws, boundary: int
) -> None:
    """Both batches stop before their `boundary`-th transaction until the other has reached its
    own (both read before either writes, at the first): the conditions decide, and every
    contested anonymous id ends with exactly one of the two users."""
    anonymous = [f"anon-{n}" for n in range(40)]
    batches = [
        [IdentityCall("identify", f"{side}-{n}", anon) for n, anon in enumerate(anonymous)]
        for side in ("left", "right")
    ]
    barrier = threading.Barrier(2, timeout=2)
    transactions = threading.local()

    def hold_at_the_boundary(**_: Any) -> None:
        transactions.count = getattr(transactions, "count", 0) + 1
        if transactions.count == boundary:
            with suppress(threading.BrokenBarrierError):  # the other batch had no such boundary
                barrier.wait()

    atomic.dynamodb.meta.events.register(
        "before-call.dynamodb.TransactWriteItems", hold_at_the_boundary
    )
    results: list[list[dict[str, Any]]] = [[], []]

    def send(side: int) -> None:
        graph = IdentityGraph(atomic.dynamodb, atomic.table)
        results[side] = graph.apply_batch(batches[side], [None] * len(anonymous))

    threads = [threading.Thread(target=send, args=(side,)) for side in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for n in range(len(anonymous)):
        pair = sorted(results[side][n]["outcome"] for side in (0, 1))
        assert pair == ["created", "refused"], (n, pair)
    state = read_graph(atomic.dynamodb, atomic.table)
    for anon in anonymous:
        members = {i for i in state.members[state.person_of[anon]] if not i.startswith("anon")}
        assert len(members) == 1, (anon, members)


@pytest.fixture
def counted(aws: Aws) -> tuple[IdentityGraph, Counter[str]]:
    calls: Counter[str] = Counter()
    aws.dynamodb.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.update([model.name])
    )
    return IdentityGraph(aws.dynamodb, aws.table), calls


# 2,500 on moto would take minutes (its transactions copy the table); the latency benchmark
# (tests/test_identity_latency.py) counts that shape on a stand-in table.
@pytest.mark.parametrize("identifies", [0, 5, 30, 100])
def test_call_counts_stay_within_dynamodb_limits(
    counted: tuple[IdentityGraph, Counter[str]], identifies: int
) -> None:
    """New users, each identify linking an anonymous id: at most two reads per 100 ids touched
    and one transaction per 100 items written (six per new person: two pointers, two
    memberships, the header and nothing else here, as no ledger is given)."""
    graph, calls = counted
    batch = [IdentityCall("identify", f"user-{n}", f"anon-{n}") for n in range(identifies)]
    outcomes = graph.apply_batch(batch, [None] * identifies)
    assert [outcome["outcome"] for outcome in outcomes] == ["created"] * identifies
    ids = 2 * identifies
    assert calls["BatchGetItem"] <= 2 * math.ceil(ids / 100)
    assert calls["TransactWriteItems"] == math.ceil(identifies / 20)  # 5 items a person, 100 a call
    assert set(calls) <= {"BatchGetItem", "TransactWriteItems"}
