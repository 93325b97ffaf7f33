"""Body decoding: base64, bounded gunzip, strict JSON objects."""

from __future__ import annotations

import base64
import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.decoding import decompress, parse_object, request_bytes
from collector.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


@given(st.binary(max_size=2000))
def test_gzip_round_trips_and_never_exceeds_the_limit(data: bytes) -> None:
    compressed = gzip.compress(data)
    limit = 1000
    if len(data) > limit:
        with pytest.raises(PayloadTooLarge):
            decompress(compressed, "gzip", limit)
    else:
        assert decompress(compressed, "gzip", limit) == data


@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_labelled_gzip_give_a_4xx_not_a_crash(data: bytes) -> None:
    try:
        decompress(data, "gzip", 1000)
    except (BadRequest, PayloadTooLarge) as refused:
        assert refused.status in (400, 413)


def test_a_bomb_stops_at_the_limit() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\0" * 50_000_000) + bomb.flush()
    with pytest.raises(PayloadTooLarge) as refused:
        decompress(data, "GZIP", 512_000)
    assert "decompressed body is larger than 512000 bytes" in refused.value.message


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        decompress(b"x", "deflate", 100)
    assert refused.value.code == "unsupported_content_encoding"


def test_base64_body_is_decoded_and_invalid_base64_is_400() -> None:
    assert request_bytes(base64.b64encode(b"{}").decode(), is_base64_encoded=True) == b"{}"
    assert request_bytes("{}", is_base64_encoded=False) == b"{}"
    with pytest.raises(BadRequest) as refused:
        request_bytes("not base64!", is_base64_encoded=True)
    assert refused.value.code == "invalid_base64"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": -Infinity}', "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"null", "not null"),
        (b"true", "not a boolean"),
        (b"12", "not a number"),
    ],
)
def test_parse_object_refuses_what_is_not_a_json_object(raw: bytes, text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_object(raw)
    assert text in refused.value.message
