"""The live debugger of `make dev` (/debugger): what the collector stored, as it arrives.

It reads the local bucket (events/ and rejected/) and the identity graph, nothing else: there is
no second store, only an in-memory index of the objects already read, refreshed on each poll.
Served by the dev server's front process, never by the Lambda.
"""

from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from collector.identity_store import IdentityGraph
from collector.profiles import ProfileStore
from collector.sources import SourceRegistry
from collector.storage import EVENTS_PREFIX, REJECTED_PREFIX

PAGE = "/debugger"
_LATEST = 200
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class _Stored:
    """The lines of the objects under one prefix, in the order they were written."""

    prefix: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    read: set[Path] = field(default_factory=set)

    def refresh(self) -> None:
        new = [path for path in _objects(self.prefix) if path not in self.read]
        # Objects are written whole (link-or-fail), so a listed one is complete.
        new.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
        for path in new:
            self.read.add(path)
            for line in gzip.decompress(path.read_bytes()).splitlines():
                self.lines.append(orjson.loads(line))


class Debugger:
    """Answers the debugger's page and its JSON: latest events, rejections, one person."""

    def __init__(
        self,
        bucket_dir: Path,
        graph: IdentityGraph,
        sources: SourceRegistry,
        profiles: ProfileStore | None = None,
    ) -> None:
        self._events = _Stored(bucket_dir / EVENTS_PREFIX)
        self._rejected = _Stored(bucket_dir / REJECTED_PREFIX)
        self._graph, self._sources, self._profiles = graph, sources, profiles
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, query: str) -> Reply | None:
        """The reply for a debugger path, or None for any other path (the API's)."""
        if method != "GET" or not (path == PAGE or path.startswith(PAGE + "/")):
            return None
        parameters = {name: values[-1] for name, values in parse_qs(query).items()}
        if path in (PAGE, PAGE + "/"):
            page = resources.files(__package__).joinpath("debugger.html").read_bytes()
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page
        if path == PAGE + "/events":
            return _json(self.latest(parameters))
        if path == PAGE + "/person":
            return _json(self.person(parameters.get("id", "")))
        return _json({"code": "unknown_debugger_path"}, 404)

    def latest(self, parameters: dict[str, str]) -> dict[str, Any]:
        """The newest events after the cursor `after`, filtered by `type` and by `id` (a userId,
        anonymousId or messageId), newest first, and the newest rejected messages."""
        after = int(parameters.get("after") or 0)
        wanted_type, wanted_id = parameters.get("type") or None, parameters.get("id") or None
        with self._lock:
            self._events.refresh()
            self._rejected.refresh()
            events, rejected = list(self._events.lines), list(self._rejected.lines)
        names = self._source_names()
        shown = [
            _summary(position, event, names)
            for position, event in enumerate(events, start=1)
            if position > after
            and (wanted_type is None or event.get("type") == wanted_type)
            and (wanted_id is None or wanted_id in (*_ids(event), event.get("messageId")))
        ]
        return {
            "cursor": len(events),
            "events": shown[::-1][:_LATEST],
            "rejected": [_rejection(record, names) for record in rejected[::-1][:_LATEST]],
        }

    def person(self, distinct_id: str) -> dict[str, Any]:
        """Who `distinct_id` is: the graph's person as GET /v1/identities answers it (with its
        stored profile), the traits merged from its events and its events in order."""
        view = self._graph.view(distinct_id)
        person = None if view is None else view.as_json()
        if view is not None and self._profiles is not None:
            person = {**view.as_json(), **self._profiles.read(view.distinct_ids).as_json()}
        ids = set(view.distinct_ids) if view else {distinct_id}
        with self._lock:
            self._events.refresh()
            events = [event for event in self._events.lines if _ids(event) & ids]
        events.sort(key=lambda event: str(event.get("timestamp") or event.get("receivedAt")))
        names = self._source_names()
        return {
            "distinctId": distinct_id,
            "person": person,
            "traits": merged_traits(events),
            "events": [_summary(0, event, names) for event in events],
        }

    def _source_names(self) -> dict[str, str]:
        return {record.source.id: record.source.name for record in self._sources.records()}


def merged_traits(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Traits merged from identify calls: the latest non-null value of each, by event time
    (rudder-sdk-python sends an identify's traits in context.traits)."""
    identifies = [event for event in events if event.get("type") == "identify"]
    identifies.sort(key=lambda event: str(event.get("timestamp") or ""))
    traits: dict[str, Any] = {}
    for event in identifies:
        sent = event.get("traits")
        if sent is None:
            sent = (event.get("context") or {}).get("traits")
        for name, value in (sent or {}).items():
            if value is not None:
                traits[name] = value
    return traits


def _summary(position: int, event: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    provenance = event.get("collector") or {}
    return {
        "position": position,
        "type": event.get("type"),
        "name": event.get("event") or event.get("name"),
        "userId": event.get("userId"),
        "anonymousId": event.get("anonymousId"),
        "previousId": event.get("previousId"),
        "messageId": event.get("messageId"),
        "timestamp": event.get("timestamp"),
        "receivedAt": event.get("receivedAt"),
        "source": names.get(provenance.get("sourceId", ""), provenance.get("sourceId")),
        "identity": provenance.get("identity"),
        "event": event,
    }


def _rejection(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    provenance = record.get("collector") or {}
    message = record.get("message")
    return {
        "messageId": record.get("messageId"),
        "reasons": record.get("reasons", []),
        "receivedAt": record.get("receivedAt"),
        "source": names.get(provenance.get("sourceId", ""), provenance.get("sourceId")),
        "type": message.get("type") if isinstance(message, dict) else None,
        "message": message,
    }


def _ids(event: dict[str, Any]) -> set[str]:
    """The distinct ids an event names: it belongs to the person of any of them."""
    fields = ("userId", "anonymousId", "previousId")
    return {str(event[name]) for name in fields if event.get(name) is not None}


def _objects(prefix: Path) -> list[Path]:
    found: list[Path] = []
    for folder, _, files in os.walk(prefix):
        found.extend(Path(folder, name) for name in files if name.endswith(".json.gz"))
    return found


def _json(body: dict[str, Any], status: int = 200) -> Reply:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    return status, headers, orjson.dumps(body)
