"""analytics.js 2.0 in a real browser pointed at `make dev`'s browser door (the HTTP API's
stand-in on BROWSER_PORT): standard and batching modes store every event intact, non-ASCII
and emoji included, through the HTTP API's text-body rule; a gzip body sent there is refused
with 415 `use_rest_endpoint` and nothing is stored. The shop and its browser are tests/shop.py's.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from typing import Any

import requests

from tests.devserver import StartDevServer
from tests.shop import Shop, batching, by_id, wait_for_stored

# What a shop sends: accents, CJK and an emoji (a surrogate pair in UTF-16, four UTF-8 bytes).
PROPERTIES = {"name": "Cr\u00e8me br\u00fbl\u00e9e \U0001f36e", "tag": "\u65e5\u672c\u8a9e"}


def check_intact(visit: Shop, stored: dict[str, dict[str, Any]]) -> None:
    """Each message as analytics.js sent it is the stored event's, field by field."""
    for sent in visit.sent:
        assert sent.response is not None and sent.response.status == 200
        for message in sent.messages:
            event = stored[message["messageId"]]
            for name in ("type", "event", "properties", "anonymousId", "userId", "traits"):
                assert event.get(name) == message.get(name), name
            assert event["context"]["page"] == message["context"]["page"]
            assert event["context"]["ip"] == "127.0.0.1"


def test_standard_mode_through_the_browser_door(shop: Callable[..., Shop]) -> None:
    visit = shop(door="browser")
    visit.open("/caf\u00e9?q=\u00fcber")
    visit.load()
    ids = [
        visit.call("page"),
        visit.call("track", "Product Viewed", PROPERTIES),
        visit.call("identify", "user-\u00e9", {"city": "Z\u00fcrich \U0001f3d4"}),
    ]

    visit.wait_until(lambda: len(visit.answered()) == 3, "three answers")
    assert [sent.path for sent in visit.sent] == ["/v1/p", "/v1/t", "/v1/i"]
    assert all(sent.request.headers["content-type"].startswith("text/plain") for sent in visit.sent)
    assert visit.sent[0].response is not None
    assert visit.sent[0].response.headers["access-control-allow-origin"] == "*"
    stored = by_id(wait_for_stored(visit.collector, 3))
    assert sorted(stored) == sorted(ids)
    check_intact(visit, stored)
    assert stored[ids[1]]["properties"] == PROPERTIES
    assert visit.outside() == []
    # Nothing reached the REST door.
    assert not [url for url in visit.urls if url.startswith(visit.collector.url + "/")]


def test_batching_mode_through_the_browser_door(shop: Callable[..., Shop]) -> None:
    visit = shop(door="browser")
    visit.open()
    visit.load(deliveryStrategy=batching(size=3, timeout=1000))
    ids = visit.calls(
        ("track", ["Product Viewed", PROPERTIES]),
        ("track", ["Product Added", {"emoji": "\U0001f6d2", "qty": 2}]),
        ("page", []),
    )
    visit.wait_until(lambda: len(visit.answered()) == 1, "the batch's answer")

    assert [(sent.path, sent.ids) for sent in visit.sent] == [("/v1/b", ids)]
    stored = by_id(wait_for_stored(visit.collector, 3))
    assert sorted(stored) == sorted(ids)
    check_intact(visit, stored)
    assert visit.outside() == []


def test_gzip_to_the_browser_door_is_refused_and_the_banner_names_it(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server()
    banner = server.banner()
    assert re.search(rf"^browser\s+{re.escape(server.browser_url)}\s", banner, re.MULTILINE)

    body = gzip.compress(json.dumps({"batch": [{"type": "track", "event": "E"}]}).encode())
    response = requests.post(
        f"{server.browser_url}/v1/batch",
        data=body,
        headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
        auth=(server.write_key, ""),
        timeout=10,
    )
    assert response.status_code == 415, response.text
    refusal = response.json()
    assert refusal["code"] == "use_rest_endpoint"
    assert server.url in refusal["message"]  # the REST door's URL, to send it to instead
    assert server.stored() == [] and server.stored("rejected/") == []
    # Gzip to the REST door is stored.
    response = requests.post(
        f"{server.url}/v1/batch",
        data=gzip.compress(
            json.dumps({"batch": [{"type": "track", "event": "E", "userId": "u"}]}).encode()
        ),
        headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
        auth=(server.write_key, ""),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert [event["event"] for event in server.stored()] == ["E"]
