"""A local stand-in for API Gateway: HTTP in, the same REST (payload v1) proxy event to the handler.

Bodies are base64-encoded as with `BinaryMediaTypes: */*`, so the Lambda's decoding path runs as on
AWS. Routes mirror template.yaml; anything else answers like API Gateway does (403). The server
takes its door as a `Door`: this REST one by default, the browser door's HTTP API (payload v2)
from `http_api.py`.
"""

from __future__ import annotations

import base64
import re
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
# One Lambda invocation: the proxy event in, the proxy response out.
Invoke = Callable[[dict[str, Any]], dict[str, Any]]
# A page the dev server answers itself (method, path, query) -> (status, headers, body) or None.
LocalPages = Callable[[str, str, str], tuple[int, dict[str, str], bytes] | None]

# (method, resource) pairs of template.yaml's API; `{name}` is one path segment.
ROUTES = (
    ("POST", "/v1/{call}"),
    ("OPTIONS", "/v1/{call}"),
    # IAM-authorised on AWS; open here, on loopback only.
    ("GET", "/v1/identities/{distinctId}"),
)
STAGE = "prod"
_API_GATEWAY_MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object that Powertools reads."""

    aws_request_id: str
    function_name: str = "collector-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:collector-local"
    log_group_name: str = "/aws/lambda/collector-local"
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 15_000


def match_route(
    method: str, path: str, routes: tuple[tuple[str, str], ...] = ROUTES
) -> tuple[str, dict[str, str]] | None:
    """The template resource a request maps to and its path parameters, as API Gateway routes."""
    for route_method, resource in routes:
        if route_method != method:
            continue
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource)) + "$"
        found = re.match(pattern, path)
        if found:
            return resource, found.groupdict()
    return None


def proxy_event(
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
) -> dict[str, Any] | None:
    """The event API Gateway (REST API, Lambda proxy integration) sends, or None if unrouted."""
    routed = match_route(method, path)
    if routed is None:
        return None
    resource, path_parameters = routed
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        multi_query.setdefault(name, []).append(value)
    request_id = str(uuid.uuid4())
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{STAGE}{path}",
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "sourceIp": source_ip,
                "userAgent": next(
                    (v[-1] for k, v in multi_headers.items() if k.lower() == "user-agent"), None
                ),
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityId": None,
            },
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


# (method, path, query, headers, body, source IP) -> the door's Lambda event, or None if unrouted.
EventBuilder = Callable[[str, str, str, list[tuple[str, str]], bytes, str], dict[str, Any] | None]


@dataclass(frozen=True)
class Door:
    """One kind of API Gateway API: the event it builds for a request, and its unrouted answer."""

    event: EventBuilder
    unrouted_status: int
    unrouted_body: bytes


REST = Door(proxy_event, 403, b'{"message":"Missing Authentication Token"}')


def one_instance(handler: Handler) -> Invoke:
    """Invocations of `handler` in this process, one at a time, as one Lambda instance serves."""
    lock = threading.Lock()

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return handler(event, LambdaContext(aws_request_id=str(uuid.uuid4())))

    return invoke


class LocalApiGateway(ThreadingHTTPServer):
    """Serves HTTP requests as API Gateway does: each routed request becomes one `invoke`, and
    requests run concurrently (as far as `invoke` allows, like Lambda's concurrency)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        invoke: Invoke,
        pages: LocalPages | None = None,
        tls: ssl.SSLContext | None = None,
        door: Door = REST,
    ) -> None:
        super().__init__(address, _RequestHandler)
        self.invoke = invoke
        self.pages = pages
        self.tls = tls
        self.door = door

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def get_request(self) -> tuple[Any, Any]:
        connection, address = super().get_request()
        if self.tls is None:
            return connection, address
        # The handshake happens in the request's own thread (finish_request), so one slow or
        # plain-HTTP client cannot hold up the accept loop.
        wrapped = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return  # not TLS, or it gave up: nothing to answer
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client hung up before its answer (a timeout): nobody to tell
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalApiGateway
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._proxy()

    def do_GET(self) -> None:
        self._proxy()

    def do_OPTIONS(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the handler's structured logs say what happened."""

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _API_GATEWAY_MAX_BODY:
            self._reply(
                413, {"Content-Type": "application/json"}, b'{"message":"Request Too Long"}'
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        page = self.server.pages(self.command, path, query) if self.server.pages else None
        if page is not None:
            self._reply(*page)
            return
        door = self.server.door
        event = door.event(
            self.command, path, query, list(self.headers.items()), body, self.client_address[0]
        )
        if event is None:
            self._reply(
                door.unrouted_status, {"Content-Type": "application/json"}, door.unrouted_body
            )
            return
        try:
            response = self.server.invoke(event)
        except Exception:
            # A crashed invocation: API Gateway answers 502 and the trace goes to the log.
            traceback.print_exc()
            self._reply(
                502, {"Content-Type": "application/json"}, b'{"message":"Internal server error"}'
            )
            return
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        headers = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(values)
        # Payload v2 answers carry cookies apart; each becomes a Set-Cookie header.
        cookies = [("Set-Cookie", cookie) for cookie in response.get("cookies") or []]
        self._reply(int(response["statusCode"]), headers, data, cookies)

    def _reply(
        self,
        status: int,
        headers: dict[str, str],
        data: bytes,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in [*headers.items(), *(extra or [])]:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
