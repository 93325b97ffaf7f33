"""An embedded S3 for `make dev`: the client calls the collector makes, on a local directory.

Objects are plain files at `<root>/<bucket>/<key>`, so the events keep the S3 layout
(`events/dt=…/hour=…/<name>.json.gz`) and DuckDB, `zcat` or a file browser read them in place.
A conditional PUT (`IfNoneMatch="*"`) is a hard link of a finished temporary file, which fails
if the name exists: readers never see half an object and a key is never written twice.
Object headers (content type, encoding, metadata) sit beside the tree, under `<root>/.meta/`.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import ClientError

from .embedded import EmbeddedClient, Paginator, operation

_META = ".meta"
_PAGE_KEYS = 1000


class LocalS3(EmbeddedClient):
    """The S3 client subset the collector and its tools use, on the directory `root`."""

    def __init__(self, root: Path) -> None:
        super().__init__("s3", _rest_request)
        self._root = root

    @operation("CreateBucket")
    def create_bucket(self, Bucket: str, **_: Any) -> dict[str, Any]:
        self._bucket(Bucket, must_exist=False).mkdir(parents=True, exist_ok=True)
        return {}

    @operation("ListBuckets")
    def list_buckets(self) -> dict[str, Any]:
        names = sorted(p.name for p in self._root.iterdir() if p.is_dir() and p.name != _META)
        return {"Buckets": [{"Name": name} for name in names]}

    @operation("PutObject")
    def put_object(
        self,
        Bucket: str,
        Key: str,
        Body: bytes,
        ContentType: str = "binary/octet-stream",
        ContentEncoding: str | None = None,
        IfNoneMatch: str | None = None,
        Metadata: dict[str, str] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        path = self._path(Bucket, Key)
        headers = {"ContentType": ContentType, "Metadata": Metadata or {}}
        if ContentEncoding is not None:
            headers["ContentEncoding"] = ContentEncoding
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".partial-{uuid.uuid4().hex}"
        partial.write_bytes(Body)
        try:
            if IfNoneMatch == "*":
                try:
                    os.link(partial, path)
                except FileExistsError:
                    raise _error(
                        "PreconditionFailed", "At least one of the preconditions did not hold"
                    ) from None
            else:
                partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        self._write_headers(Bucket, Key, headers)
        return {"ETag": f'"{uuid.uuid4().hex}"'}

    @operation("HeadObject")
    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        return self._head(Bucket, Key)

    @operation("GetObject")
    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        head = self._head(Bucket, Key)
        try:
            body = self._path(Bucket, Key).read_bytes()
        except FileNotFoundError:
            raise _error("NoSuchKey", "The specified key does not exist.") from None
        return {**head, "Body": io.BytesIO(body)}

    def _head(self, Bucket: str, Key: str) -> dict[str, Any]:
        path = self._path(Bucket, Key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise _error("404", "Not Found") from None
        return {
            "ContentLength": stat.st_size,
            "LastModified": datetime.fromtimestamp(stat.st_mtime, UTC),
            **self._read_headers(Bucket, Key),
        }

    @operation("ListObjectsV2")
    def list_objects_v2(
        self,
        Bucket: str,
        Prefix: str = "",
        ContinuationToken: str | None = None,
        MaxKeys: int = _PAGE_KEYS,
        **_: Any,
    ) -> dict[str, Any]:
        after = ContinuationToken or ""
        keys = sorted(key for key in self._keys(Bucket, Prefix) if key > after)
        page = keys[:MaxKeys]
        contents = []
        for key in page:
            stat = self._path(Bucket, key).stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            contents.append({"Key": key, "Size": stat.st_size, "LastModified": modified})
        answer: dict[str, Any] = {"KeyCount": len(page), "IsTruncated": len(keys) > MaxKeys}
        if contents:
            answer["Contents"] = contents
        if len(keys) > MaxKeys:
            answer["NextContinuationToken"] = page[-1]
        return answer

    def get_paginator(self, operation: str) -> Paginator:
        if operation != "list_objects_v2":
            raise ValueError(f"no paginator for {operation}")
        return Paginator(self.list_objects_v2, _continuation, "ContinuationToken")

    def _bucket(self, bucket: str, must_exist: bool = True) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise _error("InvalidBucketName", "The specified bucket is not valid.")
        path = self._root / bucket
        if must_exist and not path.is_dir():
            raise _error("NoSuchBucket", "The specified bucket does not exist")
        return path

    def _path(self, bucket: str, key: str) -> Path:
        parts = key.split("/")
        # Keys the collector writes are its own; a key that would leave the bucket is refused.
        if any(part in ("", ".", "..") or part.startswith(".partial-") for part in parts):
            raise _error("InvalidArgument", "This key cannot be stored in the local directory")
        return self._bucket(bucket).joinpath(*parts)

    def _keys(self, bucket: str, prefix: str) -> Iterator[str]:
        base = self._bucket(bucket)
        # Walk only the deepest directory the prefix names: listing one hour stays cheap.
        directory = base.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else base
        for folder, _, files in os.walk(directory):
            for name in files:
                if name.startswith(".partial-"):
                    continue
                key = Path(folder, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def _headers_path(self, bucket: str, key: str) -> Path:
        return self._root / _META / bucket / f"{key}.json"

    def _write_headers(self, bucket: str, key: str, headers: dict[str, Any]) -> None:
        path = self._headers_path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.parent / f".partial-{uuid.uuid4().hex}"
        partial.write_bytes(orjson.dumps(headers))
        partial.replace(path)

    def _read_headers(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self._headers_path(bucket, key).read_bytes()))
        except FileNotFoundError:
            return {"ContentType": "binary/octet-stream", "Metadata": {}}


def _rest_request(params: dict[str, Any]) -> dict[str, Any]:
    """A request as botocore serialises it for S3's REST protocol: the object is the body."""
    path = "/".join(str(params[name]) for name in ("Bucket", "Key") if name in params)
    return {"url_path": f"/{path}", "body": params.get("Body", b"")}


def _continuation(page: dict[str, Any]) -> str | None:
    return page.get("NextContinuationToken") if page.get("IsTruncated") else None


def _error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "LocalS3")
