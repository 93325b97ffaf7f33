"""Races on the identity graph: Lambdas (one IdentityGraph each) applying calls on the same ids
at the same time must leave a graph that some serial order of those calls would have produced.

moto is not atomic (a conditional write is get, check, write without a lock), so the fixture
serialises moto's DynamoDB requests behind one lock, as real DynamoDB is atomic per request.
A botocore hook then holds each thread's first TransactWriteItems until every thread has reached
its own: all of them read before any of them writes, so only the write conditions can decide.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moto.dynamodb.responses import DynamoHandler

from collector.identity_store import IdentityGraph
from collector.tools.resources import create_table, load_template

from .conftest import Aws
from .identity_model import IdentityModel
from .test_identity_properties import GraphState, message, outcome_key, read_graph

Call = tuple[str, str, str | None, bool]  # kind, userId, anonymousId/previousId, forced
WINS = {"created", "attached", "merged"}
ROUNDS = 30


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = load_template()
    return loaded


@pytest.fixture
def atomic(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """moto's DynamoDB, one request at a time (DynamoDB's own atomicity per request)."""
    lock = threading.Lock()
    requests = 0
    call_action = DynamoHandler.call_action

    def locked(self: DynamoHandler) -> Any:
        nonlocal requests
        with lock:
            requests += 1
            return call_action(self)

    monkeypatch.setattr(DynamoHandler, "call_action", locked)
    yield aws
    # If moto stopped dispatching through call_action, the races would run unserialised.
    assert requests > 0, "moto's DynamoDB requests did not go through the lock"


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
    """identify(u1, A) and identify(u2, A) at once: exactly one wins A."""
    tables = Tables(atomic, template, "race-claim")
    wins: set[str] = set()
    for round_ in range(ROUNDS):
        u1, u2, anonymous, earlier = (f"{name}-{round_}" for name in ("u1", "u2", "a", "a-prev"))
        setup: list[Call] = []
        if round_ % 3 >= 1:  # A already in an anonymous cluster: the winner attaches or merges
            setup.append(("alias", anonymous, earlier, False))
        if round_ % 3 == 2:  # both users already identified persons: the winner merges
            setup += [("identify", u1, None, False), ("identify", u2, None, False)]
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
        assert len(cluster & {u1, u2}) == 1, f"{anonymous} is with {cluster}"
        assert frozenset(cluster) in state.identified()
        loser = ({u1, u2} - cluster).pop()
        assert frozenset({loser}) in state.identified(), "the loser still gets its own person"
        assert_serialisable(state, results, setup, calls)
    assert wins == WINS


def test_two_aliases_merge_into_one_identified_user(atomic: Aws, template: dict[str, Any]) -> None:
    """alias(A1 -> U) and alias(A2 -> U) at once, two anonymous clusters: both merge."""
    tables = Tables(atomic, template, "race-into-one")
    for round_ in range(ROUNDS // 3):
        user, a1, a1b, a2, a2b = (f"{n}-{round_}" for n in ("u", "a1", "a1b", "a2", "a2b"))
        setup: list[Call] = [
            ("identify", user, None, False),
            ("alias", a1, a1b, False),
            ("alias", a2, a2b, False),
        ]
        calls: list[Call] = [("alias", user, a1, False), ("alias", user, a2, False)]
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
    """identify(U, A) merges A's anonymous cluster while alias(N -> B) attaches a new id to the
    same cluster: whichever lands first, nothing is lost. A source of 40 ids takes the locked,
    chunked merge (32 ids per transaction), where the loser finishes the merge itself."""
    tables = Tables(atomic, template, f"race-source-{source_size}")
    for round_ in range(ROUNDS // 3 if source_size == 2 else 4):
        user, new = f"u-{round_}", f"n-{round_}"
        anonymous = [f"a{k}-{round_}" for k in range(source_size)]
        setup: list[Call] = [("identify", user, None, False)]
        setup += [("alias", anonymous[0], other, False) for other in anonymous[1:]]
        calls: list[Call] = [
            ("identify", user, anonymous[0], False),
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
