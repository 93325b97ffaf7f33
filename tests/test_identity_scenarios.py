"""The identity seed scenarios end to end: real client packages, unchanged, against the local
server; who is linked to whom is read back from GET /v1/identities, and each identify/alias
event's stored `collector.identity` outcome from S3.

Python clients have no reset(): a `Device` plays the browser or app, keeping its anonymous id
(and, after login, the user id) and sending both with every call as analytics.js does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from collector.sources import SourceRegistry
from collector.tools.localapi import LocalApiGateway

from .conftest import Aws, clear_api_caches

NOW = datetime.now(UTC)


class Device:
    """One browser or phone: an anonymous id, and the user id once someone logged in on it."""

    def __init__(self, client: Any, anonymous_id: str | None = None) -> None:
        self.client = client
        self.anonymous_id = anonymous_id or str(uuid.uuid4())
        self.user_id: str | None = None

    def browse(self, *pages: str, at: datetime = NOW) -> None:
        for name in pages:
            self.client.page(self.user_id, name=name, anonymous_id=self.anonymous_id, timestamp=at)
        self.client.track(self.user_id, "Viewed", {}, anonymous_id=self.anonymous_id, timestamp=at)

    def identify(self, user_id: str, at: datetime = NOW) -> str:
        """Log in (or reload a logged-in page); returns the identify's message id."""
        self.user_id = user_id
        message_id = f"identify-{uuid.uuid4()}"
        self.client.identify(
            user_id, {}, anonymous_id=self.anonymous_id, timestamp=at, message_id=message_id
        )
        self.client.track(user_id, "Logged In", {}, anonymous_id=self.anonymous_id, timestamp=at)
        return message_id

    def alias(self, user_id: str) -> str:
        message_id = f"alias-{uuid.uuid4()}"
        self.client.alias(self.anonymous_id, user_id, message_id=message_id)
        return message_id

    def reset(self) -> None:
        """Log out with analytics.reset(): the user id goes, a new anonymous id comes."""
        self.user_id = None
        self.anonymous_id = str(uuid.uuid4())


Clients = Callable[..., Any]


@pytest.fixture
def clients(server: LocalApiGateway, write_key: str) -> Iterator[Clients]:
    """`clients(kind, key=None)` builds a real client; every one is flushed, then checked."""
    made: list[Any] = []
    errors: list[Exception] = []

    def make(kind: str = "segment", key: str | None = None) -> Any:
        cls = SegmentClient if kind == "segment" else RudderClient
        client = cls(
            key or write_key,
            host=server.url,
            max_retries=0,
            on_error=lambda error, _batch: errors.append(error),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()
    assert errors == []


def flush(*devices: Device) -> None:
    for client in {id(device.client): device.client for device in devices}.values():
        client.flush()


def person(server: LocalApiGateway, distinct_id: str) -> dict[str, Any] | None:
    """The graph's part of the read API's answer (its profile is tests/test_profiles.py's)."""
    answer = requests.get(f"{server.url}/v1/identities/{quote(distinct_id, safe='')}", timeout=5)
    if answer.status_code == 404:
        assert answer.json()["code"] == "unknown_id"
        return None
    assert answer.status_code == 200, answer.text
    graph = ("personId", "identified", "distinctIds")
    return {name: value for name, value in answer.json().items() if name in graph}


def outcome(aws: Aws, message_id: str) -> dict[str, Any]:
    [event] = [event for event in aws.stored() if event["messageId"] == message_id]
    return event["collector"]["identity"]


def cold_start() -> None:
    """The next request is served by a fresh Lambda: no warm identity cache."""
    clear_api_caches()


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def test_anonymous_browsing_then_signup(server: LocalApiGateway, aws: Aws, clients: Clients):
    browser = Device(clients("segment"))
    browser.browse("Home", "Pricing")
    flush(browser)
    assert person(server, browser.anonymous_id) is None  # pages and tracks never link
    anon, user = browser.anonymous_id, new_user()
    signup = browser.identify(user)
    browser.client.track(user, "Account Created", {"authentication": "Facebook"})
    flush(browser)

    found = person(server, user)
    assert found is not None
    assert found["identified"] is True
    assert found["distinctIds"] == sorted([anon, user])
    assert person(server, anon) == found
    assert outcome(aws, signup) == {"outcome": "created", "personId": found["personId"]}


def test_multi_day_single_device(server: LocalApiGateway, aws: Aws, clients: Clients):
    laptop, user = Device(clients("rudder")), new_user()
    day1, day2 = NOW - timedelta(days=1), NOW
    first_anon = laptop.anonymous_id
    laptop.browse("Home", at=day1)
    first = laptop.identify(user, at=day1)
    flush(laptop)
    # Day 2, on a Lambda that never saw day 1: the same browser, still logged in, identifies
    # on every page load (the second time a warm Lambda answers from memory).
    cold_start()
    laptop.browse("Dashboard", at=day2)
    again = laptop.identify(user, at=day2)
    flush(laptop)
    reload = laptop.identify(user, at=day2)
    flush(laptop)
    # Logs out (reset: a new anonymous id), browses, logs back in.
    laptop.reset()
    laptop.browse("Home", at=day2)
    relogin = laptop.identify(user, at=day2)
    flush(laptop)

    found = person(server, user)
    assert found is not None and found["identified"] is True
    assert found["distinctIds"] == sorted([first_anon, laptop.anonymous_id, user])
    person_id = found["personId"]
    assert outcome(aws, first) == {"outcome": "created", "personId": person_id}
    assert outcome(aws, again) == {"outcome": "already_linked", "personId": person_id}
    assert outcome(aws, reload) == {"outcome": "already_linked", "personId": person_id}
    assert outcome(aws, relogin) == {"outcome": "attached", "personId": person_id}


def test_two_devices_login_on_both(server: LocalApiGateway, aws: Aws, clients: Clients):
    # The phone app is another source of the same deployment: one identity space.
    _, mobile_key = SourceRegistry(aws.dynamodb, aws.table).add("ios-app")
    laptop, phone, user = (
        Device(clients("segment")),
        Device(clients("segment", mobile_key)),
        new_user(),
    )
    laptop.browse("Home")
    phone.browse("Feed")
    on_laptop = laptop.identify(user)
    flush(laptop, phone)
    on_phone = phone.identify(user)
    flush(phone)

    found = person(server, user)
    assert found is not None and found["identified"] is True
    assert found["distinctIds"] == sorted([laptop.anonymous_id, phone.anonymous_id, user])
    assert person(server, phone.anonymous_id) == person(server, laptop.anonymous_id) == found
    assert outcome(aws, on_laptop) == {"outcome": "created", "personId": found["personId"]}
    assert outcome(aws, on_phone) == {"outcome": "attached", "personId": found["personId"]}


def test_two_devices_login_on_one(server: LocalApiGateway, aws: Aws, clients: Clients):
    laptop, phone, user = Device(clients("segment")), Device(clients("rudder")), new_user()
    laptop.browse("Home")
    phone.browse("Feed", "Search")
    laptop.identify(user)
    phone.browse("Cart")
    flush(laptop, phone)

    assert person(server, phone.anonymous_id) is None  # only ever tracked: unknown
    found = person(server, user)
    assert found is not None and found["identified"] is True
    assert found["distinctIds"] == sorted([laptop.anonymous_id, user])


def test_shared_computer_with_reset(server: LocalApiGateway, aws: Aws, clients: Clients):
    computer, alice, bob = Device(clients("segment")), new_user(), new_user()
    anon_1 = computer.anonymous_id
    alice_login = computer.identify(alice)
    computer.browse("Inbox")
    computer.reset()
    anon_3 = computer.anonymous_id
    computer.browse("Home")
    bob_login = computer.identify(bob)
    flush(computer)

    first, second = person(server, alice), person(server, bob)
    assert first is not None and second is not None
    assert first["personId"] != second["personId"]
    assert (first["identified"], second["identified"]) == (True, True)
    assert first["distinctIds"] == sorted([anon_1, alice])
    assert second["distinctIds"] == sorted([anon_3, bob])
    assert outcome(aws, alice_login) == {"outcome": "created", "personId": first["personId"]}
    assert outcome(aws, bob_login) == {"outcome": "created", "personId": second["personId"]}


def test_shared_computer_without_reset_refuses(server: LocalApiGateway, aws: Aws, clients: Clients):
    computer, alice, bob = Device(clients("segment")), new_user(), new_user()
    computer.identify(alice)
    flush(computer)
    before = person(server, alice)
    # No reset on logout: bob logs in with the anonymous id of alice's identified person.
    bob_login = computer.identify(bob)
    flush(computer)

    bobs = person(server, bob)
    assert bobs is not None
    assert bobs == {"personId": bobs["personId"], "identified": True, "distinctIds": [bob]}
    assert outcome(aws, bob_login) == {
        "outcome": "refused",
        "personId": bobs["personId"],
        "reason": "already_identified",
    }
    assert person(server, alice) == before
    assert person(server, computer.anonymous_id) == before


def test_alias_at_signup(server: LocalApiGateway, aws: Aws, clients: Clients):
    browser, user = Device(clients("rudder")), new_user()
    browser.browse("Home", "Signup")
    aliased = browser.alias(user)
    flush(browser)
    after_alias = person(server, user)
    # The alias named the user: one identified person already (issue 7).
    assert after_alias == {
        "personId": after_alias["personId"],
        "identified": True,
        "distinctIds": sorted([browser.anonymous_id, user]),
    }
    identified = browser.identify(user)
    flush(browser)

    found = person(server, user)
    assert found == after_alias
    assert person(server, browser.anonymous_id) == found
    assert outcome(aws, aliased) == {"outcome": "created", "personId": found["personId"]}
    # Nothing left to do: Mixpanel's alias-before-identify ends in one person either way.
    assert outcome(aws, identified) == {"outcome": "already_linked", "personId": found["personId"]}


def test_alias_then_another_login_on_the_same_device_refuses(
    server: LocalApiGateway, aws: Aws, clients: Clients
):
    """alias(anon -> alice) at signup; later bob logs in on the same browser without a reset,
    so his identify carries alice's anonymous id: refused, and the two stay apart."""
    browser, alice, bob = Device(clients("segment")), new_user(), new_user()
    anon = browser.anonymous_id
    browser.browse("Home", "Signup")
    aliased = browser.alias(alice)
    flush(browser)
    alices = person(server, alice)
    assert alices is not None
    assert alices == {
        "personId": alices["personId"],
        "identified": True,
        "distinctIds": sorted([anon, alice]),
    }
    cold_start()  # another day, another Lambda: the rule, not a warm cache, decides
    bob_login = browser.identify(bob)
    browser.browse("Inbox")
    flush(browser)

    bobs = person(server, bob)
    assert bobs is not None
    assert bobs == {"personId": bobs["personId"], "identified": True, "distinctIds": [bob]}
    assert bobs["personId"] != alices["personId"]
    assert person(server, alice) == alices
    assert person(server, anon) == alices
    assert outcome(aws, aliased) == {"outcome": "created", "personId": alices["personId"]}
    assert outcome(aws, bob_login) == {
        "outcome": "refused",
        "personId": bobs["personId"],
        "reason": "already_identified",
    }


@pytest.mark.parametrize("bogus", ["null", "undefined"])
def test_placeholder_user_id_is_stored_but_links_nothing(
    server: LocalApiGateway, aws: Aws, clients: Clients, bogus: str
):
    browser = Device(clients("segment"))
    browser.browse("Home")
    bad = browser.identify(bogus)
    flush(browser)

    stored = outcome(aws, bad)
    assert stored["outcome"] == "refused"
    assert stored["personId"] is None
    assert stored["reason"] == "illegal_user_id"
    assert person(server, bogus) is None
    assert person(server, browser.anonymous_id) is None


def test_browsers_identifying_as_zero_never_merge(
    server: LocalApiGateway, aws: Aws, clients: Clients
):
    first, second = Device(clients("rudder")), Device(clients("rudder"))
    logins = [first.identify("0"), second.identify("0")]
    flush(first, second)

    for login in logins:
        assert outcome(aws, login)["outcome"] == "refused"
        assert outcome(aws, login)["reason"] == "illegal_user_id"
    assert person(server, "0") is None
    assert person(server, first.anonymous_id) is None
    assert person(server, second.anonymous_id) is None
