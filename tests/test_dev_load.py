"""`make dev` under load: 8 real clients (segment-analytics-python and rudder-sdk-python, batches
of 100, a quarter identify calls) against the dev server; each message stored exactly once.

The short run is part of `make test`; the full one (20,000 messages, `make test-long`) prints
messages/s, p50/p99 request latency and the server's peak memory, and holds them to issue #9's
targets: at least 1,000 messages/s, p99 under 1 s, under 1 GiB.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import segment.analytics.request as segment_request
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics import request as rudder_request
from segment.analytics import Client as SegmentClient

from tests.devserver import DevServer, StartDevServer

CLIENTS = 8
MIN_MESSAGES_PER_SECOND = 1_000
MAX_P99_SECONDS = 1.0
MAX_SERVER_BYTES = 1024**3


@dataclass
class LoadRun:
    sent: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[Exception] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.latencies.append(response.elapsed.total_seconds())
            self.statuses[response.status_code] += 1


@contextmanager
def timed_responses(run: LoadRun) -> Iterator[None]:
    """Every response either client library receives, timed (both keep one module session)."""
    sessions = (segment_request._session, rudder_request._session)
    for session in sessions:
        session.hooks["response"].append(run.response)
    try:
        yield
    finally:
        for session in sessions:
            session.hooks["response"].remove(run.response)


def send(server: DevServer, client_number: int, messages: int, run: LoadRun) -> None:
    """One client's traffic: a quarter identify (a new anonymous id meeting one of 50 users),
    the rest tracks; flushed at the end as an app's shutdown does."""
    kind: Callable[..., Any] = SegmentClient if client_number % 2 else RudderClient
    client = kind(
        server.write_key,
        host=server.url,
        gzip=True,
        upload_size=100,
        # Room for everything: a full queue drops messages silently, which is not under test.
        max_queue_size=messages,
        on_error=lambda error, _batch: run.errors.append(error),
    )
    for n in range(messages):
        message_id = f"load-{client_number}-{n}"
        anonymous_id = f"anon-{client_number}-{n // 4}"
        if n % 4 == 0:
            client.identify(
                f"user-{client_number}-{n % 50}",
                {"plan": "pro"},
                anonymous_id=anonymous_id,
                message_id=message_id,
            )
        else:
            client.track(
                anonymous_id=anonymous_id,
                event="Load Tested",
                properties={"n": n},
                message_id=message_id,
            )
        with run.lock:
            run.sent.append(message_id)
    client.flush()
    client.shutdown()


def group_rss_bytes(group: int) -> int:
    """Resident memory of every process in the process group `group` (the server and its
    Lambda instances), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def load(server: DevServer, messages: int) -> tuple[LoadRun, float, int]:
    """Sends `messages` from 8 clients at once; the run, its seconds and the peak memory."""
    run, peak, done = LoadRun(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], group_rss_bytes(server.process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    each = messages // CLIENTS
    threads = [
        threading.Thread(target=send, args=(server, number, each, run)) for number in range(CLIENTS)
    ]
    started = time.perf_counter()
    with timed_responses(run):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return run, seconds, peak[0]


def assert_each_stored_once(server: DevServer, run: LoadRun) -> None:
    assert run.errors == [], run.errors[:3]
    stored = Counter(event["messageId"] for event in server.stored())
    twice = [message_id for message_id, count in stored.items() if count > 1]
    missing = set(run.sent) - set(stored)
    assert not twice, f"{len(twice)} stored more than once, e.g. {twice[:3]}"
    assert not missing, f"{len(missing)} never stored, e.g. {sorted(missing)[:3]}"


def test_eight_clients_at_once_each_message_stored_once(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server(DEV_INSTANCES="4")
    run, _, _ = load(server, 2_000)
    assert_each_stored_once(server, run)
    assert set(run.statuses) == {200}, run.statuses
    assert server.stop() == 0, server.output()


@pytest.mark.slow
def test_dev_server_holds_twenty_thousand_messages(start_dev_server: StartDevServer) -> None:
    server = start_dev_server(DEV_INSTANCES="4")  # make dev's default
    run, seconds, peak = load(server, 20_000)
    rate = len(run.sent) / seconds
    p50 = statistics.median(run.latencies)
    p99 = statistics.quantiles(run.latencies, n=100)[98]
    print(
        f"\nmake dev load: {len(run.sent)} messages from {CLIENTS} clients in {seconds:.1f} s: "
        f"{rate:,.0f} messages/s; {len(run.latencies)} requests, p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms; server peak {peak / 2**20:,.0f} MiB; statuses "
        f"{dict(run.statuses)}"
    )
    assert_each_stored_once(server, run)
    assert rate >= MIN_MESSAGES_PER_SECOND
    assert p99 < MAX_P99_SECONDS
    assert peak < MAX_SERVER_BYTES
    assert server.stop() == 0, server.output()
