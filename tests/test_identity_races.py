"""Races on the identity graph: Lambdas (one IdentityGraph each) applying calls on the same ids
at the same time must leave a graph that some serial order of those calls would have produced.

moto is not atomic (a conditional write is get, check, write without a lock), so the `atomic`
fixture (conftest) serialises moto's DynamoDB requests behind one lock, as real DynamoDB is.
A botocore hook then holds each thread's first TransactWriteItems until every thread has reached
its own: all of them read before any of them writes, so only the write conditions can decide.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest

from collector.identity_store import IdentityGraph
from collector.tools.resources import create_table

from .conftest import Aws
from .identity_model import IdentityModel
from .test_identity_properties import (
    GraphState,
    message,
    outcome_key,
    read_graph,
    write_unmarked_person,
)

pytestmark = pytest.mark.engines

Call = tuple[str, str, str | None, bool]  # kind, userId, anonymousId/previousId, forced
WINS = {"created", "attached"}  # an unforced identify never merges (issue 7)
ROUNDS = 30


class Tables:
    """A fresh table per round, so each round's graph holds only that round's ids."""

    def __init__(self, aws: Aws, template: dict[str, Any], name: str) -> None:
        self._aws, self._template, self._name = aws, template, name
        self._count = itertools.count()

    def new(self) -> str:
        table = f"{self._name}-{next(self._count)}"
        create_table(self._aws.dynamodb, table, self._template)
        return table


def setup_calls(dynamodb: Any, table: str, calls: list[Call]) -> None:
    graph = IdentityGraph(dynamodb, table)
    for call in calls:
        graph.resolve(message(*call))


def race(dynamodb: Any, table: str, calls: list[Call]) -> tuple[list[dict[str, Any]], bool]:
    """Run `calls` at once, one thread and one IdentityGraph (a Lambda) each, sharing the client;
    answers their outcomes and whether every thread read before any thread wrote."""
    start = threading.Barrier(len(calls))
    first_writes = threading.Barrier(len(calls))
    waited: set[int] = set()
    interleaved = True

    def before_write(**_: Any) -> None:
        nonlocal interleaved
        me = threading.get_ident()
        if me in waited:
            return  # retries go straight through
        waited.add(me)
        try:
            first_writes.wait(timeout=5)
        except threading.BrokenBarrierError:
            interleaved = False  # some thread wrote nothing, or never got here

    results: list[dict[str, Any] | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def lambda_(position: int) -> None:
        graph = IdentityGraph(dynamodb, table)
        try:
            start.wait(timeout=5)
            results[position] = graph.resolve(message(*calls[position]))
        except BaseException as exc:
            errors.append(exc)

    event, hook_id = "before-call.dynamodb.TransactWriteItems", f"race-{id(start)}"
    dynamodb.meta.events.register(event, before_write, unique_id=hook_id)
    try:
        threads = [threading.Thread(target=lambda_, args=(n,)) for n in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a racing call hung"
    finally:
        dynamodb.meta.events.unregister(event, unique_id=hook_id)
    if errors:
        raise errors[0]
    assert all(result is not None for result in results)
    return [result for result in results if result is not None], interleaved


def serial_orders(
    setup: list[Call], calls: list[Call]
) -> list[tuple[list[str], set[frozenset[str]], set[frozenset[str]]]]:
    """What the reference model says for every serial order of `calls` after `setup`:
    (outcome of each call, partition, identified clusters)."""
    answers = []
    for order in itertools.permutations(range(len(calls))):
        model = IdentityModel()
        for call in setup:
            model.apply(*call)
        outcomes = [""] * len(calls)
        for position in order:
            outcomes[position] = model.apply(*calls[position])
        answers.append((outcomes, model.partition(), model.identified()))
    return answers


def assert_serialisable(
    state: GraphState, results: list[dict[str, Any]], setup: list[Call], calls: list[Call]
) -> None:
    seen = ([outcome_key(result) for result in results], state.partition(), state.identified())
    assert seen in serial_orders(setup, calls), f"no serial order of {calls} gives {seen}"


def test_two_identifies_claim_one_anonymous_id(atomic: Aws, template: dict[str, Any]) -> None:
    """identify(u1, A) and identify(u2, A) at once, A new: exactly one wins A, the other is
    refused `already_identified` (A is in the winner's person by then) and gets a person of its
    own. Each round one of: neither user known (both race to create {u_i, A}); both known (both
    race to attach A); only u1 known (an attach races a create)."""
    tables = Tables(atomic, template, "race-claim")
    wins: set[str] = set()
    for round_ in range(ROUNDS):
        u1, u2, anonymous = (f"{name}-{round_}" for name in ("u1", "u2", "a"))
        setup: list[Call] = []
        if round_ % 3 >= 1:
            setup.append(("identify", u1, None, False))
        if round_ % 3 == 1:
            setup.append(("identify", u2, None, False))
        calls: list[Call] = [("identify", u1, anonymous, False), ("identify", u2, anonymous, False)]
        table = tables.new()
        setup_calls(atomic.dynamodb, table, setup)

        results, interleaved = race(atomic.dynamodb, table, calls)

        assert interleaved, "both calls should have read before either wrote"
        kinds = sorted(outcome_key(result) for result in results)
        assert kinds[0] in WINS and kinds[1] == "refused:already_identified", results
        wins.add(kinds[0])
        state = read_graph(atomic.dynamodb, table)  # checks the graph's invariants
        cluster = {i for i, p in state.person_of.items() if p == state.person_of[anonymous]}
        assert len(cluster) == 2 and len(cluster & {u1, u2}) == 1, f"{anonymous} is with {cluster}"
        winner = (cluster & {u1, u2}).pop()
        [won] = [result for call, result in zip(calls, results, strict=True) if call[1] == winner]
        assert won["personId"] == state.person_of[anonymous]
        loser = ({u1, u2} - cluster).pop()
        assert state.partition() == {frozenset(cluster), frozenset({loser})}
        assert state.identified() == state.partition(), "every person is identified"
        assert_serialisable(state, results, setup, calls)
    assert wins == WINS


def test_two_identifies_of_an_unmarked_persons_id_are_both_refused(
    atomic: Aws, template: dict[str, Any]
) -> None:
    """A sits in a person an older version stored unmarked ({A, A'}): it holds a userId like
    any person, so identify(u1, A) and identify(u2, A) at once are both refused, each user gets
    its own person, and the unmarked person is left exactly as it was (not joined, not marked).
    (The reference model has no unmarked persons, so this checks the graph directly.)"""
    tables = Tables(atomic, template, "race-unmarked")
    for round_ in range(ROUNDS // 3):
        u1, u2, anonymous, earlier = (f"{name}-{round_}" for name in ("u1", "u2", "a", "a-prev"))
        table = tables.new()
        unmarked = write_unmarked_person(atomic.dynamodb, table, [anonymous, earlier])
        calls: list[Call] = [("identify", u1, anonymous, False), ("identify", u2, anonymous, False)]

        results, interleaved = race(atomic.dynamodb, table, calls)

        assert interleaved, "both calls create their user's person: both write"
        assert [outcome_key(result) for result in results] == ["refused:already_identified"] * 2
        assert all(result["personId"] not in (None, unmarked) for result in results)
        state = read_graph(atomic.dynamodb, table)
        assert state.partition() == {
            frozenset({anonymous, earlier}),
            frozenset({u1}),
            frozenset({u2}),
        }
        assert state.identified() == {frozenset({u1}), frozenset({u2})}
        assert state.person_of[anonymous] == state.person_of[earlier] == unmarked


def test_two_aliases_merge_into_one_identified_user(atomic: Aws, template: dict[str, Any]) -> None:
    """Forced alias(A1 -> U) and alias(A2 -> U) at once, two other persons: both merge. (The
    persons alias made are identified, so only forced aliases merge them.)"""
    tables = Tables(atomic, template, "race-into-one")
    for round_ in range(ROUNDS // 3):
        user, a1, a1b, a2, a2b = (f"{n}-{round_}" for n in ("u", "a1", "a1b", "a2", "a2b"))
        setup: list[Call] = [
            ("identify", user, None, False),
            ("alias", a1, a1b, False),
            ("alias", a2, a2b, False),
        ]
        calls: list[Call] = [("alias", user, a1, True), ("alias", user, a2, True)]
        table = tables.new()
        setup_calls(atomic.dynamodb, table, setup)

        results, interleaved = race(atomic.dynamodb, table, calls)

        assert interleaved
        assert [outcome_key(result) for result in results] == ["merged", "merged"], results
        assert results[0]["personId"] == results[1]["personId"]
        state = read_graph(atomic.dynamodb, table)
        assert state.partition() == {frozenset({user, a1, a1b, a2, a2b})}
        assert state.identified() == state.partition()
        assert_serialisable(state, results, setup, calls)


@pytest.mark.parametrize("source_size", [2, 40], ids=["one-transaction", "chunked-merge"])
def test_merge_races_an_attach_to_its_source(
    atomic: Aws, template: dict[str, Any], source_size: int
) -> None:
    """A forced alias(A -> U) merges A's cluster while alias(N -> B) attaches a new id to the
    same cluster: whichever lands first, nothing is lost. A source of 40 ids takes the locked,
    chunked merge (32 ids per transaction), where the loser finishes the merge itself. (The
    cluster aliases built is identified, so only a forced alias merges it.)"""
    tables = Tables(atomic, template, f"race-source-{source_size}")
    for round_ in range(ROUNDS // 3 if source_size == 2 else 4):
        user, new = f"u-{round_}", f"n-{round_}"
        anonymous = [f"a{k}-{round_}" for k in range(source_size)]
        setup: list[Call] = [("identify", user, None, False)]
        setup += [("alias", anonymous[0], other, False) for other in anonymous[1:]]
        calls: list[Call] = [
            ("alias", user, anonymous[0], True),
            ("alias", anonymous[-1], new, False),
        ]
        table = tables.new()
        setup_calls(atomic.dynamodb, table, setup)

        results, interleaved = race(atomic.dynamodb, table, calls)

        assert interleaved
        assert [outcome_key(result) for result in results] == ["merged", "attached"], results
        state = read_graph(atomic.dynamodb, table)
        everyone = frozenset({user, new, *anonymous})
        assert state.partition() == {everyone}
        assert state.identified() == {everyone}
        assert_serialisable(state, results, setup, calls)
