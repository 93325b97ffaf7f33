"""`make dev` for real: the dev server as a subprocess, a real client, moto over HTTP, Ctrl-C."""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from segment.analytics import Client as SegmentClient

from collector.auth import hash_write_key
from collector.sources import SourceRegistry

REPO = Path(__file__).resolve().parents[1]
BANNER_END = "Ctrl-C stops."
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEV_KEY = "test-dev-write-key-" + uuid.uuid4().hex[:8]
# Anything the developer's shell (or the test environment) might set that would steer the server.
CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_SESSION_TOKEN",
    "EVENTS_BUCKET",
    "IDENTITY_TABLE",
    "COLLECTOR_DEV_WRITE_KEY",
    "PORT",
    "AWS_PORT",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Nobody listens and a server could bind it (SO_REUSEADDR, as HTTP servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(1)
        if client.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", port))
            server.listen()
        except OSError:
            return False
    return True


@dataclass
class DevServer:
    process: subprocess.Popen[str]
    port: int
    aws_port: int
    write_key: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    def read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self.changed:
                lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """Whether a stdout line equal to `text` appeared within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while text not in self.stdout:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None
                    and not any(reader.is_alive() for reader in self.readers)
                ):
                    return text in self.stdout
                self.changed.wait(min(remaining, 0.2))
            return True

    def banner(self) -> str:
        with self.changed:
            end = self.stdout.index(BANNER_END)
            start = max(
                i for i, line in enumerate(self.stdout[:end]) if line.startswith("collector")
            )
            return "\n".join(self.stdout[start : end + 1])

    def output(self) -> str:
        with self.changed:
            return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)

    def aws(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            for reader in self.readers:
                reader.join(timeout=STOP_TIMEOUT)
            for stream in (self.process.stdout, self.process.stderr):
                if stream:
                    stream.close()


StartDevServer = Callable[..., DevServer]


@pytest.fixture
def start_dev_server() -> Iterator[StartDevServer]:
    """Starts `python -m collector.tools.devserver`; every process is killed at teardown."""
    started: list[DevServer] = []

    def start(**env_overrides: str) -> DevServer:
        port, aws_port = free_port(), free_port()
        while aws_port == port:
            aws_port = free_port()
        env = {name: value for name, value in os.environ.items() if name not in CLEARED}
        env.update(
            PORT=str(port),
            AWS_PORT=str(aws_port),
            COLLECTOR_DEV_WRITE_KEY=DEV_KEY,
            PYTHONUNBUFFERED="1",
            **env_overrides,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "collector.tools.devserver"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Its own process group: a Ctrl-C at the terminal running pytest does not reach it.
            start_new_session=True,
        )
        server = DevServer(process, port, aws_port, DEV_KEY)
        started.append(server)
        for stream, lines in ((process.stdout, server.stdout), (process.stderr, server.stderr)):
            reader = threading.Thread(target=server.read, args=(stream, lines), daemon=True)
            reader.start()
            server.readers.append(reader)
        if not server.wait_for_line(BANNER_END, START_TIMEOUT):
            pytest.fail(f"no banner within {START_TIMEOUT} s\n{server.output()}")
        return server

    yield start
    for server in started:
        server.close()


def stop(server: DevServer) -> int:
    server.process.send_signal(signal.SIGINT)
    try:
        return server.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_TIMEOUT} s after SIGINT\n{server.output()}")


def stored_events(s3: Any, bucket: str) -> list[dict[str, Any]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    events: list[dict[str, Any]] = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        events.extend(orjson.loads(line) for line in gzip.decompress(body).splitlines())
    return events


def test_dev_server_collects_a_real_client_batch_and_stops_on_ctrl_c(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server()
    banner = server.banner()

    assert re.search(rf"^collector\s+{re.escape(server.url)}\s", banner, re.MULTILINE), banner
    assert re.search(rf"^write key\s+{re.escape(DEV_KEY)}$", banner, re.MULTILINE), banner
    assert re.search(
        rf"\(moto\)\s+{re.escape(server.aws_endpoint)}\s+bucket collector-events-local\s+"
        r"table collector-identity-local$",
        banner,
        re.MULTILINE,
    ), banner
    assert f"--endpoint-url {server.aws_endpoint} " in banner

    errors: list[Exception] = []
    client = SegmentClient(
        DEV_KEY,
        host=server.url,
        gzip=True,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    message_id = f"track-{uuid.uuid4()}"
    client.track("user-1", "Dev Server Tried", {"attempt": 1}, message_id=message_id)
    client.flush()
    client.shutdown()
    assert errors == [], server.output()

    events = stored_events(server.aws("s3"), "collector-events-local")
    [track] = [event for event in events if event.get("messageId") == message_id]
    assert track["type"] == "track"
    assert track["event"] == "Dev Server Tried"
    assert track["properties"] == {"attempt": 1}
    assert track["userId"] == "user-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", track["receivedAt"])
    assert track["context"]["ip"] == "127.0.0.1"
    assert track["context"]["library"]["name"] == "analytics-python"
    assert "writeKey" not in track

    assert stop(server) == 0, server.output()
    for reader in server.readers:
        reader.join(timeout=STOP_TIMEOUT)
    assert "stopped" in server.stdout, server.output()
    assert not any("Traceback" in line for line in server.stderr), server.output()
    assert port_is_free(server.port)
    assert port_is_free(server.aws_port)


def test_dev_server_honours_bucket_and_table_overrides(
    start_dev_server: StartDevServer,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bucket, table = f"my-events-{suffix}", f"my-identity-{suffix}"

    server = start_dev_server(EVENTS_BUCKET=bucket, IDENTITY_TABLE=table)

    banner = server.banner()
    assert re.search(rf"bucket {bucket}\s+table {table}$", banner, re.MULTILINE), banner
    assert "collector-events-local" not in banner
    assert "collector-identity-local" not in banner
    s3, dynamodb = server.aws("s3"), server.aws("dynamodb")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [bucket]
    assert dynamodb.list_tables()["TableNames"] == [table]
    # The dev source's key is registered in the named table, hashed.
    source = SourceRegistry(dynamodb, table).lookup(hash_write_key(DEV_KEY))
    assert source is not None
    assert source.name == "dev"
    assert stop(server) == 0, server.output()
