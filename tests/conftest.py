"""Fixtures: moto AWS built from template.yaml, a source and its write key, the local server."""

from __future__ import annotations

import base64
import gzip
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import requests
from botocore.config import Config
from moto import mock_aws
from moto.dynamodb.responses import DynamoHandler

# Powertools reads these when collector.api is imported, before any fixture runs.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "collector")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EventCollector")

from collector import api, browser_api
from collector.sources import SourceRegistry
from collector.tools.http_api import HTTP_API
from collector.tools.instances import engines
from collector.tools.localapi import (
    REST,
    Door,
    LambdaContext,
    LocalApiGateway,
    one_instance,
    proxy_event,
)
from collector.tools.resources import (
    create_bucket,
    create_delivery_stream,
    create_table,
    load_template,
)

pytest_plugins = ["tests.devserver", "tests.chromium", "tests.shop"]

BUCKET = "test-events"
TABLE = "test-identity"


@dataclass
class Aws:
    s3: Any
    dynamodb: Any
    bucket: str = BUCKET
    table: str = TABLE
    # Where the local engines keep their data; None for moto.
    data_dir: Path | None = None

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read_lines(self, key: str) -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        # moto's Firehose writes its records uncompressed; the collector's objects are gzip.
        data = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        return [orjson.loads(line) for line in data.splitlines()]

    def stored(self, prefix: str = "events/") -> list[dict[str, Any]]:
        return [line for key in self.keys(prefix) for line in self.read_lines(key)]


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml as CloudFormation reads it (tests read it, never change it)."""
    loaded: dict[str, Any] = load_template()
    return loaded


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "EVENTS_BUCKET": BUCKET,
        "IDENTITY_TABLE": TABLE,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # Lambda's clients skip botocore's parameter validation (collector/config.py); here every
    # request the collector builds is validated, as moto alone would let some malformed through.
    validating = api.AWS_CLIENT_CONFIG.merge(Config(parameter_validation=True))
    monkeypatch.setattr(api, "AWS_CLIENT_CONFIG", validating)
    clear_api_caches()
    yield
    clear_api_caches()


def clear_api_caches() -> None:
    """Forget the warm Lambda's settings, clients and collector: the next request builds them
    anew from the environment, as a cold start does."""
    for cached in (
        api.settings,
        api.aws_client,
        api.collector,
        api.identity_graph,
        api.profile_store,
    ):
        cached.cache_clear()


ENGINES = ("moto", "local")
SINKS = ("s3", "firehose")
DELIVERY_STREAM = "test-events-stream"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `engines` run once per engine: the conformance suite of the embedded local
    engines is the AWS adapters' own tests. Tests marked `sinks` run once per event sink; the
    embedded engines have no Firehose, so the Firehose sink runs on moto's. `engines("local")`
    names the engines a test runs on, when it cannot run on all."""
    if "aws" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker
    engines_marker = marked("engines")
    engines = (engines_marker.args or ENGINES) if engines_marker else ENGINES[:1]
    sinks = SINKS if marked("sinks") else SINKS[:1]
    params = [(e, s) for e in engines for s in sinks if not (e == "local" and s == "firehose")]
    if params != [(ENGINES[0], SINKS[0])]:  # the fixture's default otherwise
        ids = [engine if sink == "s3" else f"{engine}-{sink}" for engine, sink in params]
        metafunc.parametrize("aws", params, indirect=True, ids=ids)


@pytest.fixture
def aws(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aws]:
    """S3 and DynamoDB as template.yaml makes them: moto's, or, parametrized indirectly with
    "local", the embedded engines of `make dev` (the request path then uses them too); with
    the sink "firehose", the collector sends its events through moto's delivery stream."""
    engine, sink = getattr(request, "param", ("moto", "s3"))
    # moto stays on under the local engines too: no stray call can reach a real account.
    with mock_aws():
        data_dir = tmp_path / "engines" if engine == "local" else None
        if data_dir is not None:
            clients = engines(data_dir)
            s3, dynamodb = clients["s3"], clients["dynamodb"]
            s3.create_bucket(Bucket=BUCKET)
            api.use_clients(clients)
        else:
            s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
            create_bucket(s3, BUCKET)
        create_table(dynamodb, TABLE)
        if sink == "firehose":
            use_firehose(BUCKET, monkeypatch)
        try:
            yield Aws(s3, dynamodb, data_dir=data_dir)
        finally:
            api.use_clients({})


def use_firehose(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector on EVENT_SINK=firehose: moto's delivery stream, as template.yaml makes it,
    into `bucket` (moto writes each PutRecordBatch as one uncompressed object)."""
    create_delivery_stream(boto3.client("firehose"), DELIVERY_STREAM, bucket)
    monkeypatch.setenv("EVENT_SINK", "firehose")
    monkeypatch.setenv("DELIVERY_STREAM", DELIVERY_STREAM)


@pytest.fixture
def write_key(aws: Aws) -> str:
    _, key = SourceRegistry(aws.dynamodb, aws.table).add("test-source")
    return key


def serving(handler: Any, door: Door = REST) -> Iterator[LocalApiGateway]:
    """A local API Gateway of `door` on a free port, invoking `handler` in this process."""
    local = LocalApiGateway(("127.0.0.1", 0), one_instance(handler), door=door)
    thread = threading.Thread(target=local.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield local
    local.shutdown()
    local.server_close()


@pytest.fixture
def server(aws: Aws) -> Iterator[LocalApiGateway]:
    """The REST door (the ingest function) on moto."""
    yield from serving(api.lambda_handler)


@pytest.fixture
def browser_server(aws: Aws) -> Iterator[LocalApiGateway]:
    """The browser door (the HTTP API and its function) on moto."""
    yield from serving(browser_api.lambda_handler, HTTP_API)


# --- requests over HTTP ------------------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Clicked",
        "userId": f"u{n}",
        "messageId": f"m-{n}-{uuid.uuid4()}",
        **fields,
    }


@pytest.fixture
def post(server: LocalApiGateway, write_key: str) -> Iterator[Any]:
    def send(
        path: str, data: bytes, headers: dict[str, str] | None = None, *, auth: bool = True
    ) -> requests.Response:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if auth:
            all_headers.update(basic(write_key))
        return requests.post(f"{server.url}{path}", data=data, headers=all_headers, timeout=10)

    yield send


def invoke_batch(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One Lambda invocation of the REST handler with this batch, outside the local server
    (which serves one at a time)."""
    body = orjson.dumps({"batch": messages})
    headers = [("Content-Type", "text/plain"), *basic(messages[0]["writeKey"]).items()]
    event = proxy_event("POST", "/v1/b", "", headers, body, "127.0.0.1")
    assert event is not None
    return api.lambda_handler(event, LambdaContext(str(uuid.uuid4())))


def refused(response: requests.Response, status: int, code: str, text: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert text in body["message"]
    assert "Traceback" not in response.text and "collector." not in response.text
    return body


# --- the identity graph as the stored events tell it -------------------------------------------


def graph_partition(dynamodb: Any, table: str) -> set[frozenset[str]]:
    """The persons in DynamoDB, as sets of distinct ids (from the ID# pointers)."""
    members: dict[str, set[str]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            if item["pk"]["S"].startswith("ID#") and item["sk"]["S"] == "ID":
                members.setdefault(item["personId"]["S"], set()).add(item["pk"]["S"][3:])
    return {frozenset(ids) for ids in members.values()}


LINKED = frozenset({"created", "attached", "merged", "already_linked"})


def replayed_partition(events: list[dict[str, Any]]) -> set[frozenset[str]]:
    """The persons the stored identify/alias events' recorded outcomes describe: a linked
    outcome joins its two ids, a refusal leaves the user id's own person. Links only join, so
    the order of the events does not matter."""
    parent: dict[str, str] = {}

    def root(distinct_id: str) -> str:
        parent.setdefault(distinct_id, distinct_id)
        while parent[distinct_id] != distinct_id:
            parent[distinct_id] = parent[parent[distinct_id]]
            distinct_id = parent[distinct_id]
        return distinct_id

    for event in events:
        outcome = event["collector"].get("identity")
        if outcome is None or outcome["personId"] is None:
            continue
        user = root(event["userId"])
        other = event.get("previousId") if event["type"] == "alias" else event.get("anonymousId")
        if other is not None and outcome["outcome"] in LINKED:
            parent[root(other)] = user
    groups: dict[str, set[str]] = {}
    for distinct_id in parent:
        groups.setdefault(root(distinct_id), set()).add(distinct_id)
    return {frozenset(ids) for ids in groups.values()}


@pytest.fixture
def atomic(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """moto's DynamoDB, one request at a time (DynamoDB's own atomicity per request): moto's
    conditional writes are get, check, write without a lock, so races need this."""
    if aws.data_dir is not None:
        # The local engine's writes are SQLite transactions: atomic without help.
        yield aws
        return
    lock = threading.Lock()
    requests = 0
    call_action = DynamoHandler.call_action

    def locked(self: DynamoHandler) -> Any:
        nonlocal requests
        with lock:
            requests += 1
            return call_action(self)

    monkeypatch.setattr(DynamoHandler, "call_action", locked)
    yield aws
    # If moto stopped dispatching through call_action, the races would run unserialised.
    assert requests > 0, "moto's DynamoDB requests did not go through the lock"
