"""Settings of one collector deployment, read once from the environment at cold start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from functools import cache

from botocore.config import Config

# An origin as browsers send it: scheme://host[:port], no path, no wildcard. "null" (what
# sandboxed frames and file:// pages send) is not one: allowing it would allow all of them.
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#,\s*]+")


# Both functions' AWS clients: short timeouts and few attempts, so a function answers (or
# fails, and is retried) well within its own timeout; the caller retries with its own backoff.
# No client-side parameter validation: every request is built by this package, and botocore's
# walk of it against the service model is 47% of the CPU of a 100-item TransactWriteItems (a
# ledger claim of 100 messages: 55 M instructions with it, 29 M without, callgrind) and 5% of
# a PutItem. The test suite turns it back on for every call (tests/conftest.py), so a request
# botocore would refuse still fails there; in Lambda, AWS's own validation answers it (a 503).
AWS_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    parameter_validation=False,
)


@dataclass(frozen=True, slots=True)
class Settings:
    events_bucket: str
    identity_table: str
    # Limits follow Segment's published ones so existing clients never hit a surprise.
    max_request_bytes: int = 500 * 1024
    max_message_bytes: int = 32 * 1024
    max_batch_messages: int = 2500
    # A revoked write key keeps working in a warm Lambda for at most this long.
    source_cache_seconds: float = 60.0
    # "message": each (source, messageId) is stored once within the window, however it is
    # batched; "request": only a retry of the same batch within the same hour is recognised.
    dedupe_scope: str = "message"
    # Where events go: "s3", an object per request; "firehose", records of DELIVERY_STREAM.
    event_sink: str = "s3"
    delivery_stream: str = ""
    dedupe_window_hours: int = 24
    # How long a claimed message stays reserved for the request storing it: longer than the
    # function can run, so a takeover never races a writer still alive.
    claim_lease_seconds: float = 30.0
    # A request stops deciding identity calls and answers 503 when its invocation has less left.
    deadline_margin_seconds: float = 3.0
    retry_after_seconds: int = 5
    gzip_level: int = 5
    # Identity: a person may hold at most this many distinct ids; a merge past it is refused.
    identity_max_ids: int = 1000
    # Comma-separated ids refused for identity, on top of the built-in placeholder list.
    identity_blocked_ids: str = ""
    # How long a warm Lambda trusts a settled link's person id (a forced merge can change it).
    identity_cache_seconds: float = 300.0
    # A profile's lastSeen is written when it moves by at least this much (it may trail the
    # latest event by less than this); first seen and traits are exact.
    profile_seen_seconds: float = 3600.0
    # Browser origins allowed to call the API (CORS), comma-separated. "*": any origin, without
    # credentials; a list: only those, with credentials (fetch's credentials: 'include').
    allowed_origins: str = "*"
    # The REST door's URL, named by the browser door when it refuses a gzip body ("": unknown).
    rest_api_url: str = ""

    def __post_init__(self) -> None:
        # A malformed value fails the cold start with its reason rather than a request later.
        parse_origins(self.allowed_origins)
        if self.event_sink not in ("s3", "firehose"):
            raise RuntimeError(f"EVENT_SINK must be s3 or firehose, not {self.event_sink!r}")
        if self.event_sink == "firehose" and not self.delivery_stream:
            raise RuntimeError("EVENT_SINK=firehose needs DELIVERY_STREAM")
        if self.event_sink == "firehose" and self.dedupe_scope != "message":
            # Only S3's conditional PUT recognises a retried request without the ledger.
            raise RuntimeError("EVENT_SINK=firehose needs DEDUPE_SCOPE=message")

    @property
    def origins(self) -> frozenset[str] | None:
        """The allowed origins; None for any origin ("*")."""
        return parse_origins(self.allowed_origins)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Each field from the variable of its name in upper case; unset ones keep the default."""
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = env.get(setting.name.upper(), "")
            if setting.default is MISSING:
                if not raw:
                    raise RuntimeError(f"{setting.name.upper()} must be set")
                values[setting.name] = raw
            elif raw:
                values[setting.name] = type(setting.default)(raw)
        return cls(**values)  # type: ignore[arg-type]


@cache
def parse_origins(raw: str) -> frozenset[str] | None:
    """ALLOWED_ORIGINS read: None for "*", else the set of origins, lower case and without a
    trailing slash (browsers send the host in lower case and never a path)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if items == ["*"]:
        return None
    if not items or "*" in items:
        raise RuntimeError(f"ALLOWED_ORIGINS must be * or a list of origins, not {raw!r}")
    origins = frozenset(item.lower().removesuffix("/") for item in items)
    malformed = sorted(origin for origin in origins if not ORIGIN.fullmatch(origin))
    if malformed:
        raise RuntimeError(
            f"ALLOWED_ORIGINS: {', '.join(malformed)} is not an origin (scheme://host[:port])"
        )
    return origins
