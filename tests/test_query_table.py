"""The Glue/Athena table in template.yaml reads what the collector really writes.

Real stored objects are produced by running every sample request (events/, as real clients send
them) plus full-spec messages and identity edge cases through `Collector.ingest` into moto S3,
with the real identity graph in moto DynamoDB. The table must have a column for every top-level
key of every message type, a struct field for every key under `collector`, SerDe mappings for
every camelCase key (the SerDe is case-sensitive), and partitions whose projection rebuilds
exactly the keys `storage.object_key` writes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.identity_store import IdentityGraph
from collector.ingest import Collector, IncomingRequest
from collector.sink import S3Sink
from collector.storage import EVENTS_PREFIX, EventStore, object_key
from collector.tools.resources import create_bucket, create_table, load_template, properties
from collector.tools.sample_events import sample_events

from .conftest import Aws

TABLE = "EventsTable"
MESSAGE_TYPES = {"identify", "track", "page", "screen", "group", "alias"}
# Every request lands in its own hour, so the partitions of many hours are exercised.
FIRST_RECEIVE = datetime(2026, 3, 1, 0, 41, 7, 250000, tzinfo=UTC)


@pytest.fixture(scope="module")
def table_input() -> dict[str, Any]:
    template: dict[str, Any] = load_template()
    table: dict[str, Any] = properties(template, TABLE)["TableInput"]
    return table


@pytest.fixture(scope="module")
def default_start_date() -> str:
    return str(load_template()["Parameters"]["EventsStartDate"]["Default"])


def serde_parameters(table_input: dict[str, Any]) -> dict[str, str]:
    params: dict[str, str] = table_input["StorageDescriptor"]["SerdeInfo"]["Parameters"]
    return params


def column_types(table_input: dict[str, Any]) -> dict[str, str]:
    return {c["Name"]: c["Type"] for c in table_input["StorageDescriptor"]["Columns"]}


def json_key_of(name: str, serde: dict[str, str]) -> str:
    """The JSON key a column or struct field reads: its mapping, else its (lower-case) name."""
    return serde.get(f"mapping.{name.lower()}", name.lower())


def parse_struct(type_text: str) -> dict[str, Any]:
    """`struct<a:string,b:struct<c:string>>` -> {"a": "string", "b": {"c": "string"}}."""
    position = 0

    def parse_type() -> Any:
        nonlocal position
        if type_text.startswith("struct<", position):
            position += len("struct<")
            fields: dict[str, Any] = {}
            while True:
                colon = type_text.index(":", position)
                name = type_text[position:colon]
                position = colon + 1
                fields[name] = parse_type()
                if type_text[position] == ">":
                    position += 1
                    return fields
                assert type_text[position] == ",", type_text[position:]
                position += 1
        match = re.compile(r"[a-z0-9_()]+").match(type_text, position)
        assert match, type_text[position:]
        position = match.end()
        return match.group()

    parsed = parse_type()
    assert position == len(type_text) and isinstance(parsed, dict), type_text
    return parsed


def substitute(value: Any, bucket: str) -> str:
    """A Fn::Sub string with the bucket filled in and ${!x} left as Athena's ${x}."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(text, str)
    return text.replace("${EventsBucket}", bucket).replace("${!", "${")


def java_to_strftime(pattern: str) -> str:
    """The Java date pattern of a date projection as strftime; only the letters it may use."""
    result = pattern
    for java, python in {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H"}.items():
        result = result.replace(java, python)
    assert not re.search(r"(?<!%)[A-Za-z]", result), pattern
    return result


def api_request(event: dict[str, Any]) -> IncomingRequest:
    headers = {name.lower(): value for name, value in (event["headers"] or {}).items()}
    return IncomingRequest(
        call=event["pathParameters"]["call"],
        body=event["body"],
        is_base64_encoded=event["isBase64Encoded"],
        request_id=event["requestContext"]["requestId"],
        authorization=headers.get("authorization"),
        content_encoding=headers.get("content-encoding"),
        ip=event["requestContext"]["identity"]["sourceIp"],
    )


def json_request(call: str, body: dict[str, Any], request_id: str) -> IncomingRequest:
    return IncomingRequest(
        call=call,
        body=orjson.dumps(body).decode(),
        is_base64_encoded=False,
        request_id=request_id,
        authorization=None,
        ip="203.0.113.5",
    )


def full_spec_batch() -> dict[str, Any]:
    """One message of each type with every field the Segment spec names, set."""
    common = {
        "userId": "user-full",
        "anonymousId": "anon-full",
        "timestamp": "2026-02-28T23:59:00.123Z",
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"}, "ip": "10.0.0.1"},
        "integrations": {"All": True},
        "version": 2,
        "channel": "server",
    }
    return {
        "writeKey": "any",
        "sentAt": "2026-02-28T23:59:01Z",
        "context": {"app": {"name": "batch-level"}},
        "batch": [
            {**common, "type": "identify", "messageId": "f-i", "traits": {"plan": "pro"}},
            {**common, "type": "track", "messageId": "f-t", "event": "E", "properties": {}},
            {**common, "type": "page", "messageId": "f-p", "name": "N", "category": "C"},
            {**common, "type": "screen", "messageId": "f-s", "name": "N", "category": "C"},
            {**common, "type": "group", "messageId": "f-g", "groupId": "g-1", "traits": {}},
            {**common, "type": "alias", "messageId": "f-a", "previousId": "anon-full"},
            # No messageId and no timestamp: both are filled in by the collector.
            {"type": "track", "event": "E", "anonymousId": "anon-bare"},
        ],
    }


def identity_edge_cases() -> dict[str, Any]:
    """Refused (placeholder id), forced alias and merged identities: every outcome field."""
    return {
        "writeKey": "any",
        "batch": [
            {"type": "identify", "messageId": "e-1", "userId": "undefined", "anonymousId": "a1"},
            {"type": "identify", "messageId": "e-2", "userId": "u-2", "anonymousId": "a2"},
            {"type": "identify", "messageId": "e-3", "userId": "u-3", "anonymousId": "a3"},
            {
                "type": "alias",
                "messageId": "e-4",
                "userId": "u-2",
                "previousId": "u-3",
                "integrations": {"Collector": {"mergeIdentified": True}},
            },
            {"type": "alias", "messageId": "e-5", "userId": "u-3", "previousId": "null"},
        ],
    }


@pytest.fixture(scope="module")
def stored_objects() -> dict[str, list[dict[str, Any]]]:
    """Key -> stored lines, for every request above, each received in a different hour."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        aws = Aws(s3, dynamodb, bucket="query-events", table="query-identity")
        create_bucket(s3, aws.bucket)
        create_table(dynamodb, aws.table)
        clock = iter(FIRST_RECEIVE + timedelta(hours=n, minutes=n) for n in range(1000))
        collector = Collector(
            Settings(events_bucket=aws.bucket, identity_table=aws.table),
            SourceCache(lambda _hash: Source("src-web", "web", may_force_merge=True), 60),
            S3Sink(EventStore(s3, aws.bucket), 6),
            IdentityGraph(dynamodb, aws.table),
            clock=lambda: next(clock),
        )
        requests = [
            api_request(event)
            for event in sample_events().values()
            if event["httpMethod"] == "POST" and event["pathParameters"]["call"] != "m"
        ]
        requests.append(json_request("batch", full_spec_batch(), "req-full"))
        requests.append(json_request("batch", identity_edge_cases(), "req-identity"))
        for request in requests:
            result = collector.ingest(request)
            assert not result.rejected, result.rejected
        return {key: aws.read_lines(key) for key in aws.keys(f"{EVENTS_PREFIX}/")}


@pytest.fixture(scope="module")
def stored_lines(stored_objects: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [line for lines in stored_objects.values() for line in lines]


def test_every_message_type_was_stored(stored_lines: list[dict[str, Any]]) -> None:
    assert {line["type"] for line in stored_lines} == MESSAGE_TYPES


def test_columns_cover_every_top_level_key_of_every_type(
    table_input: dict[str, Any], stored_lines: list[dict[str, Any]]
) -> None:
    serde = serde_parameters(table_input)
    readable = {json_key_of(name, serde) for name in column_types(table_input)}
    keys_by_type: dict[str, set[str]] = defaultdict(set)
    for line in stored_lines:
        keys_by_type[line["type"]].update(line)
    missing = {kind: sorted(keys - readable) for kind, keys in keys_by_type.items()}
    assert missing == {kind: [] for kind in keys_by_type}


def test_every_camel_case_key_is_mapped_because_the_serde_is_case_sensitive(
    table_input: dict[str, Any],
) -> None:
    serde = serde_parameters(table_input)
    assert serde["case.insensitive"].lower() == "false"
    names = [*column_types(table_input)]
    collector_type = column_types(table_input)["collector"]

    def field_names(fields: dict[str, Any]) -> list[str]:
        nested = [
            f for value in fields.values() if isinstance(value, dict) for f in field_names(value)
        ]
        return [*fields, *nested]

    names += field_names(parse_struct(collector_type))
    # Glue and Athena keep names in lower case: a mapping must say which JSON key each reads.
    unmapped = [n for n in names if n != n.lower() and f"mapping.{n.lower()}" not in serde]
    assert unmapped == []
    for key, target in serde.items():
        if key.startswith("mapping."):
            assert key == key.lower() and target.lower() == key.removeprefix("mapping.")


def test_columns_are_lower_case_strings_except_the_collector_struct(
    table_input: dict[str, Any],
) -> None:
    types = column_types(table_input)
    assert all(name == name.lower() for name in types)
    assert {name for name, kind in types.items() if kind != "string"} == {"collector"}


def test_timestamps_are_iso_strings_with_z(
    table_input: dict[str, Any], stored_lines: list[dict[str, Any]]
) -> None:
    # Stored as text for from_iso8601_timestamp(); the OpenX SerDe's own timestamp type would
    # drop the microseconds' meaning across engines.
    serde = serde_parameters(table_input)
    fields = ["timestamp", "originalTimestamp", "sentAt", "receivedAt"]
    columns = {json_key_of(name, serde): kind for name, kind in column_types(table_input).items()}
    assert {field: columns[field] for field in fields} == dict.fromkeys(fields, "string")
    for line in stored_lines:
        for field in fields:
            if field in line:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", line[field])


def test_json_object_fields_are_text_columns(
    table_input: dict[str, Any], stored_lines: list[dict[str, Any]]
) -> None:
    serde = serde_parameters(table_input)
    columns = {json_key_of(name, serde): kind for name, kind in column_types(table_input).items()}
    objects = {
        key for line in stored_lines for key, value in line.items() if isinstance(value, dict)
    }
    assert objects >= {"properties", "traits", "context", "integrations", "collector"}
    assert {key: columns[key] for key in objects - {"collector"}} == dict.fromkeys(
        objects - {"collector"}, "string"
    )


def test_collector_struct_covers_provenance_and_every_identity_outcome_field(
    table_input: dict[str, Any], stored_lines: list[dict[str, Any]]
) -> None:
    serde = serde_parameters(table_input)
    declared = parse_struct(column_types(table_input)["collector"])

    def readable(fields: dict[str, Any]) -> dict[str, Any]:
        return {
            json_key_of(name, serde): readable(value) if isinstance(value, dict) else value
            for name, value in fields.items()
        }

    structure = readable(declared)
    seen_identity: set[str] = set()
    for line in stored_lines:
        provenance = line["collector"]
        assert set(provenance) <= set(structure), provenance
        identity = provenance.get("identity")
        if identity is not None:
            seen_identity.update(identity)
            assert set(identity) <= set(structure["identity"]), identity
    # The edge cases produced every field the outcome record can have.
    assert (
        seen_identity
        == set(structure["identity"])
        == {"outcome", "personId", "reason", "detail", "forced"}
    )
    assert structure["identity"]["forced"] == "boolean"


def test_table_reads_gzip_ndjson_under_the_events_prefix(
    table_input: dict[str, Any], stored_objects: dict[str, list[dict[str, Any]]]
) -> None:
    descriptor = table_input["StorageDescriptor"]
    assert descriptor["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert descriptor["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert descriptor["Compressed"] is True
    assert table_input["Parameters"]["compressionType"] == "gzip"
    assert table_input["TableType"] == "EXTERNAL_TABLE"
    assert substitute(descriptor["Location"], "b") == f"s3://b/{EVENTS_PREFIX}/"
    assert stored_objects
    # TextInputFormat picks the codec by file extension.
    assert all(key.endswith(".json.gz") for key in stored_objects)


def test_partition_keys_are_the_hive_names_in_the_object_keys(
    table_input: dict[str, Any], stored_objects: dict[str, list[dict[str, Any]]]
) -> None:
    names = [key["Name"] for key in table_input["PartitionKeys"]]
    assert names == ["dt", "hour"]
    for key in stored_objects:
        segments = key.split("/")
        assert [segment.partition("=")[0] for segment in segments[1:-1]] == names


def test_projection_rebuilds_every_object_key_location(
    table_input: dict[str, Any], stored_objects: dict[str, list[dict[str, Any]]]
) -> None:
    params = table_input["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params["projection.dt.type"] == "date"
    assert params["projection.hour.type"] == "integer"
    assert params["projection.hour.range"] == "0,23"
    assert params["projection.dt.interval"] == "1"
    assert params["projection.dt.interval.unit"] == "DAYS"
    template = substitute(params["storage.location.template"], "bucket")
    date_format = java_to_strftime(params["projection.dt.format"])
    digits = int(params["projection.hour.digits"])

    def projected(moment: datetime) -> str:
        values = {"dt": moment.strftime(date_format), "hour": str(moment.hour).zfill(digits)}
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)

    moments = [datetime(2026, 11, 22, hour, 59, tzinfo=UTC) for hour in range(24)]
    moments += [datetime(2027, 1, 9, 3, tzinfo=UTC)]
    for moment in moments:
        key = object_key(EVENTS_PREFIX, moment, "f" * 32)
        location, _, file_name = f"s3://bucket/{key}".rpartition("/")
        assert f"{location}/" == projected(moment)
        assert "/" not in file_name
    # The stored objects too: each one's partition values parse back to its receive hour.
    for key in stored_objects:
        match = re.fullmatch(r"events/dt=([^/]+)/hour=([^/]+)/[0-9a-f]{32}\.json\.gz", key)
        assert match, key
        moment = datetime.strptime(f"{match[1]} {match[2]}", f"{date_format} %H").replace(
            tzinfo=UTC
        )
        assert f"s3://bucket/{key}".startswith(projected(moment))


def test_projection_range_starts_at_the_parameter_and_ends_now(
    table_input: dict[str, Any], default_start_date: str
) -> None:
    date_range = table_input["Parameters"]["projection.dt.range"]
    assert date_range == {"Fn::Sub": "${EventsStartDate},NOW"}
    assert date.fromisoformat(default_start_date) <= FIRST_RECEIVE.date()
