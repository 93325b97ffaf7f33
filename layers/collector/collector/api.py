"""The Lambda edge: API Gateway REST events in, JSON answers out, with logs and metrics."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from .auth import SourceCache
from .config import AWS_CLIENT_CONFIG, Settings
from .errors import RequestRefused, StorageUnavailable
from .firehose_sink import DeliveryReceipts, FirehoseSink
from .identity import BLOCKED_ANY_CASE
from .identity_store import IdentityGraph
from .ingest import Collector, IncomingRequest, IngestResult
from .ledger import Ledger
from .profiles import ProfileStore
from .sink import EventSink, S3Sink
from .sources import SourceRegistry
from .storage import EventStore

logger = Logger()
metrics = Metrics()
# Preflights and unknown routes publish no metric, and that is fine.
warnings.filterwarnings("ignore", message="No application metrics to publish")


class AllowedOrigins(CORSConfig):
    """CORS as the ALLOWED_ORIGINS setting says, read on first use like every setting.

    "*": Powertools' own answer, `Access-Control-Allow-Origin: *` without credentials. A list:
    the caller's origin named back when it is listed, with `Access-Control-Allow-Credentials`,
    and `Vary: Origin` on every answer (it depends on the Origin header, so no cache may reuse
    one origin's answer for another); an unlisted origin gets no allow-origin header.
    Powertools calls `allowed_origin` for each answer of a CORS route, OPTIONS preflights
    included, and adds `to_dict` of what it returned unless that is None.
    """

    def allowed_origin(self, extracted_origin: str | None) -> str | None:
        if settings().origins is None:
            return None if extracted_origin is None else super().allowed_origin(extracted_origin)
        # Not None even without an Origin header, so that answer carries Vary too.
        return extracted_origin or ""

    def to_dict(self, origin: str | None) -> dict[str, str]:
        origins = settings().origins
        if origins is None:
            return super().to_dict(origin)
        if origin not in origins:
            return {"Vary": "Origin"}
        # Built with allow_origin="*", Powertools answers any origin it is given; credentials
        # go with a named origin only (browsers refuse them next to "*").
        return {**super().to_dict(origin), "Vary": "Origin"}


# analytics.js 2.0 sends Authorization and X-Retry-Count, so every browser call is preflighted.
# One configuration for both doors: the browser door (browser_api.py) answers CORS with it too.
CORS = AllowedOrigins(
    allow_origin="*",
    allow_headers=["Authorization", "Content-Type", "X-Retry-Count"],
    max_age=7200,
    allow_credentials=True,
)
app = APIGatewayRestResolver(cors=CORS)


@cache
def settings() -> Settings:
    return Settings.from_env()


# Clients standing in for AWS's, by service name: set only by the dev server's embedded engines.
_stand_ins: dict[str, Any] = {}


@cache
def aws_client(service: str) -> Any:
    """One client per service for the warm Lambda's life (each costs tens of ms to create).

    botocore's own session, not boto3's: a boto3 client is this client, and importing boto3
    (s3transfer, its resource layer) would add ~100 ms to every cold start for nothing used.
    """
    if service in _stand_ins:
        return _stand_ins[service]
    from botocore.session import Session  # the first request's: only then is a client needed

    return Session().create_client(service, config=AWS_CLIENT_CONFIG)


def use_clients(clients: dict[str, Any]) -> None:
    """Serve with `clients` (by service name) instead of AWS's: `make dev` runs the collector on
    embedded engines that answer the same calls; `{}` goes back to AWS. Never called in Lambda."""
    _stand_ins.clear()
    _stand_ins.update(clients)
    for cached in (aws_client, collector, identity_graph, profile_store):
        cached.cache_clear()


@cache
def collector() -> Collector:
    """Built on first use, then reused by every request the warm Lambda serves."""
    config = settings()
    registry = SourceRegistry(aws_client("dynamodb"), config.identity_table)
    ledger = None
    if config.dedupe_scope == "message":
        ledger = Ledger(
            aws_client("dynamodb"),
            config.identity_table,
            window_seconds=config.dedupe_window_hours * 3600,
            lease_seconds=config.claim_lease_seconds,
        )
    return Collector(
        config,
        SourceCache(registry.lookup, config.source_cache_seconds),
        event_sink(config),
        identity_graph(),
        ledger,
        profiles=profile_store(),
    )


def event_sink(config: Settings) -> EventSink:
    """The sink EVENT_SINK names; rejected records are objects whichever it is."""
    objects = S3Sink(EventStore(aws_client("s3"), config.events_bucket), config.gzip_level)
    if config.event_sink == "s3":
        return objects
    receipts = DeliveryReceipts(
        aws_client("dynamodb"), config.identity_table, config.dedupe_window_hours * 3600
    )
    return FirehoseSink(aws_client("firehose"), config.delivery_stream, receipts, objects)


@cache
def identity_graph() -> IdentityGraph:
    config = settings()
    return IdentityGraph(
        aws_client("dynamodb"),
        config.identity_table,
        max_ids=config.identity_max_ids,
        blocked=blocked_ids(),
        cache_seconds=config.identity_cache_seconds,
    )


@cache
def profile_store() -> ProfileStore:
    config = settings()
    return ProfileStore(
        aws_client("dynamodb"),
        config.identity_table,
        blocked=blocked_ids(),
        seen_resolution=config.profile_seen_seconds,
    )


def blocked_ids() -> frozenset[str]:
    """The ids refused for identity: the built-in placeholders and IDENTITY_BLOCKED_IDS."""
    extra = {value.strip().casefold() for value in settings().identity_blocked_ids.split(",")}
    return BLOCKED_ANY_CASE | (extra - {""})


@app.post("/v1/m")
def telemetry() -> Response[Any]:
    """analytics.js posts its own usage metrics here; they are accepted and discarded."""
    metrics.add_metric(name="DiscardedTelemetry", unit=MetricUnit.Count, value=1)
    return _json(200, {"success": True})


# Never CORS-open, whatever ALLOWED_ORIGINS says: a page must not read who its visitor is.
@app.get("/v1/identities/<distinct_id>", cors=False)
def identity(distinct_id: str) -> Response[Any]:
    """Who `distinct_id` is, with the profile merged from all its person's ids. Personal data:
    on AWS this route takes IAM (SigV4), not write keys."""
    # Powertools matches the raw path, which API Gateway (REST) leaves percent-encoded.
    view = identity_graph().view(unquote(distinct_id))
    if view is None:
        return _json(
            404,
            {"success": False, "code": "unknown_id", "message": "No person has this distinct id."},
        )
    profile = profile_store().read(view.distinct_ids)
    return _json(200, {**view.as_json(), **profile.as_json()})


@app.route("/v1/identities/<distinct_id>", method="OPTIONS", cors=False)
def identity_preflight(distinct_id: str) -> Response[Any]:
    """No CORS preflight here: Powertools would answer one on any path. API Gateway has no
    OPTIONS method on this resource and answers it as below; only a direct invoke gets here."""
    return _json(403, {"message": "Missing Authentication Token"})


@app.post("/v1/<call>")
def ingest(call: str) -> Response[Any]:
    context = app.current_event.request_context
    return ingest_answer(
        call, app.current_event, request_id=context.request_id, ip=context.identity.source_ip
    )


def ingest_answer(
    call: str, event: BaseProxyEvent, *, request_id: str, ip: str | None
) -> Response[Any]:
    """The answer to POST /v1/<call> from either door's event (REST payload v1 here, HTTP API
    payload v2 in browser_api.py): both carry the body and headers alike, but the request id
    and the caller's IP sit in different places, so each door passes them. Powertools keeps
    the current event and Lambda context on the class all resolvers share, so `app` here (and
    in the handlers below) reads the browser door's as well."""
    headers = event.headers
    result = collector().ingest(
        IncomingRequest(
            call=call,
            body=event.body,
            is_base64_encoded=bool(event.is_base64_encoded),
            request_id=request_id,
            authorization=headers.get("authorization"),
            content_encoding=headers.get("content-encoding"),
            ip=ip,
            time_left=_time_left(app.lambda_context),
        )
    )
    _record(result)
    rejected = [rejection.as_json() for rejection in result.rejected]
    if not result.accepted:
        return _json(
            400,
            {
                "success": False,
                "code": "invalid_messages",
                "message": "No message in the request is valid; see rejected for the reasons.",
                "rejected": rejected,
            },
        )
    return _json(200, {"success": True, "rejected": rejected} if rejected else {"success": True})


@app.exception_handler(RequestRefused)
def refused(exc: RequestRefused) -> Response[Any]:
    logger.info("request refused", extra={"status": exc.status, "code": exc.code})
    metrics.add_metric(name="RefusedRequests", unit=MetricUnit.Count, value=1)
    return _json(
        exc.status, {"success": False, "code": exc.code, "message": exc.message, **exc.extra}
    )


@app.exception_handler(StorageUnavailable)
def unavailable(exc: StorageUnavailable) -> Response[Any]:
    logger.warning("storage unavailable", extra={"code": exc.code, "reason": str(exc)})
    metrics.add_metric(name="StorageFailures", unit=MetricUnit.Count, value=1)
    retry_after = settings().retry_after_seconds
    if exc.retry_after is not None:
        retry_after = max(1, math.ceil(exc.retry_after))
    what = {
        "messages_in_flight": "Some of these messages are being stored by a concurrent request",
        "out_of_time": "The request ran out of time; what was done is kept",
    }.get(exc.code, "Storage is briefly unavailable")
    return _json(
        503,
        {
            "success": False,
            "code": exc.code,
            "message": f"{what}; nothing was lost. Retry in {retry_after} s.",
        },
        headers={"Retry-After": str(retry_after)},
    )


@app.not_found
def not_found(_: NotFoundError) -> Response[Any]:
    event = app.current_event
    return _json(
        404,
        {
            "success": False,
            "code": "unknown_route",
            "message": f"No route for {event.http_method} {event.path}; events are sent with "
            "POST to /v1/batch, /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group "
            "or /v1/alias.",
        },
    )


@app.exception_handler(Exception)
def internal_error(exc: Exception) -> Response[Any]:
    # A bug, not the client's fault: the client retries (5xx) and the log has the trace.
    logger.exception("unexpected error")
    return _json(
        500,
        {
            "success": False,
            "code": "internal_error",
            "message": "The collector failed unexpectedly; retry later. Request id: "
            f"{app.current_event.request_context.request_id}",
        },
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


def _time_left(context: LambdaContext) -> Callable[[], float]:
    return lambda: context.get_remaining_time_in_millis() / 1000


def _record(result: IngestResult) -> None:
    """Log and count one ingested request.

    A request whose messages were all stored, as sent, for the first time (and their profiles
    recorded) is logged at DEBUG: at the default level its whole log is one EMF document of
    about 280 bytes (issue #10; the bound is in tests/test_observability.py), instead of a
    400-byte JSON line and two metric documents. Rejections, duplicates, refused identity calls
    and dropped profile changes are logged at INFO.
    """
    refusals = sum(
        count
        for outcome, count in result.identity_outcomes.items()
        if outcome.startswith("refused")
    )
    if result.rejected or result.duplicates or refusals or result.profile_failures:
        logger.info("request stored", extra=_details(result))
    elif logger.log_level <= logging.DEBUG:
        logger.debug("request stored", extra=_details(result))
    # All service-level: one document per request. A `type` dimension would need a second
    # directive (or a document per type) on every request, ~100 bytes; the mix of types is in
    # the stored events (Athena) instead.
    metrics.add_metric(name="AcceptedMessages", unit=MetricUnit.Count, value=result.accepted)
    metrics.add_metric(name="RequestBytes", unit=MetricUnit.Bytes, value=result.body_bytes)
    if result.profile_failures:
        metrics.add_metric(
            name="ProfileFailures", unit=MetricUnit.Count, value=result.profile_failures
        )
    # Only when there are some: the rate alarm sums them, so a period without a datapoint reads
    # as none rejected (notBreaching), and a zero would cost ~70 bytes on every request.
    if rejected := len(result.rejected):
        metrics.add_metric(name="RejectedMessages", unit=MetricUnit.Count, value=rejected)
    if refusals:
        metrics.add_metric(name="IdentityRefusals", unit=MetricUnit.Count, value=refusals)


def _details(result: IngestResult) -> dict[str, Any]:
    """What the "request stored" line says: counts, reasons and outcomes, never ids or keys."""
    return {
        "source_id": result.source.id,
        "accepted": result.accepted,
        "rejected": [rejection.as_json() for rejection in result.rejected],
        "bytes": result.body_bytes,
        "duplicates": result.duplicates,
        "identity": dict(result.identity_outcomes),
        "profile_failures": result.profile_failures,
    }


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers,
    )
