"""analytics.js 2.0 in a real browser against `make dev`: what lands in storage and in the graph.

The npm package @segment/analytics-next, bundled by esbuild (tests/browser, `make browser-deps`),
runs in headless Chromium (the system's /usr/bin/chromium, driven by Playwright) on a page served
from another origin than the collector's, so every call is a cross-origin request with a CORS
preflight, as on a real site. It is pointed at the dev server with self-hosted settings
(`cdnSettings`), so nothing is fetched from Segment. Covered: standard mode (one request per call
to /v1/p, /v1/t, ...), batching mode (/v1/b), the unload flush, retries after a blocked request
and after a lost answer, reset() and a second user, the tab-hide resend, and CORS with
credentials. A missing browser, bundle or Playwright fails these tests: CI must have them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from playwright.sync_api import Request, Route

from tests.devserver import DevServer
from tests.shop import TITLE, Shop, batching, by_id, wait_for_stored

RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def check_stamps(
    event: dict[str, Any], message: dict[str, Any], sent_at: str, since: datetime
) -> None:
    """The four timestamps as the collector stamps them (collector/stamping.py)."""
    for name in ("timestamp", "originalTimestamp", "sentAt", "receivedAt"):
        assert RFC3339_Z.fullmatch(event[name]), (name, event[name])
    original, sent, received = (
        at(event[name]) for name in ("originalTimestamp", "sentAt", "receivedAt")
    )
    assert original == at(message["timestamp"])  # the client's clock when the call happened
    assert sent == at(sent_at)  # the client's clock when the request left
    assert since <= received <= datetime.now(UTC)  # the collector's clock on arrival
    assert original <= sent <= received  # one machine, one clock
    assert at(event["timestamp"]) == received - (sent - original)


def check_browser_context(event: dict[str, Any], shop: Shop, path: str, search: str) -> None:
    page = event["context"]["page"]
    assert page == {
        "path": path,
        "referrer": "",
        "search": search,
        "title": TITLE,
        "url": f"{shop.origin}{path}{search}",
    }
    assert event["context"]["userAgent"] == shop.page.evaluate("() => navigator.userAgent")
    assert event["context"]["ip"] == "127.0.0.1"
    assert event["context"]["library"]["name"] == "analytics.js"
    assert "writeKey" not in event


def person(server: DevServer, distinct_id: str) -> dict[str, Any]:
    """GET /v1/identities/{id}: open on the dev server (IAM-only on AWS)."""
    response = requests.get(f"{server.url}/v1/identities/{distinct_id}", timeout=10)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


# --- the tests -------------------------------------------------------------------------------


def test_standard_mode_sends_one_request_per_call(shop: Callable[..., Shop]) -> None:
    since = datetime.now(UTC)
    visit = shop()
    visit.open()
    visit.load()
    ids = [
        visit.call("page"),
        visit.call("track", "Product Viewed", {"sku": "A1"}),
        visit.call("identify", "user-1", {"plan": "pro"}),
        visit.call("group", "acme", {"name": "Acme"}),
    ]
    anonymous = visit.anonymous_id()

    visit.wait_until(lambda: len(visit.answered()) == 4, "four answers")
    assert [sent.path for sent in visit.sent] == ["/v1/p", "/v1/t", "/v1/i", "/v1/g"]
    for sent in visit.sent:
        assert sent.response is not None and sent.response.status == 200
        assert sent.response.headers["access-control-allow-origin"] == "*"
        assert (
            sent.request.headers["authorization"]
            == "Basic " + base64.b64encode(f"{visit.collector.write_key}:".encode()).decode()
        )
        assert "x-retry-count" not in sent.request.headers
    assert [sent.ids for sent in visit.sent] == [[message_id] for message_id in ids]

    stored = by_id(wait_for_stored(visit.collector, 4))
    assert sorted(stored) == sorted(ids)
    for sent, (kind, user_id) in zip(
        visit.sent,
        [("page", None), ("track", None), ("identify", "user-1"), ("group", "user-1")],
        strict=True,
    ):
        event = stored[sent.ids[0]]
        assert (event["type"], event["userId"], event["anonymousId"]) == (
            kind,
            user_id,
            anonymous,
        )
        check_stamps(event, sent.body, sent.body["sentAt"], since)
        check_browser_context(event, visit, "/shop", "?campaign=spring")
    assert stored[ids[1]]["event"] == "Product Viewed"
    assert stored[ids[1]]["properties"] == {"sku": "A1"}
    assert stored[ids[2]]["traits"] == {"plan": "pro"}
    assert stored[ids[3]]["groupId"] == "acme"

    # The identify made the anonymous visitor and user-1 one person.
    user, visitor = person(visit.collector, "user-1"), person(visit.collector, anonymous)
    assert user["identified"] is True
    assert sorted(user["distinctIds"]) == sorted([anonymous, "user-1"])
    assert visitor["personId"] == user["personId"]
    assert visit.outside() == []


def test_batching_mode_sends_batches_to_b(shop: Callable[..., Shop]) -> None:
    since = datetime.now(UTC)
    visit = shop()
    visit.open("/catalog?page=2")
    # Three messages fill the buffer (sent at once); the fourth goes on the 1 s timer.
    visit.load(deliveryStrategy=batching(size=3, timeout=1000))
    first = visit.calls(
        ("page", []),
        ("track", ["Product Viewed", {"sku": "A1"}]),
        ("track", ["Product Viewed", {"sku": "B2"}]),
    )
    visit.wait_until(lambda: len(visit.answered()) == 1, "the full buffer's batch")
    later = visit.call("track", "Product Added", {"sku": "B2"})
    visit.wait_until(lambda: len(visit.answered()) == 2, "the timer's batch")

    assert [(sent.path, sent.ids) for sent in visit.sent] == [("/v1/b", first), ("/v1/b", [later])]
    for sent in visit.sent:
        assert sent.response is not None and sent.response.status == 200
        # One sentAt for the batch; analytics.js drops each message's own.
        assert "sentAt" in sent.body and all("sentAt" not in m for m in sent.messages)

    stored = by_id(wait_for_stored(visit.collector, 4))
    assert sorted(stored) == sorted([*first, later])
    for sent in visit.sent:
        for message in sent.messages:
            event = stored[message["messageId"]]
            assert event["type"] == message["type"]
            assert event["anonymousId"] == visit.anonymous_id() and event["userId"] is None
            check_stamps(event, message, sent.body["sentAt"], since)
            check_browser_context(event, visit, "/catalog", "?page=2")
    assert visit.outside() == []


@pytest.mark.parametrize("leave", ["navigate", "close"])
def test_buffered_events_are_sent_when_the_page_goes_away(
    shop: Callable[..., Shop], leave: str
) -> None:
    visit = shop()
    visit.open()
    # Neither the size nor the timer would send these during the test.
    visit.load(deliveryStrategy=batching(size=100, timeout=60_000))
    ids = visit.calls(*[("track", ["Product Viewed", {"n": n}]) for n in range(3)])
    assert visit.sent == []  # buffered
    if leave == "navigate":
        visit.page.goto(visit.origin + "/elsewhere")
    else:
        visit.page.close(run_before_unload=True)

    # pagehide sends the buffer with keepalive, which outlives the document that sent it.
    stored = by_id(wait_for_stored(visit.collector, 3))
    assert sorted(stored) == sorted(ids)
    assert {event["event"] for event in stored.values()} == {"Product Viewed"}


def test_a_blocked_request_is_retried_and_stored_once(shop: Callable[..., Shop]) -> None:
    visit = shop()
    seen: list[Request] = []

    def block_the_first(route: Route) -> None:
        seen.append(route.request)
        if len(seen) == 1:
            route.abort("connectionrefused")
        else:
            route.continue_()

    # Note: while a route is set, Playwright answers CORS preflights itself (permissively).
    visit.context.route(f"{visit.collector.url}/v1/t", block_the_first)
    visit.open()
    visit.load()
    message_id = visit.call("track", "Checkout Started", {})

    visit.wait_until(lambda: len(visit.answered()) == 1, "the retry's answer")
    assert [sent.failure is not None for sent in visit.sent] == [True, False]
    assert [sent.ids for sent in visit.sent] == [[message_id], [message_id]]
    retry = visit.sent[1]
    assert retry.response is not None and retry.response.status == 200
    assert retry.request.headers["x-retry-count"] == "1"
    assert len(seen) == 2

    stored = by_id(wait_for_stored(visit.collector, 1))
    assert list(stored) == [message_id]
    assert stored[message_id]["event"] == "Checkout Started"


def test_a_batch_whose_answer_was_lost_is_resent_with_newer_messages_stored_once(
    shop: Callable[..., Shop],
) -> None:
    visit = shop()
    forwarded: list[int] = []

    def lose_the_first_answer(route: Route) -> None:
        if not forwarded:
            # The collector stores the batch; the page never hears back.
            forwarded.append(route.fetch().status)
            route.abort("connectionreset")
        else:
            route.continue_()

    visit.context.route(f"{visit.collector.url}/v1/b", lose_the_first_answer)
    visit.open()
    # Size 1: the first message leaves at once, with no flush timer pending; a pending timer
    # would win over the retry's backoff (scheduleFlush keeps the earlier timer). The 1 s
    # backoff (0.5 s by default) leaves time to add a message before the retry.
    visit.load(
        deliveryStrategy=batching(size=1, timeout=60_000),
        httpConfig={"backoffConfig": {"baseBackoffInterval": 1}},
    )
    first = [visit.call("track", "Product Viewed", {})]
    visit.wait_until(
        lambda: bool(visit.sent) and visit.sent[0].failure is not None, "a lost answer"
    )
    assert forwarded == [200]
    newer = visit.call("track", "Product Added", {})
    visit.wait_until(lambda: len(visit.answered()) == 1, "the retry's answer")

    # analytics.js puts the failed batch back in front of its buffer and resends both.
    assert [sent.ids for sent in visit.sent] == [first, [*first, newer]]
    assert visit.sent[1].request.headers["x-retry-count"] == "1"
    stored = by_id(wait_for_stored(visit.collector, 2))
    assert sorted(stored) == sorted([*first, newer])
    # The first arrival is the one kept.
    assert {at(stored[m]["sentAt"]) for m in first} == {at(visit.sent[0].body["sentAt"])}


def test_reset_then_a_second_user_are_two_persons(shop: Callable[..., Shop]) -> None:
    visit = shop()
    visit.open()
    visit.load()
    first = [visit.call("identify", "user-a", {}), visit.call("track", "Signed In", {})]
    anonymous_a = visit.anonymous_id()
    visit.page.evaluate("() => window.analytics.reset()")
    anonymous_b = visit.anonymous_id()
    second = [visit.call("identify", "user-b", {}), visit.call("track", "Signed In", {})]
    assert anonymous_a != anonymous_b

    stored = by_id(wait_for_stored(visit.collector, 4))
    assert sorted(stored) == sorted(first + second)
    for message_id in first:
        assert (stored[message_id]["userId"], stored[message_id]["anonymousId"]) == (
            "user-a",
            anonymous_a,
        )
    for message_id in second:
        assert (stored[message_id]["userId"], stored[message_id]["anonymousId"]) == (
            "user-b",
            anonymous_b,
        )

    a, b = person(visit.collector, "user-a"), person(visit.collector, "user-b")
    assert sorted(a["distinctIds"]) == sorted(["user-a", anonymous_a])
    assert sorted(b["distinctIds"]) == sorted(["user-b", anonymous_b])
    assert a["personId"] != b["personId"]
    assert person(visit.collector, anonymous_b)["personId"] == b["personId"]


def test_a_tab_hide_flush_resent_with_newer_messages_is_stored_once(
    shop: Callable[..., Shop],
) -> None:
    visit = shop()
    visit.open()
    visit.load(deliveryStrategy=batching(size=3, timeout=60_000))
    first = visit.calls(*[("track", ["Product Viewed", {"n": n}]) for n in range(2)])
    visit.set_visibility("hidden")
    visit.wait_until(lambda: len(visit.answered()) == 1, "the hide flush")
    visit.set_visibility("visible")
    # The hide flush left the buffer as it was: this third message fills it to the size of 3.
    newer = visit.call("track", "Product Added", {})
    visit.wait_until(lambda: len(visit.answered()) == 2, "the next flush")

    assert [sent.ids for sent in visit.sent] == [first, [*first, newer]]
    assert all(sent.response and sent.response.status == 200 for sent in visit.sent)
    stored = by_id(wait_for_stored(visit.collector, 3))
    assert sorted(stored) == sorted([*first, newer])
    assert {at(stored[m]["sentAt"]) for m in first} == {at(visit.sent[0].body["sentAt"])}


def test_credentials_include_works_for_a_listed_origin(
    site: str, shop: Callable[..., Shop]
) -> None:
    visit = shop(ALLOWED_ORIGINS=site)
    # Cookies are per host, not per port: the collector's host gets this one from the page.
    visit.context.add_cookies([{"name": "session", "value": "s-1", "url": visit.collector.url}])
    visit.open()
    visit.load(deliveryStrategy={"config": {"credentials": "include"}})
    message_id = visit.call("track", "Product Viewed", {})

    visit.wait_until(lambda: len(visit.answered()) == 1, "the answer")
    sent = visit.sent[0]
    assert sent.response is not None and sent.response.status == 200
    assert sent.response.headers["access-control-allow-origin"] == site
    assert sent.response.headers["access-control-allow-credentials"] == "true"
    assert "session=s-1" in sent.request.all_headers().get("cookie", "")
    assert list(by_id(wait_for_stored(visit.collector, 1))) == [message_id]


@pytest.mark.parametrize("case", ["unlisted origin", "any origin"])
def test_credentials_include_is_refused_by_the_browser_otherwise(
    site: str, shop: Callable[..., Shop], case: str
) -> None:
    if case == "unlisted origin":
        # localhost is another origin than 127.0.0.1, though the same server.
        visit = shop(site.replace("127.0.0.1", "localhost"), ALLOWED_ORIGINS=site)
    else:
        # "*" cannot go with credentials: the browser refuses the preflight's answer.
        visit = shop()
    visit.open()
    visit.load(deliveryStrategy={"config": {"credentials": "include"}})
    visit.call("track", "Product Viewed", {})

    visit.wait_until(lambda: bool(visit.sent) and visit.sent[0].failure is not None, "a refusal")
    assert visit.answered() == []
    assert visit.collector.stored() == []
