"""The S3 layout: Hive partitions on receive time, request fingerprints, the retry lookback."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from collector.storage import earlier_hours, fingerprint, gzip_lines, object_key

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


@given(received=moments, age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
def test_earlier_hours_cover_every_hour_a_first_attempt_could_have_landed_in(
    received: datetime, age: timedelta
) -> None:
    newest_message = received - age
    hours = earlier_hours(received, newest_message, max_hours=24)
    this_hour = received.replace(minute=0, second=0, microsecond=0)
    assert all(hour < this_hour and hour.minute == hour.second == 0 for hour in hours)
    assert hours == sorted(hours, reverse=True)
    assert len(hours) <= 24
    first_possible_hour = newest_message.replace(minute=0, second=0, microsecond=0)
    if this_hour - first_possible_hour <= timedelta(hours=24):
        # Every partition from the newest message's hour up to now is looked in.
        assert set(hours) >= {
            this_hour - timedelta(hours=n)
            for n in range(1, int((this_hour - first_possible_hour) / timedelta(hours=1)) + 1)
        }


def test_a_fresh_request_mid_hour_looks_nowhere_else() -> None:
    received = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    assert earlier_hours(received, received - timedelta(seconds=2), max_hours=24) == []
