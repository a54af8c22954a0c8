"""Trigger filters: which events of a broker a Trigger's subscriber gets. Pure functions.

A :data:`Filter` is a predicate over an event's attributes (every context attribute and
extension, as strings). :func:`compile_trigger` turns a Trigger's ``spec`` into one, checking
its shape first, as Knative does (knative/eventing):

* ``spec.filters`` (``pkg/eventfilter/subscriptionsapi``), when it is a non-empty list, wins over
  ``spec.filter`` (``pkg/broker/filter/filter_handler.go`` filterEvent); its entries are ANDed.
  Each entry has exactly one dialect (``pkg/apis/eventing/v1/trigger_validation.go``
  ValidateOneOf): ``exact``, ``prefix``, ``suffix`` (attribute -> string, every pair must
  match, case-sensitive; a missing attribute never matches), ``all`` and ``any`` (lists of
  filters), ``not`` (one filter) and ``cesql`` (an expression).
* ``spec.filter.attributes`` (``pkg/eventfilter/attributes/filter.go``): every attribute named
  must be present and equal; an empty value asks for the attribute with any non-empty value.
* No filter at all matches every event.

Stricter than upstream, so that a typo cannot silently match everything: upstream ignores an
entry with no dialect and an ``exact``/``prefix``/``suffix`` with an empty value (the filter is
skipped, so it matches); here both are errors.

CESQL (:func:`compile_cesql`) follows CloudEvents SQL v1 (cloudevents/spec ``cesql/spec.md``)
and the grammar and evaluation of the Go SDK Knative runs (cloudevents/sdk-go ``sql/v2``):

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
* Syntax errors, unknown functions and wrong argument counts are found when the Trigger is
  loaded, not per event. Strings may be quoted with ``'`` or ``"``; the quote is escaped with a
  backslash (or doubled, as in SQL); ``LIKE`` patterns use ``%`` and ``_``, escaped with ``\\``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knfn.errors import KnfnError

Filter = Callable[[Mapping[str, str]], bool]
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")

# Filter keys must be attribute names starting with a letter (trigger_validation.go).
_FILTER_KEY = re.compile(r"[a-z][a-z0-9]*")


class FilterError(KnfnError, ValueError):
    """A Trigger's filter is malformed; the message names the field, e.g. spec.filters[1].cesql."""


def match_all(attributes: Mapping[str, str]) -> bool:
    """The filter of a Trigger without one: every event."""
    return True


def compile_trigger(spec: Mapping[str, Any]) -> Filter:
    """The filter of a Trigger's ``spec``: ``filters`` when non-empty, else ``filter``, else all."""
    raw_filters = spec.get("filters")
    filters: Filter | None = None
    if raw_filters is not None:
        if not isinstance(raw_filters, list):
            raise FilterError("spec.filters: must be a list of filters")
        if raw_filters:
            filters = _all(
                [_compile_filter(f, f"spec.filters[{i}]") for i, f in enumerate(raw_filters)]
            )
    # spec.filter is validated even when spec.filters wins, as the webhook does.
    attributes = _compile_attributes(spec.get("filter"))
    return filters or attributes


def compile_cesql(expression: str) -> Filter:
    """A filter that passes an event when the CESQL expression evaluates to true, error-free."""
    return parse_cesql(expression).matches


# -- spec.filter.attributes ------------------------------------------------------------------


def _compile_attributes(raw: Any) -> Filter:
    if raw is None:
        return match_all
    if not isinstance(raw, Mapping):
        raise FilterError("spec.filter: must be an object with attributes")
    # Unknown fields were refused when the manifests were read (knfn/schema.py).
    attributes = raw.get("attributes")
    if attributes is None:
        return match_all
    wanted = _string_map(attributes, "spec.filter.attributes", allow_empty_values=True)
    if not wanted:
        return match_all
    items = tuple(wanted.items())

    def matches(event: Mapping[str, str]) -> bool:
        for name, want in items:
            value = event.get(name)
            if value is None or (want == "" and value == ""):
                return False
            if want and value != want:
                return False
        return True

    return matches


# -- spec.filters dialects -------------------------------------------------------------------


def _compile_filter(raw: Any, where: str) -> Filter:
    choices = ", ".join(DIALECTS)
    if not isinstance(raw, Mapping):
        raise FilterError(f"{where}: must be an object with one of {choices}")
    keys = [str(k) for k in raw]
    for key in keys:
        if key not in DIALECTS:
            raise FilterError(f"{where}.{key}: unknown filter dialect; use one of {choices}")
    if not keys:
        raise FilterError(f"{where}: empty filter; give one of {choices}")
    if len(keys) > 1:
        raise FilterError(
            f"{where}: has {len(keys)} dialects ({', '.join(keys)}); a filter has exactly one, "
            "combine several with all"
        )
    dialect = keys[0]
    value = raw[dialect]
    at = f"{where}.{dialect}"
    if dialect in ("exact", "prefix", "suffix"):
        pairs = tuple(_string_map(value, at, allow_empty_values=False).items())
        if not pairs:
            raise FilterError(f"{at}: must name at least one attribute")
        return _pairs_filter(dialect, pairs)
    if dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"{at}: must be a non-empty list of filters")
        nested = [_compile_filter(f, f"{at}[{i}]") for i, f in enumerate(value)]
        return _all(nested) if dialect == "all" else _any(nested)
    if dialect == "not":
        inner = _compile_filter(value, at)
        return lambda event: not inner(event)
    if not isinstance(value, str) or not value.strip():
        raise FilterError(f"{at}: must be a non-empty CESQL expression")
    try:
        return compile_cesql(value)
    except FilterError as exc:
        raise FilterError(f"{at}: {exc}") from None


def _string_map(raw: Any, where: str, *, allow_empty_values: bool) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise FilterError(f"{where}: must be an object of attribute names to strings")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _FILTER_KEY.fullmatch(name):
            raise FilterError(
                f"{where}: {name!r} is not an attribute name "
                "(a lowercase letter, then lowercase letters and digits)"
            )
        if not isinstance(value, str):
            raise FilterError(f"{where}.{name}: {value!r} must be a string (quote it in YAML)")
        if not value and not allow_empty_values:
            raise FilterError(f"{where}.{name}: must not be empty")
        out[name] = value
    return out


_PAIR_TESTS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda value, want: value == want,
    "prefix": lambda value, want: value.startswith(want),
    "suffix": lambda value, want: value.endswith(want),
}


def _pairs_filter(dialect: str, pairs: tuple[tuple[str, str], ...]) -> Filter:
    test = _PAIR_TESTS[dialect]

    def matches(event: Mapping[str, str]) -> bool:
        for name, want in pairs:
            value = event.get(name)
            if value is None or not test(value, want):
                return False
        return True

    return matches


def _all(filters: Sequence[Filter]) -> Filter:
    if len(filters) == 1:
        return filters[0]
    return lambda event: all(f(event) for f in filters)


def _any(filters: Sequence[Filter]) -> Filter:
    if len(filters) == 1:
        return filters[0]
    return lambda event: any(f(event) for f in filters)


# -- CESQL -----------------------------------------------------------------------------------

Value = bool | int | str
_Node = Callable[[Mapping[str, str]], Value]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_KEYWORDS = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE"})
_COMPARISONS = ("=", "!=", "<>", "<", "<=", ">", ">=")
_WORD = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_IDENTIFIER = re.compile(r"[a-z0-9]+", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
# Unicode's White_Space property, which TRIM removes (cesql/spec.md 3.5.1).
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class CesqlEvaluationError(Exception):
    """An error while evaluating a CESQL expression; ``kind`` is the spec's error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # math, cast, missingAttribute, functionEvaluation


@dataclass(frozen=True)
class CesqlExpression:
    """A parsed CESQL expression."""

    text: str
    root: _Node

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
    """Parse a CESQL expression; FilterError names the position of a syntax error."""
    if not isinstance(expression, str) or not expression.strip():
        raise FilterError("empty CESQL expression")
    try:
        root = _Parser(expression).parse()
    except RecursionError:
        raise FilterError("the CESQL expression nests too deeply") from None
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


def _syntax(pos: int, message: str) -> FilterError:
    return FilterError(f"invalid CESQL at position {pos + 1}: {message}")


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

    def parse(self) -> _Node:
        node = self.logic()
        token = self.peek()
        if token.kind != "eof":
            raise _syntax(token.pos, f"unexpected {_describe(token)}")
        return node

    def logic(self) -> _Node:
        # AND, OR and XOR share one precedence level and group to the right (CESQLParser.g4).
        left = self.comparison()
        token = self.peek()
        if token.kind == "kw" and token.value in ("AND", "OR", "XOR"):
            self.next()
            return _logic(token.value, left, self.logic())
        return left

    def comparison(self) -> _Node:
        node = self.additive()
        while self.peek().kind == "op" and self.peek().value in _COMPARISONS:
            op = self.next().value
            node = _compare(op, node, self.additive())
        return node

    def additive(self) -> _Node:
        node = self.multiplicative()
        while self.peek().kind == "op" and self.peek().value in ("+", "-"):
            op = self.next().value
            node = _math(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> _Node:
        node = self.membership()
        while self.peek().kind == "op" and self.peek().value in ("*", "/", "%"):
            op = self.next().value
            node = _math(op, node, self.membership())
        return node

    def membership(self) -> _Node:
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
            node = _in(node, tuple(items), negate)

    def like(self) -> _Node:
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
            node = _like(node, pattern.value, negate)

    def unary(self) -> _Node:
        token = self.peek()
        if token.kind == "kw" and token.value == "NOT":
            self.next()
            operand = self.unary()
            return lambda event: not _to_bool(operand(event))
        if token.kind == "op" and token.value == "-":
            self.next()
            if self.peek().kind == "int":
                # Folded so that -2147483648 is a valid literal.
                literal = self.next()
                return _const(_int_literal(-literal.value, literal))
            operand = self.unary()
            return lambda event: _wrap(-_to_int(operand(event)))
        return self.primary()

    def primary(self) -> _Node:
        token = self.next()
        if token.kind == "int":
            return _const(_int_literal(token.value, token))
        if token.kind == "str":
            return _const(token.value)
        if token.kind == "kw" and token.value in ("TRUE", "FALSE"):
            return _const(token.value == "TRUE")
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
            return lambda event: _lookup(event, attribute)
        raise _syntax(token.pos, f"expected a value, found {_describe(token)}")

    def call(self, name: _Token) -> _Node:
        self.expect("(", "'('")
        args: list[_Node] = []
        if self.peek().kind != ")":
            args.append(self.logic())
            while self.peek().kind == ",":
                self.next()
                args.append(self.logic())
        self.expect(")", "',' or ')' after the arguments")
        function = name.value.upper()
        signature = _signature(function, len(args))
        if signature is None:
            if function not in _FUNCTIONS:
                raise _syntax(name.pos, f"unknown function {function}")
            raise _syntax(
                name.pos,
                f"{function} does not take {len(args)} argument{'s' * (len(args) != 1)}",
            )
        return _call(signature, tuple(args))


def _describe(token: _Token) -> str:
    return token.text if token.kind == "eof" else repr(token.text)


def _int_literal(value: int, token: _Token) -> int:
    if not _INT_MIN <= value <= _INT_MAX:
        raise _syntax(token.pos, f"integer {token.text} is outside the 32-bit range")
    return value


def _attribute_name(token: _Token) -> str:
    name = str(token.value).lower()
    if not _IDENTIFIER.fullmatch(name):
        raise _syntax(token.pos, f"{token.text!r} is not an attribute name (a-z, 0-9)")
    return name


# -- CESQL evaluation ------------------------------------------------------------------------


def _const(value: Value) -> _Node:
    return lambda event: value


def _lookup(event: Mapping[str, str], name: str) -> Value:
    value = event.get(name)
    if value is None:
        raise CesqlEvaluationError("missingAttribute", f"the event has no attribute {name!r}")
    return value


def _wrap(value: int) -> int:
    """value as a Go int32 would hold it (two's complement wrap-around)."""
    return (value - _INT_MIN) % 2**32 + _INT_MIN


def _type_of(value: Value) -> str:
    if isinstance(value, bool):
        return "Boolean"
    return "Integer" if isinstance(value, int) else "String"


def _to_str(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _to_int(value: Value) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if _INT_TEXT.fullmatch(value) and _INT_MIN <= int(value) <= _INT_MAX:
        return int(value)
    raise CesqlEvaluationError("cast", f"cannot cast {value!r} to an integer")


def _to_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise CesqlEvaluationError("cast", f"cannot cast {value!r} to a boolean")


def _cast(value: Value, target: str) -> Value:
    if target == "Boolean":
        return _to_bool(value)
    if target == "Integer":
        return _to_int(value)
    if target == "String":
        return _to_str(value)
    return value


def _logic(op: str, left: _Node, right: _Node) -> _Node:
    if op == "AND":
        return lambda event: _to_bool(left(event)) and _to_bool(right(event))
    if op == "OR":
        return lambda event: _to_bool(left(event)) or _to_bool(right(event))
    return lambda event: _to_bool(left(event)) != _to_bool(right(event))


def _compare(op: str, left: _Node, right: _Node) -> _Node:
    if op in ("=", "!=", "<>"):
        want = op == "="

        def equal(event: Mapping[str, str]) -> bool:
            lhs, rhs = left(event), right(event)
            return (_cast(lhs, _type_of(rhs)) == rhs) == want

        return equal
    test: Callable[[int, int], bool] = {
        "<": int.__lt__,
        "<=": int.__le__,
        ">": int.__gt__,
        ">=": int.__ge__,
    }[op]

    def order(event: Mapping[str, str]) -> bool:
        lhs, rhs = left(event), right(event)
        return test(_to_int(lhs), _to_int(rhs))

    return order


def _math(op: str, left: _Node, right: _Node) -> _Node:
    def evaluate(event: Mapping[str, str]) -> int:
        lhs, rhs = left(event), right(event)
        x, y = _to_int(lhs), _to_int(rhs)
        if op == "+":
            return _wrap(x + y)
        if op == "-":
            return _wrap(x - y)
        if op == "*":
            return _wrap(x * y)
        if y == 0:
            raise CesqlEvaluationError("math", "division by zero")
        quotient = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        return _wrap(quotient) if op == "/" else _wrap(x - y * quotient)

    return evaluate


def _in(left: _Node, items: tuple[_Node, ...], negate: bool) -> _Node:
    def member(event: Mapping[str, str]) -> bool:
        value = left(event)
        target = _type_of(value)
        found = any(_cast(item(event), target) == value for item in items)
        return found != negate

    return member


def _like(operand: _Node, pattern: str, negate: bool) -> _Node:
    regex = re.compile(_like_regex(pattern), re.DOTALL)

    def like(event: Mapping[str, str]) -> bool:
        return (regex.fullmatch(_to_str(operand(event))) is not None) != negate

    return like


def _like_regex(pattern: str) -> str:
    """A LIKE pattern as a regular expression: % any run, _ one character, \\% and \\_ literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and pattern[i + 1 : i + 2] in ("%", "_"):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return "".join(out)


# -- CESQL built-in functions (cesql/spec.md 3.5, casting functions as sdk-go sql/v2) --------


@dataclass(frozen=True)
class _Signature:
    name: str
    params: tuple[str, ...]
    variadic: str | None
    run: Callable[[list[Value]], Value]


def _fn_error(message: str) -> CesqlEvaluationError:
    return CesqlEvaluationError("functionEvaluation", message)


def _left(args: list[Value]) -> Value:
    text, count = str(args[0]), int(args[1])
    if count < 0:
        raise _fn_error(f"LEFT: the length {count} is negative")
    return text[:count]


def _right(args: list[Value]) -> Value:
    text, count = str(args[0]), int(args[1])
    if count < 0:
        raise _fn_error(f"RIGHT: the length {count} is negative")
    return text[max(0, len(text) - count) :]


def _substring(args: list[Value]) -> Value:
    text, pos = str(args[0]), int(args[1])
    if pos == 0:
        return ""
    if not -len(text) <= pos <= len(text):
        raise _fn_error(f"SUBSTRING: position {pos} is outside a string of {len(text)}")
    begin = len(text) + pos if pos < 0 else pos - 1
    if len(args) == 2:
        return text[begin:]
    length = int(args[2])
    if length < 0:
        raise _fn_error(f"SUBSTRING: the length {length} is negative")
    return text[begin : begin + length]


def _abs(args: list[Value]) -> Value:
    value = int(args[0])
    if value == _INT_MIN:
        raise CesqlEvaluationError("math", "ABS overflows for -2147483648")
    return abs(value)


def _can_cast(value: Value, target: str) -> bool:
    try:
        _cast(value, target)
    except CesqlEvaluationError:
        return False
    return True


_S, _I, _B, _ANY = "String", "Integer", "Boolean", "Any"
_FUNCTIONS: dict[str, tuple[_Signature, ...]] = {}
for _sig in (
    _Signature("LENGTH", (_S,), None, lambda a: len(str(a[0]))),
    _Signature("CONCAT", (), _S, lambda a: "".join(map(str, a))),
    _Signature("CONCAT_WS", (_S,), _S, lambda a: str(a[0]).join(map(str, a[1:]))),
    _Signature("LOWER", (_S,), None, lambda a: str(a[0]).lower()),
    _Signature("UPPER", (_S,), None, lambda a: str(a[0]).upper()),
    _Signature("TRIM", (_S,), None, lambda a: str(a[0]).strip(_WHITESPACE)),
    _Signature("LEFT", (_S, _I), None, _left),
    _Signature("RIGHT", (_S, _I), None, _right),
    _Signature("SUBSTRING", (_S, _I), None, _substring),
    _Signature("SUBSTRING", (_S, _I, _I), None, _substring),
    _Signature("ABS", (_I,), None, _abs),
    _Signature("INT", (_I,), None, lambda a: a[0]),
    _Signature("BOOL", (_B,), None, lambda a: a[0]),
    _Signature("STRING", (_S,), None, lambda a: a[0]),
    _Signature("IS_INT", (_ANY,), None, lambda a: _can_cast(a[0], _I)),
    _Signature("IS_BOOL", (_ANY,), None, lambda a: _can_cast(a[0], _B)),
):
    _FUNCTIONS[_sig.name] = (*_FUNCTIONS.get(_sig.name, ()), _sig)


def _signature(name: str, count: int) -> _Signature | None:
    for sig in _FUNCTIONS.get(name, ()):
        if count == len(sig.params) or (sig.variadic is not None and count > len(sig.params)):
            return sig
    return None


def _call(sig: _Signature, args: tuple[_Node, ...]) -> _Node:
    def call(event: Mapping[str, str]) -> Value:
        values = [arg(event) for arg in args]
        cast = [
            _cast(v, sig.params[i] if i < len(sig.params) else sig.variadic or _ANY)
            for i, v in enumerate(values)
        ]
        return sig.run(cast)

    return call
