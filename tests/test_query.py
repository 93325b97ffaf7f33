"""Identity in SQL, locally: the seed journeys sent with the real clients through `make dev`,
then every view read with `collector-query` equals a reference computed from the identity graph
itself (GET /v1/identities), and the three seed questions (docs/queries) give the right numbers.

The journeys include a merge after the events it re-attributes (a second device), a refused
identify on a shared device, a placeholder userId and a forced alias."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import sqlglot
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from collector.tools import warehouse
from collector.tools.debugger import merged_traits
from collector.tools.sources import main as sources_cli
from tests.devserver import DevServer, DevServers

QUESTIONS = Path(__file__).resolve().parents[1] / "docs" / "queries"
FORCED = {"Collector": {"mergeIdentified": True}}
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def web(path: str, campaign: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"page": {"path": path}}
    if campaign:
        context["campaign"] = {"name": campaign}
    return context


# The browser's calls, in order, one minute apart: (method, arguments).
BROWSER_CALLS: list[tuple[str, dict[str, Any]]] = [
    # Three visitors see the pricing page, each from a campaign.
    ("page", {"anonymous_id": "anon-1", "name": "Pricing", "context": web("/pricing", "spring"),
              "message_id": "p-1"}),
    ("page", {"anonymous_id": "anon-2", "name": "Pricing", "context": web("/pricing", "autumn"),
              "message_id": "p-2"}),
    ("page", {"anonymous_id": "anon-3", "name": "Pricing", "context": web("/pricing", "spring"),
              "message_id": "p-3"}),
    # user-1 browses on a second device before signing in there.
    ("page", {"anonymous_id": "anon-1b", "name": "Docs", "context": web("/docs"),
              "message_id": "p-1b"}),
    ("identify", {"user_id": "user-1", "traits": {"plan": "free", "name": "Ada"},
                  "anonymous_id": "anon-1", "message_id": "i-1"}),
    ("track", {"user_id": "user-1", "event": "Signed Up", "anonymous_id": "anon-1",
               "message_id": "t-1-signup"}),
    ("track", {"user_id": "user-1", "event": "Order Completed", "properties": {"revenue": 30},
               "anonymous_id": "anon-1", "message_id": "t-1-order"}),
    ("identify", {"user_id": "user-1", "traits": {"plan": "pro", "name": None},
                  "anonymous_id": "anon-1b", "message_id": "i-1b"}),
    # A shared device: user-3 signs up; then user-4 signs in on it (refused, never fused).
    ("identify", {"user_id": "user-3", "traits": {"plan": "free"}, "anonymous_id": "anon-3",
                  "message_id": "i-3"}),
    ("track", {"user_id": "user-3", "event": "Signed Up", "anonymous_id": "anon-3",
               "message_id": "t-3-signup"}),
    ("identify", {"user_id": "user-4", "anonymous_id": "anon-3", "message_id": "i-4-shared"}),
    ("track", {"user_id": "user-4", "event": "Order Completed", "properties": {"revenue": 50},
               "anonymous_id": "anon-3", "message_id": "t-4-order"}),
    # user-4 on their own device, later: their order above becomes theirs.
    ("identify", {"user_id": "user-4", "traits": {"plan": "team"}, "anonymous_id": "anon-4",
                  "message_id": "i-4"}),
    # An app that sends the string "null" as the userId, for two strangers.
    ("identify", {"user_id": "null", "anonymous_id": "anon-5", "message_id": "i-null"}),
    ("track", {"user_id": "null", "event": "Viewed", "anonymous_id": "anon-5",
               "message_id": "t-5"}),
    ("track", {"user_id": "null", "event": "Viewed", "anonymous_id": "anon-6",
               "message_id": "t-6"}),
]  # fmt: skip
# A backend's calls, after the browser's: two accounts of one customer, merged on purpose.
BACKEND_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("identify", {"user_id": "user-7a", "traits": {"plan": "pro"}, "anonymous_id": "anon-7a",
                  "message_id": "i-7a"}),
    ("identify", {"user_id": "user-7b", "traits": {"seats": 3}, "anonymous_id": "anon-7b",
                  "message_id": "i-7b"}),
    ("alias", {"previous_id": "user-7b", "user_id": "user-7a", "integrations": FORCED,
               "message_id": "a-7"}),
]  # fmt: skip


def send_journeys(server: DevServer) -> None:
    errors: list[Exception] = []
    browser = SegmentClient(
        server.write_key, host=server.url, on_error=lambda e, _: errors.append(e)
    )
    backend = RudderClient(
        add_backend_source(server), host=server.url, on_error=lambda e, _: errors.append(e)
    )
    calls = [(browser, *call) for call in BROWSER_CALLS] + [(backend, *c) for c in BACKEND_CALLS]
    for minute, (client, method, arguments) in enumerate(calls, start=1):
        getattr(client, method)(timestamp=at(minute), **arguments)
    for client in (browser, backend):
        client.flush()
        client.shutdown()
    assert errors == [], server.output()


def add_backend_source(server: DevServer) -> str:
    """A second source that may force merges, added with collector-sources to the running
    dev server's data directory."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = sources_cli(
            ["--data-dir", str(server.data_dir), "--table", "collector-identity-local",
             "add", "backend", "--allow-forced-merge"]
        )  # fmt: skip
    assert code == 0
    [key] = [line.split()[-1] for line in out.getvalue().splitlines() if line.startswith("write")]
    return key


@pytest.fixture(scope="module")
def journeys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One dev server with the journeys stored, shared by this module's read-only tests."""
    servers = DevServers(tmp_path_factory.mktemp("query"))
    # lastSeen exact, so that the read API can be compared with the profiles view.
    server = servers.start(PROFILE_SEEN_SECONDS="0")
    send_journeys(server)
    yield server
    servers.close()


def collector_query(server: DevServer, *args: str, stdin: str | None = None) -> Any:
    """`collector-query ...` as a developer runs it beside `make dev`; with --json, the rows."""
    done = subprocess.run(
        [sys.executable, "-m", "collector.tools.query", *args],
        input=stdin,
        env=server.shell_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout) if "--json" in args else done.stdout


def select(server: DevServer, sql: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = collector_query(server, "--json", sql)
    return found


class Reference:
    """What the identity graph itself says (GET /v1/identities), applied to the stored events
    by the rule person_events states."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.events = server.stored()
        self._persons: dict[str, dict[str, Any] | None] = {}

    def graph(self, distinct_id: str | None) -> dict[str, Any] | None:
        if distinct_id is None:
            return None
        if distinct_id not in self._persons:
            answer = requests.get(f"{self.server.url}/v1/identities/{distinct_id}", timeout=10)
            self._persons[distinct_id] = answer.json() if answer.status_code == 200 else None
        return self._persons[distinct_id]

    def person_of(self, event: dict[str, Any]) -> str | None:
        for distinct_id in (event.get("userId"), event.get("anonymousId")):
            person = self.graph(distinct_id)
            if person is not None:
                return str(person["personId"])
        return event.get("anonymousId")

    def distinct_ids(self) -> set[str]:
        named = {
            str(event[field])
            for event in self.events
            for field in ("userId", "anonymousId", "previousId")
            if event.get(field) is not None
        }
        in_graph = {i for i in named if self.graph(i) is not None}
        anonymous = {e["anonymousId"] for e in self.events if e.get("anonymousId")}
        return in_graph | anonymous

    def seen(self, distinct_id: str) -> tuple[str, str]:
        times = [
            e["timestamp"]
            for e in self.events
            if distinct_id in (e.get("userId"), e.get("anonymousId"), e.get("previousId"))
        ]
        return min(times), max(times)


@pytest.fixture(scope="module")
def reference(journeys: DevServer) -> Reference:
    return Reference(journeys)


def test_person_events_give_each_event_the_graphs_person(
    journeys: DevServer, reference: Reference
) -> None:
    rows = select(journeys, "SELECT messageid, person_id FROM person_events")
    found = {row["messageid"]: row["person_id"] for row in rows}

    assert found == {e["messageId"]: reference.person_of(e) for e in reference.events}
    user_1 = reference.graph("user-1")["personId"]  # type: ignore[index]
    # Browsing on the second device before signing in there is user-1's, after the fact.
    assert found["p-1b"] == found["p-1"] == found["t-1-order"] == user_1
    # The shared device's second user is not fused with the first; their order is theirs.
    assert found["t-4-order"] == reference.graph("user-4")["personId"]  # type: ignore[index]
    assert found["t-4-order"] != found["t-3-signup"]
    # "null" joins nobody: two strangers stay two.
    assert found["t-5"] == "anon-5" and found["t-6"] == "anon-6"
    # The forced merge made one person of both accounts.
    assert found["i-7a"] == found["i-7b"] == found["a-7"]


def test_persons_list_every_distinct_id_with_its_person_and_span(
    journeys: DevServer, reference: Reference
) -> None:
    rows = select(journeys, "SELECT * FROM persons")

    assert {row["distinct_id"] for row in rows} == reference.distinct_ids()
    assert "null" not in {row["distinct_id"] for row in rows}
    for row in rows:
        person = reference.graph(row["distinct_id"])
        assert row["person_id"] == (person["personId"] if person else row["distinct_id"])
        assert row["identified"] is (person is not None)
        assert (row["first_seen"], row["last_seen"]) == reference.seen(row["distinct_id"])


def test_profiles_merge_each_persons_ids_spans_and_traits(
    journeys: DevServer, reference: Reference
) -> None:
    rows = {row["person_id"]: row for row in select(journeys, "SELECT * FROM profiles")}

    expected_ids: dict[str, set[str]] = {}
    for distinct_id in reference.distinct_ids():
        person = reference.graph(distinct_id)
        expected_ids.setdefault(person["personId"] if person else distinct_id, set()).add(
            distinct_id
        )
    assert set(rows) == set(expected_ids)
    for person_id, ids in expected_ids.items():
        row = rows[person_id]
        assert row["distinct_ids"] == sorted(ids)
        spans = [reference.seen(i) for i in ids]
        assert row["first_seen"] == min(s[0] for s in spans)
        assert row["last_seen"] == max(s[1] for s in spans)
        events = [e for e in reference.events if reference.person_of(e) == person_id]
        traits = merged_traits(events)
        assert (orjson.loads(row["traits"]) if row["traits"] else {}) == traits
    user_1 = reference.graph("user-1")["personId"]  # type: ignore[index]
    # The later identify's null name leaves the earlier name; its plan replaces the older.
    assert orjson.loads(rows[user_1]["traits"]) == {"plan": "pro", "name": "Ada"}
    user_7 = reference.graph("user-7a")["personId"]  # type: ignore[index]
    assert orjson.loads(rows[user_7]["traits"]) == {"plan": "pro", "seats": 3}


def test_the_read_api_shows_each_persons_profile_as_the_profiles_view(
    journeys: DevServer, reference: Reference
) -> None:
    """GET /v1/identities answers from DynamoDB what profiles.sql computes from S3: the same
    traits and first/last seen for every person, the forced merge and the late null included."""
    checked = 0
    for row in select(journeys, "SELECT * FROM profiles"):
        person = reference.graph(row["distinct_ids"][0])
        if person is None:
            continue  # an anonymous visitor the graph never saw: SQL-only
        assert person["personId"] == row["person_id"]
        assert person["traits"] == (orjson.loads(row["traits"]) if row["traits"] else {})
        assert (person["firstSeen"], person["lastSeen"]) == (row["first_seen"], row["last_seen"])
        checked += 1
    assert checked >= 4


def test_the_seed_questions_have_the_right_answers(journeys: DevServer) -> None:
    [funnel] = select(journeys, (QUESTIONS / "funnel.sql").read_text())
    # anon-1 (user-1), anon-2 and anon-3 (user-3) saw pricing; user-1 and user-3 signed up.
    assert funnel == {"saw_pricing": 3, "then_signed_up": 2}

    timeline = select(journeys, (QUESTIONS / "timeline.sql").read_text())
    assert [row["messageid"] for row in timeline] == [
        "p-1", "p-1b", "i-1", "t-1-signup", "t-1-order", "i-1b"
    ]  # fmt: skip
    assert {row["anonymousid"] for row in timeline} == {"anon-1", "anon-1b"}

    campaigns = select(journeys, (QUESTIONS / "campaigns.sql").read_text())
    # user-4's order came from the shared device, but it is user-4's: no campaign touched them.
    assert campaigns == [
        {"campaign": "autumn", "persons": 1, "revenue": 0},
        {"campaign": "spring", "persons": 2, "revenue": 30.0},
    ]


def test_the_shortcut_coalesce_user_id_anonymous_id_gets_it_wrong(journeys: DevServer) -> None:
    """Why the views exist: the usual shortcut counts nobody and invents a person "null"."""
    [shortcut] = select(
        journeys,
        "SELECT count(DISTINCT coalesce(userid, anonymousid)) FILTER (WHERE type = 'page') AS "
        "visitors, count(*) FILTER (WHERE coalesce(userid, anonymousid) = 'null') AS nulls "
        "FROM events",
    )
    # The placeholder identify and both strangers' tracks: one "person" named null.
    assert shortcut == {"visitors": 4, "nulls": 3}


def test_every_view_and_question_is_athena_sql(journeys: DevServer) -> None:
    for name in warehouse.VIEWS:
        text = warehouse.view_sql(name)
        assert sqlglot.parse_one(text, read="trino") is not None
        # And what DuckDB runs is a translation of it, not a second copy.
        assert (
            warehouse.view_sql(name, "duckdb")
            == sqlglot.transpile(text, read="trino", write="duckdb")[0]
        )
    for path in QUESTIONS.glob("*.sql"):
        sqlglot.parse_one(path.read_text(), read="trino")
    described = collector_query(journeys, "DESCRIBE person_events")
    for column in ("messageid", "userid", "anonymousid", "timestamp", "person_id"):
        assert column in described


def test_the_prompt_runs_statements_ending_with_a_semicolon(journeys: DevServer) -> None:
    statements = "SELECT count(*) AS n\nFROM events;\nSELECT nope;\nSELECT 1 AS one;\n"
    out = collector_query(journeys, "--interactive", stdin=statements)
    lines = out.splitlines()
    assert any(line.strip() == str(len(journeys.stored())) for line in lines), out
    assert any(line.startswith("error:") for line in lines), out
    assert "(1 row)" in out
