"""A local stand-in for the browser door's API Gateway HTTP API: the payload v2 event its Lambda
integration sends, with the HTTP API's rule for which bodies arrive as text.

An HTTP API has no binary media types: it passes a body as text when its Content-Type is
`text/*`, `application/json`, `application/xml` or `application/javascript`, and base64-encodes
any other (or none). A text body's bytes are decoded as UTF-8, each invalid byte replaced by
U+FFFD, which is what makes a gzip body sent as text unreadable. Routes mirror the
BrowserFunction's HttpApi events in template.yaml; anything else answers 404, as an HTTP API does.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from .localapi import Door, match_route

# (method, route path) of the BrowserFunction's HttpApi events; `{name}` is one path segment.
BROWSER_ROUTES = (
    ("POST", "/v1/{call}"),
    ("OPTIONS", "/v1/{call}"),
)
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})


def arrives_as_text(content_type: str | None) -> bool:
    """Whether the HTTP API hands a body of this Content-Type to Lambda as text (else base64)."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type.startswith("text/") or media_type in _TEXT_TYPES


def http_api_event(
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
) -> dict[str, Any] | None:
    """The event an HTTP API ($default stage, payload format 2.0) sends, or None if unrouted."""
    routed = match_route(method, path, BROWSER_ROUTES)
    if routed is None:
        return None
    route, path_parameters = routed
    # Header names in lower case, repeated ones joined with commas; cookies go apart.
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    cookie_header = joined.pop("cookie", "")
    cookies = [part.strip() for part in cookie_header.split(";") if part.strip()]
    query_parameters: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        query_parameters[name] = (
            f"{query_parameters[name]},{value}" if name in query_parameters else value
        )
    as_text = arrives_as_text(joined.get("content-type"))
    request_id = str(uuid.uuid4())
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local-browser",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "pathParameters": path_parameters,
        "isBase64Encoded": bool(body) and not as_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query_parameters:
        event["queryStringParameters"] = query_parameters
    if body:
        text = body.decode("utf-8", "replace") if as_text else base64.b64encode(body).decode()
        event["body"] = text
    return event


HTTP_API = Door(http_api_event, 404, b'{"message":"Not Found"}')
