"""Profiles (issue #8, item 4): the traits and first/last seen GET /v1/identities adds to a
person. The merge rules alone, then ProfileStore on moto and on the local engine (arrival
order, retries, merges of persons, the seen resolution, the calls it makes, two Lambdas racing),
a property test against a reference computed as tools/sql/profiles.sql does, and the whole path
with a real client, including a DynamoDB failure that must not cost an event."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment.analytics import Client as SegmentClient

from collector.identity import IdentityCall
from collector.identity_store import IdentityGraph
from collector.profiles import ProfileStore, Seen, Traits, changes, merge_traits, merged
from collector.tools.debugger import merged_traits
from collector.tools.instances import engines
from collector.tools.localapi import LocalApiGateway
from collector.tools.resources import create_table
from collector.validation import naive_utc

from .conftest import Aws

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(moment: datetime) -> str:
    """As the collector writes a time, aware or naive UTC (a message's)."""
    return orjson.dumps(moment, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)[1:-1].decode()


def identify(
    user: str | None, anonymous: str | None = None, minutes: float = 0, **fields: Any
) -> dict[str, Any]:
    """A stored identify as the collector hands it to the profiles (timestamp a naive UTC
    datetime, as validation leaves it)."""
    [moment] = naive_utc([at(minutes)])
    message = {"type": "identify", "timestamp": moment, "messageId": str(uuid.uuid4())}
    message.update({"userId": user, "anonymousId": anonymous, **fields})
    return {name: value for name, value in message.items() if value is not None}


def track(
    user: str | None = None, anonymous: str | None = None, minutes: float = 0
) -> dict[str, Any]:
    return {**identify(user, anonymous, minutes), "type": "track", "event": "Viewed"}


def store(aws: Aws, seen_resolution: float = 0.0, **options: Any) -> ProfileStore:
    """A ProfileStore is a warm Lambda's: a new one knows nothing yet."""
    return ProfileStore(aws.dynamodb, aws.table, seen_resolution=seen_resolution, **options)


# --- the merge rules -----------------------------------------------------------------------------


def test_the_latest_non_null_value_of_each_trait_wins() -> None:
    found = changes(
        [
            identify("u1", minutes=1, traits={"plan": "free", "name": "Ada", "seats": 1}),
            identify("u1", minutes=3, traits={"plan": "pro", "name": None}),
            identify("u1", minutes=2, traits={"plan": "team", "seats": 5}),
        ]
    )
    person = {name: value for name, (_, value) in found.traits["u1"].items()}
    # plan: latest at 3; name: the null at 3 erases nothing; seats: 5 at 2 is later than 1 at 1.
    assert person == {"plan": "pro", "name": "Ada", "seats": 5}


def test_context_traits_count_when_an_identify_has_no_traits() -> None:
    """rudder-sdk-python sends an identify's traits in context.traits."""
    found = changes(
        [
            identify("u1", minutes=1, context={"traits": {"plan": "pro"}}),
            identify("u1", minutes=2, traits={"seats": 2}, context={"traits": {"plan": "no"}}),
        ]
    )
    assert {name: value for name, (_, value) in found.traits["u1"].items()} == {
        "plan": "pro",
        "seats": 2,
    }


def test_traits_go_with_the_events_person_and_refused_ids_are_skipped() -> None:
    found = changes(
        [
            identify("u1", "a1", minutes=1, traits={"plan": "pro"}),
            # A placeholder userId is no one: the event is its anonymous id's.
            identify("null", "a2", minutes=2, traits={"plan": "free"}),
            track("undefined", "a2", minutes=3),
            track(" 0 ", minutes=4),
        ]
    )
    assert set(found.traits) == {"u1", "a2"}
    assert set(found.seen) == {"u1", "a1", "a2"}
    assert found.seen["a2"] == Seen(
        f"{at(2):%Y-%m-%dT%H:%M:%S.%fZ}", f"{at(3):%Y-%m-%dT%H:%M:%S.%fZ}"
    )


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_an_event_time_is_read_as_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """A message's datetimes are naive UTC: read as local time, a profile's first and last seen
    would move by the machine's offset."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        found = changes([track("u1", minutes=5)])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert datetime.fromisoformat(found.seen["u1"].first) == at(5)


def test_every_id_an_event_names_is_seen_tracks_and_aliases_too() -> None:
    found = changes(
        [
            track("u1", "a1", minutes=5),
            {**identify("u2", minutes=1), "type": "alias", "previousId": "a1"},
        ]
    )
    assert {
        distinct_id: (s.first[11:16], s.last[11:16]) for distinct_id, s in found.seen.items()
    } == {
        "u1": ("09:05", "09:05"),
        "a1": ("09:01", "09:05"),
        "u2": ("09:01", "09:01"),
    }


def test_a_tie_in_time_is_broken_by_the_value_whatever_arrives_first() -> None:
    moment = "2026-11-02T09:00:00.000000Z"
    first: Traits = {}
    second: Traits = {}
    merge_traits(first, moment, {"plan": "a"})
    merge_traits(first, moment, {"plan": "b"})
    merge_traits(second, moment, {"plan": "b"})
    merge_traits(second, moment, {"plan": "a"})
    assert first == second
    assert merged([first, second]) == first
    # The same identify applied again changes nothing.
    assert merge_traits(first, moment, {"plan": "b"}) is False


# --- ProfileStore on both engines ----------------------------------------------------------------


@pytest.mark.engines
def test_out_of_order_requests_give_the_same_profile(aws: Aws) -> None:
    messages = [
        identify("u1", "a1", minutes=10, traits={"plan": "pro", "email": "ada@example.com"}),
        track("u1", "a1", minutes=30),
        identify("u1", minutes=20, traits={"plan": "team", "email": None}),
        track(None, "a1", minutes=1),
    ]
    profiles = []
    for order, table in ((messages, "in-order"), (messages[::-1], "reversed")):
        create_table(aws.dynamodb, table)
        writer = ProfileStore(aws.dynamodb, table, seen_resolution=0)
        for message in order:  # one request each: the browser's shape
            assert writer.record([message]) == 0
        profiles.append(ProfileStore(aws.dynamodb, table).read(["u1", "a1"]).as_json())
    assert (
        profiles[0]
        == profiles[1]
        == {
            "traits": {"email": "ada@example.com", "plan": "team"},
            "firstSeen": iso(at(1)),
            "lastSeen": iso(at(30)),
        }
    )


@pytest.mark.engines
def test_a_retried_request_changes_nothing_and_writes_nothing(aws: Aws) -> None:
    batch = [
        identify("u1", "a1", minutes=2, traits={"plan": "pro"}),
        track("u1", "a1", minutes=3),
        track(None, "a9", minutes=1),
    ]
    assert store(aws).record(batch) == 0
    before = store(aws).read(["u1", "a1", "a9"])
    calls = DynamoCalls(aws.dynamodb)
    with calls:
        # A cold Lambda (no memory of what is stored) retrying the request: it reads, and
        # finds every change already there.
        assert store(aws).record(batch) == 0
    assert calls.operations() == {"BatchGetItem": 1}
    assert store(aws).read(["u1", "a1", "a9"]) == before


@pytest.mark.engines
def test_a_merge_of_two_persons_shows_both_persons_traits(aws: Aws) -> None:
    graph, writer = IdentityGraph(aws.dynamodb, aws.table), store(aws)
    graph.apply(IdentityCall("identify", "u1", "a1"))
    graph.apply(IdentityCall("identify", "u2", "a2"))
    writer.record(
        [
            identify("u1", "a1", minutes=5, traits={"plan": "pro", "name": "Ada"}),
            identify("u2", "a2", minutes=9, traits={"seats": 3, "name": "Ada L."}),
            track(None, "a2", minutes=1),
            track("u1", None, minutes=12),
        ]
    )
    assert writer.read(["a1", "u1"]).as_json()["traits"] == {"plan": "pro", "name": "Ada"}
    graph.apply(IdentityCall("alias", "u1", "u2", force=True))  # u2's person merged into u1's
    view = graph.view("a2")
    assert view is not None and view.distinct_ids == ["a1", "a2", "u1", "u2"]
    assert writer.read(view.distinct_ids).as_json() == {
        "traits": {"name": "Ada L.", "plan": "pro", "seats": 3},
        "firstSeen": iso(at(1)),
        "lastSeen": iso(at(12)),
    }


@pytest.mark.engines
def test_last_seen_moves_by_the_resolution_and_first_seen_exactly(aws: Aws) -> None:
    hour = 3600.0
    writer = store(aws, seen_resolution=hour)
    calls = DynamoCalls(aws.dynamodb)
    writer.record([track("u1", minutes=0)])
    with calls:
        writer.record([track("u1", minutes=59)])  # within the hour: known, no call at all
    assert calls.operations() == {}
    other_lambda = store(aws, seen_resolution=hour)
    with calls:
        other_lambda.record([track("u1", minutes=30)])  # reads, finds it covered, writes nothing
    assert calls.operations() == {"BatchGetItem": 1}
    seen = writer.read(["u1"]).as_json()
    assert (seen["firstSeen"], seen["lastSeen"]) == (iso(at(0)), iso(at(0)))
    writer.record([track("u1", minutes=61)])  # an hour or more later: written
    writer.record([track("u1", minutes=-5)])  # earlier than first seen: always written
    seen = other_lambda.read(["u1"]).as_json()
    assert (seen["firstSeen"], seen["lastSeen"]) == (iso(at(-5)), iso(at(61)))


@pytest.mark.engines
def test_a_server_batch_keeps_to_the_api_limits(aws: Aws) -> None:
    """150 messages naming 300 ids, a third of them identify calls with traits: 350 items in
    four reads and four transactions, not a call per message."""
    batch = [
        identify(f"u{n}", f"a{n}", minutes=n, traits={"n": n})
        if n % 3 == 0
        else track(f"u{n}", f"a{n}", minutes=n)
        for n in range(150)
    ]
    calls = DynamoCalls(aws.dynamodb)
    with calls:
        assert store(aws).record(batch) == 0
    assert calls.operations() == {"BatchGetItem": 4, "TransactWriteItems": 4}
    assert max(calls.sizes["TransactWriteItems"]) == 100
    assert max(calls.sizes["BatchGetItem"]) == 100
    profile = store(aws).read(["u42", "a42"]).as_json()
    assert profile == {"traits": {"n": 42}, "firstSeen": iso(at(42)), "lastSeen": iso(at(42))}


@pytest.mark.engines
def test_two_lambdas_racing_on_one_id_keep_both_changes(atomic: Aws) -> None:
    """Both read before either writes (a hook holds each first write until both got there):
    the condition on the version read makes the loser read again and merge, never overwrite."""
    aws = atomic
    seed = store(aws)
    seed.record([identify("u1", "a1", minutes=0, traits={"plan": "free"})])
    sent = [
        [identify("u1", minutes=5, traits={"plan": "pro"}), track("u1", "a1", minutes=50)],
        [identify("u1", minutes=7, traits={"seats": 4}), track(None, "a1", minutes=-10)],
    ]
    barrier = threading.Barrier(len(sent))
    held: set[int] = set()

    def hold_first_write(**_: Any) -> None:
        if threading.get_ident() not in held:
            held.add(threading.get_ident())
            barrier.wait(timeout=5)

    failures: list[int] = []
    hooks = [f"before-call.dynamodb.{operation}" for operation in ("PutItem", "TransactWriteItems")]
    for hook in hooks:
        aws.dynamodb.meta.events.register(hook, hold_first_write, unique_id=f"race-{hook}")
    try:
        threads = [
            threading.Thread(target=lambda m=messages: failures.append(store(aws).record(m)))
            for messages in sent
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for hook in hooks:
            aws.dynamodb.meta.events.unregister(hook, unique_id=f"race-{hook}")
    assert failures == [0, 0]
    assert not barrier.broken, "the two writers did not both read before writing"
    assert store(aws).read(["u1", "a1"]).as_json() == {
        "traits": {"plan": "pro", "seats": 4},
        "firstSeen": iso(at(-10)),
        "lastSeen": iso(at(50)),
    }


@pytest.mark.engines
def test_dynamodb_failing_drops_the_change_and_says_how_many(aws: Aws) -> None:
    fail = Failing(aws.dynamodb, "BatchGetItem")
    with fail:
        assert store(aws).record([track("u1", "a1"), track("u2")]) == 3
    assert store(aws).read(["u1"]).seen is None


# --- a reference computed as tools/sql/profiles.sql does, whatever the arrival ------------------

USERS, ANONYMOUS = ["u1", "u2"], ["a1", "a2", "a3"]
TRAIT_VALUES = [None, "x", "y", 1, {"nested": [1, 2]}]


@st.composite
def sent_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "identify", "track", "alias"]))
    minutes = draw(st.integers(0, 5))  # few distinct times: ties happen
    user = draw(st.sampled_from([*USERS, None]))
    anonymous = draw(st.sampled_from([*ANONYMOUS, None]))
    if user is None and anonymous is None:
        anonymous = "a1"
    if kind == "track":
        return track(user, anonymous, minutes)
    if kind == "alias":
        return {**identify(user or "u1", minutes=minutes), "type": "alias", "previousId": "a3"}
    traits = draw(
        st.dictionaries(st.sampled_from(["plan", "name", "n"]), st.sampled_from(TRAIT_VALUES))
    )
    where = draw(st.sampled_from(["traits", "context"]))
    fields = {"traits": traits} if where == "traits" else {"context": {"traits": traits}}
    return identify(user, anonymous, minutes, **fields)


def reference(messages: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """profiles.sql over these ids: traits by max_by(value, timestamp) over non-null values of
    the identifies whose person this is (ties: the greater JSON text, the collector's rule),
    first and last seen over every event naming one of the ids."""
    best: dict[str, tuple[datetime, bytes, Any]] = {}
    times = []
    for message in messages:
        named = {message.get(field) for field in ("userId", "anonymousId", "previousId")}
        if named & set(ids):
            times.append(message["timestamp"])
        owner = message.get("userId") or message.get("anonymousId")
        if message["type"] != "identify" or owner not in ids:
            continue
        sent = message.get("traits")
        if sent is None:
            sent = message.get("context", {}).get("traits")
        for name, value in (sent or {}).items():
            if value is None:
                continue
            entry = (message["timestamp"], orjson.dumps(value, option=orjson.OPT_SORT_KEYS), value)
            if name not in best or entry[:2] > best[name][:2]:
                best[name] = entry
    return {
        "traits": {name: entry[2] for name, entry in sorted(best.items())},
        "firstSeen": iso(min(times)) if times else None,
        "lastSeen": iso(max(times)) if times else None,
    }


@pytest.fixture(scope="module")
def local_table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded engine's DynamoDB, one table for the whole property run."""
    dynamodb = engines(Path(tmp_path_factory.mktemp("profiles")))["dynamodb"]
    create_table(dynamodb, "profiles")
    yield dynamodb


TABLES = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    messages=st.lists(sent_messages(), min_size=1, max_size=12),
    arrival=st.randoms(use_true_random=False),
    batch_size=st.integers(1, 4),
)
def test_the_profile_is_the_reference_whatever_the_order_of_arrival(
    local_table: Any, messages: list[dict[str, Any]], arrival: Any, batch_size: int
) -> None:
    table = f"profiles-{next(TABLES)}"
    create_table(local_table, table)
    delivered = [*messages, *arrival.sample(messages, len(messages) // 2)]  # some retried
    arrival.shuffle(delivered)
    lambdas = [ProfileStore(local_table, table, seen_resolution=0) for _ in range(2)]
    for start in range(0, len(delivered), batch_size):
        writer = lambdas[arrival.randrange(2)]
        assert writer.record(delivered[start : start + batch_size]) == 0
    for ids in (["u1"], ["a1"], ["u1", "a1", "a3"], [*USERS, *ANONYMOUS]):
        assert lambdas[0].read(ids).as_json() == reference(messages, ids), ids


# --- the whole path, with a real client ---------------------------------------------------------


def get_identity(server: LocalApiGateway, distinct_id: str) -> requests.Response:
    return requests.get(f"{server.url}/v1/identities/{distinct_id}", timeout=10)


@pytest.mark.engines
def test_a_real_client_builds_the_person_the_read_api_shows(
    server: LocalApiGateway, aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILE_SEEN_SECONDS", "0")  # exact, to compare with the events
    errors: list[Exception] = []
    client = SegmentClient(
        write_key, host=server.url, max_retries=0, on_error=lambda e, _: errors.append(e)
    )
    client.page(anonymous_id="anon-1", name="Pricing", timestamp=at(1))
    traits = {"plan": "free", "name": "Ada"}
    client.identify("user-1", traits, anonymous_id="anon-1", timestamp=at(6))
    client.flush()
    client.track("user-1", "Order Completed", anonymous_id="anon-1", timestamp=at(9))
    # Arrives after the identify above but happened before it: only its new trait counts.
    client.identify("user-1", {"plan": "pro", "name": None, "seats": 2}, timestamp=at(5))
    client.flush()
    client.shutdown()
    assert errors == []
    person = get_identity(server, "anon-1").json()
    events = aws.stored()
    assert person["distinctIds"] == ["anon-1", "user-1"]
    assert person["traits"] == {"name": "Ada", "plan": "free", "seats": 2}
    assert person["traits"] == merged_traits(events)  # the debugger's reading of the events
    assert person["firstSeen"] == min(event["timestamp"] for event in events)
    assert person["lastSeen"] == max(event["timestamp"] for event in events)
    assert get_identity(server, "user-1").json() == person
    assert get_identity(server, "anon-unknown").status_code == 404


def test_a_failing_profile_write_answers_200_and_keeps_every_event(
    server: LocalApiGateway,
    aws: Aws,
    write_key: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Best effort: the events are stored before the profile is written, and a 503 would not
    bring the change back (the retry's messages are duplicates, and duplicates do not count)."""
    from collector import api

    body = {"batch": [track("user-1", "anon-1"), identify("user-1", traits={"plan": "pro"})]}
    fail = Failing(api.aws_client("dynamodb"), "BatchGetItem", only="PROFILE#")
    with fail:
        response = requests.post(
            f"{server.url}/v1/batch",
            data=orjson.dumps(body, option=orjson.OPT_UTC_Z),
            headers={"Content-Type": "application/json", **basic(write_key)},
            timeout=10,
        )
    assert response.status_code == 200, response.text
    assert fail.failed > 0
    assert len(aws.stored()) == 2
    [stored_log] = [r for r in caplog.records if r.getMessage() == "request stored"]
    assert stored_log.__dict__["profile_failures"] == 2
    metrics = capsys.readouterr().out
    assert '"ProfileFailures":[2.0]' in metrics
    logged = metrics + "".join(str(r.__dict__) for r in caplog.records)
    assert "user-1" not in logged and "anon-1" not in logged  # ids never in logs


# --- helpers -------------------------------------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    from .conftest import basic as conftest_basic

    return conftest_basic(key)


class DynamoCalls:
    """The DynamoDB operations a client makes inside `with`, and the items each carries."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.made: Counter[str] = Counter()
        self.sizes: dict[str, list[int]] = {}

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        body = orjson.loads(params["body"])
        size = len(body.get("TransactItems") or [])
        for request in (body.get("RequestItems") or {}).values():
            size += len(request["Keys"]) if isinstance(request, dict) else len(request)
        self.made[model.name] += 1
        self.sizes.setdefault(model.name, []).append(size)

    def operations(self) -> dict[str, int]:
        return dict(self.made)

    def __enter__(self) -> DynamoCalls:
        self.made.clear()
        self.sizes.clear()
        self._client.meta.events.register("before-call.dynamodb", self._record, unique_id="calls")
        return self

    def __exit__(self, *_: object) -> None:
        self._client.meta.events.unregister("before-call.dynamodb", unique_id="calls")


class Failing:
    """Inside `with`, `operation` fails as DynamoDB fails when it is throttled (only for
    requests naming a key with the prefix `only`, when given)."""

    def __init__(self, client: Any, operation: str, only: str = "") -> None:
        self._client, self._event, self._only = client, f"before-call.dynamodb.{operation}", only
        self.failed = 0

    def _fail(self, params: dict[str, Any], **_: Any) -> None:
        if self._only.encode() in params["body"]:
            self.failed += 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}
            raise ClientError(error, "BatchGetItem")

    def __enter__(self) -> Failing:
        self._client.meta.events.register(self._event, self._fail, unique_id="failing")
        return self

    def __exit__(self, *_: object) -> None:
        self._client.meta.events.unregister(self._event, unique_id="failing")
