"""CESQL evaluation: the value types, casts, operators and built-in functions. Pure functions.

The semantics of CloudEvents SQL v1 (cloudevents/spec ``cesql/spec.md`` sections 3.1 to 3.7)
as the Go SDK Knative runs evaluates them (cloudevents/sdk-go ``sql/v2``); the grammar that
builds these nodes is in :mod:`knfn.eventing.cesql`, which documents the rules in one place.
A node is a function of the event's attributes; evaluation errors raise
:class:`CesqlEvaluationError` carrying the spec's error type, so the filter can fail fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from knfn.errors import KnfnError

Value = bool | int | str
Node = Callable[[Mapping[str, str]], Value]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
# Unicode's White_Space property, which TRIM removes (cesql/spec.md 3.5.1).
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class CesqlError(KnfnError, ValueError):
    """A CESQL expression is malformed (its message names the position), or failed to evaluate."""


class CesqlEvaluationError(CesqlError):
    """An error while evaluating a CESQL expression; ``kind`` is the spec's error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # math, cast, missingAttribute, functionEvaluation


def const(value: Value) -> Node:
    """A literal."""
    return lambda event: value


def lookup(event: Mapping[str, str], name: str) -> Value:
    """An attribute's value; a missing one is an error (cesql/spec.md 3.2)."""
    value = event.get(name)
    if value is None:
        raise CesqlEvaluationError("missingAttribute", f"the event has no attribute {name!r}")
    return value


def wrap(value: int) -> int:
    """value as a Go int32 would hold it (two's complement wrap-around)."""
    return (value - INT_MIN) % 2**32 + INT_MIN


def _type_of(value: Value) -> str:
    if isinstance(value, bool):
        return "Boolean"
    return "Integer" if isinstance(value, int) else "String"


def _to_str(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_int(value: Value) -> int:
    """The Integer cast (cesql/spec.md 3.7): 32-bit decimal text, booleans as 0 and 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if _INT_TEXT.fullmatch(value) and INT_MIN <= int(value) <= INT_MAX:
        return int(value)
    raise CesqlEvaluationError("cast", f"cannot cast {value!r} to an integer")


def to_bool(value: Value) -> bool:
    """The Boolean cast: 'true'/'false' in any case, integers as non-zero."""
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
        return to_bool(value)
    if target == "Integer":
        return to_int(value)
    if target == "String":
        return _to_str(value)
    return value


def logic(op: str, left: Node, right: Node) -> Node:
    """AND, OR (both short-circuit) and XOR over booleans."""
    if op == "AND":
        return lambda event: to_bool(left(event)) and to_bool(right(event))
    if op == "OR":
        return lambda event: to_bool(left(event)) or to_bool(right(event))
    return lambda event: to_bool(left(event)) != to_bool(right(event))


def compare(op: str, left: Node, right: Node) -> Node:
    """Equality casts the left operand to the right one's type; ordering compares integers."""
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
        return test(to_int(lhs), to_int(rhs))

    return order


def arithmetic(op: str, left: Node, right: Node) -> Node:
    """+ - * / % on 32-bit integers, as Go's int32 computes them."""

    def evaluate(event: Mapping[str, str]) -> int:
        lhs, rhs = left(event), right(event)
        x, y = to_int(lhs), to_int(rhs)
        if op == "+":
            return wrap(x + y)
        if op == "-":
            return wrap(x - y)
        if op == "*":
            return wrap(x * y)
        if y == 0:
            raise CesqlEvaluationError("math", "division by zero")
        quotient = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        return wrap(quotient) if op == "/" else wrap(x - y * quotient)

    return evaluate


def member_of(left: Node, items: tuple[Node, ...], negate: bool) -> Node:
    """[NOT] IN: each item is cast to the left operand's type; evaluated left to right."""

    def member(event: Mapping[str, str]) -> bool:
        value = left(event)
        target = _type_of(value)
        found = any(_cast(item(event), target) == value for item in items)
        return found != negate

    return member


def like(operand: Node, pattern: str, negate: bool) -> Node:
    """[NOT] LIKE on the operand cast to a string; the whole string must match."""
    regex = re.compile(_like_regex(pattern), re.DOTALL)

    def test(event: Mapping[str, str]) -> bool:
        return (regex.fullmatch(_to_str(operand(event))) is not None) != negate

    return test


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


# -- built-in functions (cesql/spec.md 3.5, casting functions as sdk-go sql/v2) --------


@dataclass(frozen=True)
class Signature:
    """One overload of a built-in function: parameter types, then the variadic type."""

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
    if value == INT_MIN:
        raise CesqlEvaluationError("math", "ABS overflows for -2147483648")
    return abs(value)


def _can_cast(value: Value, target: str) -> bool:
    try:
        _cast(value, target)
    except CesqlEvaluationError:
        return False
    return True


_S, _I, _B, _ANY = "String", "Integer", "Boolean", "Any"
FUNCTIONS: dict[str, tuple[Signature, ...]] = {}
for _sig in (
    Signature("LENGTH", (_S,), None, lambda a: len(str(a[0]))),
    Signature("CONCAT", (), _S, lambda a: "".join(map(str, a))),
    Signature("CONCAT_WS", (_S,), _S, lambda a: str(a[0]).join(map(str, a[1:]))),
    Signature("LOWER", (_S,), None, lambda a: str(a[0]).lower()),
    Signature("UPPER", (_S,), None, lambda a: str(a[0]).upper()),
    Signature("TRIM", (_S,), None, lambda a: str(a[0]).strip(_WHITESPACE)),
    Signature("LEFT", (_S, _I), None, _left),
    Signature("RIGHT", (_S, _I), None, _right),
    Signature("SUBSTRING", (_S, _I), None, _substring),
    Signature("SUBSTRING", (_S, _I, _I), None, _substring),
    Signature("ABS", (_I,), None, _abs),
    Signature("INT", (_I,), None, lambda a: a[0]),
    Signature("BOOL", (_B,), None, lambda a: a[0]),
    Signature("STRING", (_S,), None, lambda a: a[0]),
    Signature("IS_INT", (_ANY,), None, lambda a: _can_cast(a[0], _I)),
    Signature("IS_BOOL", (_ANY,), None, lambda a: _can_cast(a[0], _B)),
):
    FUNCTIONS[_sig.name] = (*FUNCTIONS.get(_sig.name, ()), _sig)


def signature(name: str, count: int) -> Signature | None:
    """The overload of function ``name`` that takes ``count`` arguments, if any."""
    for sig in FUNCTIONS.get(name, ()):
        if count == len(sig.params) or (sig.variadic is not None and count > len(sig.params)):
            return sig
    return None


def call(sig: Signature, args: tuple[Node, ...]) -> Node:
    """A call: the arguments evaluated, cast to the parameter types, then the function run."""

    def invoke(event: Mapping[str, str]) -> Value:
        values = [arg(event) for arg in args]
        cast = [
            _cast(v, sig.params[i] if i < len(sig.params) else sig.variadic or _ANY)
            for i, v in enumerate(values)
        ]
        return sig.run(cast)

    return invoke
