"""Fixtures: moto AWS built from template.yaml, a source and its write key, the local server."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

# Powertools reads these when collector.api is imported, before any fixture runs.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "collector")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EventCollector")

from collector import api
from collector.sources import SourceRegistry
from collector.tools.localapi import LocalApiGateway
from collector.tools.resources import create_bucket, create_table

BUCKET = "test-events"
TABLE = "test-identity"


@dataclass
class Aws:
    s3: Any
    dynamodb: Any
    bucket: str = BUCKET
    table: str = TABLE

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read_lines(self, key: str) -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return [orjson.loads(line) for line in gzip.decompress(body).splitlines()]

    def stored(self, prefix: str = "events/") -> list[dict[str, Any]]:
        return [line for key in self.keys(prefix) for line in self.read_lines(key)]


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
    caches = (api.settings, api.aws_client, api.collector, api.identity_graph)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        create_bucket(s3, BUCKET)
        create_table(dynamodb, TABLE)
        yield Aws(s3, dynamodb)


@pytest.fixture
def write_key(aws: Aws) -> str:
    _, key = SourceRegistry(aws.dynamodb, aws.table).add("test-source")
    return key


@pytest.fixture
def server(aws: Aws) -> Iterator[LocalApiGateway]:
    local = LocalApiGateway(("127.0.0.1", 0), api.lambda_handler)
    thread = threading.Thread(target=local.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield local
    local.shutdown()
    local.server_close()
