"""The bucket and table made from template.yaml's own definitions: one schema, local and AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[4] / "template.yaml"
BUCKET_RESOURCE = "EventsBucket"
TABLE_RESOURCE = "IdentityTable"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template, matches = decode(str(path))
    if template is None:
        raise ValueError(f"cannot read {path}: {matches}")
    return dict(template)


def properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(template["Resources"][logical_id]["Properties"])


def create_table(dynamodb: Any, name: str, template: dict[str, Any] | None = None) -> None:
    """The identity table as template.yaml declares it (keys, indexes, stream, TTL), on demand:
    capacity is a deployment's choice (TableBillingMode), and nothing local throttles."""
    props = properties(template or load_template(), TABLE_RESOURCE)
    args: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if "GlobalSecondaryIndexes" in props:
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "StreamSpecification" in props:
        # CloudFormation says StreamViewType; the API also wants StreamEnabled.
        stream = props["StreamSpecification"]
        args["StreamSpecification"] = {"StreamEnabled": True, **stream}
    dynamodb.create_table(**args)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )


def create_bucket(s3: Any, name: str, template: dict[str, Any] | None = None) -> None:
    """The events bucket with template.yaml's access block, encryption and versioning."""
    props = properties(template or load_template(), BUCKET_RESOURCE)
    s3.create_bucket(Bucket=name)
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
        )
    if "BucketEncryption" in props:
        # CloudFormation and the S3 API name the default-encryption block differently.
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": rule.get("BucketKeyEnabled", False),
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
        )


DELIVERY_STREAM_RESOURCE = "EventsDeliveryStream"


def create_delivery_stream(
    firehose: Any, name: str, bucket: str, template: dict[str, Any] | None = None
) -> None:
    """The Firehose delivery stream of EventSink firehose, into `bucket`, with template.yaml's
    prefixes, compression and buffering (each parameter at its default)."""
    doc = template or load_template()
    destination = properties(doc, DELIVERY_STREAM_RESOURCE)["ExtendedS3DestinationConfiguration"]
    hints = {
        key: _default(doc, value) for key, value in destination.get("BufferingHints", {}).items()
    }
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "RoleARN": "arn:aws:iam::123456789012:role/delivery",
            "Prefix": destination["Prefix"],
            "ErrorOutputPrefix": destination["ErrorOutputPrefix"],
            "CompressionFormat": destination["CompressionFormat"],
            "BufferingHints": hints,
        },
    )


def _default(template: dict[str, Any], value: Any) -> Any:
    """A `!Ref Parameter` as the parameter's default; anything else as it is."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return int(template["Parameters"][value["Ref"]]["Default"])
    return value
