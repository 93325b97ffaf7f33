"""`make dev` for real: the dev server as a subprocess, a real client, its data directory, a
restart that keeps the data, `--fresh`, and Ctrl-C or SIGTERM stopping everything."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests
from segment.analytics import Client as SegmentClient

from collector.auth import hash_write_key
from collector.sources import SourceRegistry
from collector.tools.instances import engines
from tests.devserver import DEV_KEY, DevServer, StartDevServer, port_is_free

STOP_WITHIN_SECONDS = 2.0


def send_track(server: DevServer, event: str) -> str:
    """One track through segment-analytics-python; its messageId."""
    errors: list[Exception] = []
    client = SegmentClient(
        server.write_key,
        host=server.url,
        gzip=True,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    message_id = f"track-{uuid.uuid4()}"
    client.track("user-1", event, {"attempt": 1}, message_id=message_id)
    client.flush()
    client.shutdown()
    assert errors == [], server.output()
    return message_id


def group_running(server: DevServer) -> list[int]:
    """The processes of the server's group (it and its Lambda instances) that still run; a
    zombie has stopped and only waits for init to collect its exit status."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == server.process.pid and state != "Z":
            running.append(int(stat.parent.name))
    return running


def test_dev_server_collects_a_real_client_batch_into_its_data_directory(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server()
    banner = server.banner()

    assert re.search(rf"^collector\s+{re.escape(server.url)}\s", banner, re.MULTILINE), banner
    assert re.search(rf"^write key\s+{re.escape(DEV_KEY)}$", banner, re.MULTILINE), banner
    assert re.search(rf"^data\s+{re.escape(str(server.data_dir))}\s", banner, re.MULTILINE)
    assert "bucket collector-events-local  table collector-identity-local" in banner

    message_id = send_track(server, "Dev Server Tried")

    [track] = [event for event in server.stored() if event.get("messageId") == message_id]
    assert track["type"] == "track"
    assert track["event"] == "Dev Server Tried"
    assert track["properties"] == {"attempt": 1}
    assert track["userId"] == "user-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", track["receivedAt"])
    assert track["context"]["ip"] == "127.0.0.1"
    assert track["context"]["library"]["name"] == "analytics-python"
    assert "writeKey" not in track
    [path] = server.bucket_dir.glob("events/dt=*/hour=*/*.json.gz")
    assert re.fullmatch(
        r"dt=\d{4}-\d\d-\d\d/hour=\d\d",
        path.parent.relative_to(server.bucket_dir / "events").as_posix(),
    )

    assert server.stop() == 0, server.output()
    assert "stopped" in server.stdout, server.output()
    assert not any("Traceback" in line for line in server.stderr), server.output()
    assert port_is_free(server.port)


def test_data_survives_a_restart_and_fresh_starts_empty(
    start_dev_server: StartDevServer,
) -> None:
    first = start_dev_server()
    before = send_track(first, "Before Restart")
    identify = {"userId": "user-9", "anonymousId": "anon-9", "messageId": "identify-9"}
    first.send("identify", identify).raise_for_status()
    assert first.stop() == 0, first.output()

    second = start_dev_server(data_dir=first.data_dir)
    after = send_track(second, "After Restart")
    assert {before, after} <= {event["messageId"] for event in second.stored()}
    person = requests.get(f"{second.url}/v1/identities/anon-9", timeout=10).json()
    assert sorted(person["distinctIds"]) == ["anon-9", "user-9"]
    # The same messageId again is a duplicate across the restart: the ledger persisted too.
    again = second.send("identify", identify)
    assert again.status_code == 200
    assert [e["messageId"] for e in second.stored()].count("identify-9") == 1
    assert second.stop() == 0, second.output()

    fresh = start_dev_server("--fresh", data_dir=first.data_dir)
    assert fresh.stored() == []
    assert requests.get(f"{fresh.url}/v1/identities/anon-9", timeout=10).status_code == 404
    assert fresh.stop() == 0, fresh.output()


def test_sigterm_stops_the_server_and_its_instances_within_two_seconds(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server()
    send_track(server, "Before Stop")

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=STOP_WITHIN_SECONDS * 5)
    while group_running(server) and time.monotonic() - started < STOP_WITHIN_SECONDS * 5:
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    assert group_running(server) == [], server.output()
    assert elapsed < STOP_WITHIN_SECONDS, f"{elapsed:.2f} s\n{server.output()}"
    assert server.process.returncode == 0, server.output()
    assert port_is_free(server.port)


def test_dev_server_honours_bucket_and_table_overrides(
    start_dev_server: StartDevServer,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bucket, table = f"my-events-{suffix}", f"my-identity-{suffix}"

    server = start_dev_server(EVENTS_BUCKET=bucket, IDENTITY_TABLE=table)

    banner = server.banner()
    assert re.search(rf"bucket {bucket}\s+table {table}$", banner, re.MULTILINE), banner
    assert "collector-events-local" not in banner
    send_track(server, "Overridden")
    assert [event["event"] for event in server.stored()] == ["Overridden"]
    dynamodb = engines(server.data_dir)["dynamodb"]
    assert dynamodb.list_tables()["TableNames"] == [table]
    # The dev source's key is registered in the named table, hashed.
    source = SourceRegistry(dynamodb, table).lookup(hash_write_key(DEV_KEY))
    assert source is not None
    assert source.name == "dev"
    assert server.stop() == 0, server.output()


def test_https_on_request_with_a_certificate_kept_in_the_data_directory(
    start_dev_server: StartDevServer,
) -> None:
    server = start_dev_server(DEV_HTTPS="1")
    url = f"https://127.0.0.1:{server.port}"
    assert re.search(rf"^collector\s+{re.escape(url)}\s", server.banner(), re.MULTILINE)
    cert = server.data_dir / "tls" / "localhost.pem"
    assert f"trust {cert}" in server.banner()

    # A plain-HTTP client on the TLS port gets nowhere, and holds nothing up.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/debugger", timeout=5)
    answer = requests.post(
        f"{url}/v1/track",
        json={"userId": "user-1", "event": "Over TLS", "messageId": "tls-1"},
        auth=(server.write_key, ""),
        verify=str(cert),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert [event["event"] for event in server.stored()] == ["Over TLS"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/debugger", timeout=5)  # not trusted unless told to
    assert server.stop() == 0, server.output()
    pem = cert.read_bytes()

    again = start_dev_server(DEV_HTTPS="1", data_dir=server.data_dir)
    assert f"trust {cert}" in again.banner()
    assert cert.read_bytes() == pem  # kept: a browser told to trust it once keeps trusting it
    assert (
        requests.get(
            f"{url.rsplit(':', 1)[0]}:{again.port}/debugger", verify=str(cert), timeout=10
        ).status_code
        == 200
    )
    assert again.stop() == 0, again.output()
