"""`make dev`: the collector on 127.0.0.1, its S3 and DynamoDB embedded in a local directory.

No AWS account, no Docker, no moto: the Lambda code runs unchanged in worker processes (one per
concurrent invocation, as Lambda does) against `LocalS3` (files) and `LocalDynamoDB` (SQLite).
Data stays in COLLECTOR_DATA_DIR across restarts; `--fresh` (`make dev-fresh`) starts empty.

Two doors, as the stack has: the REST API on PORT, and the browser door's HTTP API (payload v2,
text content types passed as text) on BROWSER_PORT, both served by the same instances.

Environment: PORT (3000), BROWSER_PORT (PORT + 1), COLLECTOR_DATA_DIR (.collector-data),
EVENTS_BUCKET, IDENTITY_TABLE, COLLECTOR_DEV_WRITE_KEY, DEV_INSTANCES (concurrent Lambda
instances, default 4), DEV_HTTPS (1: serve https:// with a self-signed certificate kept in the
data directory).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

DEFAULTS = {
    "COLLECTOR_DATA_DIR": ".collector-data",
    "EVENTS_BUCKET": "collector-events-local",
    "IDENTITY_TABLE": "collector-identity-local",
    "COLLECTOR_DEV_WRITE_KEY": "local-dev-write-key",
    "DEV_INSTANCES": "4",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "collector",
    "POWERTOOLS_METRICS_NAMESPACE": "EventCollector",
}
# Nothing of a developer's AWS setup may steer the local collector towards a real account.
_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devserver", description=__doc__)
    parser.add_argument("--fresh", action="store_true", help="delete the data directory first")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in _CLEARED:
        os.environ.pop(name, None)
    data_dir = Path(os.environ["COLLECTOR_DATA_DIR"]).resolve()
    if args.fresh:
        shutil.rmtree(data_dir, ignore_errors=True)

    from collector.identity_store import IdentityGraph
    from collector.profiles import ProfileStore
    from collector.sources import SourceRegistry

    from .debugger import PAGE, Debugger
    from .http_api import HTTP_API
    from .instances import InstanceFailed, LambdaInstances, bucket_dir, engines
    from .localapi import LocalApiGateway
    from .tls import server_context

    local = engines(data_dir)
    bucket, table = os.environ["EVENTS_BUCKET"], os.environ["IDENTITY_TABLE"]
    write_key = os.environ["COLLECTOR_DEV_WRITE_KEY"]
    prepare(local, bucket, table, write_key)

    port = int(os.environ.get("PORT", "3000"))
    browser_port = int(os.environ.get("BROWSER_PORT", str(port + 1)))
    tls, trust = None, ""
    if os.environ.get("DEV_HTTPS", "") not in ("", "0"):
        tls, cert_path = server_context(data_dir / "tls")
        trust = (
            f"tls        self-signed; trust {cert_path} (e.g. curl --cacert, NODE_EXTRA_CA_CERTS)\n"
        )
    # What the browser door names when it refuses a gzip body; set before the instances start.
    os.environ["REST_API_URL"] = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    count = int(os.environ["DEV_INSTANCES"])
    try:
        instances = LambdaInstances(count, data_dir)
    except InstanceFailed as exc:
        raise SystemExit(f"devserver: a Lambda instance failed to start:\n{exc}") from None
    debugger = Debugger(
        bucket_dir(data_dir, bucket),
        IdentityGraph(local["dynamodb"], table),
        SourceRegistry(local["dynamodb"], table),
        ProfileStore(local["dynamodb"], table),
    )
    server = LocalApiGateway(("127.0.0.1", port), instances.invoke, debugger.answer, tls)
    browser = LocalApiGateway(
        ("127.0.0.1", browser_port),
        functools.partial(instances.invoke, function="browser"),
        tls=tls,
        door=HTTP_API,
    )
    browser_thread = threading.Thread(target=browser.serve_forever, daemon=True)
    browser_thread.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, so it must run off the serving thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"collector  {server.url}  (POST /v1/batch, /v1/track, ...)\n"
        f"browser    {browser.url}  (the HTTP API door for analytics.js: /v1/t, /v1/b, ...)\n"
        f"write key  {write_key}\n"
        f"debugger   {server.url}{PAGE}  (live events, rejections, persons)\n"
        f"data       {data_dir}  (kept across restarts; `make dev-fresh` starts empty)\n"
        f"events     {bucket_dir(data_dir, bucket)}/events/dt=…/hour=…/*.json.gz\n"
        f"instances  {count} Lambda processes  bucket {bucket}  table {table}\n"
        f"{trust}"
        "Ctrl-C stops.",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        browser.shutdown()
        browser_thread.join()
        server.server_close()
        browser.server_close()
        instances.stop()
        print("stopped", flush=True)


def prepare(local: dict[str, Any], bucket: str, table: str, write_key: str) -> None:
    """The bucket, the table (from template.yaml) and the dev source, unless already there."""
    from botocore.exceptions import ClientError

    from collector.auth import hash_write_key
    from collector.sources import SourceRegistry

    from .resources import create_table

    local["s3"].create_bucket(Bucket=bucket)
    dynamodb = local["dynamodb"]
    try:
        create_table(dynamodb, table)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    # The ledger's entries outlive their window otherwise; DynamoDB's TTL does this on AWS.
    dynamodb.remove_expired()
    registry = SourceRegistry(dynamodb, table)
    if registry.lookup(hash_write_key(write_key)) is None:
        if any(record.source.name == "dev" for record in registry.records()):
            registry.rotate("dev", write_key)
        else:
            registry.add("dev", write_key)


if __name__ == "__main__":
    main()
