"""`make dev` as a subprocess for tests: start it, read what it stored, stop it (pytest plugin)."""

from __future__ import annotations

import gzip
import os
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

import orjson
import pytest
import requests

from collector.tools.instances import bucket_dir

REPO = Path(__file__).resolve().parents[1]
BANNER_END = "Ctrl-C stops."
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEV_BUCKET = "collector-events-local"
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
    "COLLECTOR_DATA_DIR",
    "PORT",
    "BROWSER_PORT",
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
    browser_port: int
    data_dir: Path
    write_key: str
    bucket: str = DEV_BUCKET
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def browser_url(self) -> str:
        """The browser door (the HTTP API's stand-in)."""
        return f"http://127.0.0.1:{self.browser_port}"

    @property
    def bucket_dir(self) -> Path:
        return bucket_dir(self.data_dir, self.bucket)

    def send(self, call: str, message: dict[str, Any]) -> requests.Response:
        """One message POSTed to /v1/<call> with the dev write key, as curl would."""
        return requests.post(
            f"{self.url}/v1/{call}", json=message, auth=(self.write_key, ""), timeout=10
        )

    def shell_env(self) -> dict[str, str]:
        """The environment of a developer's shell beside this server (for its tools)."""
        env = {name: value for name, value in os.environ.items() if name not in CLEARED}
        return {**env, "COLLECTOR_DATA_DIR": str(self.data_dir)}

    def stored(self, prefix: str = "events/") -> list[dict[str, Any]]:
        """Every line of every object under `prefix`, read from the data directory."""
        lines: list[dict[str, Any]] = []
        for path in sorted((self.bucket_dir / prefix).rglob("*.json.gz")):
            lines.extend(
                orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()
            )
        return lines

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
            end = len(self.stdout) - 1 - self.stdout[::-1].index(BANNER_END)
            start = max(
                i for i, line in enumerate(self.stdout[:end]) if line.startswith("collector")
            )
            return "\n".join(self.stdout[start : end + 1])

    def output(self) -> str:
        with self.changed:
            return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)

    def stop(self) -> int:
        """Ctrl-C, as at a terminal; the exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT} s after SIGINT\n{self.output()}")
        for reader in self.readers:
            reader.join(timeout=STOP_TIMEOUT)
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            for reader in self.readers:
                reader.join(timeout=STOP_TIMEOUT)
            for stream in (self.process.stdout, self.process.stderr):
                if stream:
                    stream.close()


StartDevServer = Callable[..., DevServer]


class DevServers:
    """Starts `python -m collector.tools.devserver` on free ports with data under `base` (or a
    given `data_dir`); `close` kills every process each one started."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[DevServer] = []

    def start(self, *args: str, data_dir: Path | None = None, **env_overrides: str) -> DevServer:
        port, browser_port = free_port(), free_port()
        directory = data_dir or self.base / "collector-data"
        env = {name: value for name, value in os.environ.items() if name not in CLEARED}
        env.update(
            PORT=str(port),
            BROWSER_PORT=str(browser_port),
            COLLECTOR_DATA_DIR=str(directory),
            COLLECTOR_DEV_WRITE_KEY=DEV_KEY,
            # Two Lambda instances start in half the time of the default four; tests that
            # measure concurrency ask for more.
            DEV_INSTANCES="2",
            PYTHONUNBUFFERED="1",
        )
        env.update(env_overrides)
        process = subprocess.Popen(
            [sys.executable, "-m", "collector.tools.devserver", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Its own process group: a Ctrl-C at the terminal running pytest does not reach it,
            # and teardown can kill the server with its Lambda instances.
            start_new_session=True,
        )
        server = DevServer(
            process,
            int(env["PORT"]),
            int(env["BROWSER_PORT"]),
            directory,
            DEV_KEY,
            bucket=env_overrides.get("EVENTS_BUCKET", DEV_BUCKET),
        )
        self.started.append(server)
        for stream, lines in ((process.stdout, server.stdout), (process.stderr, server.stderr)):
            reader = threading.Thread(target=server.read, args=(stream, lines), daemon=True)
            reader.start()
            server.readers.append(reader)
        if not server.wait_for_line(BANNER_END, START_TIMEOUT):
            pytest.fail(f"no banner within {START_TIMEOUT} s\n{server.output()}")
        return server

    def close(self) -> None:
        for server in self.started:
            server.close()


@pytest.fixture
def start_dev_server(tmp_path: Path) -> Iterator[StartDevServer]:
    """Starts dev servers with their data under `tmp_path`; all are killed at teardown."""
    servers = DevServers(tmp_path)
    yield servers.start
    servers.close()
