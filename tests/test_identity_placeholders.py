"""Placeholder ids are compared as people see them (issue 7): a look-alike of a blocked value
(fullwidth, zero-width characters, quoted once or many times) is refused like the value itself;
ids that only resemble one stay accepted. Ids DynamoDB cannot key are refused up front."""

from __future__ import annotations

import json

import pytest

from collector.identity import IdentityCall, Refusal, refusal
from collector.identity_store import IdentityGraph

from .conftest import Aws


def fullwidth(text: str) -> str:
    """`text` in fullwidth forms (U+FF01..U+FF5E for "!".."~"), which NFKC folds back."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


LOOK_ALIKES = [
    fullwidth("null"),
    fullwidth("NULL"),
    fullwidth("undefined"),
    "nu\u200bll",  # zero-width space inside
    "\u200bnull",
    "null\u200d",  # zero-width joiner
    "\ufeffnull",  # byte order mark
    "n\u2060il",  # word joiner
    "null\u00a0",  # no-break space: NFKC makes it a space, then trimmed
    '"\\"null\\""',  # serialised twice: "\"null\""
    '\\"null\\"',  # the JSON-escaped quotes alone: \"null\"
    json.dumps(json.dumps("null")),
    json.dumps(json.dumps(json.dumps("null"))),  # "\"\\\"null\\\"\"": three layers
    json.dumps(json.dumps(json.dumps(json.dumps("undefined")))),
    json.dumps(json.dumps(json.dumps("null")))[1:-1],  # the escapes without the outer quotes
    "\u201cnull\u201d",  # “null”: typographic double quotes
    "\u2018undefined\u2019",  # typographic single quotes
    "\u00abnil\u00bb",  # «nil»
    "`null`",
    "``null``",
    "\u201c'null'\u201d",  # “'null'”
    "\u00ab \u201cnone\u201d \u00bb",
    "'\"null\"'",  # '"null"'
    "\"'null'\"",  # "'null'"
    " \" ' null ' \" ",  # layers with blanks between
    '""null""',
    fullwidth('"') + "null" + fullwidth('"'),
    "'\u200bnull'",
    "nil",
    "NIL",
    "Nil",
    "(null)",
    "<nil>",
    "<NIL>",
    "N/A",
    "n/a",
    "'n/a'",
    fullwidth("n/a"),
    fullwidth("0"),  # matches ^[0-]*$ once folded
]

ACCEPTED = [
    "user-1",
    fullwidth("user") + "-1",  # no placeholder once folded; folded only to compare
    "nullable",
    "null-1",
    "nil-42",
    "nihil",
    "n/a/b",
    "n/ab",
    "(null)x",
    "<nil",
    "someone@example.com",
    "first.last+tag@example.co.uk",
    "a" * 400,  # the longest id allowed, 400 bytes
    "👩\u200d💻",  # a joiner that is part of the id, not hiding a placeholder
    "ユーザー",
    "用" * 340,  # 1,020 bytes of UTF-8
    "用" * 340 + "a",  # 1,021 bytes: the most DynamoDB can key after "ID#"
    "'quoted id'",
    # Quotes inside an id are part of it: only quotes wrapping the whole id are layers.
    "o'brien",
    "O\u2019Brien",
    "d'Arcy",
    'say "hi"',
    'say \\"hi\\"',  # say \"hi\": escaped inner quotes, still an id
    "it's null",
    'the "null" user',
    "\u201cnull\u201d-1",
    "`null`x",
    "\u201cquoted id\u201d",
]


@pytest.mark.parametrize("distinct_id", LOOK_ALIKES, ids=ascii)
def test_a_look_alike_placeholder_is_refused(distinct_id: str) -> None:
    reason = refusal(distinct_id)
    assert reason is not None
    assert reason.detail.endswith("is a placeholder, not an id")


@pytest.mark.parametrize("distinct_id", ACCEPTED, ids=lambda i: ascii(i)[:40])
def test_a_legitimate_id_is_accepted(distinct_id: str) -> None:
    assert refusal(distinct_id) is None


def test_the_fullwidth_helper_makes_fullwidth_forms() -> None:
    assert fullwidth("null") == "\uff4e\uff55\uff4c\uff4c"
    assert fullwidth("user") + "-1" == "\uff55\uff53\uff45\uff52-1"


def test_the_reason_names_the_placeholder_as_seen() -> None:
    assert refusal(fullwidth("null")) == Refusal("'null' is a placeholder, not an id")
    assert refusal('"\\"nil\\""') == Refusal("'nil' is a placeholder, not an id")
    assert refusal("nu\u200bll") == Refusal("'null' is a placeholder, not an id")


def test_only_quotes_and_invisible_characters_are_blank() -> None:
    for blank in ('""', "''", '"\\"\\""', "\u200b", " \u200b\u200d ", "'\u2060'", '" "'):
        assert refusal(blank) == Refusal("blank"), ascii(blank)


# --- what DynamoDB can key ---------------------------------------------------------------------


def test_an_id_past_dynamodbs_key_size_is_refused() -> None:
    # 342 CJK characters: within the 400-character limit, but 1,026 bytes of UTF-8, and the id
    # is keyed as the sort key "ID#<id>" (at most 1,024 bytes).
    assert refusal("用" * 342) == Refusal("1026 bytes of UTF-8; DynamoDB keys at most 1021")
    reason = refusal("用" * 340 + "ab")  # 1,022 bytes: one past
    assert reason is not None and "bytes of UTF-8" in reason.detail
    assert refusal("用" * 340) is None  # 1,020 bytes
    assert refusal("😀" * 256) is not None  # 1,024 bytes in 256 characters
    assert refusal("😀" * 255) is None  # 1,020 bytes


def test_the_largest_accepted_id_is_stored_and_one_byte_more_never_reaches_dynamodb(
    aws: Aws,
) -> None:
    """moto holds sort keys to DynamoDB's 1,024 bytes, so this checks the limit is the real one."""
    graph = IdentityGraph(aws.dynamodb, aws.table)
    largest, too_large = "用" * 340 + "a", "用" * 340 + "ab"
    created = graph.apply(IdentityCall("identify", largest, "anon-1"))
    assert created["outcome"] == "created"
    view = graph.view(largest)
    assert view is not None and view.distinct_ids == sorted([largest, "anon-1"])
    made: list[str] = []
    aws.dynamodb.meta.events.register(
        "before-call.dynamodb", lambda model, **_: made.append(model.name)
    )
    refused = graph.apply(IdentityCall("identify", too_large, "anon-2"))
    assert refused["outcome"] == "refused"
    assert refused["personId"] is None
    assert refused["reason"] == "illegal_user_id"
    assert "bytes of UTF-8" in refused["detail"]
    assert made == []
    linked = graph.apply(IdentityCall("identify", "user-2", too_large))
    assert (linked["outcome"], linked["reason"]) == ("refused", "illegal_source_id")
    assert graph.view(too_large) is None


def test_ids_with_inner_quotes_are_stored_as_sent_and_quoted_placeholders_never_are(
    aws: Aws,
) -> None:
    graph = IdentityGraph(aws.dynamodb, aws.table)
    created = graph.apply(IdentityCall("identify", "o'brien", 'say "hi"'))
    assert created["outcome"] == "created"
    view = graph.view('say "hi"')
    assert view is not None and view.distinct_ids == sorted(["o'brien", 'say "hi"'])
    for placeholder in (json.dumps(json.dumps(json.dumps("null"))), "\u201cnull\u201d", "`null`"):
        refused = graph.apply(IdentityCall("identify", "o'brien", placeholder))
        assert refused["outcome"] == "refused"
        assert refused["reason"] == "illegal_source_id"
        assert refused["detail"] == "'null' is a placeholder, not an id"
        assert graph.view(placeholder) is None
    assert graph.view("o'brien") == view
