"""`collector-export-identities`: the identity graph's current mapping written under identities/,
once, for a graph older than its stream (the export function only sees later changes).

Uses the standard AWS credential chain. Rows have sequence 0, so any change the stream
exports afterwards supersedes them; running it twice writes the same objects again.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from collector.errors import StorageUnavailable
from collector.identity_export import current_rows, write_rows
from collector.storage import EventStore

_ROWS_PER_OBJECT = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector-export-identities", description=__doc__)
    parser.add_argument("--table", required=True, help="the stack's IdentityTableName output")
    parser.add_argument("--bucket", required=True, help="the stack's EventsBucketName output")
    args = parser.parse_args(argv)
    store = EventStore(boto3.client("s3"), args.bucket)
    now, pending, written = datetime.now(UTC), [], 0
    try:
        pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=args.table)
        for page in pages:
            pending.extend(current_rows(page["Items"], now))
            while len(pending) >= _ROWS_PER_OBJECT:
                written += write_rows(pending[:_ROWS_PER_OBJECT], store)
                pending = pending[_ROWS_PER_OBJECT:]
        written += write_rows(pending, store)
    except (BotoCoreError, ClientError, StorageUnavailable) as exc:
        print(f"collector-export-identities: AWS refused or failed: {exc}", file=sys.stderr)
        return 1
    print(f"exported {written} distinct ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
