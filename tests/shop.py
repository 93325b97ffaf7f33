"""A shop page with analytics.js in headless Chromium, pointed at one door of a dev server, and
what it sent (a pytest plugin: the `site` and `shop` fixtures).

The npm package @segment/analytics-next, bundled by esbuild (tests/browser, `make browser-deps`),
runs on a page served from another origin than the collector's, so every call is a cross-origin
request with a CORS preflight, as on a real site. It is loaded with self-hosted settings
(`cdnSettings`), so nothing is fetched from Segment. The browser is tests/chromium.py's.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response

from tests.devserver import DevServer, StartDevServer

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
BUNDLE = BROWSER_DIR / "dist" / "analytics.js"
TITLE = "Test shop"
PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
    "<script src='/analytics.js'></script></head><body><h1>{title}</h1></body></html>"
)
WAIT_SECONDS = 15.0
# A page's analytics.js, loaded the way README.md tells a site to self-host its settings. The
# load options name the host as well: analytics.js sends its own telemetry (/m) to
# options.integrations['Segment.io'].apiHost, and to Segment's host when only cdnSettings has it.
LOAD = """async ({writeKey, apiHost, deliveryStrategy, httpConfig}) => {
  const segment = {apiKey: writeKey, apiHost, protocol: 'http'}
  if (deliveryStrategy) segment.deliveryStrategy = deliveryStrategy
  if (httpConfig) segment.httpConfig = httpConfig
  const [analytics] = await window.AnalyticsBrowser.load(
    {writeKey, cdnSettings: {integrations: {'Segment.io': segment}}},
    {integrations: {'Segment.io': {apiHost, protocol: 'http'}}},
  )
  window.analytics = analytics
}"""
# One call; its message id. In standard mode the promise settles once the request has (or
# has not) been answered, in batching mode once the message is in the buffer.
CALL = "async ([method, args]) => (await window.analytics[method](...args)).event.messageId"
# Several calls in turn within one evaluation: in batching mode they are all buffered within a
# few milliseconds, well before any flush timer of the test could fire in between.
CALLS = """async (calls) => {
  const ids = []
  for (const [method, args] of calls) {
    ids.push((await window.analytics[method](...args)).event.messageId)
  }
  return ids
}"""
# Headless Chromium never hides a page (a second tab in front, a minimised window and a frozen
# lifecycle state all leave it 'visible'), so the tab switch is what the page would see of one.
VISIBILITY = """(state) => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state})
  document.dispatchEvent(new Event('visibilitychange'))
}"""


def batching(**config: Any) -> dict[str, Any]:
    return {"strategy": "batching", "config": config}


# --- the page's server (the browser is tests/chromium.py's) ---------------------------------


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """/analytics.js is the bundle; any other path is a page of the shop that loads it."""

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/analytics.js":
            super().do_GET()
            return
        page = PAGE.format(title=TITLE).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The shop's origin: another port than the collector's, so another origin."""
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: `make browser-deps` builds it (npm ci, esbuild)")
    handler = functools.partial(PageHandler, directory=str(BUNDLE.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- one shop page with analytics.js, and what it sent ---------------------------------------


@dataclass
class Sent:
    """One POST analytics.js made to the collector: its body as sent, and how it ended."""

    request: Request
    path: str
    body: dict[str, Any]
    response: Response | None = None
    failure: str | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = self.body.get("batch", [self.body])
        return batch

    @property
    def ids(self) -> list[str]:
        return [message["messageId"] for message in self.messages]


@dataclass
class Shop:
    context: BrowserContext
    page: Page
    origin: str
    collector: DevServer
    # Which of the collector's doors analytics.js is pointed at: "rest" or "browser".
    door: str = "rest"
    sent: list[Sent] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The door's URL (what precedes /v1 in analytics.js's apiHost)."""
        return self.collector.browser_url if self.door == "browser" else self.collector.url

    def __post_init__(self) -> None:
        # Context-wide, so requests a page makes while it goes away are seen too.
        self.context.on("request", self._request)
        self.context.on("response", self._response)
        self.context.on("requestfailed", self._failed)

    def _find(self, request: Request) -> Sent | None:
        return next((sent for sent in self.sent if sent.request is request), None)

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)
        prefix = self.base + "/v1/"
        if (
            request.method == "POST"
            and request.url.startswith(prefix)
            and "/v1/m" not in request.url
        ):
            path = request.url.removeprefix(self.base)
            body: Any = request.post_data_json  # text/plain JSON, as analytics.js sends it
            self.sent.append(Sent(request, path, body))

    def _response(self, response: Response) -> None:
        sent = self._find(response.request)
        if sent is not None:
            sent.response = response

    def _failed(self, request: Request) -> None:
        sent = self._find(request)
        if sent is not None:
            sent.failure = request.failure or "failed"

    def open(self, path: str = "/shop?campaign=spring") -> None:
        self.page.goto(self.origin + path)

    def load(self, **settings: Any) -> None:
        api_host = self.base.removeprefix("http://") + "/v1"
        self.page.evaluate(
            LOAD,
            {"writeKey": self.collector.write_key, "apiHost": api_host, **settings},
        )

    def calls(self, *calls: tuple[str, list[Any]]) -> list[str]:
        message_ids: list[str] = self.page.evaluate(CALLS, [list(call) for call in calls])
        return message_ids

    def call(self, method: str, *args: Any) -> str:
        message_id: str = self.page.evaluate(CALL, [method, list(args)])
        return message_id

    def anonymous_id(self) -> str:
        anonymous: str = self.page.evaluate("() => window.analytics.user().anonymousId()")
        return anonymous

    def set_visibility(self, state: str) -> None:
        self.page.evaluate(VISIBILITY, state)

    def answered(self) -> list[Sent]:
        return [sent for sent in self.sent if sent.response is not None]

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Until `condition` holds; Playwright delivers its events while the page waits."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"not within {WAIT_SECONDS} s: {what}; sent {self.summary()}")
            self.page.wait_for_timeout(20)

    def summary(self) -> list[tuple[str, int | None, str | None, int]]:
        return [
            (s.path, s.response.status if s.response else None, s.failure, len(s.messages))
            for s in self.sent
        ]

    def outside(self) -> list[str]:
        """Requests to anywhere but the shop and the collector's door."""
        local = (self.origin + "/", self.base + "/")
        return [url for url in self.urls if not url.startswith(local)]


@pytest.fixture
def shop(
    browser: Browser, site: str, start_dev_server: StartDevServer
) -> Iterator[Callable[..., Shop]]:
    """A fresh browser context (cookies, storage: a new visitor) on a fresh dev server."""
    contexts: list[BrowserContext] = []

    def make(origin: str = site, door: str = "rest", **env: str) -> Shop:
        # Two Lambda instances: a page's requests may still overlap, and it starts sooner.
        collector = start_dev_server(DEV_INSTANCES="2", **env)
        context = browser.new_context()
        contexts.append(context)
        return Shop(context, context.new_page(), origin, collector, door)

    yield make
    for context in contexts:
        context.close()


# --- what the collector holds ----------------------------------------------------------------


def wait_for_stored(server: DevServer, count: int) -> list[dict[str, Any]]:
    """The stored events once there are at least `count`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(stored := server.stored()) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(stored)} events stored within {WAIT_SECONDS} s, expected {count}")
        time.sleep(0.05)
    return stored


def by_id(stored: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The stored events by messageId, each of which must be there once."""
    counts = Counter(event["messageId"] for event in stored)
    assert [message_id for message_id, n in counts.items() if n > 1] == []
    return {event["messageId"]: event for event in stored}
