"""Turn an API Gateway request body into a JSON object: base64, bounded gunzip, strict JSON."""

from __future__ import annotations

import binascii
import zlib
from typing import Any

import orjson
import pybase64

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
_GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


def request_bytes(body: str | None, is_base64_encoded: bool) -> bytes:
    """The body exactly as the client sent it (API Gateway hands binary bodies over as base64)."""
    if not body:
        raise BadRequest("empty_body", "The request body is empty; send a JSON object.")
    if not is_base64_encoded:
        return body.encode()
    try:
        # pybase64: SIMD decoding, ~50x the standard library on a 300 KB batch.
        return pybase64.b64decode(body, validate=True)
    except binascii.Error:
        raise BadRequest("invalid_base64", "The request body is not valid base64.") from None


def decompress(data: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding, never producing more than `limit` bytes (a gzip bomb stops here)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in _IDENTITY_ENCODINGS:
        if len(data) > limit:
            raise _too_large(limit)
        return data
    if encoding not in _GZIP_ENCODINGS:
        raise UnsupportedMediaType(
            "unsupported_content_encoding",
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or no encoding.",
        )
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise BadRequest(
            "invalid_gzip", "The body is not valid gzip although Content-Encoding says gzip."
        ) from None
    if len(inflated) > limit:
        raise _too_large(limit, decompressed=True)
    if not inflater.eof:
        raise BadRequest("invalid_gzip", "The gzip body is truncated.")
    if inflater.unused_data:
        raise BadRequest("invalid_gzip", "The gzip body has trailing data after its end.")
    return inflated


def parse_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON (UTF-8, no NaN or Infinity) whose top level is an object."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"The body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadRequest(
            "invalid_json",
            f"The body must be a JSON object, not {_json_kind(parsed)}.",
        )
    return parsed


def _too_large(limit: int, *, decompressed: bool = False) -> PayloadTooLarge:
    what = "decompressed body" if decompressed else "body"
    return PayloadTooLarge(
        "payload_too_large",
        f"The {what} is larger than {limit} bytes; send smaller batches.",
        limit=limit,
    )


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
