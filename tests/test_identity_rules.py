"""The identity rules as plain functions (no AWS): refused ids and what `decide` plans."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, get_args

import pytest

from collector.identity import (
    BLOCKED_ANY_CASE,
    MAX_ID_LENGTH,
    Decision,
    IdentityCall,
    OutcomeCode,
    Person,
    Refusal,
    decide,
    refusal,
)

pytestmark = pytest.mark.engines

# --- refused ids ---------------------------------------------------------------------------

# PostHog's illegal ids (both of its lists) plus Segment's suggestions, as the issue lists them.
POSTHOG_ILLEGAL = [
    "anonymous",
    "guest",
    "distinctid",
    "distinct_id",
    "id",
    "not_authenticated",
    "email",
    "undefined",
    "true",
    "false",
    "null",
    "None",
    "none",
    "NaN",
    "0",
    "[object Object]",
]


def variants(value: str) -> list[str]:
    """Spellings a buggy client produces: other cases, padded, quoted (and padded inside)."""
    cased = sorted({value, value.upper(), value.lower(), value.title(), value.swapcase()})
    spelled = [*cased, f"  {value}  ", f" {value}", f"{value}\u00a0"]
    quoted = [f"'{value}'", f'"{value}"', f" '{value}' ", f'  " {value} "  ', f"'{value.upper()}'"]
    return [*spelled, *quoted]


PLACEHOLDERS = sorted({spelling for value in POSTHOG_ILLEGAL for spelling in variants(value)})


@pytest.mark.parametrize("distinct_id", PLACEHOLDERS)
def test_placeholder_ids_are_refused_in_any_case_trimmed_and_quoted(distinct_id: str) -> None:
    reason = refusal(distinct_id)
    assert reason is not None
    assert "placeholder" in reason.detail


@pytest.mark.parametrize(
    "distinct_id",
    ["", " ", "    ", "\u00a0", "\u3000", "''", '""', "' '", '"   "', "  ''  "],
)
def test_blank_ids_are_refused(distinct_id: str) -> None:
    assert refusal(distinct_id) == Refusal("blank")


@pytest.mark.parametrize(
    "distinct_id",
    ["0", "00", "000", "0-0", "-", "--", "0000-0000-0000", "-0-", " 000 ", "'0-0'", '"-"'],
)
def test_zeros_and_dashes_are_refused(distinct_id: str) -> None:
    reason = refusal(distinct_id)
    assert reason is not None and "placeholder" in reason.detail


@pytest.mark.parametrize("distinct_id", ["-1", " -1 ", "'-1'", '"-1"'])
def test_minus_one_is_refused(distinct_id: str) -> None:
    reason = refusal(distinct_id)
    assert reason is not None and "placeholder" in reason.detail


@pytest.mark.parametrize("length", [MAX_ID_LENGTH + 1, MAX_ID_LENGTH + 2, 10_000])
def test_ids_over_400_characters_are_refused(length: int) -> None:
    assert MAX_ID_LENGTH == 400
    assert refusal("u" * length) == Refusal("longer than 400 characters")


@pytest.mark.parametrize(
    "distinct_id",
    [
        "\x00",
        "user\x00",
        "\x00null",
        "user\n1",
        "user-1\n",
        "\n",
        "\x7f",
        "a\x7fb",
        "a\tb",
        "\x1f",
        "\r",
    ],
)
def test_ids_with_control_characters_are_refused(distinct_id: str) -> None:
    assert refusal(distinct_id) == Refusal("contains control characters")


@pytest.mark.parametrize("distinct_id", ["user\x85", "a\x9bb", "\x80"])
def test_c1_control_characters_are_refused(distinct_id: str) -> None:
    assert refusal(distinct_id) == Refusal("contains control characters")


@pytest.mark.parametrize(
    "distinct_id",
    [
        " user-1 ",
        "user-1",
        "0a",
        "a0",
        "00a",
        "0-1",
        "1",
        "-2",
        "--1",
        "nullable",
        "null-user",
        "NaNa",
        "id-7",
        "idx",
        "guest42",
        "undefined_user",
        "[object Object]x",
        "'null",
        "user@example.com",
        "ユーザー",
        "u" * MAX_ID_LENGTH,
    ],
)
def test_legal_ids_that_look_close_are_accepted(distinct_id: str) -> None:
    assert refusal(distinct_id) is None


def test_an_extra_blocked_list_refuses_more_and_keeps_the_built_in_one() -> None:
    blocked = BLOCKED_ANY_CASE | {"test-user", "qa@example.com"}
    for distinct_id in ("test-user", " Test-User ", "'TEST-USER'", '"qa@example.com"'):
        reason = refusal(distinct_id, blocked)
        assert reason is not None and "placeholder" in reason.detail, distinct_id
    assert refusal("null", blocked) is not None
    assert refusal("test-user-2", blocked) is None
    # Without the extra list those ids are fine.
    assert refusal("test-user") is None
    assert refusal("qa@example.com") is None


def test_the_blocked_list_is_what_the_caller_passes() -> None:
    only = frozenset({"shared-laptop"})
    assert refusal("Shared-Laptop", only) is not None
    # Structural refusals do not depend on the list.
    assert refusal("", only) == Refusal("blank")
    assert refusal("000", only) is not None
    assert refusal("x" * 401, only) is not None


# --- decide ------------------------------------------------------------------------------------


def anon(name: str, size: int = 1) -> Person:
    """A person stored unmarked (`isIdentified` false) by a version before issue 7. It holds a
    userId like every person, so `decide` treats it exactly like an identified one."""
    return Person(name, identified=False, size=size, version=3)


def known(name: str, size: int = 1) -> Person:
    return Person(name, identified=True, size=size, version=3)


IDENTIFY = IdentityCall("identify", "u", "a")
ALIAS = IdentityCall("alias", "u", "p")
FORCED = IdentityCall("alias", "u", "p", force=True)
CAP = 1000
REFUSED = Decision("refused", "already_identified")
REFUSED_NEW_USER = Decision("refused", "already_identified", create=("u",))

# (name, call, target = the user id's person, source = the other id's person, max_ids, decision)
CASES: list[tuple[str, IdentityCall, Person | None, Person | None, int, Decision]] = [
    # Neither id known: one new person with both ids (identified: it holds the user id).
    ("identify, neither known", IDENTIFY, None, None, CAP,
     Decision("created", create=("u", "a"))),
    ("alias, neither known", ALIAS, None, None, CAP,
     Decision("created", create=("u", "p"))),
    # Only the user id known: the other id joins its person (the write marks an unmarked one).
    ("identify, only unmarked target known", IDENTIFY, anon("T"), None, CAP,
     Decision("attached", attach=("a",))),
    ("identify, only target known", IDENTIFY, known("T"), None, CAP,
     Decision("attached", attach=("a",))),
    ("alias, only target known", ALIAS, known("T"), None, CAP,
     Decision("attached", attach=("p",))),
    ("alias, only unmarked target known", ALIAS, anon("T"), None, CAP,
     Decision("attached", attach=("p",))),
    # The protective rule: the other id is in someone else's person, so an unforced call is
    # refused, marked or not; the user id's own person still exists.
    ("identify, unmarked source, unknown target", IDENTIFY, None, anon("S", 3), CAP,
     REFUSED_NEW_USER),
    ("alias, unmarked source, unknown target", ALIAS, None, anon("S", 3), CAP,
     REFUSED_NEW_USER),
    ("identify, unmarked source, identified target", IDENTIFY, known("T"), anon("S"), CAP,
     REFUSED),
    ("identify, both unmarked", IDENTIFY, anon("T"), anon("S"), CAP, REFUSED),
    ("alias, unmarked source, identified target", ALIAS, known("T"), anon("S"), CAP, REFUSED),
    ("alias, both unmarked", ALIAS, anon("T"), anon("S"), CAP, REFUSED),
    ("identify, identified source, unknown target", IDENTIFY, None, known("S"), CAP,
     REFUSED_NEW_USER),
    ("identify, identified source, unmarked target", IDENTIFY, anon("T"), known("S"), CAP,
     REFUSED),
    ("identify, identified source, identified target", IDENTIFY, known("T"), known("S"), CAP,
     REFUSED),
    ("alias, identified source, unknown target", ALIAS, None, known("S"), CAP, REFUSED_NEW_USER),
    ("alias, identified source, identified target", ALIAS, known("T"), known("S"), CAP, REFUSED),
    ("already_identified is checked before the cap", IDENTIFY, known("T", 9), known("S", 9), 10,
     REFUSED),
    ("already_identified before the cap, unmarked source", IDENTIFY, anon("T", 6), anon("S", 5),
     10, REFUSED),
    # The fusion an unmarked person used to allow: A (or P) sits in a legacy unmarked person that
    # holds another user's id; joining U to it would make one person of two users.
    ("no fusion: identify(U, A), A in an unmarked person", IDENTIFY, None, anon("S", 2), CAP,
     REFUSED_NEW_USER),
    ("no fusion: alias(P -> U), P in an unmarked person", ALIAS, known("T"), anon("S", 2), CAP,
     REFUSED),
    # Same person already: nothing to write, marked or not.
    ("identify, same person, unmarked", IDENTIFY, anon("P", 2), anon("P", 2), CAP,
     Decision("already_linked")),
    ("identify, same person, identified", IDENTIFY, known("P", 2), known("P", 2), CAP,
     Decision("already_linked")),
    ("alias, same person, unmarked", ALIAS, anon("P", 2), anon("P", 2), CAP,
     Decision("already_linked")),
    ("alias, same person, identified", ALIAS, known("P", 2), known("P", 2), CAP,
     Decision("already_linked")),
    ("forced alias, same person", FORCED, known("P", 2), known("P", 2), CAP,
     Decision("already_linked")),
    ("same person past the cap is still linked", IDENTIFY, known("P", 50), known("P", 50), 10,
     Decision("already_linked")),
    # The documented opt-in: a forced alias merges another person, marked or not.
    ("forced alias, both identified", FORCED, known("T"), known("S"), CAP,
     Decision("merged", merge=True)),
    ("forced alias, identified source, unmarked target", FORCED, anon("T"), known("S"), CAP,
     Decision("merged", merge=True)),
    ("forced alias, identified source, unknown target", FORCED, None, known("S"), CAP,
     Decision("attached", attach=("u",))),
    ("forced alias, unmarked source", FORCED, known("T"), anon("S"), CAP,
     Decision("merged", merge=True)),
    ("forced alias, unmarked source, unknown target", FORCED, None, anon("S", 3), CAP,
     Decision("attached", attach=("u",))),
    ("forced alias, unknown source", FORCED, known("T"), None, CAP,
     Decision("attached", attach=("p",))),
    ("forced alias, neither known", FORCED, None, None, CAP,
     Decision("created", create=("u", "p"))),
    # The cap: a merge to exactly max_ids is allowed, one more is refused, forced or not.
    ("forced merge to exactly the cap", FORCED, known("T", 6), known("S", 4), 10,
     Decision("merged", merge=True)),
    ("forced merge to cap + 1", FORCED, known("T", 6), known("S", 5), 10,
     Decision("refused", "too_many_ids")),
    ("forced merge of unmarked persons to cap + 1", FORCED, anon("T", 6), anon("S", 5), 10,
     Decision("refused", "too_many_ids")),
    ("attach to a target at cap - 1", IDENTIFY, known("T", 9), None, 10,
     Decision("attached", attach=("a",))),
    ("attach to a full target", IDENTIFY, known("T", 10), None, 10,
     Decision("refused", "too_many_ids")),
    ("forced: user id joins a source at cap - 1", FORCED, None, known("S", 9), 10,
     Decision("attached", attach=("u",))),
    ("forced: user id joins a full source", FORCED, None, known("S", 10), 10,
     Decision("refused", "too_many_ids", create=("u",))),
    ("new pair within a cap of 2", IDENTIFY, None, None, 2,
     Decision("created", create=("u", "a"))),
    ("new pair past a cap of 1", IDENTIFY, None, None, 1,
     Decision("refused", "too_many_ids", create=("u",))),
    # identify without anonymousId: the user id's person exists; nothing else is written.
    ("identify alone, unknown", IdentityCall("identify", "u", None), None, None, CAP,
     Decision("created", create=("u",))),
    ("identify alone, unmarked", IdentityCall("identify", "u", None), anon("T"), None, CAP,
     Decision("already_linked")),
    ("identify alone, identified", IdentityCall("identify", "u", None), known("T"), None, CAP,
     Decision("already_linked")),
    ("identify alone ignores the cap", IdentityCall("identify", "u", None), known("T", 10), None,
     10, Decision("already_linked")),
    ("identify with anonymousId == userId", IdentityCall("identify", "u", "u"), None, None, CAP,
     Decision("created", create=("u",))),
    # alias where the user id is the previous id: nothing to link; the user's person exists.
    ("alias to itself, unknown", IdentityCall("alias", "u", "u"), None, None, CAP,
     Decision("created", create=("u",))),
    ("alias to itself, unmarked", IdentityCall("alias", "u", "u"), anon("T"), anon("T"), CAP,
     Decision("already_linked")),
    ("alias to itself, identified", IdentityCall("alias", "u", "u"), known("T"), known("T"), CAP,
     Decision("already_linked")),
]  # fmt: skip


def test_the_case_names_are_unique() -> None:
    names = [case[0] for case in CASES]
    assert len(names) == len(set(names))


def marked(person: Person | None, identified: bool) -> Person | None:
    return None if person is None else replace(person, identified=identified)


@pytest.mark.parametrize(
    ("call", "target", "source", "max_ids", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    call: IdentityCall,
    target: Person | None,
    source: Person | None,
    max_ids: int,
    expected: Decision,
) -> None:
    """Every person holds a userId, so a header stored unmarked decides like a marked one:
    the decision is the same whichever way the persons' flags are set."""
    for target_flag, source_flag in itertools.product((False, True), repeat=2):
        same = target is not None and source is not None and target.id == source.id
        flagged_source = marked(source, target_flag if same else source_flag)
        decision = decide(call, marked(target, target_flag), flagged_source, max_ids)
        assert decision == expected
        assert decision.writes == bool(expected.create or expected.attach or expected.merge)


def test_every_outcome_is_reached_by_the_table() -> None:
    assert set(get_args(OutcomeCode)) == {
        "created",
        "attached",
        "merged",
        "already_linked",
        "refused",
    }
    outcomes = {case[-1].outcome for case in CASES}
    assert outcomes == set(get_args(OutcomeCode))
    reasons = {case[-1].reason for case in CASES if case[-1].outcome == "refused"}
    assert reasons == {"already_identified", "too_many_ids"}


def test_a_refusal_never_moves_or_attaches_ids() -> None:
    for _, call, target, source, max_ids, _ in CASES:
        decision = decide(call, target, source, max_ids)
        if decision.outcome == "refused":
            assert not decision.merge and not decision.attach
            assert decision.create in ((), (call.user_id,))
            # It creates the user id's person exactly when that person is missing.
            assert bool(decision.create) == (target is None)


def test_an_unforced_call_never_joins_another_person() -> None:
    """The no-fusion rule over the whole table: without force, a call whose other id is in a
    person the user id is not in is refused, and a call never attaches the user id elsewhere."""
    for name, call, target, source, max_ids, _ in CASES:
        decision = decide(call, target, source, max_ids)
        if call.force:
            continue
        assert not decision.merge, name
        assert call.user_id not in decision.attach, name
        if source is not None and (target is None or target.id != source.id):
            assert (decision.outcome, decision.reason) == ("refused", "already_identified"), name


def test_only_a_write_is_a_write() -> None:
    assert not Decision("already_linked").writes
    assert not Decision("refused", "already_identified").writes
    assert not Decision("refused", "too_many_ids").writes
    assert Decision("refused", "already_identified", create=("u",)).writes
    assert Decision("created", create=("u", "a")).writes
    assert Decision("attached", attach=("a",)).writes
    assert Decision("merged", merge=True).writes
    assert "identify" not in Decision.__dataclass_fields__


# --- IdentityCall.from_message ---------------------------------------------------------------

OPT_IN = {"Collector": {"mergeIdentified": True}}


def test_identify_call_from_message() -> None:
    message = {"type": "identify", "userId": "u", "anonymousId": "a"}
    assert IdentityCall.from_message(message) == IdentityCall("identify", "u", "a", False)
    alone = {"type": "identify", "userId": "u"}
    assert IdentityCall.from_message(alone) == IdentityCall("identify", "u", None, False)


def test_alias_call_from_message() -> None:
    message = {"type": "alias", "userId": "u", "previousId": "p", "anonymousId": "a"}
    assert IdentityCall.from_message(message) == IdentityCall("alias", "u", "p", False)


def test_alias_opt_in_forces_the_merge() -> None:
    message = {"type": "alias", "userId": "u", "previousId": "p", "integrations": OPT_IN}
    call = IdentityCall.from_message(message)
    assert call.force is True
    assert (call.kind, call.user_id, call.source_id) == ("alias", "u", "p")
    both = {**message, "integrations": {"All": False, **OPT_IN}}
    assert IdentityCall.from_message(both).force is True


def test_identify_never_forces() -> None:
    message = {"type": "identify", "userId": "u", "anonymousId": "a", "integrations": OPT_IN}
    assert IdentityCall.from_message(message).force is False


@pytest.mark.parametrize(
    "integrations",
    [
        None,
        {},
        {"All": True},
        {"Collector": True},
        {"Collector": "mergeIdentified"},
        {"Collector": None},
        {"Collector": {}},
        {"Collector": {"mergeIdentified": False}},
        {"Collector": {"mergeIdentified": 1}},
        {"Collector": {"mergeIdentified": "true"}},
        {"Collector": {"mergeIdentified": "True"}},
        {"Collector": {"mergeIdentified": [True]}},
        {"Collector": {"mergeIdentified": {"yes": True}}},
        {"Collector": {"mergeidentified": True}},
        {"mergeIdentified": True},
    ],
)
def test_alias_is_not_forced_without_the_exact_opt_in(integrations: Any) -> None:
    message = {"type": "alias", "userId": "u", "previousId": "p", "integrations": integrations}
    assert IdentityCall.from_message(message).force is False
