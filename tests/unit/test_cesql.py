"""CESQL v1: the docs' and spec's examples, casts, arithmetic, LIKE, IN, functions, errors."""

from __future__ import annotations

import pytest

from knfn.eventing.cesql import CesqlError, CesqlEvaluationError, parse_cesql

ORDER = {
    "specversion": "1.0",
    "id": "myId",
    "source": "/ecommerce/shop",
    "type": "order.updated",
    "subject": "Francesco Guardiani",
    "firstname": "Francesco",
    "lastname": "Guardiani",
    "sequence": "10",
    "hop": "5",
    "ttl": "10",
    "myint": "5",
    "flag": "TRUE",
    "extensionattribute": "some-value",
}


@pytest.mark.parametrize(
    ("expression", "overrides", "expected"),
    [
        # Knative docs and eventing tests.
        (
            "source LIKE '%commerce%' AND type IN ('order.created', 'order.updated', "
            "'order.canceled')",
            {},
            True,
        ),
        (
            "source LIKE '%commerce%' AND type IN ('order.created', 'order.updated', "
            "'order.canceled')",
            {"type": "order.shipped"},
            False,
        ),
        (
            "source LIKE '%commerce%' AND type IN ('order.created', 'order.updated', "
            "'order.canceled')",
            {"source": "/shop"},
            False,
        ),
        ("type IN ('order.created', 'order.updated', 'order.canceled')", {}, True),
        ("type LIKE 'exact.prefix.suffix%'", {"type": "exact.prefix.suffix.x"}, True),
        ("type LIKE 'exact.prefix.suffix%'", {"type": "exact.prefix"}, False),
        ("extensionattribute LIKE '%value'", {}, True),
        ("type = 'cesql.event.type'", {"type": "cesql.event.type"}, True),
        ("type = 'tp'", {}, False),
        # cesql/spec.md section 5.
        ("EXISTS subject", {}, True),
        ("firstname = 'Francesco'", {}, True),
        ("firstname = 'Francesco' OR subject = 'Francesco'", {"firstname": "Doug"}, False),
        ("firstname = 'Francesco' OR subject = 'Francesco'", {"subject": "Francesco"}, True),
        (
            "(firstname = 'Francesco' AND lastname = 'Guardiani') OR subject = 'Francesco "
            "Guardiani'",
            {"firstname": "Doug", "lastname": "Davis"},
            True,
        ),
        ("sequence = 10", {}, True),
        ("sequence = 10", {"sequence": "010"}, True),
        ("10 = sequence", {"sequence": "010"}, False),
        ("hop < ttl", {}, True),
        ("hop < ttl", {"hop": "50"}, False),
        ("int(hop) < int(ttl) and int(hop) < 1000", {}, True),
        ("INT(hop) < INT(ttl) AND INT(hop) < 1000", {}, True),
        # Missing attributes fail the whole expression, except under EXISTS or a short circuit.
        ("missing = ''", {}, False),
        ("missing <> 'x'", {}, False),
        ("NOT (missing = 'x')", {}, False),
        ("NOT EXISTS missing", {}, True),
        ("EXISTS missing AND missing = 'x'", {}, False),
        ("NOT EXISTS missing OR missing = 'x'", {}, True),
        ("EXISTS myint AND myint > 2", {}, True),
        ("type = 'order.updated' OR missing = 'x'", {}, True),
        ("missing = 'x' OR type = 'order.updated'", {}, False),
        ("type IN ('order.updated', missing)", {}, True),
        ("type IN (missing, 'order.updated')", {}, False),
        # Casts (cesql/spec.md 3.7).
        ("'TRUE' = true", {}, True),
        ("true = 'TRUE'", {}, False),
        ("flag = TRUE", {}, True),
        ("1 IN ('1', '2')", {}, True),
        ("'1' IN (1, 2)", {}, True),
        ("'true' IN (TRUE, 'false')", {}, True),
        ("'TRUE' IN (TRUE, 'false')", {}, False),
        ("myint + 1 = 6", {}, True),
        ("'5' + '3' = 8", {}, True),
        ("5 + TRUE = 6", {}, True),
        ("subject < 3", {}, False),
        ("NOT 0", {}, True),
        # Arithmetic on 32-bit integers.
        ("4 * 2 + 4 / 2 = 10", {}, True),
        ("4 * (2 + 4) / 2 = 12", {}, True),
        ("-7 / 2 = -3", {}, True),
        ("-7 % 2 = -1", {}, True),
        ("7 % -2 = 1", {}, True),
        ("5 / 0 = 0", {}, False),
        ("5 % 0 = 0", {}, False),
        ("2147483647 + 1 = -2147483648", {}, True),
        ("-myint = -5", {}, True),
        ("--myint = 5", {}, True),
        ("- 2147483648 = -2147483648", {}, True),
        ("ABS(-10) = 10", {}, True),
        ("ABS(-2147483648) = 2147483647", {}, False),
        # LIKE with wildcards and escapes.
        ("'abc' LIKE 'a%b%c'", {}, True),
        ("'azzzbzzzc' LIKE 'a%b%c'", {}, True),
        ("'ac' LIKE 'abc'", {}, False),
        ("'abc' LIKE 'a_c'", {}, True),
        ("'abbc' LIKE 'a_c'", {}, False),
        (r"'a_b' LIKE 'a\_b'", {}, True),
        (r"'axb' LIKE 'a\_b'", {}, False),
        (r"'100%' LIKE '100\%'", {}, True),
        (r"'1000' LIKE '100\%'", {}, False),
        (r"'ab\c' LIKE 'ab\c'", {}, True),
        ("'a.b' LIKE 'a.b'", {}, True),
        ("'axb' LIKE 'a.b'", {}, False),
        ("'line\nbreak' LIKE 'line%'", {}, True),
        ("type NOT LIKE 'order.%'", {}, False),
        ("234 LIKE '23_'", {}, True),
        ("TRUE LIKE 'tr%'", {}, True),
        ("missing NOT LIKE 'x%'", {}, False),
        # IN and NOT IN.
        ("123 IN (1, 2, 3, 12, 13, 23, 123)", {}, True),
        ("type NOT IN ('a', 'b')", {}, True),
        ("type NOT IN ('a', 'order.updated')", {}, False),
        ("source IN (id, '/ecommerce/shop')", {}, True),
        # Built-in functions.
        ("LENGTH(subject) = 19", {}, True),
        ("LENGTH(TRUE) = 4", {}, True),
        ("CONCAT(firstname, ' ', lastname) = subject", {}, True),
        ("CONCAT() = ''", {}, True),
        ("CONCAT_WS('-', 'a', 'b', 'c') = 'a-b-c'", {}, True),
        ("CONCAT_WS(',') = ''", {}, True),
        ("LOWER('AbC') = 'abc' AND UPPER('AbC') = 'ABC'", {}, True),
        ("TRIM('  a b c \t') = 'a b c'", {}, True),
        ("LEFT('abc', 2) = 'ab' AND LEFT('abc', 10) = 'abc'", {}, True),
        ("RIGHT('abc', 2) = 'bc' AND RIGHT('abc', 0) = ''", {}, True),
        ("LEFT('abc', -2) = 'abc'", {}, False),
        ("SUBSTRING('Quadratically', 5) = 'ratically'", {}, True),
        ("SUBSTRING('Sakila', -3) = 'ila'", {}, True),
        ("SUBSTRING('Sakila', -5, 3) = 'aki'", {}, True),
        ("SUBSTRING('abcdef', 2, 40) = 'bcdef'", {}, True),
        ("SUBSTRING('Quadratically', 0) = ''", {}, True),
        ("SUBSTRING('abcdef', 10) = ''", {}, False),
        ("SUBSTRING('abcdef', 1, -1) = ''", {}, False),
        ("INT('42') = 42 AND INT(TRUE) = 1", {}, True),
        ("INT('4x') = 0", {}, False),
        ("BOOL('false') = FALSE AND BOOL(5)", {}, True),
        ("STRING(TRUE) = 'true' AND STRING(-1) = '-1'", {}, True),
        ("IS_INT(myint) AND NOT IS_INT(type) AND IS_INT('+7')", {}, True),
        ("IS_INT('2147483648')", {}, False),
        ("IS_BOOL(flag) AND NOT IS_BOOL('yes')", {}, True),
        # Syntax details.
        ("exists SUBJECT and Type like 'order.%'", {}, True),
        ('subject = "Francesco Guardiani"', {}, True),
        (r"'it\'s' = " + '"it' + "'s\"", {}, True),
        ("'it''s' = \"it's\"", {}, True),
        (r'"say \"hi\"" = ' + "'say \"hi\"'", {}, True),
        ("TRUE XOR FALSE", {}, True),
        ("TRUE XOR TRUE", {}, False),
        ("(TRUE)", {}, True),
        ("  type\n=\t'order.updated'  ", {}, True),
        # Precedence: NOT binds to the next operand; AND/OR/XOR group to the right.
        ("NOT type = 'nope'", {}, False),
        ("NOT (type = 'nope')", {}, True),
        ("FALSE AND FALSE OR TRUE", {}, False),
        ("(FALSE AND FALSE) OR TRUE", {}, True),
        ("TRUE OR TRUE AND FALSE", {}, True),
        ("1 + 2 * 3 = 7", {}, True),
        # Only a boolean true passes.
        ("type", {}, False),
        ("flag", {}, False),
        ("1", {}, False),
        ("'true'", {}, False),
    ],
)
def test_cesql(expression: str, overrides: dict[str, str], expected: bool) -> None:
    """CESQL v1 as Knative evaluates it: docs and spec examples, casts, errors fail the match."""
    assert parse_cesql(expression).matches({**ORDER, **overrides}) is expected


@pytest.mark.parametrize(
    ("expression", "kind"),
    [
        ("missing * 5", "missingAttribute"),
        ("1 / missing", "missingAttribute"),
        ("missing / 0", "missingAttribute"),
        ("5 / 0", "math"),
        ("ABS(-2147483648)", "math"),
        ("INT('ABC')", "cast"),
        ("NOT 'maybe'", "cast"),
        ("LEFT('abc', -1)", "functionEvaluation"),
        ("SUBSTRING('abc', -10, 1)", "functionEvaluation"),
    ],
)
def test_cesql_error_kinds(expression: str, kind: str) -> None:
    """Evaluation errors carry the spec's error type."""
    with pytest.raises(CesqlEvaluationError) as info:
        parse_cesql(expression).evaluate(ORDER)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("-2147483648", -2147483648),
        ("SUBSTRING('abcdef', 2, 4)", "bcde"),
        ("'5' + 3", 8),
        ("TRUE", True),
        ("'aBcD'", "aBcD"),
        ("myint * 2", 10),
    ],
)
def test_cesql_values(expression: str, value: object) -> None:
    """Expressions evaluate to booleans, integers and strings."""
    assert parse_cesql(expression).evaluate(ORDER) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("type = ", "position 8: expected a value, found end of expression"),
        ("ABC(", "position 5: expected a value"),
        ("type LIKE 123", "position 11: LIKE needs a quoted string pattern, found '123'"),
        ("type LIKE subject", "LIKE needs a quoted string pattern"),
        ("x IN ()", "position 7: expected a value, found ')'"),
        ("x IN 'a'", "expected '(' and a set of values after IN"),
        ("'unterminated", "position 1: unterminated string literal"),
        ("FOO(1)", "position 1: unknown function FOO"),
        ("LEFT('a')", "LEFT does not take 1 argument"),
        ("CONCAT_WS()", "CONCAT_WS does not take 0 arguments"),
        ("SUBSTRING('a', 1, 2, 3)", "SUBSTRING does not take 4 arguments"),
        ("2147483648 = 1", "integer 2147483648 is outside the 32-bit range"),
        ("a_b = 1", "'a_b' is not an attribute name"),
        ("type = 'a' 'b'", "position 12: unexpected \"'b'\""),
        ("type # 1", "position 6: unexpected character '#'"),
        ("(type = 'a'", "expected ')'"),
        ("EXISTS 'type'", "expected an attribute name after EXISTS"),
        ("AND type", "position 1: expected a value, found 'AND'"),
        ("", "empty CESQL expression"),
        ("(" * 5000 + "TRUE" + ")" * 5000, "nests too deeply"),
    ],
)
def test_cesql_syntax_errors(expression: str, message: str) -> None:
    """Syntax errors, unknown functions and arity are reported at compile time with a position."""
    with pytest.raises(CesqlError) as info:
        parse_cesql(expression)
    assert message in str(info.value)
