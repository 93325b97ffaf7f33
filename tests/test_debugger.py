"""The live debugger of `make dev`: events sent with a real client show up with their identity
decisions, rejections with their reasons, and a person with its ids, traits and events; then
the same in headless Chromium, with a screenshot kept as a test artifact."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, expect
from segment.analytics import Client as SegmentClient

from tests.devserver import DevServer, DevServers

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SCREENSHOT = ARTIFACTS / "debugger.png"
WAIT_SECONDS = 10.0


def journey(server: DevServer) -> None:
    """A visitor browses, signs up and changes plan, one message is invalid, and a shared
    device is identified as someone else (a refused identify)."""
    errors: list[Exception] = []
    client = SegmentClient(
        server.write_key,
        host=server.url,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.page(anonymous_id="anon-ada", category="Docs", name="Pricing", message_id="m-page")
    client.track(anonymous_id="anon-ada", event="Plan Viewed", message_id="m-viewed")
    client.identify(
        "ada@example.com",
        {"plan": "free", "name": "Ada"},
        anonymous_id="anon-ada",
        message_id="m-identify",
        timestamp=_at(1),
    )
    client.identify(
        "ada@example.com", {"plan": "pro", "name": None}, message_id="m-upgrade", timestamp=_at(2)
    )
    client.identify("bob@example.com", anonymous_id="anon-ada", message_id="m-shared")
    client.flush()
    client.shutdown()
    assert errors == [], server.output()
    # A track with no event name: rejected, and kept with its reason.
    server.send(
        "batch", {"batch": [{"type": "track", "userId": "ada@example.com", "messageId": "m-bad"}]}
    )


def _at(second: int) -> datetime:
    return datetime(2026, 12, 1, 12, 0, second, tzinfo=UTC)


def get(server: DevServer, path: str, **query: str) -> dict[str, Any]:
    answer = requests.get(f"{server.url}/debugger/{path}", params=query, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = answer.json()
    return body


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_SECONDS} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def visited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One dev server with the journey stored; the tests below only read, but the browser
    test, which sends one event more, runs last."""
    servers = DevServers(tmp_path_factory.mktemp("debugger"))
    server = servers.start()
    journey(server)
    yield server
    servers.close()


def test_events_show_newest_first_with_identity_decisions(visited: DevServer) -> None:
    latest = get(visited, "events")

    by_id = {event["messageId"]: event for event in latest["events"]}
    assert set(by_id) == {"m-page", "m-viewed", "m-identify", "m-upgrade", "m-shared"}
    assert latest["cursor"] == 5
    assert [e["position"] for e in latest["events"]] == sorted(
        (e["position"] for e in latest["events"]), reverse=True
    )
    assert by_id["m-page"]["type"] == "page" and by_id["m-page"]["name"] == "Pricing"
    assert by_id["m-viewed"]["name"] == "Plan Viewed"
    assert by_id["m-viewed"]["anonymousId"] == "anon-ada"
    assert by_id["m-viewed"]["source"] == "dev"
    assert by_id["m-viewed"]["receivedAt"].endswith("Z")
    assert by_id["m-viewed"]["identity"] is None
    assert by_id["m-identify"]["identity"]["outcome"] == "created"
    assert by_id["m-shared"]["identity"]["outcome"] == "refused"
    [rejected] = latest["rejected"]
    assert rejected["messageId"] == "m-bad"
    assert rejected["type"] == "track"
    assert any("event" in reason for reason in rejected["reasons"]), rejected


def test_events_filter_by_type_by_id_and_after_a_cursor(visited: DevServer) -> None:
    identifies = get(visited, "events", type="identify")["events"]
    assert {e["messageId"] for e in identifies} == {"m-identify", "m-upgrade", "m-shared"}

    bob = get(visited, "events", id="bob@example.com")["events"]
    assert [e["messageId"] for e in bob] == ["m-shared"]
    assert [e["messageId"] for e in get(visited, "events", id="m-page")["events"]] == ["m-page"]

    assert get(visited, "events", after="5")["events"] == []
    assert [e["messageId"] for e in get(visited, "events", after="4")["events"]] == ["m-shared"]


def test_a_person_shows_all_its_ids_merged_traits_and_events_in_order(
    visited: DevServer,
) -> None:
    person = get(visited, "person", id="anon-ada")

    assert sorted(person["person"]["distinctIds"]) == ["ada@example.com", "anon-ada"]
    # Latest non-null value by event time: the upgrade's null name keeps the earlier one.
    assert person["traits"] == {"plan": "pro", "name": "Ada"}
    # The person as the read API answers it: the stored profile agrees with the events.
    assert person["person"]["traits"] == person["traits"]
    times = [event["timestamp"] for event in person["events"]]
    assert person["person"]["firstSeen"] == min(times)
    assert min(times) <= person["person"]["lastSeen"] <= max(times)
    ids = [event["messageId"] for event in person["events"]]
    assert set(ids) == {"m-page", "m-viewed", "m-identify", "m-upgrade", "m-shared"}
    assert ids.index("m-identify") < ids.index("m-upgrade")

    stranger = get(visited, "person", id="nobody")
    assert stranger["person"] is None
    assert stranger["events"] == []


def test_the_page_is_local_html_and_other_debugger_paths_are_404(visited: DevServer) -> None:
    page = requests.get(f"{visited.url}/debugger", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Collector debugger</title>" in page.text
    assert "/debugger/events" in page.text
    missing = requests.get(f"{visited.url}/debugger/nothing", timeout=10)
    assert missing.status_code == 404
    # POSTs are the API's: the debugger never answers them.
    assert requests.post(f"{visited.url}/debugger", timeout=10).status_code == 403


def test_the_page_shows_live_events_and_a_person_in_chromium(
    visited: DevServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 800})
    page.goto(f"{visited.url}/debugger")
    rows = page.locator("#events tr.event")
    expect(rows).to_have_count(5)
    expect(page.locator("#rejected tr.rejection")).to_have_count(1)
    expect(page.locator("#rejected")).to_contain_text("m-bad")
    expect(rows.first).to_contain_text("refused")

    # Live: an event sent now appears without a reload.
    live = {"anonymousId": "anon-ada", "event": "Checkout Started", "messageId": "m-live"}
    visited.send("track", live).raise_for_status()
    expect(rows).to_have_count(6, timeout=WAIT_SECONDS * 1000)
    expect(rows.first).to_contain_text("Checkout Started")

    page.locator("a.id", has_text="anon-ada").first.click()
    expect(page.locator("#person-ids")).to_contain_text("ada@example.com")
    expect(page.locator("#person-traits")).to_contain_text('"plan": "pro"')
    expect(page.locator("#person-events tr.event")).to_have_count(6)

    page.select_option("select[name=type]", "identify")
    expect(rows).to_have_count(3, timeout=WAIT_SECONDS * 1000)

    page.select_option("select[name=type]", "")
    expect(rows).to_have_count(6, timeout=WAIT_SECONDS * 1000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
