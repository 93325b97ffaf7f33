"""CORS: ALLOWED_ORIGINS ("*" or a list) on preflights and answers through either door, the
identity route never open, the setting's parsing and its template parameter."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from collector import api
from collector.config import Settings, parse_origins
from collector.tools.localapi import LambdaContext, LocalApiGateway
from collector.tools.resources import load_template, properties

from .conftest import basic, clear_api_caches, track

SHOP = "https://shop.example"
BLOG = "http://127.0.0.1:8080"
STRANGER = "https://evil.example"
EVENTS = Path(__file__).resolve().parents[1] / "events"
PREFLIGHT_HEADERS = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
}


@pytest.fixture
def origins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The collector with ALLOWED_ORIGINS set to two origins (spaces and a trailing slash, as a
    person would write them), read afresh as at a cold start."""
    monkeypatch.setenv("ALLOWED_ORIGINS", f" {SHOP}/ , {BLOG}")
    clear_api_caches()
    yield
    clear_api_caches()


def preflight(server: LocalApiGateway, origin: str | None, path: str = "/v1/t") -> Any:
    headers = dict(PREFLIGHT_HEADERS)
    if origin is not None:
        headers["Origin"] = origin
    return requests.options(f"{server.url}{path}", headers=headers, timeout=10)


def send(server: LocalApiGateway, write_key: str, origin: str | None) -> requests.Response:
    headers = {"Content-Type": "text/plain", **basic(write_key)}
    if origin is not None:
        headers["Origin"] = origin
    return requests.post(
        f"{server.url}/v1/t", data=json.dumps(track()), headers=headers, timeout=10
    )


def vary(response: requests.Response) -> set[str]:
    return {name.strip().lower() for name in response.headers.get("Vary", "").split(",") if name}


@pytest.fixture(params=["rest", "browser"])
def door(request: pytest.FixtureRequest) -> LocalApiGateway:
    """Each door in turn: CORS on the event routes is the same code on both, and must behave so."""
    name = "server" if request.param == "rest" else "browser_server"
    local: LocalApiGateway = request.getfixturevalue(name)
    return local


# --- "*", the default: as before ------------------------------------------------------------


def test_default_answers_any_origin_without_credentials(
    door: LocalApiGateway, write_key: str
) -> None:
    for response, status in (
        (preflight(door, STRANGER), 204),
        (send(door, write_key, SHOP), 200),
    ):
        assert response.status_code == status, response.text
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "origin" not in vary(response)


# --- a list ------------------------------------------------------------------------------


@pytest.mark.usefixtures("origins")
@pytest.mark.parametrize("origin", [SHOP, BLOG])
def test_listed_origin_is_named_back_with_credentials_on_the_preflight(
    door: LocalApiGateway, origin: str
) -> None:
    response = preflight(door, origin)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in vary(response)
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"].split(",")
    assert response.headers["Access-Control-Max-Age"] == "7200"


@pytest.mark.usefixtures("origins")
def test_listed_origin_is_named_back_with_credentials_on_the_answer(
    door: LocalApiGateway, write_key: str
) -> None:
    response = send(door, write_key, SHOP)
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in vary(response)


@pytest.mark.usefixtures("origins")
def test_a_refusal_is_readable_by_a_listed_origin(door: LocalApiGateway) -> None:
    # The page's code sees the 401 and its code, not an opaque CORS failure.
    response = send(door, "not-a-write-key", BLOG)
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == BLOG
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.usefixtures("origins")
@pytest.mark.parametrize("origin", [STRANGER, "https://shop.example.evil.example", "null", None])
def test_other_origins_get_no_allow_origin_but_vary(
    door: LocalApiGateway, write_key: str, origin: str | None
) -> None:
    for response, status in (
        (preflight(door, origin), 204),
        (send(door, write_key, origin), 200),
    ):
        assert response.status_code == status, response.text
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers
        # A cache must not hand this answer to a listed origin, nor a listed one's to this.
        assert "origin" in vary(response)


# --- the identity route ----------------------------------------------------------------------


@pytest.mark.parametrize("configured", ["*", f"{SHOP},{BLOG}"])
def test_identity_route_is_never_cors_open(
    server: LocalApiGateway,
    post: Any,
    monkeypatch: pytest.MonkeyPatch,
    configured: str,
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", configured)
    clear_api_caches()
    identify = {"type": "identify", "userId": "user-1", "anonymousId": "anon-1", "messageId": "i-1"}
    assert post("/v1/identify", json.dumps(identify).encode()).status_code == 200
    url = f"{server.url}/v1/identities/user-1"
    read = requests.get(url, headers={"Origin": SHOP}, timeout=10)
    assert read.status_code == 200 and read.json()["identified"] is True
    missing = requests.get(f"{url}-nobody", headers={"Origin": SHOP}, timeout=10)
    assert missing.status_code == 404
    # API Gateway has no OPTIONS on the resource; the local server answers as it does.
    refused = preflight(server, SHOP, "/v1/identities/user-1")
    assert refused.status_code == 403
    for response in (read, missing, refused):
        assert not [name for name in response.headers if name.lower().startswith("access-control")]


@pytest.mark.parametrize("configured", ["*", SHOP])
def test_identity_preflight_invoked_directly_is_refused(
    monkeypatch: pytest.MonkeyPatch, configured: str
) -> None:
    """Powertools answers a preflight on any path it has no OPTIONS route for; the identity
    route has one that refuses, for a caller that invokes the function directly."""
    monkeypatch.setenv("ALLOWED_ORIGINS", configured)
    clear_api_caches()
    event = json.loads((EVENTS / "options-preflight.json").read_text(encoding="utf-8"))
    event.update(
        path="/v1/identities/user-1",
        resource="/v1/identities/{distinctId}",
        pathParameters={"distinctId": "user-1"},
    )
    event["headers"]["Origin"] = SHOP
    event["multiValueHeaders"]["Origin"] = [SHOP]
    answer = api.lambda_handler(event, LambdaContext(aws_request_id="identity-preflight"))
    assert answer["statusCode"] == 403
    headers = {name.lower() for name in answer.get("multiValueHeaders") or {}}
    assert not [name for name in headers if name.startswith("access-control")]
    # The same event on /v1/t is a preflight the function answers: the refusal is the route's.
    event.update(path="/v1/t", resource="/v1/{call}", pathParameters={"call": "t"})
    assert api.lambda_handler(event, LambdaContext(aws_request_id="t"))["statusCode"] == 204


# --- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("*", None),
        (" * ", None),
        ("https://Shop.Example/", frozenset({"https://shop.example"})),
        (
            "https://shop.example, http://127.0.0.1:8080,",
            frozenset({"https://shop.example", "http://127.0.0.1:8080"}),
        ),
        ("chrome-extension://abcdef", frozenset({"chrome-extension://abcdef"})),
    ],
)
def test_allowed_origins_are_read(raw: str, expected: frozenset[str] | None) -> None:
    assert parse_origins(raw) == expected
    assert Settings(events_bucket="b", identity_table="t", allowed_origins=raw).origins == expected


BAD_ORIGINS = [
    "",
    " , ",
    "*,https://shop.example",
    "null",
    "shop.example",
    "https://shop.example/path",
    "https://*.example",
    "https://shop.example?x=1",
]


@pytest.mark.parametrize("raw", BAD_ORIGINS)
def test_a_malformed_setting_fails_the_cold_start(raw: str) -> None:
    with pytest.raises(RuntimeError, match="ALLOWED_ORIGINS"):
        Settings(events_bucket="b", identity_table="t", allowed_origins=raw)


def test_unset_means_any_origin() -> None:
    assert Settings.from_env({"EVENTS_BUCKET": "b", "IDENTITY_TABLE": "t"}).origins is None
    assert Settings.from_env(
        {"EVENTS_BUCKET": "b", "IDENTITY_TABLE": "t", "ALLOWED_ORIGINS": SHOP}
    ).origins == frozenset({SHOP})


def test_template_parameter_is_wired_and_validated_like_the_setting() -> None:
    template = load_template()
    parameter = template["Parameters"]["AllowedOrigins"]
    assert parameter["Default"] == "*"
    for function in ("IngestFunction", "BrowserFunction"):
        variables = properties(template, function)["Environment"]["Variables"]
        assert variables["ALLOWED_ORIGINS"] == {"Ref": "AllowedOrigins"}, function
    # CloudFormation's pattern (Java regex) refuses at deploy what the function would refuse at
    # its cold start, and accepts what it accepts.
    pattern = re.compile(parameter["AllowedPattern"])
    good = ["*", "https://Shop.Example/", "https://shop.example, http://127.0.0.1:8080"]
    for raw in good:
        assert pattern.fullmatch(raw), raw
        parse_origins(raw)
    for raw in [value for value in BAD_ORIGINS if value.strip(" ,")]:
        assert not pattern.fullmatch(raw), raw
