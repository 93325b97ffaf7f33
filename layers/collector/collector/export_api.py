"""The export Lambda's edge: batches of the identity table's stream records in, rows under
identities/ out (identity_export.py). A failure raises: Lambda retries the batch, bisecting it,
and a record is never skipped (the event source mapping retries without limit)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from .config import AWS_CLIENT_CONFIG
from .identity_export import export
from .storage import EventStore

logger = Logger()


@cache
def store() -> EventStore:
    s3 = boto3.session.Session().client("s3", config=AWS_CLIENT_CONFIG)
    return EventStore(s3, os.environ["EVENTS_BUCKET"])


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    rows = export(records, store())
    # Counts only: the rows name people's ids, which never go to the logs.
    logger.info("identities exported", extra={"records": len(records), "rows": rows})
    return {"batchItemFailures": []}
