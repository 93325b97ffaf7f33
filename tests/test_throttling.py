"""A DynamoDB transaction throttled for lack of capacity (cancelled with ThrottlingError) is a
storage failure, answered 503 and retried, never a race the identity graph or the ledger lost."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from collector import api
from collector.dynamodb import ConditionsFailed, transact
from collector.errors import StorageUnavailable

from .conftest import Aws, graph_partition, invoke_batch, replayed_partition, track
from .faults import throttle_transactions


def send(write_key: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return invoke_batch([{**message, "writeKey": write_key} for message in messages])


def cancelled(*codes: str) -> ClientError:
    reasons = [{"Code": code} for code in codes]
    error = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
    return ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]


class Answering:
    """A DynamoDB client whose transactions fail with `error`."""

    def __init__(self, error: ClientError) -> None:
        self.error = error

    def transact_write_items(self, **_: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    "codes",
    [("None", "ConditionalCheckFailed"), ("TransactionConflict", "None"), ()],
    ids=["condition", "conflict", "no-reasons"],
)
def test_a_transaction_that_lost_a_race_is_a_failed_condition(codes: tuple[str, ...]) -> None:
    with pytest.raises(ConditionsFailed):
        transact(Answering(cancelled(*codes)), [{}])


@pytest.mark.parametrize(
    "codes",
    [("None", "ThrottlingError"), ("ProvisionedThroughputExceeded",), ("ValidationError",)],
    ids=["throttled", "capacity", "invalid"],
)
def test_a_transaction_cancelled_for_anything_else_is_a_storage_failure(
    codes: tuple[str, ...],
) -> None:
    with pytest.raises(StorageUnavailable, match="TransactionCanceledException"):
        transact(Answering(cancelled(*codes)), [{}])


def test_a_throttled_identify_answers_503_and_its_retry_decides_it(
    aws: Aws, write_key: str
) -> None:
    """Read as a lost race, the throttled transaction had the graph decide again as if another
    writer had got there first, and the request answered 200."""
    identify = {
        "type": "identify",
        "userId": "throttled-user",
        "anonymousId": "throttled-anon",
        "messageId": f"identify-{uuid.uuid4()}",
    }
    stop = throttle_transactions(api.aws_client("dynamodb"))

    first = send(write_key, [identify])

    assert first["statusCode"] == 503, first["body"]
    assert orjson.loads(first["body"])["code"] == "storage_unavailable"
    assert first["multiValueHeaders"]["Retry-After"]
    assert aws.keys("events/") == []
    stop()

    retry = send(write_key, [identify])

    assert retry["statusCode"] == 200, retry["body"]
    [stored] = aws.stored()
    assert stored["collector"]["identity"]["outcome"] == "created"
    assert replayed_partition(aws.stored()) == graph_partition(aws.dynamodb, aws.table)


def test_a_throttled_claim_answers_503_and_its_retry_stores_the_batch(
    aws: Aws, write_key: str
) -> None:
    batch = [track(n) for n in range(3)]  # claimed in one transaction
    stop = throttle_transactions(api.aws_client("dynamodb"))

    first = send(write_key, batch)

    assert first["statusCode"] == 503, first["body"]
    assert orjson.loads(first["body"])["code"] == "storage_unavailable"
    stop()

    assert send(write_key, batch)["statusCode"] == 200
    assert sorted(event["messageId"] for event in aws.stored()) == sorted(
        message["messageId"] for message in batch
    )
