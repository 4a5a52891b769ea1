"""The tenant-facing expression language and templates: what they compute, and the exact messages a
tenant sees when an expression is wrong, forbidden, too big, or fails at run time."""

from __future__ import annotations

import contextlib
import json
import keyword
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executions.blueprints.expressions import (
    Expression,
    ExpressionError,
    check_template,
    compile_expression,
    render_template,
)

FUNCTION_LIST = (
    "abs, all, any, bool, contains, default, endswith, float, int, join, keys, len, lower, max, min, round, "
    "split, startswith, str, strip, sum, upper, values"
)

STATE: dict[str, Any] = {
    "user": {"name": "Ada", "tags": ["admin", "ops"], "address": {"city": "Paris"}},
    "n": 3,
    "price": 2.5,
    "items": [10, 20, 30],
    "a b": "spaced",
    "nothing": None,
    "flag": True,
}
NAMES: dict[str, Any] = {"state": STATE, "input": {"text": " Hello ", "csv": "a,b,c"}}


def run(text: str, names: dict[str, Any] | None = None) -> Any:
    return compile_expression(text).evaluate(NAMES if names is None else names)


def compile_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    return caught.value


def run_error(text: str) -> ExpressionError:
    expression = compile_expression(text)  # it is fine when saved; it fails when run
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate(NAMES)
    return caught.value


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        ("'single'", "single"),
        ('"double"', "double"),
        ("True", True),
        ("False", False),
        ("None", None),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 'a', null]", [1, "a", None]),
        ("(1, 2)", [1, 2]),
        ("{'a': [true], 'b': {'c': null}}", {"a": [True], "b": {"c": None}}),
        ("   1 + 1", 2),
    ],
)
def test_literals_and_json_aliases(text: str, expected: Any) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state.user.name", "Ada"),
        ("state.user.address.city", "Paris"),
        ("state.user.missing", None),
        ("state.missing", None),
        ("state.missing == null", True),
        ("state.nothing == null", True),
        ("state['a b']", "spaced"),
        ('state["user"]["tags"][1]', "ops"),
        ("state.items[0]", 10),
        ("state.items[-1]", 30),
        ("state.items[3]", None),
        ("state.items[-4]", None),
        ("state.items[1:]", [20, 30]),
        ("state.items[:-1]", [10, 20]),
        ("state.items[::2]", [10, 30]),
        ("state.user.name[0]", "A"),
        ("state.user.name[1:3]", "da"),
        ("state[state.user.tags[0]]", None),
        ("input.text", " Hello "),
        ("state['__class__']", None),
    ],
)
def test_member_access_and_subscripts(text: str, expected: Any) -> None:
    assert run(text) == expected


def test_names_are_the_callers() -> None:
    assert compile_expression("item.x + index", names=["item", "index"]).evaluate({"item": {"x": 1}, "index": 2}) == 3
    with pytest.raises(ExpressionError) as caught:
        compile_expression("state", names=["item"])
    assert caught.value.message == "unknown name 'state' at column 1; names are: item"


def test_a_name_without_a_value_at_run_time() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("input").evaluate({"state": {}})
    assert caught.value.message == "no value for name 'input' at column 1"


def test_expression_is_a_checked_frozen_value() -> None:
    expression = compile_expression("state.n + 1")
    assert expression == Expression("state.n + 1")
    assert expression.text == "state.n + 1"
    assert expression.evaluate(NAMES) == 4
    with pytest.raises(ExpressionError):
        Expression("stat")


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2", 3),
        ("'a' + 'b'", "ab"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("state.n - 5", -2),
        ("state.n * 2", 6),
        ("'ab' * 2", "abab"),
        ("2 * 'ab'", "abab"),
        ("[0] * 3", [0, 0, 0]),
        ("'ab' * -1", ""),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("state.price * 2", 5.0),
        ("-state.n", -3),
        ("+state.n", 3),
        ("not state.flag", False),
        ("not state.missing", True),
        ("1 == 1.0", True),
        ("'a' != 'b'", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 4", False),
        ("'b' >= 'a'", True),
        ("1 < 2 < 3", True),
        ("1 < 3 < 2", False),
        ("0 <= state.n <= 10 != 11", True),
        ("'ops' in state.user.tags", True),
        ("'root' not in state.user.tags", True),
        ("'name' in state.user", True),
        ("'ell' in 'hello'", True),
        ("state.flag and state.n", 3),
        ("state.nothing and 1 / 0", None),
        ("state.nothing or 'anonymous'", "anonymous"),
        ("state.flag or 1 / 0", True),
        ("0 or '' or null", None),
        ("'yes' if state.n > 2 else 'no'", "yes"),
        ("1 / 0 if false else 'lazy'", "lazy"),
    ],
)
def test_operators(text: str, expected: Any) -> None:
    result = run(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state.n / 0", "division by zero at column 9"),
        ("state.n // 0", "division by zero at column 9"),
        ("state.n % 0", "division by zero at column 9"),
        ("1.5 / (state.n - 3)", "division by zero at column 5"),
    ],
)
def test_division_by_zero(text: str, message: str) -> None:
    error = run_error(text)
    assert error.message == message
    assert error.column == int(message.rsplit(" ", 1)[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 + 'a'", "cannot add a number and text at column 3; use str(...) to turn a value into text"),
        ("state.flag + 1", "cannot add a boolean and a number at column 12"),
        ("[1] + {}", "cannot add a list and an object at column 5"),
        ("'a' - 'b'", "'-' needs two numbers, got text and text at column 5"),
        ("'a' % 1", "'%' needs two numbers, got text and a number at column 5"),
        ("'a' * 'b'", "cannot multiply text and text at column 5"),
        ("[1] * 1.5", "cannot multiply a list and a number at column 5"),
        ("-'a'", "unary '-' needs a number, got text at column 1"),
        ("+null", "unary '+' needs a number, got null at column 1"),
        ("1 < 'a'", "cannot compare a number and text with '<' at column 1"),
        ("state.missing > 0", "cannot compare null and a number with '>' at column 1"),
        ("1 in state.n", "'in' needs text, a list or an object to look in, got a number at column 1"),
        ("1 in 'abc'", "'in' needs text to look for in text, got a number at column 1"),
        ("{1: 2}", "an object's keys must be text, got a number at column 1"),
        ("9" * 200 + " * " + "9" * 200 + " * 1.0", "the result of '*' is too large at column 405"),
    ],
)
def test_type_mismatches_are_errors(text: str, message: str) -> None:
    assert run_error(text).message == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state.missing.x", "cannot read 'x' of null at column 15; the value before it is missing"),
        ("state.missing[0]", "cannot index null at column 14; the value before it is missing"),
        ("state.n[0]", "cannot index a number at column 8"),
        ("state.flag['x']", "cannot index a boolean at column 11"),
        ("state.n.x", "cannot read 'x' of a number at column 9; '.' reads a key of an object"),
        ("state.user.tags.x", "cannot read 'x' of a list at column 17; '.' reads a key of an object"),
        ("''.foo", "cannot read 'foo' of text at column 4; '.' reads a key of an object"),
        ("state.items['a']", "an index into a list must be a whole number, got text at column 12"),
        ("state.items[true]", "an index into a list must be a whole number, got a boolean at column 12"),
        ("state[[1]]", "an object's key must be text, got a list at column 6"),
        ("state.n[1:]", "cannot slice a number at column 8; slices work on lists and text"),
        ("state.user[1:]", "cannot slice an object at column 11; slices work on lists and text"),
    ],
)
def test_reading_what_is_not_there(text: str, message: str) -> None:
    assert run_error(text).message == message


# --- functions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("len('abc')", 3),
        ("len(state.items)", 3),
        ("len(state.user)", 3),
        ("str(state.n)", "3"),
        ("str('x')", "x"),
        ("str(null)", ""),
        ("str(true)", "true"),
        ("str(state.user.tags)", '["admin","ops"]'),
        ("str({'a': 1.5})", '{"a":1.5}'),
        ("int(' 42 ')", 42),
        ("int(3.9)", 3),
        ("int(true)", 1),
        ("float('2.5')", 2.5),
        ("float(2)", 2.0),
        ("bool('')", False),
        ("bool([0])", True),
        ("lower('AbC')", "abc"),
        ("upper('abc')", "ABC"),
        ("strip(input.text)", "Hello"),
        ("abs(-2.5)", 2.5),
        ("min(3, 1, 2)", 1),
        ("min(state.items)", 10),
        ("max(['a', 'c', 'b'])", "c"),
        ("max(1, 2.5)", 2.5),
        ("round(2.567, 2)", 2.57),
        ("round(2.6)", 3),
        ("round(1234, -2)", 1200),
        ("sum(state.items)", 60),
        ("sum([])", 0),
        ("any([0, '', 1])", True),
        ("any([])", False),
        ("all([1, 'x'])", True),
        ("all([1, null])", False),
        ("contains(state.user.tags, 'ops')", True),
        ("contains('hello', 'ell')", True),
        ("contains(state.user, 'name')", True),
        ("contains(state.user, 'nope')", False),
        ("startswith('hello', 'he')", True),
        ("endswith('hello', 'he')", False),
        ("keys(state.user.address)", ["city"]),
        ("values(state.user.address)", ["Paris"]),
        ("join(state.user.tags, ', ')", "admin, ops"),
        ("join([1, null, 'x', [2]], '-')", "1--x-[2]"),
        ("join(['a', 'b'])", "ab"),
        ("split(input.csv, ',')", ["a", "b", "c"]),
        ("split(' a  b ')", ["a", "b"]),
        ("default(state.missing, 'fallback')", "fallback"),
        ("default(state.n, 'fallback')", 3),
        ("default(false, 'fallback')", False),
    ],
)
def test_functions(text: str, expected: Any) -> None:
    result = run(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("len(1)", "len() needs text, a list or an object, got a number at column 1"),
        ("int('x')", "int() cannot turn 'x' into a whole number at column 1"),
        ("int(null)", "int() needs a number, text or a boolean, got null at column 1"),
        (
            "int(float('inf'))",
            "the result is a number that is not finite (NaN or Infinity) at column 5; JSON cannot hold it",
        ),
        ("float('abc')", "float() cannot turn 'abc' into a number at column 1"),
        ("lower(1)", "lower() needs text, got a number at column 1"),
        ("abs('1')", "abs() needs a number, got text at column 1"),
        ("min([])", "min() of an empty list at column 1"),
        ("max(1, 'a')", "max() needs all numbers or all text at column 1"),
        ("min(1)", "min() needs a list, or two or more values, got a number at column 1"),
        ("round('1')", "round() needs a number, got text at column 1"),
        ("round(1.5, 1000)", "round() needs a whole number of digits between -100 and 100 at column 1"),
        ("sum([1, true])", "sum() needs a list of numbers at column 1"),
        ("any('ab')", "any() needs a list, got text at column 1"),
        ("contains(1, 1)", "contains() needs text, a list or an object to look in, got a number at column 1"),
        ("startswith(1, 'a')", "startswith() needs text, got a number at column 1"),
        ("endswith('a', 1)", "endswith() needs text to look for, got a number at column 1"),
        ("keys([])", "keys() needs an object, got a list at column 1"),
        ("join('ab', ',')", "join() needs a list, got text at column 1"),
        ("join(['a'], 1)", "join() needs a text separator, got a number at column 1"),
        ("split('a,b', '')", "split() needs a separator that is non-empty text at column 1"),
        (
            "str(float('nan'))",
            "the result is a number that is not finite (NaN or Infinity) at column 5; JSON cannot hold it",
        ),
        ("1 + len(2)", "len() needs text, a list or an object, got a number at column 5"),
    ],
)
def test_function_errors(text: str, message: str) -> None:
    assert run_error(text).message == message


# --- forbidden constructs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eval('1')", f"unknown function 'eval' at column 1; functions are: {FUNCTION_LIST}"),
        ("open('/etc/passwd')", f"unknown function 'open' at column 1; functions are: {FUNCTION_LIST}"),
        ("__import__('os')", "'__import__' is not allowed at column 1; names starting with '__' are reserved"),
        ("__builtins__", "'__builtins__' is not allowed at column 1; names starting with '__' are reserved"),
        ("''.__class__", "'__class__' is not allowed at column 4; names starting with '__' are reserved"),
        ("state.__dict__", "'__dict__' is not allowed at column 7; names starting with '__' are reserved"),
        ("lambda: 1", "lambda is not allowed at column 1"),
        ("[x for x in state.items]", "comprehensions are not allowed at column 1"),
        ("{k: 1 for k in state}", "comprehensions are not allowed at column 1"),
        ("any(x for x in state.items)", "comprehensions are not allowed at column 4"),
        ("2 ** 10", "'**' (power) is not allowed at column 3"),
        ("(x := 1)", "':=' (assignment) is not allowed at column 2"),
        ("state.user.name.upper()", "method calls are not allowed at column 17; write upper(state.user.name) instead"),
        ("input.csv.split(',')", "method calls are not allowed at column 11; write split(input.csv, ',') instead"),
        ("state.x.format(1)", f"method calls are not allowed at column 9; functions are: {FUNCTION_LIST}"),
        (
            "round(1.5, ndigits=1)",
            "keyword arguments are not allowed at column 1; pass the arguments of round() by position",
        ),
        ("len(*state.items)", "'*' unpacking is not allowed at column 5"),
        ("[*state.items]", "'*' unpacking is not allowed at column 2"),
        ("{**state}", "'**' unpacking is not allowed at column 1"),
        ("state['f']()", f"only named functions can be called at column 1; functions are: {FUNCTION_LIST}"),
        ("len", "'len' is a function at column 1; call it, as in len(...)"),
        ("stat.x", "unknown name 'stat' at column 1; names are: input, state"),
        ("1 + os", "unknown name 'os' at column 5; names are: input, state"),
        ("f'{state}'", "f-strings are not allowed at column 1; join text with + and str(...)"),
        ("{1, 2}", "sets are not allowed at column 1; use a list"),
        ("state is None", "'is' is not allowed at column 1; use == or !="),
        ("1 | 2", "'|' is not allowed at column 3; use 'or'"),
        ("1 << 2", "'<<' is not allowed at column 3"),
        ("~1", "'~' is not allowed at column 1"),
        ("b'x'", "bytes literals are not allowed at column 1"),
        ("1j", "complex literals are not allowed at column 1"),
        ("...", "'...' is not allowed at column 1"),
        ("len(1, 2)", "len() takes 1 argument (2 given) at column 1"),
        ("default(1)", "default() takes 2 arguments (1 given) at column 1"),
        ("round(1, 2, 3)", "round() takes 1 or 2 arguments (3 given) at column 1"),
        ("max()", "max() takes at least 1 argument (0 given) at column 1"),
        ("state.items[:state.n]", "slice bounds must be whole-number constants at column 12"),
        ("state.items[::0]", "a slice step cannot be zero at column 12"),
    ],
)
def test_forbidden_constructs(text: str, message: str) -> None:
    assert compile_error(text).message == message


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "the expression is empty", None),
        ("1 +", "invalid syntax at the end of the expression", None),
        ("state.x = 1", "invalid syntax at column 9", 9),
        ("import os", "invalid syntax at column 1", 1),
        ("(1", "invalid syntax ('(' was never closed) at column 1", 1),
        ("  'é' 1", "invalid syntax at column 7", 7),
    ],
)
def test_syntax_errors(text: str, message: str, column: int | None) -> None:
    error = compile_error(text)
    assert (error.message, error.column, str(error)) == (message, column, message)


def test_error_is_a_value_error_with_a_column() -> None:
    error = compile_error("1 + stat")
    assert isinstance(error, ValueError)
    assert error.column == 5


def test_only_text_is_an_expression() -> None:
    with pytest.raises(ExpressionError, match=r"^an expression must be text, got a number$"):
        compile_expression(1)  # type: ignore[arg-type]


# --- bounds --------------------------------------------------------------------------------------


def test_length_bound() -> None:
    assert run("1" + " " * 999) == 1
    assert compile_error("1" + " " * 1000).message == "the expression is 1,001 characters long; the limit is 1,000"


def test_depth_bound() -> None:
    assert run("-" * 31 + "1") == -1
    error = compile_error("-" * 32 + "1")
    assert (error.message, error.column) == ("the expression nests more than 32 levels deep at column 33", 33)
    assert compile_error("[" * 40 + "]" * 40).message == "the expression nests more than 32 levels deep at column 33"


def test_parser_recursion_is_a_depth_error() -> None:
    assert compile_error("-" * 999 + "1").message.startswith("the expression nests more than 32 levels deep")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("'ab' * 50001", "the result would be longer than 100,000 items or characters at column 6"),
        ("[1] * 100001", "the result would be longer than 100,000 items or characters at column 5"),
        ("['a' * 99999] * 99999", "the result would be longer than 100,000 items or characters at column 15"),
        ("'a' * 60000 + 'a' * 60000", "the result would be longer than 100,000 items or characters at column 13"),
        ("[0] * 60000 + [0] * 60000", "the result would be longer than 100,000 items or characters at column 13"),
        ("join(['a'] * 1000, 'b' * 1000)", "the result would be longer than 100,000 items or characters at column 1"),
        (
            "[" + ", ".join(["'a' * 99999"] * 11) + "]",
            "the expression builds more than 1,000,000 items or characters at column 136",
        ),
    ],
)
def test_size_bounds(text: str, message: str) -> None:
    assert run_error(text).message == message


def test_sizes_at_the_bound_are_fine() -> None:
    assert len(run("'ab' * 50000")) == 100_000
    assert len(run("[1] * 100000")) == 100_000


# --- templates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("Hi {{ state.user.name }}!", "Hi Ada!"),
        ("{{state.n}} of {{ len(state.items) }}", "3 of 3"),
        ("{{ state.user.address }}", {"city": "Paris"}),
        ("  {{ state.n }}\n", 3),
        ("{{ state.price }}", 2.5),
        ("{{ state.missing }}", None),
        ("[{{ state.missing }}]", "[]"),
        ("tags={{ state.user.tags }} ok={{ state.flag }}", 'tags=["admin","ops"] ok=true'),
        ('JSON {"a": 1} and {x}: {{ state.n }}', 'JSON {"a": 1} and {x}: 3'),
        ("}} alone", "}} alone"),
        ('{{ "{{" }} is literal', "{{ is literal"),
        ("{{ {'a': {'b': 1}} }}", {"a": {"b": 1}}),
        ("{{ '}}' + 'x' }}", "}}x"),
        (7, 7),
        (None, None),
    ],
)
def test_render_template(template: Any, expected: Any) -> None:
    assert render_template(template, NAMES) == expected


def test_render_nested_templates() -> None:
    template = {
        "title": "{{ upper(state.user.name) }}",
        "{{ keys }}": ["{{ state.n }}", {"deep": "n={{ state.n * 2 }}"}, 1, None, True],
        "count": 5,
    }
    assert render_template(template, NAMES) == {
        "title": "ADA",
        "{{ keys }}": [3, {"deep": "n=6"}, 1, None, True],
        "count": 5,
    }


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hi {{ state.n", "unclosed '{{' at character 4; end it with '}}'"),
        ("a {{ }} b", "empty placeholder at character 3; put an expression between '{{' and '}}'"),
        (
            {"a": ["{{ state.missing.x }}"]},
            "at a[0]: in {{ state.missing.x }}: cannot read 'x' of null at column 15; the value before it is missing",
        ),
        ({"k k": "n={{ 1 / 0 }}"}, 'at ["k k"]: in {{ 1 / 0 }}: division by zero at column 3'),
        ("{{ stat }}", "in {{ stat }}: unknown name 'stat' at column 1; names are: input, state"),
        (
            "x{{ float('inf') }}",
            "in {{ float('inf') }}: the result is a number that is not finite (NaN or Infinity) at column 1; "
            "JSON cannot hold it",
        ),
    ],
)
def test_render_template_errors(template: Any, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        render_template(template, NAMES)
    assert caught.value.message == message


def test_render_template_limits_nesting() -> None:
    template: Any = "{{ state.n }}"
    for _ in range(65):
        template = [template]
    with pytest.raises(ExpressionError, match=r"the template nests more than 64 levels deep$"):
        render_template(template, NAMES)


def test_check_template_accepts_good_templates() -> None:
    assert check_template("Hi {{ state.user.name }}") == []
    assert check_template({"a": ["{{ input }}", 1, None], "b": "no placeholders"}) == []
    assert check_template("{{ item.x }}", names=["item"]) == []


def test_check_template_reports_every_problem_with_its_place() -> None:
    template = {
        "items": [0, 1, {"title": "{{ state. }}"}],
        "a b": "{{ 2 ** 2 }}",
        "body": {"text": "{{ }} then {{ stat.x }} then {{ state.n"},
        "ok": "{{ state.n }}",
    }
    assert check_template(template) == [
        "at items[2].title: in {{ state. }}: invalid syntax at the end of the expression",
        "at [\"a b\"]: in {{ 2 ** 2 }}: '**' (power) is not allowed at column 3",
        "at body.text: empty placeholder at character 1; put an expression between '{{' and '}}'",
        "at body.text: unclosed '{{' at character 30; end it with '}}'",
        "at body.text: in {{ stat.x }}: unknown name 'stat' at column 1; names are: input, state",
    ]


def test_check_template_at_the_top_level_and_with_other_names() -> None:
    assert check_template("{{ state.x }}", names=["item"]) == [
        "in {{ state.x }}: unknown name 'state' at column 1; names are: item"
    ]
    assert check_template(["{{ lambda: 1 }}"]) == ["at [0]: in {{ lambda: 1 }}: lambda is not allowed at column 1"]


# --- properties ----------------------------------------------------------------------------------

KEYS = ["a", "b", "user", "0", "a b", "__class__", "if", "true"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=20,
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("dot"), st.sampled_from(KEYS)),
        st.tuples(st.just("key"), st.sampled_from(KEYS)),
        st.tuples(st.just("index"), st.integers(-6, 6)),
    ),
    max_size=6,
)


class _Fails(Exception):
    pass


def _expected(value: Any, steps: list[tuple[str, Any]]) -> Any:
    """What the path should give: the language's rules, written out plainly."""
    for kind, key in steps:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | str) and kind == "index":
            value = value[key] if -len(value) <= key < len(value) else None
        else:
            raise _Fails
    return value


def _path_text(steps: list[tuple[str, Any]]) -> str:
    parts = {"dot": ".{}", "key": "[{}]", "index": "[{}]"}
    return "state" + "".join(parts[kind].format(json.dumps(key) if kind == "key" else key) for kind, key in steps)


def _compiles(steps: list[tuple[str, Any]]) -> bool:
    return all(
        kind != "dot" or (key.isidentifier() and not keyword.iskeyword(key) and not key.startswith("__"))
        for kind, key in steps
    )


@settings(max_examples=300, deadline=None)
@given(state=JSON_VALUES, steps=STEPS)
def test_member_paths_only_ever_raise_expression_error(state: Any, steps: list[tuple[str, Any]]) -> None:
    text = _path_text(steps)
    if not _compiles(steps):
        with pytest.raises(ExpressionError):
            compile_expression(text)
        return
    expression = compile_expression(text)
    try:
        expected = _expected(state, steps)
    except _Fails:
        with pytest.raises(ExpressionError):
            expression.evaluate({"state": state, "input": None})
        return
    assert expression.evaluate({"state": state, "input": None}) == expected


# The parser warns about inputs like "1abc" before rejecting them; the warning is not the point here.
@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("state.[]()'\"0123456789+-*/%<>=! ,:{}_abcdefijlnorux")), max_size=30)
)
def test_any_text_only_ever_raises_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        compile_expression(text).evaluate({"state": {"a": [1, "x"]}, "input": None})


@pytest.mark.parametrize(
    ("text", "state", "expected"),
    [
        ("default(state.review.approved, true)", {}, True),
        ("default(state.review.approved, true)", {"review": None}, True),
        ("default(state.review.approved, true)", {"review": {"approved": False}}, False),
        ("default(state.rows[0].name, 'none')", {"rows": None}, "none"),
        ("default(state.rows[5].name, 'none')", {"rows": []}, "none"),
        ("default(state.a, 1) + 1", {}, 2),
    ],
)
def test_default_covers_a_path_through_a_missing_value(text: str, state: Any, expected: Any) -> None:
    assert compile_expression(text).evaluate({"state": state}) == expected


def test_default_still_reports_a_path_that_is_wrong() -> None:
    with pytest.raises(ExpressionError, match="cannot read 'approved' of a number"):
        compile_expression("default(state.review.approved, true)").evaluate({"state": {"review": 5}})
    with pytest.raises(ExpressionError, match="cannot read 'approved' of null"):
        compile_expression("state.review.approved").evaluate({"state": {}})
