"""Write keys: the registry in DynamoDB, the `collector-sources` CLI, the warm cache, the header."""

from __future__ import annotations

import base64
import re
from collections import Counter
from typing import Any

import pytest

from collector.auth import Source, SourceCache, hash_write_key, write_key_from
from collector.errors import Unauthorized
from collector.sources import SourceRegistry
from collector.tools.sources import main

from .conftest import Aws

pytestmark = pytest.mark.engines

# ---------------------------------------------------------------------------------------------
# SourceRegistry against moto


@pytest.fixture
def registry(aws: Aws) -> SourceRegistry:
    return SourceRegistry(aws.dynamodb, aws.table)


def scan_all(aws: Aws) -> list[dict[str, Any]]:
    pages = aws.dynamodb.get_paginator("scan").paginate(TableName=aws.table)
    return [item for page in pages for item in page["Items"]]


def strings_in(value: Any) -> list[str]:
    """Every string anywhere in a DynamoDB item (names and values, nested types too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list | tuple | set):
        return [s for v in value for s in strings_in(v)]
    return [str(value)]


def test_add_stores_only_the_hash_of_the_key(aws: Aws, registry: SourceRegistry) -> None:
    source, key = registry.add("web")

    assert source.name == "web"
    assert len(key) >= 32
    items = scan_all(aws)
    assert len(items) == 1
    [item] = items
    assert item["sk"]["S"] == hash_write_key(key)
    assert item["sourceId"]["S"] == source.id
    assert item["sourceName"]["S"] == "web"
    assert not any(key in text for text in strings_in(item))
    assert registry.lookup(hash_write_key(key)) == source


def test_add_keeps_keys_apart_across_sources(aws: Aws, registry: SourceRegistry) -> None:
    web, web_key = registry.add("web")
    app, app_key = registry.add("app")

    assert web.id != app.id
    assert web_key != app_key
    everything = [text for item in scan_all(aws) for text in strings_in(item)]
    assert {hash_write_key(web_key), hash_write_key(app_key)} <= set(everything)
    assert not any(web_key in text or app_key in text for text in everything)
    assert registry.lookup(hash_write_key(web_key)) == web
    assert registry.lookup(hash_write_key(app_key)) == app


def test_add_of_an_existing_name_fails(registry: SourceRegistry) -> None:
    source, key = registry.add("web")

    with pytest.raises(ValueError, match=r"a source named 'web' exists; rotate its key instead"):
        registry.add("web")
    assert [record.source for record in registry.records()] == [source]
    assert registry.lookup(hash_write_key(key)) == source


def test_rotate_adds_a_second_working_key(registry: SourceRegistry) -> None:
    source, first = registry.add("web")

    second = registry.rotate("web")

    assert second != first
    assert registry.lookup(hash_write_key(first)) == source
    assert registry.lookup(hash_write_key(second)) == source
    assert sorted(record.key_hash for record in registry.records()) == sorted(
        [hash_write_key(first), hash_write_key(second)]
    )


def test_rotate_of_an_unknown_name_fails(registry: SourceRegistry) -> None:
    registry.add("web")

    with pytest.raises(LookupError, match="no source named 'ghost'"):
        registry.rotate("ghost")
    assert len(registry.records()) == 1


def test_revoke_by_key_id_revokes_only_that_key(registry: SourceRegistry) -> None:
    source, first = registry.add("web")
    second = registry.rotate("web")
    key_id = hash_write_key(first)[:12]

    revoked = registry.revoke("web", key_id)

    assert [record.key_id for record in revoked] == [key_id]
    assert registry.lookup(hash_write_key(first)) is None
    assert registry.lookup(hash_write_key(second)) == source
    states = {record.key_id: record.revoked_at for record in registry.records()}
    assert states[key_id] is not None
    assert states[hash_write_key(second)[:12]] is None


def test_revoke_by_name_revokes_every_live_key_of_that_source_only(
    registry: SourceRegistry,
) -> None:
    _, first = registry.add("web")
    second = registry.rotate("web")
    other, other_key = registry.add("app")
    registry.revoke("web", hash_write_key(first)[:12])

    revoked = registry.revoke("web")

    # Only the key that was still live; the revoked one keeps its first revocation time.
    assert [record.key_hash for record in revoked] == [hash_write_key(second)]
    assert registry.lookup(hash_write_key(first)) is None
    assert registry.lookup(hash_write_key(second)) is None
    assert registry.lookup(hash_write_key(other_key)) == other
    with pytest.raises(LookupError, match="no live key for source 'web'"):
        registry.revoke("web")


def test_revoke_with_a_key_id_of_another_source_revokes_nothing(
    registry: SourceRegistry,
) -> None:
    web, web_key = registry.add("web")
    _, app_key = registry.add("app")

    with pytest.raises(LookupError, match="no live key for source 'web'"):
        registry.revoke("web", hash_write_key(app_key)[:12])
    assert registry.lookup(hash_write_key(web_key)) == web
    assert registry.lookup(hash_write_key(app_key)) is not None


def test_lookup_of_unknown_or_revoked_keys_is_none(registry: SourceRegistry) -> None:
    _, key = registry.add("web")
    assert registry.lookup(hash_write_key(key)) is not None

    registry.revoke("web")

    assert registry.lookup(hash_write_key(key)) is None
    assert registry.lookup(hash_write_key("never-issued")) is None
    # A lookup takes the hash, never the key itself.
    assert registry.lookup(key) is None


# ---------------------------------------------------------------------------------------------
# The collector-sources CLI against moto

LIST_LINE = re.compile(
    r"^(?P<name>[^\t]+)\t(?P<id>[0-9a-f]{16})\tkey (?P<key_id>[0-9a-f]{12})\t"
    r"created (?P<created>\S+)\t(?P<state>live|revoked \S+)$"
)


def cli(capsys: pytest.CaptureFixture[str], aws: Aws, *args: str) -> tuple[int, str, str]:
    local = [] if aws.data_dir is None else ["--data-dir", str(aws.data_dir)]
    code = main(["--table", aws.table, *local, *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_add(capsys: pytest.CaptureFixture[str], aws: Aws, name: str) -> str:
    code, out, _ = cli(capsys, aws, "add", name)
    assert code == 0
    [key] = re.findall(r"^write key (\S+)$", out, re.MULTILINE)
    return str(key)


def listed(out: str) -> list[re.Match[str]]:
    lines = out.splitlines()
    matches = [LIST_LINE.match(line) for line in lines]
    assert all(matches), lines
    return [match for match in matches if match]


def test_cli_add_prints_the_key_once(capsys: pytest.CaptureFixture[str], aws: Aws) -> None:
    code, out, err = cli(capsys, aws, "add", "web")

    assert code == 0
    [(name, source_id)] = re.findall(r"^source (\S+) \(([0-9a-f]{16})\)$", out, re.MULTILINE)
    [key] = re.findall(r"^write key (\S+)$", out, re.MULTILINE)
    assert name == "web"
    assert out.count(key) == 1
    assert key not in err
    assert "shown once" in err
    source = SourceRegistry(aws.dynamodb, aws.table).lookup(hash_write_key(key))
    assert source == Source(id=source_id, name="web")


def test_cli_list_shows_ids_and_state_never_keys(
    capsys: pytest.CaptureFixture[str], aws: Aws
) -> None:
    key = cli_add(capsys, aws, "web")

    code, out, err = cli(capsys, aws, "list")

    assert code == 0
    assert err == ""
    [line] = listed(out)
    assert line["name"] == "web"
    assert line["key_id"] == hash_write_key(key)[:12]
    assert line["state"] == "live"
    assert key not in out
    assert hash_write_key(key) not in out


def test_cli_revoke_then_list_shows_revoked(capsys: pytest.CaptureFixture[str], aws: Aws) -> None:
    key = cli_add(capsys, aws, "web")
    other = cli_add(capsys, aws, "app")

    code, out, _ = cli(capsys, aws, "revoke", "web")
    assert code == 0
    assert out == f"revoked key {hash_write_key(key)[:12]} of web\n"

    code, out, _ = cli(capsys, aws, "list")
    assert code == 0
    states = {line["name"]: line["state"] for line in listed(out)}
    assert states["web"].startswith("revoked ")
    assert states["app"] == "live"
    registry = SourceRegistry(aws.dynamodb, aws.table)
    assert registry.lookup(hash_write_key(key)) is None
    assert registry.lookup(hash_write_key(other)) is not None


def test_cli_rotate_and_revoke_one_key(capsys: pytest.CaptureFixture[str], aws: Aws) -> None:
    first = cli_add(capsys, aws, "web")
    code, out, _ = cli(capsys, aws, "rotate", "web")
    assert code == 0
    [second] = re.findall(r"^write key (\S+)$", out, re.MULTILINE)

    code, out, _ = cli(capsys, aws, "revoke", "web", "--key-id", hash_write_key(first)[:12])
    assert code == 0
    assert out == f"revoked key {hash_write_key(first)[:12]} of web\n"

    code, out, _ = cli(capsys, aws, "list")
    states = {line["key_id"]: line["state"] for line in listed(out)}
    assert states[hash_write_key(second)[:12]] == "live"
    assert states[hash_write_key(first)[:12]].startswith("revoked ")


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ([], ["rotate", "ghost"], "collector-sources: no source named 'ghost'"),
        ([], ["revoke", "ghost"], "collector-sources: no live key for source 'ghost'"),
        (["web"], ["add", "web"], "collector-sources: a source named 'web' exists"),
    ],
    ids=["rotate-unknown", "revoke-unknown", "add-existing"],
)
def test_cli_errors_exit_1_with_a_message(
    capsys: pytest.CaptureFixture[str],
    aws: Aws,
    setup: list[str],
    args: list[str],
    message: str,
) -> None:
    for name in setup:
        cli_add(capsys, aws, name)

    code, out, err = cli(capsys, aws, *args)

    assert code == 1
    assert out == ""
    assert err.startswith(message)


def test_cli_without_a_table_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, aws: Aws
) -> None:
    monkeypatch.delenv("IDENTITY_TABLE", raising=False)

    with pytest.raises(SystemExit) as exit_:
        main(["list"])

    assert exit_.value.code == 2
    assert "--table or IDENTITY_TABLE" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# SourceCache with a fake clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLookup:
    """A lookup by key hash over a mutable table, counting calls."""

    def __init__(self, known: dict[str, Source]) -> None:
        self.known = known
        self.calls: list[str] = []

    def __call__(self, key_hash: str) -> Source | None:
        self.calls.append(key_hash)
        return self.known.get(key_hash)


WEB = Source(id="src-web", name="web")
TTL = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookup() -> CountingLookup:
    return CountingLookup({hash_write_key("good-key"): WEB})


@pytest.fixture
def cache(lookup: CountingLookup, clock: Clock) -> SourceCache:
    return SourceCache(lookup, TTL, clock=clock)


def test_cache_looks_a_key_up_once_within_the_ttl(
    cache: SourceCache, lookup: CountingLookup, clock: Clock
) -> None:
    for step in range(10):
        clock.now = 1000.0 + step * (TTL - 0.001) / 9
        assert cache.source_for("good-key") == WEB

    assert lookup.calls == [hash_write_key("good-key")]


def test_cache_looks_a_key_up_again_after_the_ttl(
    cache: SourceCache, lookup: CountingLookup, clock: Clock
) -> None:
    assert cache.source_for("good-key") == WEB
    clock.now += TTL + 0.001

    assert cache.source_for("good-key") == WEB
    assert len(lookup.calls) == 2
    clock.now += 1
    assert cache.source_for("good-key") == WEB
    assert len(lookup.calls) == 2


def test_cache_forgets_a_revoked_key_within_the_ttl(
    cache: SourceCache, lookup: CountingLookup, clock: Clock
) -> None:
    start = clock.now
    assert cache.source_for("good-key") == WEB
    clock.now += 1
    del lookup.known[hash_write_key("good-key")]  # revoked

    # Still served from the warm cache until its entry expires ...
    assert cache.source_for("good-key") == WEB
    # ... and refused no later than TTL seconds after it was looked up.
    clock.now = start + TTL
    with pytest.raises(Unauthorized) as refused:
        cache.source_for("good-key")
    assert refused.value.code == "unknown_write_key"


def test_cache_caches_unknown_keys_too(
    cache: SourceCache, lookup: CountingLookup, clock: Clock
) -> None:
    for _ in range(5):
        with pytest.raises(Unauthorized) as refused:
            cache.source_for("bad-key")
        assert refused.value.code == "unknown_write_key"
        assert refused.value.status == 401
        clock.now += 1

    assert lookup.calls == [hash_write_key("bad-key")]
    clock.now += TTL
    with pytest.raises(Unauthorized):
        cache.source_for("bad-key")
    assert len(lookup.calls) == 2


def test_cache_keeps_keys_apart(cache: SourceCache, lookup: CountingLookup) -> None:
    assert cache.source_for("good-key") == WEB
    with pytest.raises(Unauthorized):
        cache.source_for("bad-key")
    assert cache.source_for("good-key") == WEB

    assert lookup.calls == [hash_write_key("good-key"), hash_write_key("bad-key")]


def test_cache_over_the_registry_stops_a_revoked_key_after_the_ttl(
    registry: SourceRegistry, clock: Clock
) -> None:
    source, key = registry.add("web")
    cache = SourceCache(registry.lookup, TTL, clock=clock)
    assert cache.source_for(key) == source

    registry.revoke("web")
    clock.now += TTL / 2
    assert cache.source_for(key) == source
    clock.now += TTL / 2

    with pytest.raises(Unauthorized) as refused:
        cache.source_for(key)
    assert refused.value.code == "unknown_write_key"


# ---------------------------------------------------------------------------------------------
# write_key_from


def basic(username: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "body"),
    [
        (basic("key-1"), {}),
        (basic("key-1", "ignored-password"), {}),
        ("basic " + basic("key-1").split()[1], {}),
        (None, {"writeKey": "key-1"}),
        (basic("key-1"), {"writeKey": "key-1"}),
    ],
    ids=["header", "header-with-password", "lowercase-scheme", "body", "both-equal"],
)
def test_write_key_from_accepts(authorization: str | None, body: dict[str, Any]) -> None:
    assert write_key_from(authorization, body) == "key-1"


@pytest.mark.parametrize(
    ("authorization", "body", "code"),
    [
        (None, {}, "missing_write_key"),
        (basic("key-1"), {"writeKey": "key-2"}, "conflicting_write_keys"),
        (None, {"writeKey": 12345}, "invalid_write_key"),
        (None, {"writeKey": ["key-1"]}, "invalid_write_key"),
        (basic("key-1"), {"writeKey": {"k": "key-1"}}, "invalid_write_key"),
        ("Bearer key-1", {}, "unsupported_authorization"),
        ("Bearer key-1", {"writeKey": "key-1"}, "unsupported_authorization"),
        ("Basic !!!not*base64", {}, "invalid_authorization"),
        ("Basic a2V5MQ", {}, "invalid_authorization"),
        ("Basic " + base64.b64encode(b"\xff\xfe:").decode(), {}, "invalid_authorization"),
        (basic(""), {}, "missing_write_key"),
        (basic("", "secret"), {}, "missing_write_key"),
        (None, {"writeKey": ""}, "missing_write_key"),
    ],
    ids=[
        "nothing",
        "both-different",
        "body-number",
        "body-list",
        "body-object-with-header",
        "bearer",
        "bearer-with-body",
        "garbled-base64",
        "bad-padding",
        "not-utf8",
        "empty-username",
        "empty-username-with-password",
        "empty-body-key",
    ],
)
def test_write_key_from_refuses(authorization: str | None, body: dict[str, Any], code: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        write_key_from(authorization, body)

    assert refused.value.code == code
    assert refused.value.status == 401
    assert refused.value.message


def test_write_key_from_never_echoes_the_keys_in_a_conflict() -> None:
    with pytest.raises(Unauthorized) as refused:
        write_key_from(basic("secret-a"), {"writeKey": "secret-b"})

    assert "secret-a" not in refused.value.message
    assert "secret-b" not in refused.value.message


# ---------------------------------------------------------------------------------------------
# Guards: short or ambiguous key ids, AWS failures in the CLI, a bounded cache


def test_revoke_refuses_a_key_id_too_short_to_be_one_key(registry: SourceRegistry) -> None:
    registry.add("web")
    registry.rotate("web")
    with pytest.raises(ValueError, match="at least 6 characters"):
        registry.revoke("web", key_id="")
    assert all(record.revoked_at is None for record in registry.records())


def test_revoke_refuses_a_key_id_that_matches_several_keys(
    registry: SourceRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collector.sources.MIN_KEY_ID", 1)
    registry.add("web")
    for _ in range(40):  # enough keys that two share a first hex digit
        registry.rotate("web")
    [(shared, count)] = Counter(r.key_hash[0] for r in registry.records()).most_common(1)
    assert count > 1
    with pytest.raises(ValueError, match=f"matches {count} keys"):
        registry.revoke("web", key_id=shared)
    assert all(record.revoked_at is None for record in registry.records())


def test_cli_reports_aws_failures_without_a_traceback(
    capsys: pytest.CaptureFixture[str], aws: Aws
) -> None:
    code = main(["--table", "no-such-table", "list"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("collector-sources: AWS refused or failed:")
    assert "ResourceNotFoundException" in err and "Traceback" not in err


def test_cache_stays_bounded_under_a_flood_of_unknown_keys(
    lookup: CountingLookup, clock: Clock
) -> None:
    cache = SourceCache(lookup, TTL, clock=clock, max_entries=100)
    for n in range(1000):
        with pytest.raises(Unauthorized):
            cache.source_for(f"made-up-{n}")
    assert len(cache._entries) == 100
    assert cache.source_for("good-key") == WEB


def test_cli_add_can_allow_forced_merges(capsys: pytest.CaptureFixture[str], aws: Aws) -> None:
    key = cli_add(capsys, aws, "web")
    code, out, _ = cli(capsys, aws, "add", "backend", "--allow-forced-merge")
    assert code == 0
    registry = SourceRegistry(aws.dynamodb, aws.table)
    trusted = registry.lookup(hash_write_key(re.findall(r"^write key (\S+)$", out, re.M)[0]))
    assert trusted is not None and trusted.may_force_merge is True
    browser = registry.lookup(hash_write_key(key))
    assert browser is not None and browser.may_force_merge is False
    code, out, _ = cli(capsys, aws, "list")
    assert [line.endswith("may force merges") for line in sorted(out.splitlines())] == [
        True,
        False,
    ]
