"""template.yaml: lint-clean, and the schema, routes and API settings code and tests rely on."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from cfnlint.api import ManualArgs, lint_file
from cfnlint.helpers import REGIONS

from collector.config import Settings
from collector.tools.http_api import BROWSER_ROUTES
from collector.tools.localapi import ROUTES
from collector.tools.resources import (
    BUCKET_RESOURCE,
    TABLE_RESOURCE,
    TEMPLATE,
    properties,
)

from .conftest import Aws

FUNCTION = "IngestFunction"
API = "CollectorApi"
BROWSER_FUNCTION = "BrowserFunction"
BROWSER_API = "BrowserApi"
REPO = Path(__file__).resolve().parents[1]


def function_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    policies = properties(template, FUNCTION)["Policies"]
    # Inline statements only: a managed policy or SAM policy template could grant anything.
    assert all(isinstance(policy, dict) and set(policy) == {"Statement"} for policy in policies)
    return [conditional(statement) for policy in policies for statement in policy["Statement"]]


def conditional(statement: dict[str, Any]) -> dict[str, Any]:
    """A statement included only under a condition (Fn::If, else nothing), as it is then."""
    if "Fn::If" not in statement:
        return statement
    _, included, otherwise = statement["Fn::If"]
    assert otherwise == {"Ref": "AWS::NoValue"}
    return dict(included)


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def resource_text(resource: Any) -> str:
    """A resource ARN as written: a plain string or the string of an Fn::Sub."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    return resource if isinstance(resource, str) else ""


def test_cfn_lint_finds_nothing_in_any_region() -> None:
    matches = lint_file(TEMPLATE, ManualArgs(regions=REGIONS))
    assert [str(match) for match in matches] == []


def test_table_has_template_keys(aws: Aws, template: dict[str, Any]) -> None:
    table = aws.dynamodb.describe_table(TableName=aws.table)["Table"]
    assert table["KeySchema"] == properties(template, TABLE_RESOURCE)["KeySchema"]


def test_table_has_template_attribute_definitions(aws: Aws, template: dict[str, Any]) -> None:
    table = aws.dynamodb.describe_table(TableName=aws.table)["Table"]
    declared = properties(template, TABLE_RESOURCE)["AttributeDefinitions"]
    key = "AttributeName"
    assert sorted(table["AttributeDefinitions"], key=lambda a: a[key]) == sorted(
        declared, key=lambda a: a[key]
    )


def test_table_has_template_ttl_attribute(aws: Aws, template: dict[str, Any]) -> None:
    ttl = aws.dynamodb.describe_time_to_live(TableName=aws.table)["TimeToLiveDescription"]
    declared = properties(template, TABLE_RESOURCE)["TimeToLiveSpecification"]
    assert declared["Enabled"] is True
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (declared["AttributeName"], "ENABLED")


def test_bucket_blocks_all_public_access(aws: Aws, template: dict[str, Any]) -> None:
    block = aws.s3.get_public_access_block(Bucket=aws.bucket)["PublicAccessBlockConfiguration"]
    declared = properties(template, BUCKET_RESOURCE)["PublicAccessBlockConfiguration"]
    assert block == declared
    assert set(block) == {
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    }
    assert all(value is True for value in block.values())


def test_bucket_has_template_encryption(aws: Aws, template: dict[str, Any]) -> None:
    rules = aws.s3.get_bucket_encryption(Bucket=aws.bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    declared = properties(template, BUCKET_RESOURCE)["BucketEncryption"]
    [declared_rule] = declared["ServerSideEncryptionConfiguration"]
    algorithm = declared_rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert [rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in rules] == [
        algorithm
    ]


def test_bucket_has_template_versioning(aws: Aws, template: dict[str, Any]) -> None:
    status = aws.s3.get_bucket_versioning(Bucket=aws.bucket).get("Status")
    declared = properties(template, BUCKET_RESOURCE)["VersioningConfiguration"]["Status"]
    assert status == declared == "Enabled"


def test_local_routes_are_the_template_api_events(template: dict[str, Any]) -> None:
    events = properties(template, FUNCTION)["Events"].values()
    api_events = [event["Properties"] for event in events if event["Type"] == "Api"]
    declared = sorted((event["Method"].upper(), event["Path"]) for event in api_events)
    assert sorted(ROUTES) == declared


def test_every_api_event_is_on_the_collector_api(template: dict[str, Any]) -> None:
    events = properties(template, FUNCTION)["Events"].values()
    assert [event["Properties"]["RestApiId"] for event in events] == [{"Ref": API}] * len(events)


def test_api_is_a_rest_api_and_the_browser_door_the_only_http_api(
    template: dict[str, Any],
) -> None:
    kinds = {name: resource["Type"] for name, resource in template["Resources"].items()}
    assert kinds[API] == "AWS::Serverless::Api"
    assert [name for name, kind in kinds.items() if kind == "AWS::Serverless::HttpApi"] == [
        BROWSER_API
    ]
    assert not any(kind.startswith("AWS::ApiGatewayV2::") for kind in kinds.values())


def test_browser_routes_are_the_template_http_api_events(template: dict[str, Any]) -> None:
    events = properties(template, BROWSER_FUNCTION)["Events"].values()
    assert {event["Type"] for event in events} == {"HttpApi"}
    declared = sorted((e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events)
    assert sorted(BROWSER_ROUTES) == declared
    for event in events:
        assert event["Properties"]["ApiId"] == {"Ref": BROWSER_API}
        assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    # The identity read stays IAM-only, on the REST API.
    assert not [path for _, path in BROWSER_ROUTES if "identities" in path]


def test_browser_function_is_the_ingest_function_behind_another_edge(
    template: dict[str, Any],
) -> None:
    ingest, browser = properties(template, FUNCTION), properties(template, BROWSER_FUNCTION)
    for name in ("Runtime", "Architectures", "Timeout", "Layers"):
        assert browser[name] == ingest[name], name
    # Its own memory: a beacon does not wait on its answer, so it may run on less CPU.
    assert browser["MemorySize"] == {"Ref": "BrowserMemorySize"}
    # The same role, so exactly the permissions ingestion has, written once.
    assert browser["Role"] == {"Fn::GetAtt": [f"{FUNCTION}Role", "Arn"]}
    assert "Policies" not in browser
    variables = dict(browser["Environment"]["Variables"])
    rest_url = variables.pop("REST_API_URL")
    assert variables == ingest["Environment"]["Variables"]
    assert "${CollectorApi}.execute-api" in rest_url["Fn::Sub"]
    assert "REST_API_URL" in {field.name.upper() for field in fields(Settings)}


def test_browser_function_builds_like_the_others(template: dict[str, Any]) -> None:
    resource = template["Resources"][BROWSER_FUNCTION]
    assert resource["Metadata"] == {"BuildMethod": "makefile"}
    code = REPO / resource["Properties"]["CodeUri"]
    assert f"build-{BROWSER_FUNCTION}:" in (code / "Makefile").read_text()
    module, handler = resource["Properties"]["Handler"].split(".")
    assert f"from collector.browser_api import {handler}" in (code / f"{module}.py").read_text()


def test_browser_api_is_throttled_logged_and_leaves_cors_to_the_function(
    template: dict[str, Any],
) -> None:
    api_properties = properties(template, BROWSER_API)
    assert api_properties["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
        "DetailedMetricsEnabled": True,
    }
    logs = api_properties["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["BrowserAccessLogGroup", "Arn"]}
    # Like the REST API's access log: no headers (write keys), no bodies.
    assert "header" not in logs["Format"].lower() and "body" not in logs["Format"].lower()
    # With a CorsConfiguration the API would answer preflights itself and override the
    # function's CORS headers; the function answers them, as on the REST door.
    assert "CorsConfiguration" not in api_properties
    assert "StageName" not in api_properties  # $default: the URL has no stage segment
    url = template["Outputs"]["BrowserApiUrl"]["Value"]["Fn::Sub"]
    assert url == "https://${BrowserApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"


def test_api_passes_every_body_as_binary(template: dict[str, Any]) -> None:
    assert properties(template, API)["BinaryMediaTypes"] == ["*~1*"]


def test_api_does_not_inflate_gzip_itself(template: dict[str, Any]) -> None:
    assert "MinimumCompressionSize" not in properties(template, API)


def test_function_policy_has_no_wildcard_action(template: dict[str, Any]) -> None:
    actions = [a for s in function_statements(template) for a in as_list(s["Action"])]
    assert actions
    assert [action for action in actions if "*" in action] == []


def test_function_may_make_the_profiles_calls_on_the_table_only(template: dict[str, Any]) -> None:
    """ProfileStore reads with BatchGetItem and writes with PutItem (alone or as the Put items
    of TransactWriteItems, which IAM checks as PutItem)."""
    granted = {
        action: as_list(s["Resource"])
        for s in function_statements(template)
        for action in as_list(s["Action"])
    }
    table = {"Fn::GetAtt": ["IdentityTable", "Arn"]}
    for action in ("dynamodb:BatchGetItem", "dynamodb:PutItem"):
        assert granted[action] == [table], action


def test_function_policy_has_no_wildcard_resource(template: dict[str, Any]) -> None:
    statements = function_statements(template)
    assert all("NotAction" not in s and "NotResource" not in s for s in statements)
    resources = [resource_text(r) for s in statements for r in as_list(s["Resource"])]
    # "*", "arn:...:*" or a whole bucket's objects.
    too_wide = [r for r in resources if r == "*" or r.endswith((":*", "}/*"))]
    assert too_wide == []


def test_function_puts_objects_only_under_events_and_rejected(template: dict[str, Any]) -> None:
    put_resources = sorted(
        resource_text(resource)
        for statement in function_statements(template)
        if "s3:PutObject" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    )
    assert put_resources == [
        "${EventsBucket.Arn}/events/*",
        "${EventsBucket.Arn}/rejected/*",
    ]


def test_the_dedupe_settings_reach_the_function_and_the_lease_outlives_it(
    template: dict[str, Any],
) -> None:
    function = properties(template, FUNCTION)
    variables = function["Environment"]["Variables"]
    assert variables["DEDUPE_SCOPE"] == {"Ref": "DedupeScope"}
    assert variables["DEDUPE_WINDOW_HOURS"] == {"Ref": "DedupeWindowHours"}
    assert template["Parameters"]["DedupeScope"]["AllowedValues"] == ["message", "request"]
    assert template["Parameters"]["DedupeScope"]["Default"] == "message"
    # A takeover after the lease must never race an invocation still writing.
    assert float(variables["CLAIM_LEASE_SECONDS"]) >= 2 * function["Timeout"]
    settings = {field.name.upper() for field in fields(Settings)}
    assert {name for name in variables if not name.startswith("POWERTOOLS_")} <= settings


# --- the Firehose sink (EventSink firehose) --------------------------------------------------

FIREHOSE_RESOURCES = (
    "EventsDeliveryStream",
    "DeliveryRole",
    "DeliveryLogGroup",
    "DeliveryLogStream",
)


def test_firehose_resources_exist_only_when_chosen(template: dict[str, Any]) -> None:
    assert template["Conditions"]["UsesFirehose"] == {
        "Fn::Equals": [{"Ref": "EventSink"}, "firehose"]
    }
    assert template["Parameters"]["EventSink"]["Default"] == "s3"
    for name in FIREHOSE_RESOURCES:
        assert template["Resources"][name]["Condition"] == "UsesFirehose"
    [statement] = [
        s for s in properties(template, FUNCTION)["Policies"][0]["Statement"] if "Fn::If" in s
    ]
    condition, allowed, _ = statement["Fn::If"]
    assert condition == "UsesFirehose"
    assert allowed["Action"] == "firehose:PutRecordBatch"
    assert allowed["Resource"] == {"Fn::GetAtt": ["EventsDeliveryStream", "Arn"]}


def test_firehose_delivers_gzip_into_the_events_layout(template: dict[str, Any]) -> None:
    destination = properties(template, "EventsDeliveryStream")["ExtendedS3DestinationConfiguration"]
    # The same Hive partitions as the S3 sink's object keys, on Firehose's arrival time (UTC).
    assert destination["Prefix"] == "events/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
    assert destination["ErrorOutputPrefix"].startswith("firehose-errors/")
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["FileExtension"] == ".json.gz"
    assert destination["BufferingHints"] == {
        "IntervalInSeconds": {"Ref": "FirehoseBufferSeconds"},
        "SizeInMBs": {"Ref": "FirehoseBufferMegabytes"},
    }
    assert destination["BucketARN"] == {"Fn::GetAtt": ["EventsBucket", "Arn"]}
    rules = properties(template, "EventsBucket")["LifecycleConfiguration"]["Rules"]
    assert "firehose-errors/" in [rule.get("Prefix") for rule in rules]


def test_the_delivery_role_writes_only_the_events_and_its_errors(template: dict[str, Any]) -> None:
    role = properties(template, "DeliveryRole")
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "AWS::AccountId"}}}
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    actions = [action for s in statements for action in as_list(s["Action"])]
    assert [action for action in actions if "*" in action] == []
    [writes] = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert sorted(resource_text(r) for r in writes["Resource"]) == [
        "${EventsBucket.Arn}/events/*",
        "${EventsBucket.Arn}/firehose-errors/*",
    ]


def test_the_sink_reaches_the_function_and_firehose_needs_the_ledger(
    template: dict[str, Any],
) -> None:
    variables = properties(template, FUNCTION)["Environment"]["Variables"]
    assert variables["EVENT_SINK"] == {"Ref": "EventSink"}
    assert variables["DELIVERY_STREAM"] == {
        "Fn::If": ["UsesFirehose", {"Ref": "EventsDeliveryStream"}, ""]
    }
    rule = template["Rules"]["FirehoseNeedsTheLedger"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EventSink"}, "firehose"]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "DedupeScope"}, "message"]}
