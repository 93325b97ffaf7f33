"""`make dev`: the collector on 127.0.0.1 with an in-memory S3 and DynamoDB (moto), no AWS account.

Environment: PORT (3000), AWS_PORT (5000), EVENTS_BUCKET, IDENTITY_TABLE, COLLECTOR_DEV_WRITE_KEY.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

DEFAULTS = {
    "EVENTS_BUCKET": "collector-events-local",
    "IDENTITY_TABLE": "collector-identity-local",
    "COLLECTOR_DEV_WRITE_KEY": "local-dev-write-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    # moto accepts any credentials; fixed ones keep a developer's real profile out of play.
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "POWERTOOLS_SERVICE_NAME": "collector",
    "POWERTOOLS_METRICS_NAMESPACE": "EventCollector",
}


def main() -> None:
    port = int(os.environ.get("PORT", "3000"))
    aws_port = int(os.environ.get("AWS_PORT", "5000"))
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    for profile_variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(profile_variable, None)
    aws_endpoint = f"http://127.0.0.1:{aws_port}"
    os.environ["AWS_ENDPOINT_URL"] = aws_endpoint

    # Imported after the environment is set: boto3 and Powertools read it at import.
    import boto3
    from moto.server import ThreadedMotoServer

    from collector.api import lambda_handler
    from collector.sources import SourceRegistry

    from .localapi import LocalApiGateway
    from .resources import create_bucket, create_table

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=aws_port, verbose=False)
    moto.start()
    bucket, table = os.environ["EVENTS_BUCKET"], os.environ["IDENTITY_TABLE"]
    create_bucket(boto3.client("s3"), bucket)
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, table)
    write_key = os.environ["COLLECTOR_DEV_WRITE_KEY"]
    SourceRegistry(dynamodb, table).add("dev", write_key)

    server = LocalApiGateway(("127.0.0.1", port), lambda_handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, so it must run off the serving thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"collector  {server.url}  (POST /v1/batch, /v1/track, ...)\n"
        f"write key  {write_key}\n"
        f"S3+DynamoDB (moto) {aws_endpoint}  bucket {bucket}  table {table}\n"
        f"inspect:   aws --endpoint-url {aws_endpoint} s3 ls --recursive s3://{bucket}/\n"
        "Ctrl-C stops.",
        flush=True,
    )

    try:
        server.serve_forever()
    finally:
        server.server_close()
        moto.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
