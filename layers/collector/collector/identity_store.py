"""The identity graph in DynamoDB: reads a call's two persons, applies `identity.decide`, writes
the plan in one conditional transaction, and re-reads and decides again when another writer won.

Items (one table, pk/sk):
  ID#<distinct id> / ID             personId        a person lookup is one read
  PERSON#<person> / PERSON          isIdentified, idCount, personVersion, createdAt,
                                    mergingInto? / absorbing? (a large merge under way)
  PERSON#<person> / ID#<distinct id>                a person's ids are one query
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .dynamodb import ITEMS_PER_TRANSACTION, ConditionsFailed, get_many, transact
from .errors import OutOfTime, StorageUnavailable
from .identity import (
    BLOCKED_ANY_CASE,
    DEFAULT_MAX_IDS_PER_PERSON,
    Decision,
    IdentityCall,
    OutcomeCode,
    Person,
    Refusal,
    decide,
    refusal,
)
from .identity_cache import SettledLinks

# DynamoDB allows 100 items per transaction; a moved id takes three (pointer, old and new
# membership) and the two person headers take two.
_IDS_PER_TRANSACTION = 32


@dataclass(frozen=True, slots=True)
class PersonView:
    """What GET /v1/identities answers."""

    person_id: str
    identified: bool
    distinct_ids: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "personId": self.person_id,
            "identified": self.identified,
            "distinctIds": self.distinct_ids,
        }


class DecisionLog(Protocol):
    """Where one call's outcome is recorded, once: in the same transaction as the graph change
    it decided, so a retry of the call finds the decision instead of making another."""

    def record_item(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """A transaction item that records `outcome`; it fails if a decision is recorded."""
        ...

    def recorded(self) -> dict[str, Any] | None:
        """The outcome recorded for this call (by a concurrent twin of it), if any."""
        ...

    def defer(self, outcome: dict[str, Any]) -> None:
        """Record an outcome that changed nothing in the graph (batched by the caller)."""
        ...


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A call ready to decide: `index` is its place in the request, `call` is normalised (no
    self-link, no refused source), and `final` gives the outcome stored with its event."""

    index: int
    call: IdentityCall
    source_refusal: Refusal | None

    def final(
        self, outcome: OutcomeCode, person_id: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        if self.source_refusal is not None:
            return Outcome(
                "refused", person_id, "illegal_source_id", self.source_refusal.detail
            ).record(self.call)
        return Outcome(outcome, person_id, reason).record(self.call)


@dataclass(slots=True)
class _Graph:
    """Part of the graph as read (and, in a copy, as a batch's decisions change it)."""

    person_of: dict[str, str]
    persons: dict[str, Person]

    def persons_of(self, call: IdentityCall) -> tuple[Person | None, Person | None]:
        target = self.persons.get(self.person_of.get(call.user_id, ""))
        if call.source_id is None:
            return target, None
        return target, self.persons.get(self.person_of.get(call.source_id, ""))

    def copy(self) -> _Graph:
        return _Graph(dict(self.person_of), dict(self.persons))

    def add(self, person: Person, ids: tuple[str, ...]) -> None:
        self.persons[person.id] = replace(person, size=person.size + len(ids))
        self.person_of.update(dict.fromkeys(ids, person.id))


@dataclass(slots=True)
class _Planned:
    """A component's decisions and the transaction items that carry them out."""

    calls: list[_Prepared]
    decisions: list[tuple[_Prepared, Decision, str | None]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)


def _check(in_time: Callable[[], bool]) -> None:
    if not in_time():
        raise OutOfTime("the invocation ran short of time for its identity calls")


def _components(pending: list[_Prepared], read: _Graph) -> list[list[_Prepared]]:
    """The calls grouped so that no two groups share an id or a person, each in call order."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    firsts: list[str] = []
    for prepared in pending:
        ids = [i for i in (prepared.call.user_id, prepared.call.source_id) if i is not None]
        keys = [f"id:{i}" for i in ids]
        keys += [f"person:{read.person_of[i]}" for i in ids if i in read.person_of]
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        firsts.append(keys[0])
    groups: dict[str, list[_Prepared]] = {}
    for prepared, key in zip(pending, firsts, strict=True):
        groups.setdefault(root(key), []).append(prepared)
    return list(groups.values())


def _packed(batch: list[_Planned]) -> Iterator[list[_Planned]]:
    """Components packed in order into transactions of at most 100 items."""
    transaction: list[_Planned] = []
    size = 0
    for planned in batch:
        if transaction and size + len(planned.items) > ITEMS_PER_TRANSACTION:
            yield transaction
            transaction, size = [], 0
        transaction.append(planned)
        size += len(planned.items)
    if transaction:
        yield transaction


class _Conflict(Exception):
    """Another writer changed a person between our read and our write."""


class IdentityGraph:
    """Applies identify and alias calls; safe against concurrent Lambdas on the same ids."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        max_ids: int = DEFAULT_MAX_IDS_PER_PERSON,
        blocked: frozenset[str] = BLOCKED_ANY_CASE,
        attempts: int = 5,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._max_ids = max_ids
        self._blocked = blocked
        self._attempts = attempts
        self._settled = SettledLinks(cache_seconds, clock)

    def resolve(
        self, message: dict[str, Any], allow_force: bool = True, log: DecisionLog | None = None
    ) -> dict[str, Any]:
        """The outcome of a validated identify or alias message (it has a userId); a forced
        merge it asks for is honoured only with `allow_force` (the sending source's right)."""
        call = IdentityCall.from_message(message)
        if call.force and not allow_force:
            call = replace(call, force=False)
        return self.apply(call, log)

    def apply(self, call: IdentityCall, log: DecisionLog | None = None) -> dict[str, Any]:
        """Decide and write one call; returns the outcome stored with its event, recorded in
        `log` (when given) exactly once."""
        prepared = self._prepare(call)
        if not isinstance(prepared, _Prepared):
            return _unwritten(log, prepared)
        call, final = prepared.call, prepared.final
        for _ in range(self._attempts):
            target, source = self._read([call.user_id, call.source_id]).persons_of(call)
            decision = decide(call, target, source, self._max_ids)
            recording = partial(_records, log, final, decision)
            try:
                person_id = self._write(decision, call, target, source, recording)
            except _Conflict:
                if log is not None and (recorded := log.recorded()) is not None:
                    return recorded  # a twin of this call decided it first
                continue
            if decision.merge and source is not None:
                self._settled.forget(source.id)
            return self._conclude(prepared, decision, person_id, log)
        refused = Outcome("refused", None, "merge_race_condition").record(call)
        return _unwritten(log, refused)

    def resolve_batch(
        self,
        messages: list[dict[str, Any]],
        allow_force: bool,
        logs: list[DecisionLog | None],
        in_time: Callable[[], bool] = lambda: True,
    ) -> list[dict[str, Any]]:
        """`resolve` for a request's identify and alias messages together, in their order."""
        calls = [IdentityCall.from_message(message) for message in messages]
        if not allow_force:
            calls = [replace(call, force=False) if call.force else call for call in calls]
        return self.apply_batch(calls, logs, in_time)

    def apply_batch(
        self,
        calls: list[IdentityCall],
        logs: list[DecisionLog | None],
        in_time: Callable[[], bool] = lambda: True,
    ) -> list[dict[str, Any]]:
        """Decide and write many calls as `apply` would one after another, with as few DynamoDB
        calls as its limits allow: one read of every id they touch (100 keys a call), then the
        decisions, each made against the graph as the calls before it left it, written in
        transactions of up to 100 items. Calls that share no id and no person are independent
        (a component each), so they may share a transaction; a component whose transaction
        fails its conditions, that merges persons or that is too large for one transaction is
        decided again call by call. Before each write it asks `in_time`, and raises OutOfTime
        when the invocation is running short: what was written is recorded in the logs."""
        outcomes: list[dict[str, Any] | None] = [None] * len(calls)
        pending: list[_Prepared] = []
        for index, call in enumerate(calls):
            prepared = self._prepare(call, index)
            if isinstance(prepared, _Prepared):
                pending.append(prepared)
            else:
                outcomes[index] = _unwritten(logs[index], prepared)
        read = self._read([i for p in pending for i in (p.call.user_id, p.call.source_id)])
        one_by_one: list[list[_Prepared]] = []
        lost: set[int] = set()  # calls whose transaction failed its conditions
        batch: list[_Planned] = []
        for component in _components(pending, read):
            planned = self._plan(component, read, logs)
            if planned is None:
                one_by_one.append(component)
            elif not planned.items:
                self._settle(planned, logs, outcomes)
            else:
                batch.append(planned)
        for transaction in _packed(batch):
            _check(in_time)
            try:
                self._transact([item for planned in transaction for item in planned.items])
            except _Conflict:
                one_by_one.extend(planned.calls for planned in transaction)
                lost.update(p.index for planned in transaction for p in planned.calls)
                continue
            for planned in transaction:
                self._settle(planned, logs, outcomes)
        for component in sorted(one_by_one, key=lambda calls: calls[0].index):
            for prepared in component:
                _check(in_time)
                log = logs[prepared.index]
                # A transaction may have been applied although its answer was lost (botocore
                # then retries it and meets its own writes): its decisions are recorded.
                recorded = log.recorded() if log is not None and prepared.index in lost else None
                outcomes[prepared.index] = recorded or self.apply(calls[prepared.index], log)
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(calls), "every call has its outcome"
        return done

    def _prepare(self, call: IdentityCall, index: int = 0) -> _Prepared | dict[str, Any]:
        """A call ready to decide, or the outcome it has without reading the graph: its userId
        refused, or a link the warm cache knows is settled."""
        user_refusal = refusal(call.user_id, self._blocked)
        if user_refusal is not None:
            return Outcome("refused", None, "illegal_user_id", user_refusal.detail).record(call)
        if call.source_id == call.user_id:
            call = replace(call, source_id=None)  # linking an id to itself asks for nothing more
        source_refusal = None
        if call.source_id is not None:
            source_refusal = refusal(call.source_id, self._blocked)
            if source_refusal is not None:
                call = replace(call, source_id=None)
        prepared = _Prepared(index, call, source_refusal)
        cached = self._settled.person_of(call)
        if cached is not None:
            return prepared.final("already_linked", cached)
        return prepared

    def _plan(
        self, component: list[_Prepared], read: _Graph, logs: list[DecisionLog | None]
    ) -> _Planned | None:
        """Decide a component's calls in order against `read` and the decisions before them;
        the transaction items that write them all, or None if it must go call by call."""
        local = read.copy()
        planned = _Planned(component)
        added: dict[str, list[str]] = {}
        for prepared in component:
            target, source = local.persons_of(prepared.call)
            decision = decide(prepared.call, target, source, self._max_ids)
            if decision.merge:
                return None
            person_id = target.id if target else (source.id if source else None)
            if decision.create:
                person_id = uuid.uuid4().hex
                local.add(Person(person_id, True, 0, 0), decision.create)
                added[person_id] = list(decision.create)
            elif decision.attach:
                assert person_id is not None
                local.add(local.persons[person_id], decision.attach)
                added.setdefault(person_id, []).extend(decision.attach)
            planned.decisions.append((prepared, decision, person_id))
            if decision.writes:
                log = logs[prepared.index]
                planned.items.extend(_records(log, prepared.final, decision, person_id))
        for person_id, ids in added.items():
            before = read.persons.get(person_id)
            if before is None:
                planned.items.extend(_create(person_id, tuple(ids)))
            else:
                planned.items.extend(_grow(before, tuple(ids)))
        return planned if len(planned.items) <= ITEMS_PER_TRANSACTION else None

    def _settle(
        self,
        planned: _Planned,
        logs: list[DecisionLog | None],
        outcomes: list[dict[str, Any] | None],
    ) -> None:
        """A component's decisions are in DynamoDB (or wrote nothing): their outcomes."""
        for prepared, decision, person_id in planned.decisions:
            log = logs[prepared.index]
            outcomes[prepared.index] = self._conclude(prepared, decision, person_id, log)

    def _conclude(
        self,
        prepared: _Prepared,
        decision: Decision,
        person_id: str | None,
        log: DecisionLog | None,
    ) -> dict[str, Any]:
        """The outcome of a decision carried out: remembered when settled, and recorded through
        the log's batch when it wrote nothing (a write recorded it in its own transaction)."""
        if person_id is not None and decision.outcome != "refused":
            self._settled.remember(prepared.call, person_id)
        outcome = prepared.final(decision.outcome, person_id, decision.reason)
        return outcome if decision.writes else _unwritten(log, outcome)

    def view(self, distinct_id: str) -> PersonView | None:
        """The person `distinct_id` belongs to: one read and one query."""
        for _ in range(self._attempts):
            person_id = self._person_id(distinct_id)
            if person_id is None:
                return None
            items = list(self._query_person(person_id))
            header = next((item for item in items if item["sk"]["S"] == "PERSON"), None)
            if header is not None and not _finish_first(header):
                ids = [item["sk"]["S"][3:] for item in items if item["sk"]["S"].startswith("ID#")]
                return PersonView(person_id, header["isIdentified"]["BOOL"], sorted(ids))
            self._read([distinct_id])  # finishes a merge left half done
        raise StorageUnavailable("identity graph kept changing while being read")

    # --- reading ------------------------------------------------------------------------------

    def _read(self, ids: list[str | None]) -> _Graph:
        """The persons of these ids (two BatchGetItem passes, 100 keys a call), after finishing
        any large merge one of them is part of."""
        wanted = [_id_key(i) for i in dict.fromkeys(i for i in ids if i is not None)]
        while True:
            pointers = get_many(self._db, self._table, wanted)
            person_of = {
                item["pk"]["S"][3:]: item["personId"]["S"]
                for item in pointers
                if "personId" in item
            }
            person_ids = sorted(set(person_of.values()))
            headers = get_many(
                self._db, self._table, [_person_key(person) for person in person_ids]
            )
            unfinished = next(filter(None, map(_finish_first, headers)), None)
            if unfinished is None:
                persons = {header["pk"]["S"][7:]: _person(header) for header in headers}
                return _Graph(person_of, persons)
            self._finish_merge(*unfinished)

    def _person_id(self, distinct_id: str) -> str | None:
        item = self._call(
            "get_item", TableName=self._table, Key=_id_key(distinct_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else str(item["personId"]["S"])

    def _query_person(self, person_id: str, ids_only: bool = False) -> Iterator[dict[str, Any]]:
        condition = "pk = :pk AND begins_with(sk, :id)" if ids_only else "pk = :pk"
        values = {":pk": {"S": f"PERSON#{person_id}"}}
        if ids_only:
            values[":id"] = {"S": "ID#"}
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        while True:
            page = self._call("query", **arguments)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- writing ------------------------------------------------------------------------------

    def _write(
        self,
        decision: Decision,
        call: IdentityCall,
        target: Person | None,
        source: Person | None,
        recording: Callable[[str | None], list[dict[str, Any]]],
    ) -> str | None:
        """Carry out `decision`, with the items `recording` gives for the resulting person in
        the first transaction; returns the person id the call's user id ends up in."""
        if decision.create:
            person_id = uuid.uuid4().hex
            self._transact([*_create(person_id, decision.create), *recording(person_id)])
            return person_id
        if decision.attach:
            person = target or source
            assert person is not None
            self._transact([*_grow(person, decision.attach), *recording(person.id)])
            return person.id
        if decision.merge:
            assert target is not None and source is not None
            self._merge(source, target, recording(target.id))
            return target.id
        return target.id if target else (source.id if source else None)

    def _merge(self, source: Person, target: Person, recording: list[dict[str, Any]]) -> None:
        """Move every id of `source` into `target`: one transaction when it fits, else a locked
        source moved in chunks, which any later reader finishes if this Lambda stops midway."""
        moved = [item["sk"]["S"][3:] for item in self._query_person(source.id, ids_only=True)]
        if len(moved) != source.size:
            raise _Conflict
        if len(moved) <= _IDS_PER_TRANSACTION:
            grow_target = _update_header(target, len(moved))
            self._transact(
                [
                    *_move(moved, source.id, target.id),
                    {"Delete": {"Key": _person_key(source.id), **_condition_version(source)}},
                    grow_target,
                    *recording,
                ]
            )
            return
        lock = {
            "Update": {
                "Key": _person_key(source.id),
                "UpdateExpression": "SET mergingInto = :target",
                **_condition_version(source, {":target": {"S": target.id}}),
            }
        }
        # Both sides are marked, so a reader that reaches either finishes the merge.
        absorb = _update_header(target, len(moved), absorbing=source.id)
        self._transact([lock, absorb, *recording])
        self._finish_merge(source.id, target.id)

    def _finish_merge(self, source_id: str, target_id: str) -> None:
        locked = {
            "ConditionExpression": "mergingInto = :target",
            "ExpressionAttributeValues": {":target": {"S": target_id}},
        }
        while True:
            chunk = []
            for item in self._query_person(source_id, ids_only=True):
                chunk.append(item["sk"]["S"][3:])
                if len(chunk) == _IDS_PER_TRANSACTION:
                    break
            if not chunk:
                break
            check = {"ConditionCheck": {"Key": _person_key(source_id), **locked}}
            try:
                self._transact([*_move(chunk, source_id, target_id), check])
            except _Conflict:
                continue  # another reader moved this chunk first
        unmark = {
            "Update": {
                "Key": _person_key(target_id),
                "UpdateExpression": "REMOVE absorbing",
                "ConditionExpression": "absorbing = :source",
                "ExpressionAttributeValues": {":source": {"S": source_id}},
            }
        }
        with suppress(_Conflict):  # another reader finished it
            self._transact([{"Delete": {"Key": _person_key(source_id), **locked}}, unmark])

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """One all-or-nothing write; a failed condition means someone else wrote first."""
        with_table = [
            {operation: {**body, "TableName": self._table}}
            for item in items
            for operation, body in item.items()
        ]
        try:
            transact(self._db, with_table)
        except ConditionsFailed as exc:
            raise _Conflict from exc

    def _call(self, operation: str, **arguments: Any) -> Any:
        try:
            return getattr(self._db, operation)(**arguments)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"DynamoDB {operation} failed: {type(exc).__name__}") from exc


def _records(
    log: DecisionLog | None,
    final: Callable[..., dict[str, Any]],
    decision: Decision,
    person_id: str | None,
) -> list[dict[str, Any]]:
    """The transaction items that record `decision`'s outcome for `person_id` in the log."""
    if log is None:
        return []
    return [log.record_item(final(decision.outcome, person_id, decision.reason))]


def _unwritten(log: DecisionLog | None, outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome that changed nothing in the graph, recorded through the log's batch."""
    if log is not None:
        log.defer(outcome)
    return outcome


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an identify or alias did: `outcome` and `reason` are stable codes (already_identified,
    too_many_ids, illegal_user_id, illegal_source_id, ...), safe to log and count; `detail`
    says more for people and may quote an id, so it is only ever stored with the event."""

    outcome: OutcomeCode
    person_id: str | None
    reason: str | None = None
    detail: str | None = None

    def record(self, call: IdentityCall) -> dict[str, Any]:
        """As stored with the event: enough to rebuild the graph from S3 alone."""
        record: dict[str, Any] = {"outcome": self.outcome, "personId": self.person_id}
        if self.reason is not None:
            record["reason"] = self.reason
        if self.detail is not None:
            record["detail"] = self.detail
        if call.force:
            record["forced"] = True
        return record


def _finish_first(header: dict[str, Any]) -> tuple[str, str] | None:
    """(source, target) of a large merge this person is part of and that must finish first."""
    if "mergingInto" in header:
        return header["pk"]["S"][7:], header["mergingInto"]["S"]
    if "absorbing" in header:
        return header["absorbing"]["S"], header["pk"]["S"][7:]
    return None


def _person(header: dict[str, Any]) -> Person:
    return Person(
        id=header["pk"]["S"][7:],
        identified=header["isIdentified"]["BOOL"],
        size=int(header["idCount"]["N"]),
        version=int(header["personVersion"]["N"]),
    )


def _id_key(distinct_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ID#{distinct_id}"}, "sk": {"S": "ID"}}


def _person_key(person_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"PERSON#{person_id}"}, "sk": {"S": "PERSON"}}


def _membership_key(person_id: str, distinct_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"PERSON#{person_id}"}, "sk": {"S": f"ID#{distinct_id}"}}


def _condition_version(
    person: Person, extra_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "ConditionExpression": "personVersion = :version"
        " AND attribute_not_exists(mergingInto) AND attribute_not_exists(absorbing)",
        "ExpressionAttributeValues": {
            ":version": {"N": str(person.version)},
            **(extra_values or {}),
        },
    }


def _new_pointers(person_id: str, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """An id joins a person: its pointer (only if it has none yet) and its membership."""
    items: list[dict[str, Any]] = []
    for distinct_id in ids:
        pointer = {**_id_key(distinct_id), "personId": {"S": person_id}}
        items.append({"Put": {"Item": pointer, "ConditionExpression": "attribute_not_exists(pk)"}})
        items.append({"Put": {"Item": _membership_key(person_id, distinct_id)}})
    return items


def _create(person_id: str, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    header = {
        **_person_key(person_id),
        "isIdentified": {"BOOL": True},
        "idCount": {"N": str(len(ids))},
        "personVersion": {"N": "1"},
        "createdAt": {"S": datetime.now(UTC).isoformat(timespec="milliseconds")},
    }
    put_header = {"Put": {"Item": header, "ConditionExpression": "attribute_not_exists(pk)"}}
    return [*_new_pointers(person_id, ids), put_header]


def _grow(person: Person, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    return [*_new_pointers(person.id, ids), _update_header(person, len(ids))]


def _update_header(person: Person, added: int, absorbing: str | None = None) -> dict[str, Any]:
    """Bump a person's version and size if nobody changed it since our read; it holds a userId,
    so it is identified (which marks a person an older version stored unmarked)."""
    # Attribute names are compound words: DynamoDB reserves plain ones like SIZE or IDENTIFIED.
    assignments = (
        "idCount = idCount + :added, personVersion = personVersion + :one, isIdentified = :true"
    )
    values: dict[str, Any] = {
        ":added": {"N": str(added)},
        ":one": {"N": "1"},
        ":true": {"BOOL": True},
    }
    if absorbing is not None:
        assignments += ", absorbing = :absorbing"
        values[":absorbing"] = {"S": absorbing}
    return {
        "Update": {
            "Key": _person_key(person.id),
            "UpdateExpression": f"SET {assignments}",
            **_condition_version(person, values),
        }
    }


def _move(ids: list[str], source_id: str, target_id: str) -> list[dict[str, Any]]:
    """Repoint ids from source to target (each only if it still points at source)."""
    items: list[dict[str, Any]] = []
    for distinct_id in ids:
        items.append(
            {
                "Update": {
                    "Key": _id_key(distinct_id),
                    "UpdateExpression": "SET personId = :target",
                    "ConditionExpression": "personId = :source",
                    "ExpressionAttributeValues": {
                        ":target": {"S": target_id},
                        ":source": {"S": source_id},
                    },
                }
            }
        )
        items.append({"Delete": {"Key": _membership_key(source_id, distinct_id)}})
        items.append({"Put": {"Item": _membership_key(target_id, distinct_id)}})
    return items
