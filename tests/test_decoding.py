"""Body decoding: base64, bounded gunzip, strict JSON objects."""

from __future__ import annotations

import base64
import gzip
import zlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.decoding import ParsedBody, decompress, parse_object, request_bytes
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
        (b"\xff", "not valid JSON"),
        (b'{"a": NaN', "not valid JSON"),
        (b"\xef\xbb\xbf", "not valid JSON"),
        (b"null", "not null"),
        (b"true", "not a boolean"),
        (b"12", "not a number"),
    ],
)
def test_parse_object_refuses_what_is_not_a_json_object(raw: bytes, text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_object(raw)
    assert text in refused.value.message


@pytest.mark.parametrize(
    ("raw", "value", "flaws"),
    [
        (b'{"a": NaN}', {"a": "NaN"}, [(("a",), "NaN is not a JSON number")]),
        (b'{"a": [-Infinity]}', {"a": ["-Infinity"]},
         [(("a", 0), "-Infinity is not a JSON number")]),
        (b'{"a": 2e308}', {"a": "2e308"}, [(("a",), "2e308 is outside the range of a double")]),
        (b'{"a": "\\ud83d!"}', {"a": "\\ud83d!"}, [(("a",), "not valid Unicode")]),
        (b'{"a": "\xe9t\xe9"}', {"a": "\\xe9t\\xe9"}, [(("a",), "not valid Unicode")]),
        (b'{"\\udc00": 1}', {"\\udc00": 1}, [((), "key '\\\\udc00' is not valid Unicode")]),
        (b'{"a": NaN, "b": "ok", "c": 18446744073709551615}',
         {"a": "NaN", "b": "ok", "c": 2**64 - 1}, [(("a",), "NaN is not a JSON number")]),
    ],
    ids=["nan", "infinity", "beyond-double", "lone-surrogate", "latin-1", "key", "neighbours"],
)  # fmt: skip
def test_values_json_cannot_carry_become_flaws_at_their_path(
    raw: bytes, value: dict[str, object], flaws: list[tuple[tuple[object, ...], str]]
) -> None:
    parsed = parse_object(raw)
    assert parsed.value == value
    assert [(flaw.path, flaw.problem[: len(problem)]) for flaw, (_, problem) in
            zip(parsed.flaws, flaws, strict=True)] == flaws  # fmt: skip
    orjson.dumps(parsed.value)  # what is left is plain JSON


def test_a_clean_body_has_no_flaws_and_a_bom_is_skipped() -> None:
    assert parse_object(b'{"a": 1}') == ParsedBody({"a": 1})
    assert parse_object(b'\xef\xbb\xbf{"a": 1}') == ParsedBody({"a": 1})


def test_a_text_body_with_a_lone_surrogate_reaches_the_parser() -> None:
    raw = request_bytes('{"a": "\ud83d"}', is_base64_encoded=False)
    assert parse_object(raw).flaws[0].path == ("a",)


def test_gzip_is_recognised_by_its_magic_bytes_without_a_header() -> None:
    """Some SDKs send gzip as text/plain with no Content-Encoding."""
    body = b'{"batch": []}'
    assert decompress(gzip.compress(body), None, 1000) == body
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b" " * 5000), None, 1000)


@pytest.mark.parametrize("body", [b'{"batch": []}', b"  [1]", b'\xef\xbb\xbf{"a": 1}'])
def test_a_body_already_inflated_under_a_gzip_header_is_read_as_it_is(body: bytes) -> None:
    """API Gateway inflates gzip bodies itself when compression is enabled, keeping the header."""
    assert decompress(body, "gzip", 1000) == body


def test_a_body_neither_gzip_nor_json_under_a_gzip_header_is_invalid_gzip() -> None:
    with pytest.raises(BadRequest) as refused:
        decompress(b"\x00\x01garbage", "gzip", 1000)
    assert refused.value.code == "invalid_gzip"
