"""template.yaml: the identity table on demand by default, or provisioned capacity that auto
scaling tracks on both dimensions (TableBillingMode), created only when chosen."""

from __future__ import annotations

from typing import Any

import pytest

from collector.tools.resources import TABLE_RESOURCE, properties

from .conftest import Aws

# Each capacity dimension: its scalable target and its scaling policy.
DIMENSIONS = {
    "Write": ("IdentityTableWriteCapacity", "IdentityTableWriteScaling"),
    "Read": ("IdentityTableReadCapacity", "IdentityTableReadScaling"),
}


def test_the_table_is_on_demand_unless_provisioned_is_chosen(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["TableBillingMode"]
    assert parameter["Default"] == "PAY_PER_REQUEST"
    assert parameter["AllowedValues"] == ["PAY_PER_REQUEST", "PROVISIONED"]
    assert template["Conditions"]["ProvisionedTable"] == {
        "Fn::Equals": [{"Ref": "TableBillingMode"}, "PROVISIONED"]
    }
    table = properties(template, TABLE_RESOURCE)
    assert table["BillingMode"] == {"Ref": "TableBillingMode"}
    # CloudFormation refuses a throughput on an on-demand table and wants one on a provisioned.
    condition, starting, otherwise = table["ProvisionedThroughput"]["Fn::If"]
    assert (condition, otherwise) == ("ProvisionedTable", {"Ref": "AWS::NoValue"})
    assert starting == {
        "ReadCapacityUnits": {"Ref": "TableReadCapacityMin"},
        "WriteCapacityUnits": {"Ref": "TableWriteCapacityMin"},
    }


@pytest.mark.parametrize("dimension", sorted(DIMENSIONS))
def test_auto_scaling_tracks_each_dimension_between_its_bounds(
    template: dict[str, Any], dimension: str
) -> None:
    target_name, policy_name = DIMENSIONS[dimension]
    resources = template["Resources"]
    assert resources[target_name]["Condition"] == "ProvisionedTable"
    assert resources[policy_name]["Condition"] == "ProvisionedTable"
    target = properties(template, target_name)
    assert target["ServiceNamespace"] == "dynamodb"
    assert target["ScalableDimension"] == f"dynamodb:table:{dimension}CapacityUnits"
    assert target["ResourceId"] == {"Fn::Sub": f"table/${{{TABLE_RESOURCE}}}"}
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        {"Ref": f"Table{dimension}CapacityMin"},
        {"Ref": f"Table{dimension}CapacityMax"},
    )
    policy = properties(template, policy_name)
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": target_name}
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking == {
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": f"DynamoDB{dimension}CapacityUtilization"
        },
        "TargetValue": {"Ref": "TableTargetUtilization"},
    }


@pytest.mark.parametrize("dimension", sorted(DIMENSIONS))
def test_the_capacity_defaults_are_consistent(template: dict[str, Any], dimension: str) -> None:
    parameters = template["Parameters"]
    low = parameters[f"Table{dimension}CapacityMin"]
    high = parameters[f"Table{dimension}CapacityMax"]
    assert 1 <= low["MinValue"] <= low["Default"] < high["Default"]
    utilization = parameters["TableTargetUtilization"]
    # Application Auto Scaling's limits for DynamoDB's target value.
    assert 20 <= utilization["MinValue"] <= utilization["Default"] <= utilization["MaxValue"] <= 90


def test_local_and_test_tables_are_on_demand(aws: Aws) -> None:
    """TableBillingMode is a deployment's choice; nothing local throttles."""
    described = aws.dynamodb.describe_table(TableName=aws.table)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
