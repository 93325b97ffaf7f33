"""Nothing lost, nothing twice, nobody fused, under failing AWS calls: the real Python client
sends tracks, identifies, aliases and forced merges while 30% of the collector's S3 and DynamoDB
calls fail. The stored events, every stored outcome and the graph equal a run without faults."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from segment.analytics import Client

from collector import api
from collector.sources import SourceRegistry
from collector.tools.localapi import LocalApiGateway
from collector.tools.resources import create_bucket, create_table

from .conftest import Aws, clear_api_caches, graph_partition, replayed_partition
from .faults import TRANSACTION_KINDS, Faults

pytestmark = pytest.mark.engines

FORCED = {"Collector": {"mergeIdentified": True}}
Call = tuple[str, dict[str, Any]]


def workload(users: int) -> list[list[Call]]:
    """Phases whose calls are independent of their order within the phase: the client may
    re-queue a batch behind newer messages, so only the order between phases is kept."""
    ids = range(users)
    return [
        [("identify", {"user_id": f"u{i}", "anonymous_id": f"a{i}", "traits": {"n": i}})
         for i in ids]
        + [("track", {"anonymous_id": f"a{i}", "event": f"Viewed {k}"})
           for i in ids for k in range(3)],
        [("identify", {"user_id": f"u{i}", "traits": {"plan": "pro"}}) for i in ids]
        + [("alias", {"previous_id": f"b{i}", "user_id": f"u{i}"}) for i in ids]
        + [("track", {"user_id": f"u{i}", "event": "Paid"}) for i in ids],
        # Someone else signs in on each browser: refused, never fused.
        [("identify", {"user_id": f"v{i}", "anonymous_id": f"a{i}"}) for i in ids],
        # A trusted backend merges pairs of accounts on purpose.
        [("alias", {"previous_id": f"u{i + 1}", "user_id": f"u{i}", "integrations": FORCED})
         for i in range(0, users - 1, 2)],
    ]  # fmt: skip


class Run:
    """One delivery of the workload into its own bucket and table, through the local server."""

    def __init__(self, aws: Aws, server: LocalApiGateway, name: str, monkeypatch: Any) -> None:
        self.aws, self.server = aws, server
        self.bucket, self.table = f"{name}-events", f"{name}-identity"
        if aws.data_dir is None:
            create_bucket(aws.s3, self.bucket)
        else:
            aws.s3.create_bucket(Bucket=self.bucket)
        create_table(aws.dynamodb, self.table)
        monkeypatch.setenv("EVENTS_BUCKET", self.bucket)
        monkeypatch.setenv("IDENTITY_TABLE", self.table)
        clear_api_caches()
        registry = SourceRegistry(aws.dynamodb, self.table)
        self.browser_key = registry.add("web")[1]
        self.backend_key = registry.add("backend", may_force_merge=True)[1]
        self.answers: list[tuple[int, str | None]] = []
        invoke = server.invoke

        def answering(event: dict[str, Any]) -> dict[str, Any]:
            response = invoke(event)
            retry_after = (response.get("multiValueHeaders") or {}).get("Retry-After")
            self.answers.append((response["statusCode"], retry_after and retry_after[0]))
            return response

        server.invoke = answering
        self._restore: Callable[[], None] = lambda: setattr(server, "invoke", invoke)

    def deliver(self, phases: list[list[Call]]) -> None:
        errors: list[Any] = []
        clients = {
            key: Client(
                key,
                host=self.server.url,
                upload_size=50,
                max_retries=20,
                on_error=lambda error, _: errors.append(error),
            )
            for key in (self.browser_key, self.backend_key)
        }
        try:
            for number, phase in enumerate(phases):
                for position, (method, arguments) in enumerate(phase):
                    forced = arguments.get("integrations") is FORCED
                    client = clients[self.backend_key if forced else self.browser_key]
                    message_id = f"phase{number}-{position}"
                    getattr(client, method)(message_id=message_id, **arguments)
                for client in clients.values():
                    client.flush()
        finally:
            for client in clients.values():
                client.shutdown()
            self._restore()
        assert errors == []

    def stored(self) -> list[dict[str, Any]]:
        aws = Aws(self.aws.s3, self.aws.dynamodb, self.bucket, self.table)
        return aws.stored()

    def graph(self) -> set[frozenset[str]]:
        return graph_partition(self.aws.dynamodb, self.table)


def outcomes(events: list[dict[str, Any]]) -> dict[str, tuple[str, str | None, str | None]]:
    """Each identify/alias outcome, its person named by the messageId that created it (person
    ids are random, so two runs can only be compared through names of their own)."""
    decided = {
        event["messageId"]: event["collector"]["identity"]
        for event in events
        if "identity" in event["collector"]
    }
    creator = {
        outcome["personId"]: message_id
        for message_id, outcome in sorted(decided.items())
        if outcome["outcome"] == "created"
    }
    return {
        message_id: (outcome["outcome"], outcome.get("reason"), creator.get(outcome["personId"]))
        for message_id, outcome in decided.items()
    }


def test_faults_change_nothing_that_is_stored(
    aws: Aws, server: LocalApiGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """136 messages on the embedded engines, 68 on moto (a minute for 136), one fault sequence;
    the long variants send thousands."""
    users = 8 if aws.data_dir is None else 16
    check_faults_change_nothing(aws, server, monkeypatch, users=users, seed=7)


@pytest.mark.slow
@pytest.mark.engines("local")
@pytest.mark.parametrize("seed", range(2))
def test_faults_change_nothing_that_is_stored_long(
    aws: Aws, server: LocalApiGateway, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """3,400 messages, two fault sequences, on the embedded engines only: moto's
    TransactWriteItems deep-copies the table it writes, so its time grows with the square of
    the messages (510 had not finished after 43 minutes)."""
    check_faults_change_nothing(aws, server, monkeypatch, users=400, seed=seed)


def check_faults_change_nothing(
    aws: Aws, server: LocalApiGateway, monkeypatch: pytest.MonkeyPatch, users: int, seed: int
) -> None:
    monkeypatch.setenv("RETRY_AFTER_SECONDS", "1")
    monkeypatch.setenv("CLAIM_LEASE_SECONDS", "4")
    phases = workload(users)
    sent = sum(len(phase) for phase in phases)
    print(f"\n{sent} messages")

    clean = Run(aws, server, "clean", monkeypatch)
    clean.deliver(phases)

    faulty = Run(aws, server, "faulty", monkeypatch)
    faults = Faults(rate=0.3, seed=seed)
    for service in ("s3", "dynamodb"):
        faults.install(api.aws_client(service))
    faulty.deliver(phases)
    faults.enabled = False
    print(f"FAULTS {dict(faults.injected)} answers {Counter(faulty.answers)}")

    assert set(faults.injected) == set(TRANSACTION_KINDS)  # every kind, once at least
    assert all(status != 500 for status, _ in faulty.answers)
    assert all(retry_after for status, retry_after in faulty.answers if status == 503)
    assert any(status == 503 for status, _ in faulty.answers)  # the faults did reach clients
    clean_events, faulty_events = clean.stored(), faulty.stored()
    for events in (clean_events, faulty_events):
        counts = Counter(event["messageId"] for event in events)
        assert len(counts) == sent and set(counts.values()) == {1}
    assert outcomes(faulty_events) == outcomes(clean_events)
    assert faulty.graph() == clean.graph() == replayed_partition(faulty_events)
    # The rules held: nobody who signed in on another's browser was fused with them.
    for person in clean.graph():
        assert not ({i[0] for i in person} >= {"u", "v"})
