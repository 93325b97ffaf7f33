"""DynamoDB's condition, key-condition and update expressions, for the embedded local table.

Only the grammar the collector writes is understood: comparisons, `attribute_exists`,
`attribute_not_exists`, `begins_with`, AND / OR / NOT with parentheses, `SET a = :v` with `+`
and `-`, and `REMOVE a`. Anything else raises UnsupportedExpression, so a new kind of
expression fails the conformance tests instead of being silently misread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Item = dict[str, dict[str, Any]]
Condition = Callable[[Item | None], bool]

_TOKEN = re.compile(r"\s*(<>|<=|>=|[=<>(),+\-]|:\w+|#\w+|[A-Za-z_]\w*)")
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class UnsupportedExpression(ValueError):
    """An expression outside the subset the local table implements."""


@dataclass(frozen=True, slots=True)
class Update:
    """A parsed UpdateExpression: `SET` assignments and `REMOVE`d attributes."""

    assignments: tuple[tuple[str, Callable[[Item], dict[str, Any]]], ...]
    removals: tuple[str, ...]

    def apply(self, item: Item) -> Item:
        updated = dict(item)
        # DynamoDB evaluates every right-hand side against the item as it was.
        values = [(name, value(item)) for name, value in self.assignments]
        updated.update(values)
        for name in self.removals:
            updated.pop(name, None)
        return updated


def parse_condition(
    text: str | None, names: Mapping[str, str] | None, values: Mapping[str, Any] | None
) -> Condition:
    """A predicate over an item (None: the item does not exist) for `text`."""
    if not text:
        return lambda item: True
    parser = _Parser(text, names or {}, values or {})
    condition = parser.disjunction()
    parser.expect_end()
    return condition


def parse_update(
    text: str, names: Mapping[str, str] | None, values: Mapping[str, Any] | None
) -> Update:
    parser = _Parser(text, names or {}, values or {})
    assignments: list[tuple[str, Callable[[Item], dict[str, Any]]]] = []
    removals: list[str] = []
    while not parser.at_end():
        clause = parser.take().upper()
        while True:
            if clause == "SET":
                name = parser.attribute()
                parser.expect("=")
                assignments.append((name, parser.arithmetic()))
            elif clause == "REMOVE":
                removals.append(parser.attribute())
            else:
                raise UnsupportedExpression(f"update clause {clause!r} in {text!r}")
            if parser.peek() != ",":
                break
            parser.take()
    return Update(tuple(assignments), tuple(removals))


def number(value: Decimal) -> dict[str, str]:
    """A DynamoDB number as DynamoDB writes it: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return {"N": text}


class _Parser:
    def __init__(self, text: str, names: Mapping[str, str], values: Mapping[str, Any]) -> None:
        self.text, self.names, self.values = text, names, values
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise UnsupportedExpression(f"unexpected end of {self.text!r}")
        self.position += 1
        return token

    def expect(self, token: str) -> None:
        if self.take() != token:
            raise UnsupportedExpression(f"expected {token!r} in {self.text!r}")

    def at_end(self) -> bool:
        return self.peek() is None

    def expect_end(self) -> None:
        if not self.at_end():
            raise UnsupportedExpression(f"unexpected {self.peek()!r} in {self.text!r}")

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.upper() == word:
            self.position += 1
            return True
        return False

    def disjunction(self) -> Condition:
        terms = [self.conjunction()]
        while self.keyword("OR"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else lambda item: any(term(item) for term in terms)

    def conjunction(self) -> Condition:
        terms = [self.negation()]
        while self.keyword("AND"):
            terms.append(self.negation())
        return terms[0] if len(terms) == 1 else lambda item: all(term(item) for term in terms)

    def negation(self) -> Condition:
        if self.keyword("NOT"):
            inner = self.negation()
            return lambda item: not inner(item)
        return self.primary()

    def primary(self) -> Condition:
        if self.peek() == "(":
            self.take()
            inner = self.disjunction()
            self.expect(")")
            return inner
        token = self.peek()
        if token in ("attribute_exists", "attribute_not_exists", "begins_with"):
            return self.function(self.take())
        left = self.operand()
        comparator = self.take()
        if comparator not in _COMPARATORS:
            raise UnsupportedExpression(f"comparator {comparator!r} in {self.text!r}")
        right = self.operand()
        compare = _COMPARATORS[comparator]
        return lambda item: _compare(left(item or {}), right(item or {}), compare)

    def function(self, name: str) -> Condition:
        self.expect("(")
        attribute = self.attribute()
        if name == "begins_with":
            self.expect(",")
            prefix = self.operand()
            self.expect(")")

            def begins(item: Item | None) -> bool:
                value, start = (item or {}).get(attribute) or {}, prefix(item or {}) or {}
                if "S" not in value or "S" not in start:
                    return False
                return str(value["S"]).startswith(str(start["S"]))

            return begins
        self.expect(")")
        if name == "attribute_exists":
            return lambda item: item is not None and attribute in item
        return lambda item: item is None or attribute not in item

    def attribute(self) -> str:
        token = self.take()
        if token.startswith("#"):
            if token not in self.names:
                raise UnsupportedExpression(f"{token} has no ExpressionAttributeNames entry")
            return self.names[token]
        if not re.fullmatch(r"[A-Za-z_]\w*", token):
            raise UnsupportedExpression(f"attribute {token!r} in {self.text!r}")
        return token

    def operand(self) -> Callable[[Item], dict[str, Any] | None]:
        token = self.peek()
        if token is not None and token.startswith(":"):
            self.take()
            if token not in self.values:
                raise UnsupportedExpression(f"{token} has no ExpressionAttributeValues entry")
            value = self.values[token]
            return lambda item: value
        name = self.attribute()
        return lambda item: item.get(name)

    def arithmetic(self) -> Callable[[Item], dict[str, Any]]:
        left = self.operand()
        if self.peek() not in ("+", "-"):
            return lambda item: _present(left(item))
        sign = 1 if self.take() == "+" else -1
        right = self.operand()

        def calculate(item: Item) -> dict[str, Any]:
            a, b = _present(left(item)), _present(right(item))
            if "N" not in a or "N" not in b:
                raise UnsupportedExpression("arithmetic on a value that is not a number")
            return number(Decimal(a["N"]) + sign * Decimal(b["N"]))

        return calculate


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None:
            if text[position:].strip():
                raise UnsupportedExpression(f"cannot read {text[position:]!r}")
            break
        tokens.append(found.group(1))
        position = found.end()
    return tokens


def _present(value: dict[str, Any] | None) -> dict[str, Any]:
    if value is None:
        raise UnsupportedExpression("an update refers to an attribute the item does not have")
    return value


def _compare(
    left: dict[str, Any] | None, right: dict[str, Any] | None, compare: Callable[[Any, Any], bool]
) -> bool:
    # A missing attribute, or values of different types, never satisfy a comparison.
    if left is None or right is None or left.keys() != right.keys():
        return False
    (kind,) = left
    if kind == "N":
        return compare(Decimal(left["N"]), Decimal(right["N"]))
    if kind in ("S", "B"):
        return compare(left[kind], right[kind])
    if compare is _COMPARATORS["="] or compare is _COMPARATORS["<>"]:
        return compare(left, right)
    return False
