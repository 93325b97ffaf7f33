"""Concurrent Lambda instances for `make dev`: worker processes, each with its own warm collector
on the embedded engines, as Lambda runs one process per concurrent invocation.

Separate processes, not threads, because that is what Lambda gives each invocation: module
globals (Powertools' Logger and Metrics, the warm caches) belong to one invocation at a time,
and both cores work. The engines share one data directory, whose SQLite transactions and
link-or-fail object writes keep the conditional semantics across processes.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import traceback
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from .local_dynamodb import LocalDynamoDB
from .local_s3 import LocalS3

# Longer than the Lambda's timeout (15 s): an invocation that takes this long has hung.
_INVOCATION_TIMEOUT = 60.0
_COLD_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 1.0


class InstanceFailed(RuntimeError):
    """An instance crashed, hung or could not start; its traceback is in the message."""


class InvocationError(RuntimeError):
    """The handler raised (Lambda's unhandled error); the remote traceback is the message."""


# The data directory's layout: the buckets under s3/, the table in one SQLite file.
S3_DIR, TABLE_FILE = "s3", "dynamodb.sqlite3"


def engines(data_dir: Path) -> dict[str, Any]:
    """The embedded stand-ins for S3 and DynamoDB, by service name, keeping data in `data_dir`."""
    return {
        "dynamodb": LocalDynamoDB(data_dir / TABLE_FILE),
        "s3": LocalS3(data_dir / S3_DIR),
    }


def bucket_dir(data_dir: Path, bucket: str) -> Path:
    """Where the objects of `bucket` are, as files named by their keys."""
    return data_dir / S3_DIR / bucket


class _Instance:
    """One worker process and the pipe its invocations go through."""

    def __init__(self, data_dir: Path) -> None:
        # spawn: a fresh interpreter, as a cold start, and no fork of the server's threads.
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(str(data_dir), theirs), daemon=True
        )
        self.process.start()
        theirs.close()

    def ready(self) -> None:
        """Waits for the cold start; raises InstanceFailed with its traceback if it failed."""
        self._answer(_COLD_START_TIMEOUT)

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        self.pipe.send((function, event))
        return self._answer(_INVOCATION_TIMEOUT)

    def stop(self) -> None:
        self.process.terminate()

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            if not self.pipe.poll(timeout):
                raise InstanceFailed(f"no answer within {timeout:.0f} s")
            outcome, value = self.pipe.recv()
        except (EOFError, OSError) as exc:
            raise InstanceFailed(f"the instance exited ({self.process.exitcode})") from exc
        if outcome == "failed":
            raise InstanceFailed(value)
        if outcome == "error":
            raise InvocationError(value)
        answer: dict[str, Any] = value
        return answer


class LambdaInstances:
    """`count` worker processes; `invoke` runs one proxy event on an idle one and waits.

    A crashed or hung instance is replaced by a fresh one, as Lambda replaces a failed
    execution environment; the failing invocation raises InstanceFailed (a 502 upstream).
    The instances serve both functions ("ingest", "browser"), named per invocation: on AWS
    each has its own instances, but the code and its warm caches are the same, so one pool
    saves a second set of cold starts on every `make dev`."""

    def __init__(self, count: int, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._idle: queue.Queue[_Instance] = queue.Queue()
        self._all = [_Instance(data_dir) for _ in range(count)]
        try:
            # Warm before the first request, and a broken setup fails here, once, clearly.
            for instance in self._all:
                instance.ready()
                self._idle.put(instance)
        except InstanceFailed:
            self.stop()
            raise

    def invoke(self, event: dict[str, Any], function: str = "ingest") -> dict[str, Any]:
        instance = self._idle.get()
        try:
            answer = instance.invoke(function, event)
        except InstanceFailed:
            instance.stop()
            self._replace(instance)
            raise
        finally:
            if instance in self._all:
                self._idle.put(instance)
        return answer

    def stop(self) -> None:
        """Ends every instance now (SIGTERM), busy or not, as the dev server stops."""
        for instance in self._all:
            instance.stop()
        for instance in self._all:
            instance.process.join(_STOP_TIMEOUT)
            if instance.process.is_alive():
                instance.process.kill()

    def _replace(self, failed: _Instance) -> None:
        fresh = _Instance(self._data_dir)
        self._all[self._all.index(failed)] = fresh
        fresh.ready()
        self._idle.put(fresh)


def _serve(data_dir: str, pipe: Connection) -> None:
    """An instance's life: cold start, then one invocation at a time until the pipe closes."""
    # Ctrl-C reaches the whole process group; the dev server stops its instances itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from collector import api, browser_api

        from .localapi import LambdaContext

        handlers = {"ingest": api.lambda_handler, "browser": browser_api.lambda_handler}
        api.use_clients(engines(Path(data_dir)))
        api.collector()
    except Exception:
        pipe.send(("failed", traceback.format_exc()))
        return
    pipe.send(("ready", {}))
    while True:
        try:
            function, event = pipe.recv()
        except EOFError:
            return
        try:
            answer = handlers[function](event, LambdaContext(str(uuid.uuid4())))
        except Exception:
            # Lambda reports an unhandled error; API Gateway answers 502 for it.
            pipe.send(("error", traceback.format_exc()))
            continue
        pipe.send(("answered", answer))
