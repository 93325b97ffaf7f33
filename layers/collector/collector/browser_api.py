"""The browser door: API Gateway HTTP API (payload v2) events in, the REST door's answers out.

Browsers send one small uncompressed `text/plain` body per call, for which an HTTP API costs
about a third of the REST API. Its one catch: it decides from the Content-Type alone whether a
body reaches the function as text or as base64, so a gzip body sent with a text type arrives
with its bytes replaced (1f 8b becomes "\\x1f\\ufffd"). Such a body is refused with 415
`use_rest_endpoint` before anything is read from it; everything else is the REST door's code
(api.py): the same pipeline, CORS, refusals, logs and metrics.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from . import api
from .errors import RequestRefused, StorageUnavailable, UnsupportedMediaType

# What gzip's magic bytes 1f 8b look like once decoded as UTF-8 text (8b is no UTF-8 start
# byte, so it becomes U+FFFD), and as Latin-1 in case a gateway ever decodes that way.
_MANGLED_GZIP = ("\x1f\ufffd", "\x1f\x8b")
_GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})

app = APIGatewayHttpResolver(cors=api.CORS)
# The REST door's own handlers: one definition of every answer, whichever door asked.
app.post("/v1/m")(api.telemetry)
app.exception_handler(RequestRefused)(api.refused)
app.exception_handler(StorageUnavailable)(api.unavailable)
app.exception_handler(Exception)(api.internal_error)
app.not_found(api.not_found)


@app.post("/v1/<call>")
def ingest(call: str) -> Response[Any]:
    event = app.current_event
    refuse_text_gzip(event)
    context = event.request_context
    return api.ingest_answer(call, event, request_id=context.request_id, ip=context.http.source_ip)


def refuse_text_gzip(event: APIGatewayProxyEventV2) -> None:
    """Refuses a gzip body that reached the function as text: its bytes are gone, and reading
    what is left could only store a corrupted event or none. A body the HTTP API passed as
    base64 (any type but text/*, JSON, XML, JavaScript) is intact and read as usual."""
    if event.is_base64_encoded or not event.body:
        return
    encoding = (event.headers.get("content-encoding") or "").strip().lower()
    if encoding not in _GZIP_ENCODINGS and not event.body.startswith(_MANGLED_GZIP):
        return
    rest = api.settings().rest_api_url or "the REST endpoint (the stack's ApiUrl output)"
    raise UnsupportedMediaType(
        "use_rest_endpoint",
        "This endpoint (an HTTP API, for browsers) receives text bodies as text, so a gzip body "
        f"arrives corrupted and was not read. Send gzip to {rest}, or send this body "
        "uncompressed.",
    )


@api.logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@api.metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
