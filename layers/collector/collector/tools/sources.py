"""`collector-sources`: add, list, rotate and revoke write keys in a deployment's table.

Uses the standard AWS credential chain; `--table` (or IDENTITY_TABLE) names the table.
`--data-dir` manages the keys of `make dev` instead: its data directory (COLLECTOR_DATA_DIR).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from collector.sources import SourceRegistry

from .instances import engines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector-sources", description=__doc__)
    parser.add_argument("--table", default=os.environ.get("IDENTITY_TABLE"))
    parser.add_argument(
        "--data-dir", type=Path, help="the data directory of `make dev` (no AWS is used)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a source and print its first write key")
    add.add_argument("name")
    add.add_argument(
        "--allow-forced-merge",
        action="store_true",
        help="let its alias calls merge two identified people (server-side sources only)",
    )
    commands.add_parser("list", help="list sources and their keys (ids only, never keys)")
    rotate = commands.add_parser("rotate", help="print a new key; old keys work until revoked")
    rotate.add_argument("name")
    revoke = commands.add_parser("revoke", help="revoke all keys of a source, or one key")
    revoke.add_argument("name")
    revoke.add_argument("--key-id", help="revoke only the key whose id starts with this")
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("name the table with --table or IDENTITY_TABLE")

    dynamodb = (
        boto3.client("dynamodb") if args.data_dir is None else engines(args.data_dir)["dynamodb"]
    )
    registry = SourceRegistry(dynamodb, args.table)
    try:
        if args.command == "add":
            source, key = registry.add(args.name, may_force_merge=args.allow_forced_merge)
            print(f"source {source.name} ({source.id})\nwrite key {key}")
            print("The key is shown once; only its hash is stored.", file=sys.stderr)
        elif args.command == "rotate":
            print(f"write key {registry.rotate(args.name)}")
        elif args.command == "revoke":
            for record in registry.revoke(args.name, args.key_id):
                print(f"revoked key {record.key_id} of {record.source.name}")
        else:
            for record in sorted(registry.records(), key=lambda r: (r.source.name, r.created_at)):
                state = f"revoked {record.revoked_at}" if record.revoked_at else "live"
                if record.source.may_force_merge:
                    state += ", may force merges"
                print(
                    f"{record.source.name}\t{record.source.id}\tkey {record.key_id}\t"
                    f"created {record.created_at}\t{state}"
                )
    except (ValueError, LookupError) as exc:
        print(f"collector-sources: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"collector-sources: AWS refused or failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
