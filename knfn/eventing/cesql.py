"""CESQL, the CloudEvents SQL expression language of a Trigger's ``cesql`` filter. Pure functions.

:func:`parse_cesql` reads an expression once, when the Trigger is loaded, into a
:class:`CesqlExpression` whose :meth:`~CesqlExpression.matches` is the filter. It follows
CloudEvents SQL v1 (cloudevents/spec ``cesql/spec.md``) and the grammar and evaluation of the
Go SDK Knative runs (cloudevents/sdk-go ``sql/v2``); the evaluation itself (casts, operators,
built-in functions) is in :mod:`knfn.eventing.cesql_eval`. No Python library implements CESQL,
so the language is written out here:

* Keywords, function names and attribute names are case-insensitive (names are lowercased).
* Precedence, highest first: function calls; unary ``NOT`` and ``-`` (they bind to the next
  operand only: write ``NOT (type = 'x')``, not ``NOT type = 'x'``); ``LIKE``; ``IN``;
  ``* / %``; ``+ -``; comparisons; then ``AND``, ``OR`` and ``XOR``, which share one level and
  group to the right (``a AND b OR c`` is ``a AND (b OR c)``, as the spec's ANTLR grammar
  says): use parentheses when mixing them.
* Integers are 32-bit and wrap as Go's ``int32`` does; ``/`` truncates towards zero and ``%``
  takes the sign of the dividend; dividing by zero is an error.
* Implicit casts as the spec's section 3.7: ``=``/``!=``/``<>`` cast the left operand to the
  right one's type, ``IN`` casts the set to the left operand's type, ``< <= > >=`` and arithmetic
  cast to integers, logic to booleans, ``LIKE`` to strings.
* As a filter, an expression matches only when it evaluates to the boolean true without any
  error (the spec's fail-fast mode): a missing attribute, a failed cast or a division by zero
  anywhere it is evaluated means no match. ``AND``/``OR`` short-circuit, so
  ``EXISTS myext AND myext = 'x'`` is safe. Attributes are strings here, as they are for an
  event that arrived in binary mode, so a bare ``mybool`` is a string, not a boolean.
* Syntax errors, unknown functions and wrong argument counts are found when the expression is
  parsed, not per event. Strings may be quoted with ``'`` or ``"``; the quote is escaped with a
  backslash (or doubled, as in SQL); ``LIKE`` patterns use ``%`` and ``_``, escaped with ``\\``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knfn.eventing.cesql_eval import (
    FUNCTIONS,
    INT_MAX,
    INT_MIN,
    CesqlError,
    CesqlEvaluationError,
    Node,
    Value,
    arithmetic,
    call,
    compare,
    const,
    like,
    logic,
    lookup,
    member_of,
    signature,
    to_bool,
    to_int,
    wrap,
)

__all__ = ["CesqlError", "CesqlEvaluationError", "CesqlExpression", "Value", "parse_cesql"]

_KEYWORDS = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"})
_COMPARISONS = ("=", "!=", "<>", "<", "<=", ">", ">=")
_WORD = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_IDENTIFIER = re.compile(r"[a-z0-9]+", re.ASCII)


@dataclass(frozen=True)
class CesqlExpression:
    """A parsed CESQL expression."""

    text: str
    root: Node

    def evaluate(self, attributes: Mapping[str, str]) -> Value:
        """The expression's value; the first error raises CesqlEvaluationError (fail fast)."""
        try:
            return self.root(attributes)
        except RecursionError:
            raise CesqlEvaluationError("generic", "the expression nests too deeply") from None

    def matches(self, attributes: Mapping[str, str]) -> bool:
        """Whether the expression evaluates to true without error (the filter semantics)."""
        try:
            value = self.evaluate(attributes)
        except CesqlEvaluationError:
            return False
        return value is True


def parse_cesql(expression: str) -> CesqlExpression:
    """Parse a CESQL expression; CesqlError names the position of a syntax error."""
    if not isinstance(expression, str) or not expression.strip():
        raise CesqlError("empty CESQL expression")
    try:
        root = _Parser(expression).parse()
    except RecursionError:
        raise CesqlError("the CESQL expression nests too deeply") from None
    return CesqlExpression(expression, root)


@dataclass(frozen=True)
class _Token:
    kind: str  # int, str, name, kw, op, (, ), ",", eof
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in " \t\r\n":
            i += 1
        elif char in "'\"":
            value, end = _string_literal(text, i)
            tokens.append(_Token("str", text[i:end], i, value))
            i = end
        elif word := _WORD.match(text, i):
            w = word.group()
            if w.isdigit():
                tokens.append(_Token("int", w, i, int(w)))
            elif w.upper() in _KEYWORDS:
                tokens.append(_Token("kw", w, i, w.upper()))
            else:
                tokens.append(_Token("name", w, i, w))
            i = word.end()
        elif text.startswith(("!=", "<>", "<=", ">="), i):
            tokens.append(_Token("op", text[i : i + 2], i, text[i : i + 2]))
            i += 2
        elif char in "=<>+-*/%":
            tokens.append(_Token("op", char, i, char))
            i += 1
        elif char in "(),":
            tokens.append(_Token(char, char, i))
            i += 1
        else:
            raise _syntax(i, f"unexpected character {char!r}")
    tokens.append(_Token("eof", "end of expression", n))
    return tokens


def _string_literal(text: str, start: int) -> tuple[str, int]:
    """The value of the string literal at start, and the index after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            # Only the quote is unescaped; other pairs stay, so LIKE still sees \% and \_.
            nxt = text[i + 1]
            out.append(quote if nxt == quote else char + nxt)
            i += 2
        elif char == quote:
            if text.startswith(quote, i + 1):
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise _syntax(start, "unterminated string literal")


def _syntax(pos: int, message: str) -> CesqlError:
    return CesqlError(f"invalid CESQL at position {pos + 1}: {message}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> _Token:
        token = self.peek()
        self.i += 1
        return token

    def is_kw(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "kw" and token.value == word

    def expect(self, kind: str, what: str) -> _Token:
        token = self.next()
        if token.kind != kind:
            raise _syntax(token.pos, f"expected {what}, found {_describe(token)}")
        return token

    def parse(self) -> Node:
        node = self.logic()
        token = self.peek()
        if token.kind != "eof":
            raise _syntax(token.pos, f"unexpected {_describe(token)}")
        return node

    def logic(self) -> Node:
        # AND, OR and XOR share one precedence level and group to the right (CESQLParser.g4).
        left = self.comparison()
        token = self.peek()
        if token.kind == "kw" and token.value in ("AND", "OR", "XOR"):
            self.next()
            return logic(token.value, left, self.logic())
        return left

    def comparison(self) -> Node:
        node = self.additive()
        while self.peek().kind == "op" and self.peek().value in _COMPARISONS:
            op = self.next().value
            node = compare(op, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek().kind == "op" and self.peek().value in ("+", "-"):
            op = self.next().value
            node = arithmetic(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.membership()
        while self.peek().kind == "op" and self.peek().value in ("*", "/", "%"):
            op = self.next().value
            node = arithmetic(op, node, self.membership())
        return node

    def membership(self) -> Node:
        node = self.like()
        while True:
            negate = self.is_kw("NOT") and self.is_kw("IN", 1)
            if negate:
                self.next()
            if not self.is_kw("IN"):
                return node
            self.next()
            self.expect("(", "'(' and a set of values after IN")
            items = [self.logic()]
            while self.peek().kind == ",":
                self.next()
                items.append(self.logic())
            self.expect(")", "',' or ')' in the IN set")
            node = member_of(node, tuple(items), negate)

    def like(self) -> Node:
        node = self.unary()
        while True:
            negate = self.is_kw("NOT") and self.is_kw("LIKE", 1)
            if negate:
                self.next()
            if not self.is_kw("LIKE"):
                return node
            self.next()
            pattern = self.next()
            if pattern.kind != "str":
                raise _syntax(
                    pattern.pos,
                    f"LIKE needs a quoted string pattern, found {_describe(pattern)}",
                )
            node = like(node, pattern.value, negate)

    def unary(self) -> Node:
        token = self.peek()
        if token.kind == "kw" and token.value == "NOT":
            self.next()
            operand = self.unary()
            return lambda event: not to_bool(operand(event))
        if token.kind == "op" and token.value == "-":
            self.next()
            if self.peek().kind == "int":
                # Folded so that -2147483648 is a valid literal.
                literal = self.next()
                return const(_int_literal(-literal.value, literal))
            operand = self.unary()
            return lambda event: wrap(-to_int(operand(event)))
        return self.primary()

    def primary(self) -> Node:
        token = self.next()
        if token.kind == "int":
            return const(_int_literal(token.value, token))
        if token.kind == "str":
            return const(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE"):
            return const(token.value == "TRUE")
        if token.kind == "kw" and token.value == "EXISTS":
            name = self.expect("name", "an attribute name after EXISTS")
            attribute = _attribute_name(name)
            return lambda event: attribute in event
        if token.kind == "(":
            node = self.logic()
            self.expect(")", "')'")
            return node
        if token.kind == "name":
            if self.peek().kind == "(":
                return self.call(token)
            attribute = _attribute_name(token)
            return lambda event: lookup(event, attribute)
        raise _syntax(token.pos, f"expected a value, found {_describe(token)}")

    def call(self, name: _Token) -> Node:
        self.expect("(", "'('")
        args: list[Node] = []
        if self.peek().kind != ")":
            args.append(self.logic())
            while self.peek().kind == ",":
                self.next()
                args.append(self.logic())
        self.expect(")", "',' or ')' after the arguments")
        function = name.value.upper()
        sig = signature(function, len(args))
        if sig is None:
            if function not in FUNCTIONS:
                raise _syntax(name.pos, f"unknown function {function}")
            raise _syntax(
                name.pos,
                f"{function} does not take {len(args)} argument{'s' * (len(args) != 1)}",
            )
        return call(sig, tuple(args))


def _describe(token: _Token) -> str:
    return token.text if token.kind == "eof" else repr(token.text)


def _int_literal(value: int, token: _Token) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise _syntax(token.pos, f"integer {token.text} is outside the 32-bit range")
    return value


def _attribute_name(token: _Token) -> str:
    name = str(token.value).lower()
    if not _IDENTIFIER.fullmatch(name):
        raise _syntax(token.pos, f"{token.text!r} is not an attribute name (a-z, 0-9)")
    return name
