"""Security and operations settings of template.yaml, each one asserted (issue 4).

Checked on the template as written and, where SAM generates the resources (the function's role,
the REST API body, the stage, the Lambda permissions), on the SAM-transformed template as well.
samtranslator pins a pydantic that clashes with the runtime pin, so it is not in the dev venv:
the transform runs in .venv-sam (created by `make package`) when it exists, in-process when
samtranslator is importable, and those tests are skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collector.tools.resources import TEMPLATE, load_template, properties

ROOT = Path(__file__).resolve().parents[1]
SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
API_SOURCE = ROOT / "layers" / "collector" / "collector" / "api.py"
FUNCTION = "IngestFunction"
API = "CollectorApi"
BROWSER_FUNCTION = "BrowserFunction"
BROWSER_API = "BrowserApi"
IDENTITIES_PATH = "/v1/identities/{distinctId}"
NO_ACTION = {"Ref": "AWS::NoValue"}
# Managed policies a service needs that cannot be scoped further: Lambda's and API Gateway's
# log delivery (CreateLogGroup/CreateLogStream/PutLogEvents on their own log groups).
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "service-role/AmazonAPIGatewayPushToCloudWatchLogs",
}

# Runs inside the sam venv: the template with local code paths replaced by S3 URIs (as
# `sam deploy` does after uploading), transformed offline (no IAM look-ups are needed: every
# policy is inline or given by ARN).
_TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

with open(sys.argv[1]) as f:
    template = yaml_parse(f.read())
for resource in template["Resources"].values():
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::Serverless::Function":
        props["CodeUri"] = "s3://artifacts/function.zip"
    if resource["Type"] == "AWS::Serverless::LayerVersion":
        props["ContentUri"] = "s3://artifacts/layer.zip"

class NoManagedPolicies:
    def load(self):
        return {}

json.dump(transform(template, {"AWS::Region": "us-east-1"}, NoManagedPolicies()), sys.stdout)
"""


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    template: dict[str, Any] = load_template()
    return template


@pytest.fixture(scope="module")
def maybe_transformed() -> dict[str, Any] | None:
    """The SAM-transformed template, or None where samtranslator is not available."""
    if importlib.util.find_spec("samtranslator") is not None:
        command = [sys.executable, "-c", _TRANSFORM, str(TEMPLATE)]
    elif SAM_PYTHON.exists():
        command = [str(SAM_PYTHON), "-c", _TRANSFORM, str(TEMPLATE)]
    else:
        return None
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    template: dict[str, Any] = json.loads(result.stdout)
    return template


@pytest.fixture(scope="module")
def transformed(maybe_transformed: dict[str, Any] | None) -> dict[str, Any]:
    if maybe_transformed is None:
        pytest.skip("samtranslator unavailable: `make package` creates .venv-sam with it")
    return maybe_transformed


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource.get("Properties", {})
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def text_of(value: Any) -> str:
    """A string, or the template string of an Fn::Sub (its first item when given a list)."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    return value if isinstance(value, str) else json.dumps(value)


def evaluate(node: Any, parameters: dict[str, str], conditions: dict[str, Any]) -> Any:
    """Just enough of CloudFormation's intrinsics to decide conditions and Fn::If."""
    if isinstance(node, dict) and len(node) == 1:
        [(name, args)] = node.items()
        if name == "Ref":
            return parameters.get(args, node)
        if name == "Fn::Equals":
            left, right = (evaluate(arg, parameters, conditions) for arg in args)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not evaluate(args[0], parameters, conditions)
        if name == "Condition":
            return evaluate(conditions[args], parameters, conditions)
        if name == "Fn::If":
            condition, yes, no = args
            chosen = yes if evaluate(conditions[condition], parameters, conditions) else no
            return evaluate(chosen, parameters, conditions)
    if isinstance(node, list):
        return [evaluate(item, parameters, conditions) for item in node]
    return node


# --- S3 ------------------------------------------------------------------------------------


def test_every_bucket_is_encrypted_at_rest(raw: dict[str, Any]) -> None:
    buckets = of_type(raw, "AWS::S3::Bucket")
    assert buckets
    for name, props in buckets.items():
        [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        algorithm = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert algorithm in {"AES256", "aws:kms", "aws:kms:dsse"}, name


def test_every_bucket_blocks_public_access_and_acls(raw: dict[str, Any]) -> None:
    for name, props in of_type(raw, "AWS::S3::Bucket").items():
        block = props["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"],
            True,
        ), name
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_every_bucket_denies_requests_without_tls(raw: dict[str, Any]) -> None:
    policies = of_type(raw, "AWS::S3::BucketPolicy")
    for bucket in of_type(raw, "AWS::S3::Bucket"):
        [document] = [
            p["PolicyDocument"] for p in policies.values() if p["Bucket"] == {"Ref": bucket}
        ]
        denials = [
            statement
            for statement in document["Statement"]
            if statement["Effect"] == "Deny"
            and statement["Principal"] == "*"
            and statement["Action"] in ("s3:*", ["s3:*"])
            and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert len(denials) == 1, bucket
        resources = [text_of(r) for r in as_list(denials[0]["Resource"])]
        assert {"Fn::GetAtt": [bucket, "Arn"]} in as_list(denials[0]["Resource"])
        assert f"${{{bucket}.Arn}}/*" in resources


def test_events_bucket_is_versioned_and_the_choice_is_documented(raw: dict[str, Any]) -> None:
    props = properties(raw, "EventsBucket")
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "ObjectLockEnabled" not in props
    # Versioning without expiry of old versions would keep every overwritten object forever.
    [housekeeping] = [
        rule for rule in props["LifecycleConfiguration"]["Rules"] if rule["Id"] == "housekeeping"
    ]
    assert housekeeping["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "Versioning" in deploy_doc and "Object Lock" in deploy_doc


def test_data_is_retained_when_the_stack_is_deleted(raw: dict[str, Any]) -> None:
    for name in ("EventsBucket", "IdentityTable"):
        resource = raw["Resources"][name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain")


# --- DynamoDB ------------------------------------------------------------------------------


def test_table_has_pitr_deletion_protection_and_encryption(raw: dict[str, Any]) -> None:
    tables = of_type(raw, "AWS::DynamoDB::Table")
    assert tables
    for props in tables.values():
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["DeletionProtectionEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True


# --- IAM -----------------------------------------------------------------------------------


def wildcard_problems(statements: list[dict[str, Any]]) -> list[str]:
    problems = []
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"NotAction/NotResource in {statement}")
        for action in as_list(statement.get("Action", [])):
            if "*" in text_of(action):
                problems.append(f"action {action}")
        for resource in as_list(statement.get("Resource", [])):
            text = text_of(resource)
            if text == "*" or text.endswith((":*", "}/*")):
                problems.append(f"resource {text}")
    return problems


def test_role_policies_have_no_wildcards_after_the_sam_transform(
    transformed: dict[str, Any],
) -> None:
    roles = of_type(transformed, "AWS::IAM::Role")
    assert {"IngestFunctionRole", "ApiGatewayLoggingRole"} <= set(roles)
    for name, props in roles.items():
        statements = [
            statement
            for policy in props.get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ]
        assert wildcard_problems(statements) == [], name
        managed = {text_of(arn).split(":policy/")[-1] for arn in props.get("ManagedPolicyArns", [])}
        assert managed <= ALLOWED_MANAGED_POLICIES, name
    assert not of_type(transformed, "AWS::IAM::Policy")
    assert not of_type(transformed, "AWS::IAM::ManagedPolicy")


def test_function_policies_are_inline_and_scoped(raw: dict[str, Any]) -> None:
    policies = properties(raw, FUNCTION)["Policies"]
    assert all(isinstance(policy, dict) and set(policy) == {"Statement"} for policy in policies)
    statements = [statement for policy in policies for statement in policy["Statement"]]
    assert wildcard_problems(statements) == []
    assert "Role" not in properties(raw, FUNCTION)
    # The browser door's function runs under the ingest function's role, nothing more.
    browser = properties(raw, BROWSER_FUNCTION)
    assert browser["Role"] == {"Fn::GetAtt": [f"{FUNCTION}Role", "Arn"]}
    assert "Policies" not in browser


def test_lambda_permissions_are_for_this_api_only(transformed: dict[str, Any]) -> None:
    permissions = of_type(transformed, "AWS::Lambda::Permission")
    # Each function may be invoked by its own door only.
    door = {FUNCTION: API, BROWSER_FUNCTION: BROWSER_API}
    assert {props["FunctionName"]["Ref"] for props in permissions.values()} == set(door)
    for name, props in permissions.items():
        assert props["Principal"] == "apigateway.amazonaws.com", name
        sub = props["SourceArn"]["Fn::Sub"]
        assert sub[1]["__ApiId__"] == {"Ref": door[props["FunctionName"]["Ref"]]}, name


# --- API -----------------------------------------------------------------------------------


def test_identities_route_requires_iam_as_written(raw: dict[str, Any]) -> None:
    events = properties(raw, FUNCTION)["Events"]
    [identities] = [
        e["Properties"] for e in events.values() if "identities" in e["Properties"]["Path"]
    ]
    assert (identities["Method"], identities["Path"]) == ("GET", IDENTITIES_PATH)
    assert identities["Auth"]["Authorizer"] == "AWS_IAM"
    # API Gateway's own permission invokes the function, not the caller's credentials.
    assert identities["Auth"]["InvokeRole"] == "NONE"
    others = [e["Properties"] for e in events.values() if e["Properties"] is not identities]
    assert all("Auth" not in other for other in others)


def test_identities_route_requires_sigv4_after_the_sam_transform(
    transformed: dict[str, Any],
) -> None:
    body = properties(transformed, API)["Body"]
    schemes = body["components"]["securitySchemes"]
    get = body["paths"][IDENTITIES_PATH]["get"]
    [(scheme, [])] = [item for requirement in get["security"] for item in requirement.items()]
    assert schemes[scheme]["x-amazon-apigateway-authtype"] == "awsSigv4"
    # No caller-credentials integration (arn:aws:iam::*:user/*).
    assert "credentials" not in get["x-amazon-apigateway-integration"]
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            if (path, method) != (IDENTITIES_PATH, "get"):
                assert "security" not in operation, (path, method)


def test_stage_throttles_every_method(
    raw: dict[str, Any], maybe_transformed: dict[str, Any] | None
) -> None:
    expected = {
        "ResourcePath": "/*",
        "HttpMethod": "*",
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
        "MetricsEnabled": True,
    }
    assert properties(raw, API)["MethodSettings"] == [expected]
    if maybe_transformed is not None:
        [stage] = of_type(maybe_transformed, "AWS::ApiGateway::Stage").values()
        assert stage["MethodSettings"] == [expected]
    parameters = raw["Parameters"]
    # Below the account's default 10,000 rps / 5,000 burst, so this API cannot starve others.
    assert 0 < parameters["ThrottleRateLimit"]["Default"] < 10_000
    assert 0 < parameters["ThrottleBurstLimit"]["Default"] <= 5_000


def test_browser_api_throttles_every_route(
    raw: dict[str, Any], maybe_transformed: dict[str, Any] | None
) -> None:
    expected = {
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
        "DetailedMetricsEnabled": True,
    }
    assert properties(raw, BROWSER_API)["DefaultRouteSettings"] == expected
    if maybe_transformed is not None:
        [stage] = of_type(maybe_transformed, "AWS::ApiGatewayV2::Stage").values()
        assert stage["DefaultRouteSettings"] == expected
        assert stage["StageName"] == "$default"


def test_every_log_group_has_retention_and_is_used(raw: dict[str, Any]) -> None:
    groups = of_type(raw, "AWS::Logs::LogGroup")
    assert set(groups) == {
        "IngestLogGroup",
        "IdentityExportLogGroup",
        "ApiAccessLogGroup",
        "BrowserLogGroup",
        "BrowserAccessLogGroup",
        "DeliveryLogGroup",
    }
    for props in groups.values():
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert properties(raw, FUNCTION)["LoggingConfig"]["LogGroup"] == {"Ref": "IngestLogGroup"}
    browser = properties(raw, BROWSER_FUNCTION)["LoggingConfig"]["LogGroup"]
    assert browser == {"Ref": "BrowserLogGroup"}
    browser_access = properties(raw, BROWSER_API)["AccessLogSettings"]["DestinationArn"]
    assert browser_access == {"Fn::GetAtt": ["BrowserAccessLogGroup", "Arn"]}
    export = properties(raw, "IdentityExportFunction")["LoggingConfig"]["LogGroup"]
    assert export == {"Ref": "IdentityExportLogGroup"}
    destination = properties(raw, API)["AccessLogSetting"]["DestinationArn"]
    assert destination == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    delivery = properties(raw, "EventsDeliveryStream")["ExtendedS3DestinationConfiguration"]
    assert delivery["CloudWatchLoggingOptions"]["LogGroupName"] == {"Ref": "DeliveryLogGroup"}
    assert 1 <= raw["Parameters"]["LogRetentionDays"]["Default"] <= 3653


# --- Lambda --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", None), ("100", "100")])
def test_reserved_concurrency_parameter_is_wired(
    raw: dict[str, Any],
    maybe_transformed: dict[str, Any] | None,
    value: str,
    expected: str | None,
) -> None:
    parameter = raw["Parameters"]["ReservedConcurrency"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 0, 0)
    declarations = [properties(raw, FUNCTION)]
    if maybe_transformed is not None:
        # The ingest function's; the export's concurrency is one per stream shard already.
        declarations.append(of_type(maybe_transformed, "AWS::Lambda::Function")[FUNCTION])
    for declared in declarations:
        result = evaluate(
            declared["ReservedConcurrentExecutions"],
            {"ReservedConcurrency": value},
            raw["Conditions"],
        )
        # 0 must set nothing: ReservedConcurrentExecutions 0 would stop the function.
        assert result == (NO_ACTION if expected is None else expected)


# --- Alarms --------------------------------------------------------------------------------


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return of_type(template, "AWS::CloudWatch::Alarm")


def metric_stats(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metric id -> (namespace, name, dimensions, stat) of a metric-math alarm."""
    stats = {}
    for query in alarm["Metrics"]:
        if "MetricStat" in query:
            assert query["ReturnData"] is False
            stat = query["MetricStat"]
            stats[query["Id"]] = {
                "namespace": stat["Metric"]["Namespace"],
                "name": stat["Metric"]["MetricName"],
                "dimensions": {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]},
                "stat": stat["Stat"],
            }
    return stats


def expression(alarm: dict[str, Any]) -> str:
    [returned] = [query for query in alarm["Metrics"] if query.get("ReturnData", True)]
    text: str = returned["Expression"]
    # The expression uses every metric and nothing else.
    assert set(re.findall(r"\b[a-z][A-Za-z0-9_]*\b", text)) - {"IF"} == set(metric_stats(alarm))
    return text


def emitted_metrics() -> set[str]:
    return set(re.findall(r'add_metric\(name="(\w+)"', API_SOURCE.read_text()))


def powertools(raw: dict[str, Any]) -> tuple[str, str]:
    variables = properties(raw, FUNCTION)["Environment"]["Variables"]
    return variables["POWERTOOLS_METRICS_NAMESPACE"], variables["POWERTOOLS_SERVICE_NAME"]


@pytest.mark.parametrize("topic", ["", "arn:aws:sns:eu-west-1:123456789012:ops"])
def test_alarms_notify_the_topic_parameter_when_set(raw: dict[str, Any], topic: str) -> None:
    assert raw["Parameters"]["AlarmTopicArn"]["Default"] == ""
    found = alarms(raw)
    assert len(found) == 5
    for name, alarm in found.items():
        for actions in ("AlarmActions", "OKActions"):
            result = evaluate(alarm[actions], {"AlarmTopicArn": topic}, raw["Conditions"])
            assert result == ([topic] if topic else NO_ACTION), (name, actions)
        assert alarm["TreatMissingData"] == "notBreaching"


def test_api_5xx_rate_alarm(raw: dict[str, Any], maybe_transformed: dict[str, Any] | None) -> None:
    alarm = alarms(raw)["Api5xxRateAlarm"]
    stats = metric_stats(alarm)
    dimensions = {"ApiName": {"Ref": "AWS::StackName"}, "Stage": {"Ref": "StageName"}}
    assert stats == {
        "errors": {"namespace": "AWS/ApiGateway", "name": "5XXError", "dimensions": dimensions}
        | {"stat": "Sum"},
        "requests": {"namespace": "AWS/ApiGateway", "name": "Count", "dimensions": dimensions}
        | {"stat": "Sum"},
    }
    assert "errors / requests" in expression(alarm)
    assert 0 < alarm["Threshold"] < 1 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    # The ApiName dimension is the REST API's name, which SAM takes from the OpenAPI title.
    assert "Name" not in properties(raw, API)
    if maybe_transformed is not None:
        rest_api = properties(maybe_transformed, API)
        assert "Name" not in rest_api
        assert rest_api["Body"]["info"]["title"] == {"Ref": "AWS::StackName"}


def test_browser_door_5xx_rate_alarm(raw: dict[str, Any]) -> None:
    """An HTTP API's metrics are named 5xx and Count, by ApiId (a REST API's 5XXError, by name)."""
    alarm = alarms(raw)["BrowserApi5xxRateAlarm"]
    dimensions = {"ApiId": {"Ref": BROWSER_API}}
    assert metric_stats(alarm) == {
        "errors": {"namespace": "AWS/ApiGateway", "name": "5xx", "dimensions": dimensions}
        | {"stat": "Sum"},
        "requests": {"namespace": "AWS/ApiGateway", "name": "Count", "dimensions": dimensions}
        | {"stat": "Sum"},
    }
    assert "errors / requests" in expression(alarm)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0.01, "GreaterThanThreshold")


def test_lambda_throttles_alarm(raw: dict[str, Any]) -> None:
    alarm = alarms(raw)["IngestThrottlesAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/Lambda",
        "Throttles",
        "Sum",
    )
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": FUNCTION}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


def test_rejected_message_rate_alarm(raw: dict[str, Any]) -> None:
    namespace, service = powertools(raw)
    alarm = alarms(raw)["RejectedMessageRateAlarm"]
    stats = metric_stats(alarm)
    assert {metric["name"] for metric in stats.values()} == {"RejectedMessages", "AcceptedMessages"}
    assert {metric["name"] for metric in stats.values()} <= emitted_metrics()
    for metric in stats.values():
        assert metric["namespace"] == namespace
        assert metric["dimensions"] == {"service": service}
        assert metric["stat"] == "Sum"
    assert "rejected / (accepted + rejected)" in expression(alarm)
    assert 0 < alarm["Threshold"] < 1


def test_identity_refusals_alarm(raw: dict[str, Any]) -> None:
    namespace, service = powertools(raw)
    alarm = alarms(raw)["IdentityRefusalsAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        namespace,
        "IdentityRefusals",
        "Sum",
    )
    assert "IdentityRefusals" in emitted_metrics()
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] > 0
