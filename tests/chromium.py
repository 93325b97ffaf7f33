"""Headless Chromium for tests (a pytest plugin): the system's /usr/bin/chromium (Debian's
package, `make browser-deps`), driven by Playwright, never a browser Playwright downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium opens connections of its own, which this machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Any host but this machine fails to resolve: no test can reach Segment's servers by mistake.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per test module; a missing Chromium fails the test (CI must have it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser-deps` installs it (apt chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()
