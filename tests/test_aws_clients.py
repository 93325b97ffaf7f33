"""The collector's AWS clients: configured once, for Lambda, and validated in the tests."""

from __future__ import annotations

import pytest
from botocore.exceptions import ParamValidationError

from collector import api
from collector.config import AWS_CLIENT_CONFIG

from .conftest import Aws


def test_lambdas_clients_skip_botocores_parameter_walk() -> None:
    # Most of a 100-item claim's CPU (collector/config.py); AWS validates the request anyway.
    assert AWS_CLIENT_CONFIG.parameter_validation is False


def test_the_tests_clients_refuse_what_botocore_would(aws: Aws) -> None:
    dynamodb = api.aws_client("dynamodb")
    assert dynamodb.meta.config.parameter_validation is True
    with pytest.raises(ParamValidationError):
        dynamodb.put_item(TableName=aws.table, Item={"pk": "not an attribute value"})
