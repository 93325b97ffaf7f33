"""The S3 layout: Hive partitions on receive time, fingerprints, gzip NDJSON."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

from hypothesis import strategies as st

from collector.storage import fingerprint, gzip_lines, object_key

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


def test_object_key_is_hive_partitioned_on_receive_time() -> None:
    at = datetime(2026, 3, 7, 5, 59, 59, tzinfo=UTC)
    assert (
        object_key("events", at, "ab" * 16) == f"events/dt=2026-03-07/hour=05/{'ab' * 16}.json.gz"
    )


def test_fingerprint_depends_on_source_and_ordered_message_ids() -> None:
    base = fingerprint("src", ["a", "b"])
    assert base == fingerprint("src", ["a", "b"])
    assert len(base) == 32 and int(base, 16) >= 0
    assert base != fingerprint("src", ["b", "a"])
    assert base != fingerprint("other", ["a", "b"])
    # Ids are delimited, so moving a character across the boundary changes the identity.
    assert fingerprint("src", ["ab", "c"]) != fingerprint("src", ["a", "bc"])


def test_gzip_lines_round_trips_newline_delimited_json() -> None:
    body = gzip_lines([b'{"a":1}', b'{"b":2}'], level=5)
    assert gzip.decompress(body) == b'{"a":1}\n{"b":2}\n'
    assert body == gzip_lines([b'{"a":1}', b'{"b":2}'], level=5)
