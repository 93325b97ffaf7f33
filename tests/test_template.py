"""template.yaml: lint-clean, and the schema, routes and API settings code and tests rely on."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.helpers import REGIONS

from collector.config import Settings
from collector.tools.localapi import ROUTES
from collector.tools.resources import (
    BUCKET_RESOURCE,
    TABLE_RESOURCE,
    TEMPLATE,
    load_template,
    properties,
)

from .conftest import Aws

FUNCTION = "IngestFunction"
API = "CollectorApi"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = load_template()
    return loaded


def function_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    policies = properties(template, FUNCTION)["Policies"]
    # Inline statements only: a managed policy or SAM policy template could grant anything.
    assert all(isinstance(policy, dict) and set(policy) == {"Statement"} for policy in policies)
    return [statement for policy in policies for statement in policy["Statement"]]


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


def test_api_is_a_rest_api(template: dict[str, Any]) -> None:
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert template["Resources"][API]["Type"] == "AWS::Serverless::Api"
    assert "AWS::Serverless::HttpApi" not in types
    assert not any(kind.startswith("AWS::ApiGatewayV2::") for kind in types)


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
