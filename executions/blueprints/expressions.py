"""Safe expressions and sandboxed templates that tenants write in their blueprints.

Tenants are untrusted, so an expression is parsed with ``ast.parse(text, mode="eval")``, checked
against a strict whitelist of node types when the blueprint is saved, and run by this module's own
evaluator: no ``eval``, no Python attribute access, no calls but a fixed set of pure functions, and
bounded sizes, so an expression can reach neither the interpreter nor the outside world.

The language, over JSON-like values:

- literals: numbers, text, ``True``/``False``/``None`` and ``true``/``false``/``null``, lists,
  objects (text keys); tuples are lists;
- names: those the caller allows (``state`` and ``input`` by default);
- ``a.b`` and ``a["b"]`` read a key of an object (a missing key is ``null``); ``a[0]``, ``a[-1]``
  and ``a[1:3]`` (constant bounds) index lists and text (out of range is ``null``);
- ``+ - * / // %``, unary ``- + not``, comparisons (chained), ``in``/``not in``,
  ``a if cond else b``; ``and``/``or`` short-circuit with Python semantics (they return an
  operand, so ``state.name or "anonymous"`` works);
- calls to the functions in ``FUNCTIONS`` only, by position; ``default(path, fallback)`` is the
  fallback when the path's value is null or any value on the way is (``default(state.review.approved,
  true)`` before ``review`` ran);

A number that is not finite (NaN, Infinity: ``float('nan')``, ``1e308 * 10``) fails where it is
made, since no JSON value, so no state, event or row, can hold it.

A template is a JSON value whose strings may hold ``{{ expression }}`` placeholders; see
``render_template``. A placeholder ends at the first ``}}`` outside brackets and quotes, so
``{{ "{{" }}`` writes a literal ``{{``.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FUNCTIONS",
    "Expression",
    "ExpressionError",
    "check_template",
    "compile_expression",
    "render_template",
]

MAX_LENGTH: Final = 1_000
MAX_PROBLEMS: Final = 20  # reported by check_template at most
MAX_DEPTH: Final = 32
MAX_SIZE: Final = 100_000
# Each result is capped at MAX_SIZE, but a list literal can hold many capped results.
MAX_BUILT: Final = 1_000_000
MAX_TEMPLATE_DEPTH: Final = 64
# round(x, -n) computes 10**n, so the digits are bounded too.
MAX_ROUND_DIGITS: Final = 100
DEFAULT_NAMES: Final = ("state", "input")
ALIASES: Final[Mapping[str, Any]] = {"true": True, "false": False, "null": None}


class ExpressionError(ValueError):
    """A bad expression or template, or one that failed at run time; ``message`` is for the user."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class _Fail(Exception):
    """A run-time failure; the evaluator adds the column of the node that failed."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _error(message: str, column: int | None, hint: str = "") -> ExpressionError:
    where = f" at column {column}" if column is not None else ""
    return ExpressionError(f"{message}{where}{'; ' + hint if hint else ''}", column)


# --- values ----------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__} value"


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but true + 1 is a tenant's mistake, not arithmetic.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _as_text(value: Any) -> str:
    """How a value reads inside text: text as-is, null as "", anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise _Fail("a number that is not finite (inf or nan) cannot be shown as text") from None
    except (TypeError, RecursionError):
        raise _Fail(f"{_kind(value)} cannot be shown as text") from None


def _weight(items: Iterable[Any], limit: int) -> int:
    """Items and characters in ``items``, nested ones included; stops counting past ``limit``.

    Counted deeply because ``["a" * 99999] * 99999`` is a short list that prints as 10**10 characters.
    """
    stack, total = list(items), 0
    while stack and total <= limit:
        value = stack.pop()
        if isinstance(value, str):
            total += max(len(value), 1)
        elif isinstance(value, list | tuple):
            total += 1
            stack.extend(value)
        elif isinstance(value, dict):
            total += 1
            stack.extend(value.keys())
            stack.extend(value.values())
        else:
            total += 1
    return total


def _check_size(size: int) -> int:
    if size > MAX_SIZE:
        raise _Fail(f"the result would be longer than {MAX_SIZE:,} items or characters")
    return size


def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, str) else _weight(value, MAX_SIZE)


# --- functions -------------------------------------------------------------------------------------


def _expect(name: str, value: Any, check: Callable[[Any], bool], what: str) -> Any:
    if not check(value):
        raise _Fail(f"{name}() needs {what}, got {_kind(value)}")
    return value


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _fn_len(value: Any) -> int:
    return len(_expect("len", value, lambda v: isinstance(v, str | list | tuple | dict), "text, a list or an object"))


def _fn_int(value: Any) -> int:
    try:
        if isinstance(value, str):
            return int(value.strip())
        return int(_expect("int", value, lambda v: isinstance(v, int | float), "a number, text or a boolean"))
    except (ValueError, OverflowError):
        raise _Fail(f"int() cannot turn {_quote(str(value))} into a whole number") from None


def _fn_float(value: Any) -> float:
    try:
        if isinstance(value, str):
            return float(value.strip())
        return float(_expect("float", value, lambda v: isinstance(v, int | float), "a number, text or a boolean"))
    except (ValueError, OverflowError):
        raise _Fail(f"float() cannot turn {_quote(str(value))} into a number") from None


def _fn_round(value: Any, digits: Any = None) -> int | float:
    _expect("round", value, _is_number, "a number")
    if digits is None:
        try:
            whole: int = round(value)
            return whole
        except (ValueError, OverflowError):
            raise _Fail(f"round() cannot round {value}") from None
    if not _is_number(digits) or not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise _Fail(f"round() needs a whole number of digits between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
    rounded: float = round(value, digits)
    return rounded


def _ordered(name: str, args: tuple[Any, ...]) -> list[Any]:
    items = list(_expect(name, args[0], _is_list, "a list, or two or more values")) if len(args) == 1 else list(args)
    if not items:
        raise _Fail(f"{name}() of an empty list")
    if not (all(_is_number(item) for item in items) or all(isinstance(item, str) for item in items)):
        raise _Fail(f"{name}() needs all numbers or all text")
    return items


def _fn_min(*args: Any) -> Any:
    return min(_ordered("min", args))


def _fn_max(*args: Any) -> Any:
    return max(_ordered("max", args))


def _fn_sum(values: Any) -> int | float:
    items = _expect("sum", values, _is_list, "a list of numbers")
    if not all(_is_number(item) for item in items):
        raise _Fail("sum() needs a list of numbers")
    total: int | float = sum(items)
    return total


def _contains(container: Any, item: Any, where: str) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise _Fail(f"{where} needs text to look for in text, got {_kind(item)}")
        return item in container
    if isinstance(container, list | tuple):
        return item in container
    if isinstance(container, dict):
        try:
            return item in container
        except TypeError:
            raise _Fail(f"{where} cannot look for {_kind(item)} among an object's keys") from None
    raise _Fail(f"{where} needs text, a list or an object to look in, got {_kind(container)}")


def _fn_affix(name: str) -> Callable[[Any, Any], bool]:
    def test(text: Any, affix: Any) -> bool:
        _expect(name, text, _is_text, "text")
        return bool(getattr(text, name)(_expect(name, affix, _is_text, "text to look for")))

    return test


def _fn_join(values: Any, separator: Any = "") -> str:
    parts = [_as_text(item) for item in _expect("join", values, _is_list, "a list")]
    _expect("join", separator, _is_text, "a text separator")
    _check_size(sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0))
    return str(separator.join(parts))


def _fn_split(text: Any, separator: Any = None) -> list[str]:
    _expect("split", text, _is_text, "text")
    if separator is not None and (not isinstance(separator, str) or not separator):
        raise _Fail("split() needs a separator that is non-empty text")
    return list(text.split(separator))


def _text_fn(name: str, method: Callable[[str], str]) -> Callable[[Any], str]:
    return lambda value: method(_expect(name, value, _is_text, "text"))


@dataclass(frozen=True)
class _Function:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None
    grows: bool = False  # its result counts against MAX_BUILT


FUNCTIONS: Final[Mapping[str, _Function]] = {
    "len": _Function(_fn_len, 1, 1),
    "str": _Function(_as_text, 1, 1),
    "int": _Function(_fn_int, 1, 1),
    "float": _Function(_fn_float, 1, 1),
    "bool": _Function(bool, 1, 1),
    "lower": _Function(_text_fn("lower", str.lower), 1, 1),
    "upper": _Function(_text_fn("upper", str.upper), 1, 1),
    "strip": _Function(_text_fn("strip", str.strip), 1, 1),
    "abs": _Function(lambda v: abs(_expect("abs", v, _is_number, "a number")), 1, 1),
    "min": _Function(_fn_min, 1, None),
    "max": _Function(_fn_max, 1, None),
    "round": _Function(_fn_round, 1, 2),
    "sum": _Function(_fn_sum, 1, 1),
    "any": _Function(lambda v: any(_expect("any", v, _is_list, "a list")), 1, 1),
    "all": _Function(lambda v: all(_expect("all", v, _is_list, "a list")), 1, 1),
    "contains": _Function(lambda c, item: _contains(c, item, "contains()"), 2, 2),
    "startswith": _Function(_fn_affix("startswith"), 2, 2),
    "endswith": _Function(_fn_affix("endswith"), 2, 2),
    "keys": _Function(lambda d: list(_expect("keys", d, _is_object, "an object")), 1, 1),
    "values": _Function(lambda d: list(_expect("values", d, _is_object, "an object").values()), 1, 1),
    "join": _Function(_fn_join, 1, 2, grows=True),
    "split": _Function(_fn_split, 1, 2),
    "default": _Function(lambda value, fallback: _fn_default(value, fallback), 2, 2),
}
_FUNCTION_LIST: Final = ", ".join(sorted(FUNCTIONS))


def _arity(spec: _Function) -> str:
    plural = "" if (spec.max_args or spec.min_args) == 1 else "s"
    if spec.max_args is None:
        return f"at least {spec.min_args} argument{plural}"
    if spec.max_args == spec.min_args:
        return f"{spec.min_args} argument{plural}"
    return f"{spec.min_args} or {spec.max_args} arguments"


# --- source positions ------------------------------------------------------------------------------

_SYMBOLS: Final[Mapping[type[ast.AST], str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}


@dataclass(frozen=True)
class _Source:
    """Maps the parser's (line, UTF-8 byte offset) positions to 1-based columns in the original text."""

    text: str
    body: str  # the text without leading whitespace, which the parser rejects as an indent
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> _Source:
        body = text.lstrip()
        starts = [0] + [match.end() for match in re.finditer(r"\r\n|\r|\n", body)]
        return cls(text, body, tuple(starts))

    def at(self, index: int) -> int:
        return len(self.text) - len(self.body) + index + 1

    def index(self, lineno: int, byte_offset: int) -> int:
        line = min(max(lineno, 1), len(self.starts)) - 1
        start = self.starts[line]
        head = self.body[start:].encode()[:byte_offset]
        return start + len(head.decode(errors="ignore"))

    def end(self, node: ast.expr) -> int:
        return self.index(node.end_lineno or node.lineno, node.end_col_offset or node.col_offset)

    def segment(self, node: ast.expr) -> str:
        return self.body[self.index(node.lineno, node.col_offset) : self.end(node)]

    def column(self, node: ast.expr) -> int:
        """Where a user should look: an operator's symbol, a member's name, else the node's start."""
        if isinstance(node, ast.BinOp):
            return self._find(_SYMBOLS[type(node.op)], self.end(node.left), node.right)
        if isinstance(node, ast.Attribute):
            return self.at(self.end(node) - len(node.attr))
        if isinstance(node, ast.Subscript):
            return self._find("[", self.end(node.value), node)
        return self.at(self.index(node.lineno, node.col_offset))

    def _find(self, symbol: str, start: int, until: ast.expr) -> int:
        stop = self.end(until) if isinstance(until, ast.Subscript) else self.index(until.lineno, until.col_offset)
        found = self.body.find(symbol, start, stop)
        return self.at(found if found >= 0 else start)


# --- compile-time checks ---------------------------------------------------------------------------

_FORBIDDEN: Final[Mapping[type[ast.AST], tuple[str, str]]] = {
    ast.Lambda: ("lambda is not allowed", ""),
    ast.NamedExpr: ("':=' (assignment) is not allowed", ""),
    ast.ListComp: ("comprehensions are not allowed", ""),
    ast.SetComp: ("comprehensions are not allowed", ""),
    ast.DictComp: ("comprehensions are not allowed", ""),
    ast.GeneratorExp: ("comprehensions are not allowed", ""),
    ast.JoinedStr: ("f-strings are not allowed", "join text with + and str(...)"),
    ast.Set: ("sets are not allowed", "use a list"),
    ast.Starred: ("'*' unpacking is not allowed", ""),
    ast.Await: ("await is not allowed", ""),
    ast.Yield: ("yield is not allowed", ""),
    ast.YieldFrom: ("yield is not allowed", ""),
}
_OPERATOR_HINTS: Final[Mapping[type[ast.AST], str]] = {
    ast.Is: "use == or !=",
    ast.IsNot: "use == or !=",
    ast.BitAnd: "use 'and'",
    ast.BitOr: "use 'or'",
}
_BINARY_OPS: Final = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_UNARY_OPS: Final = (ast.USub, ast.UAdd, ast.Not)
_COMPARE_OPS: Final = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)


def _operator_error(op: ast.AST) -> tuple[str, str]:
    if isinstance(op, ast.Pow):
        return "'**' (power) is not allowed", ""
    return f"'{_SYMBOLS.get(type(op), type(op).__name__)}' is not allowed", _OPERATOR_HINTS.get(type(op), "")


def _slice_bound(node: ast.expr | None) -> int | None:
    """A slice bound's value, or a _Fail when it is not a whole-number constant."""
    if node is None:
        return None
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node, sign = node.operand, -1
    if isinstance(node, ast.Constant) and _is_number(node.value) and isinstance(node.value, int):
        return sign * node.value
    raise _Fail("slice bounds must be whole-number constants")


class _Checker:
    """Walks a parsed expression once and rejects anything outside the whitelist."""

    def __init__(self, source: _Source, names: frozenset[str]) -> None:
        self.source = source
        self.names = names

    def check(self, node: ast.expr, depth: int = 1) -> None:
        if depth > MAX_DEPTH:
            raise self.error(node, f"the expression nests more than {MAX_DEPTH} levels deep")
        rule = _RULES.get(type(node))
        if rule is None:
            message, hint = _FORBIDDEN.get(type(node), (f"{type(node).__name__} is not allowed", ""))
            raise self.error(node, message, hint)
        try:
            children = rule(self, node)
        except _Fail as fail:
            raise self.error(node, fail.message, fail.hint) from None
        for child in children:
            self.check(child, depth + 1)

    def error(self, node: ast.expr, message: str, hint: str = "") -> ExpressionError:
        return _error(message, self.source.column(node), hint)

    def constant(self, node: ast.Constant) -> list[ast.expr]:
        if node.value is not None and not isinstance(node.value, str | int | float):
            kind = "'...'" if node.value is Ellipsis else f"{type(node.value).__name__} literals"
            raise _Fail(f"{kind} {'is' if node.value is Ellipsis else 'are'} not allowed")
        return []

    def name(self, node: ast.Name) -> list[ast.expr]:
        _check_member_name(node.id)
        if node.id in ALIASES or node.id in self.names:
            return []
        if node.id in FUNCTIONS:
            raise _Fail(f"'{node.id}' is a function", f"call it, as in {node.id}(...)")
        raise _Fail(f"unknown name '{node.id}'", f"names are: {', '.join(sorted(self.names))}")

    def attribute(self, node: ast.Attribute) -> list[ast.expr]:
        _check_member_name(node.attr)
        return [node.value]

    def subscript(self, node: ast.Subscript) -> list[ast.expr]:
        if not isinstance(node.slice, ast.Slice):
            return [node.value, node.slice]
        if _slice_bound(node.slice.step) == 0:
            raise _Fail("a slice step cannot be zero")
        for bound in (node.slice.lower, node.slice.upper):
            _slice_bound(bound)
        return [node.value]

    def binop(self, node: ast.BinOp) -> list[ast.expr]:
        if not isinstance(node.op, _BINARY_OPS):
            raise _Fail(*_operator_error(node.op))
        return [node.left, node.right]

    def unaryop(self, node: ast.UnaryOp) -> list[ast.expr]:
        if not isinstance(node.op, _UNARY_OPS):
            raise _Fail(*_operator_error(node.op))
        return [node.operand]

    def compare(self, node: ast.Compare) -> list[ast.expr]:
        for op in node.ops:
            if not isinstance(op, _COMPARE_OPS):
                raise _Fail(*_operator_error(op))
        return [node.left, *node.comparators]

    def dict_(self, node: ast.Dict) -> list[ast.expr]:
        if any(key is None for key in node.keys):
            raise _Fail("'**' unpacking is not allowed")
        return [key for key in node.keys if key is not None] + node.values

    def call(self, node: ast.Call) -> list[ast.expr]:
        name = self._function_name(node)
        if node.keywords:
            raise _Fail("keyword arguments are not allowed", f"pass the arguments of {name}() by position")
        spec = FUNCTIONS[name]
        count = len(node.args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            raise _Fail(f"{name}() takes {_arity(spec)} ({count} given)")
        return list(node.args)

    def _function_name(self, node: ast.Call) -> str:
        func = node.func
        if isinstance(func, ast.Attribute):
            raise self.error(func, "method calls are not allowed", self._method_hint(func, node.args))
        if not isinstance(func, ast.Name):
            raise _Fail("only named functions can be called", f"functions are: {_FUNCTION_LIST}")
        _check_member_name(func.id)
        if func.id not in FUNCTIONS:
            raise _Fail(f"unknown function '{func.id}'", f"functions are: {_FUNCTION_LIST}")
        return func.id

    def _method_hint(self, func: ast.Attribute, args: list[ast.expr]) -> str:
        if func.attr not in FUNCTIONS:
            return f"functions are: {_FUNCTION_LIST}"
        parts = [self.source.segment(func.value), *(self.source.segment(arg) for arg in args)]
        return f"write {func.attr}({', '.join(parts)}) instead"


def _check_member_name(name: str) -> None:
    if name.startswith("__"):
        raise _Fail(f"'{name}' is not allowed", "names starting with '__' are reserved")


def _children(*fields: str) -> Callable[[_Checker, Any], list[ast.expr]]:
    def children(checker: _Checker, node: Any) -> list[ast.expr]:
        found: list[ast.expr] = []
        for name in fields:
            value = getattr(node, name)
            found.extend(value if isinstance(value, list) else [value])
        return found

    return children


_RULES: Final[Mapping[type[ast.AST], Callable[[_Checker, Any], list[ast.expr]]]] = {
    ast.Constant: _Checker.constant,
    ast.Name: _Checker.name,
    ast.Attribute: _Checker.attribute,
    ast.Subscript: _Checker.subscript,
    ast.BinOp: _Checker.binop,
    ast.UnaryOp: _Checker.unaryop,
    ast.BoolOp: _children("values"),
    ast.Compare: _Checker.compare,
    ast.IfExp: _children("test", "body", "orelse"),
    ast.List: _children("elts"),
    ast.Tuple: _children("elts"),
    ast.Dict: _Checker.dict_,
    ast.Call: _Checker.call,
}


def _syntax_error(exc: SyntaxError, source: _Source) -> ExpressionError:
    message = "invalid syntax" if exc.msg == "invalid syntax" else f"invalid syntax ({exc.msg})"
    if not exc.offset:  # the parser ran out of input: "1 +", "state."
        return ExpressionError(f"{message} at the end of the expression")
    # The parser's offset counts characters (not bytes) within its line.
    line = min(max(exc.lineno or 1, 1), len(source.starts)) - 1
    return _error(message, source.at(source.starts[line] + exc.offset - 1))


def _parse(text: str, names: frozenset[str]) -> tuple[ast.expr, _Source]:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}")
    source = _Source.of(text)
    if not source.body.strip():
        raise ExpressionError("the expression is empty")
    try:
        tree = ast.parse(source.body, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"the expression nests more than {MAX_DEPTH} levels deep") from None
    _Checker(source, names).check(tree.body)
    return tree.body, source


# --- evaluation ------------------------------------------------------------------------------------

_COMPARISONS: Final[Mapping[type[ast.AST], Callable[[Any, Any], Any]]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _member(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key)
    if value is None:
        raise _Fail(f"cannot read '{key}' of null", "the value before it is missing")
    raise _Fail(f"cannot read '{key}' of {_kind(value)}", "'.' reads a key of an object")


def _index(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        if key is not None and not isinstance(key, str | int | float):
            raise _Fail(f"an object's key must be text, got {_kind(key)}")
        return value.get(key)
    if isinstance(value, str | list | tuple):
        if not _is_number(key) or not isinstance(key, int):
            raise _Fail(f"an index into {_kind(value)} must be a whole number, got {_kind(key)}")
        return value[key] if -len(value) <= key < len(value) else None
    if value is None:
        raise _Fail("cannot index null", "the value before it is missing")
    raise _Fail(f"cannot index {_kind(value)}")


def _slice(value: Any, bounds: slice) -> Any:
    if isinstance(value, str):
        return value[bounds]
    if isinstance(value, list | tuple):
        return list(value[bounds])
    raise _Fail(f"cannot slice {_kind(value)}", "slices work on lists and text")


def _numbers(symbol: str, left: Any, right: Any) -> None:
    if not (_is_number(left) and _is_number(right)):
        raise _Fail(f"'{symbol}' needs two numbers, got {_kind(left)} and {_kind(right)}")


class _Evaluator:
    """Runs a checked expression; every failure becomes an ExpressionError with a column."""

    def __init__(self, source: _Source, names: Mapping[str, Any]) -> None:
        self.source = source
        self.names = names
        self.built = 0

    def eval(self, node: ast.expr) -> Any:
        try:
            value = _EVALUATORS[type(node)](self, node)
            if isinstance(value, float) and not math.isfinite(value):
                # JSON (so the run's state, its events and the database) cannot hold it.
                raise _Fail("the result is a number that is not finite (NaN or Infinity)", "JSON cannot hold it")
            return value
        except _Fail as fail:
            raise _error(fail.message, self.source.column(node), fail.hint) from None

    def charge(self, size: int) -> None:
        self.built += _check_size(size)
        if self.built > MAX_BUILT:
            raise _Fail(f"the expression builds more than {MAX_BUILT:,} items or characters")

    def name(self, node: ast.Name) -> Any:
        if node.id in ALIASES:
            return ALIASES[node.id]
        if node.id not in self.names:
            raise _Fail(f"no value for name '{node.id}'")
        return self.names[node.id]

    def dict_(self, node: ast.Dict) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            key = self.eval(key_node) if key_node is not None else None
            if not isinstance(key, str):
                raise _Fail(f"an object's keys must be text, got {_kind(key)}")
            result[key] = self.eval(value_node)
        return result

    def subscript(self, node: ast.Subscript) -> Any:
        value = self.eval(node.value)
        if isinstance(node.slice, ast.Slice):
            bounds = [_slice_bound(node.slice.lower), _slice_bound(node.slice.upper), _slice_bound(node.slice.step)]
            return _slice(value, slice(*bounds))
        return _index(value, self.eval(node.slice))

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        symbol = _SYMBOLS[type(node.op)]
        try:
            if isinstance(node.op, ast.Add):
                return self.add(left, right)
            if isinstance(node.op, ast.Mult):
                return self.multiply(left, right)
            _numbers(symbol, left, right)
            return _ARITHMETIC[type(node.op)](left, right)
        except ZeroDivisionError:
            raise _Fail("division by zero") from None
        except OverflowError:
            raise _Fail(f"the result of '{symbol}' is too large") from None

    def add(self, left: Any, right: Any) -> Any:
        if _is_number(left) and _is_number(right):
            return left + right
        if isinstance(left, str) and isinstance(right, str):
            self.charge(len(left) + len(right))
            return left + right
        if _is_list(left) and _is_list(right):
            self.charge(_weight(left, MAX_SIZE) + _weight(right, MAX_SIZE))
            return [*left, *right]
        hint = "use str(...) to turn a value into text" if str in (type(left), type(right)) else ""
        raise _Fail(f"cannot add {_kind(left)} and {_kind(right)}", hint)

    def multiply(self, left: Any, right: Any) -> Any:
        if _is_number(left) and _is_number(right):
            return left * right
        sequence, count = (right, left) if _is_number(left) else (left, right)
        if not (isinstance(sequence, str | list | tuple) and _is_number(count) and isinstance(count, int)):
            raise _Fail(f"cannot multiply {_kind(left)} and {_kind(right)}")
        self.charge(_size_of(sequence) * max(count, 0))
        return sequence * count if isinstance(sequence, str) else list(sequence) * count

    def unaryop(self, node: ast.UnaryOp) -> Any:
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if not _is_number(value):
            raise _Fail(f"unary '{'-' if isinstance(node.op, ast.USub) else '+'}' needs a number, got {_kind(value)}")
        return -value if isinstance(node.op, ast.USub) else +value

    def boolop(self, node: ast.BoolOp) -> Any:
        stop_when = isinstance(node.op, ast.Or)
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if bool(value) is stop_when:
                return value
        return value

    def compare(self, node: ast.Compare) -> bool:
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.eval(right_node)
            if not _compare(op, left, right):
                return False
            left = right
        return True

    def ifexp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def call(self, node: ast.Call) -> Any:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        spec = FUNCTIONS[name]
        if name == "default":  # default(state.review.approved, true): a path through null is missing too
            return _fn_default(self.optional(node.args[0]), self.eval(node.args[1]))
        result = spec.fn(*(self.eval(arg) for arg in node.args))
        if spec.grows:
            self.charge(_size_of(result))
        return result

    def optional(self, node: ast.expr) -> Any:
        """A path's value, or null when a value on the way is null (a node not run yet, a key
        not given); any other failure is still one."""
        if isinstance(node, ast.Attribute):
            base = self.optional(node.value)
            return None if base is None else self.eval_at(node, lambda: _member(base, node.attr))
        if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Slice):
            base = self.optional(node.value)
            return None if base is None else self.eval_at(node, lambda: _index(base, self.eval(node.slice)))
        return self.eval(node)

    def eval_at(self, node: ast.expr, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except _Fail as fail:
            raise _error(fail.message, self.source.column(node), fail.hint) from None


def _fn_default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.In | ast.NotIn):
        found = _contains(right, left, f"'{_SYMBOLS[type(op)]}'")
        return found if isinstance(op, ast.In) else not found
    try:
        return bool(_COMPARISONS[type(op)](left, right))
    except TypeError:
        raise _Fail(f"cannot compare {_kind(left)} and {_kind(right)} with '{_SYMBOLS[type(op)]}'") from None


_ARITHMETIC: Final[Mapping[type[ast.AST], Callable[[Any, Any], Any]]] = {
    ast.Sub: operator.sub,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_EVALUATORS: Final[Mapping[type[ast.AST], Callable[[_Evaluator, Any], Any]]] = {
    ast.Constant: lambda evaluator, node: node.value,
    ast.Name: _Evaluator.name,
    ast.Attribute: lambda evaluator, node: _member(evaluator.eval(node.value), node.attr),
    ast.Subscript: _Evaluator.subscript,
    ast.BinOp: _Evaluator.binop,
    ast.UnaryOp: _Evaluator.unaryop,
    ast.BoolOp: _Evaluator.boolop,
    ast.Compare: _Evaluator.compare,
    ast.IfExp: _Evaluator.ifexp,
    ast.List: lambda evaluator, node: [evaluator.eval(element) for element in node.elts],
    ast.Tuple: lambda evaluator, node: [evaluator.eval(element) for element in node.elts],
    ast.Dict: _Evaluator.dict_,
    ast.Call: _Evaluator.call,
}


# --- expressions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A checked expression; constructing one parses and checks ``text`` against ``names``."""

    text: str
    names: frozenset[str] = frozenset(DEFAULT_NAMES)
    _tree: ast.expr = field(init=False, repr=False, compare=False)
    _source: _Source = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tree, source = _parse(self.text, self.names)
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "_source", source)

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """The expression's value over ``names``; raise ExpressionError when it cannot be computed."""
        try:
            return _Evaluator(self._source, names).eval(self._tree)
        except ExpressionError:
            raise
        except _Fail as fail:
            raise _error(fail.message, None, fail.hint) from None
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            # A safety net: the evaluator's own checks should have caught it with a better message.
            raise ExpressionError(f"the expression failed: {exc}") from None


def compile_expression(text: str, *, names: Iterable[str] = DEFAULT_NAMES) -> Expression:
    """Parse and check once (at blueprint save time); raise ExpressionError for bad syntax, a
    forbidden construct, or an unknown name."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {_kind(text)}")
    return _compiled(text, frozenset(names))


@functools.lru_cache(maxsize=1024)
def _compiled(text: str, names: frozenset[str]) -> Expression:
    # Templates compile their placeholders on every render; an Expression is immutable, so share it.
    return Expression(text, names)


# --- templates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    expression: str
    position: int  # 1-based character of its '{{' in the string

    def label(self) -> str:
        return f"in {{{{ {self.expression} }}}}"


def _closing(text: str, start: int, budget: int = MAX_LENGTH + 2) -> int:
    """The index of the '}}' that ends a placeholder opened just before ``start``, or -1.

    Brackets and quotes are followed for at most ``budget`` characters (no expression is longer
    than MAX_LENGTH); past that the first '}}' ends it."""
    depth, quote, index = 0, "", start
    end = min(len(text), start + min(budget, MAX_LENGTH + 2))
    while index < end:
        char = text[index]
        if quote:
            index += 1 if char == "\\" else 0
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif depth == 0 and text.startswith("}}", index):
            return index
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        index += 1
    # Unbalanced brackets or quotes: end at the first '}}' and let the parser say what is wrong.
    return text.find("}}", start)


def _scan(text: str) -> tuple[list[str | _Slot], list[str]]:
    """A template string's literal parts and placeholders, and what is wrong with its syntax."""
    parts: list[str | _Slot] = []
    problems: list[str] = []
    at = 0
    # Characters the bracket-aware search may visit in all: many unbalanced placeholders would
    # otherwise each be followed to MAX_LENGTH, quadratic in effect.
    budget = 20 * MAX_LENGTH
    while (opening := text.find("{{", at)) >= 0:
        parts.append(text[at:opening])
        closing = _closing(text, opening + 2, budget)
        budget = max(0, budget - (closing - opening if closing >= 0 else MAX_LENGTH))
        if closing < 0:
            problems.append(f"unclosed '{{{{' at character {opening + 1}; end it with '}}}}'")
            return parts, problems
        inner = text[opening + 2 : closing].strip()
        if inner:
            parts.append(_Slot(inner, opening + 1))
        else:
            problems.append(
                f"empty placeholder at character {opening + 1}; put an expression between '{{{{' and '}}}}'"
            )
        at = closing + 2
    parts.append(text[at:])
    return [part for part in parts if part != ""], problems


def _child(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key) if isinstance(key, str) else key}]"


def _at(path: str) -> str:
    return f"at {path}: " if path else ""


def _walk(template: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every string in a template with its path; a value nested too deeply yields (path, None)."""
    if depth > MAX_TEMPLATE_DEPTH:
        yield path, None
    elif isinstance(template, str):
        yield path, template
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from _walk(value, _child(path, key), depth + 1)
    elif isinstance(template, list | tuple):
        for index, value in enumerate(template):
            yield from _walk(value, f"{path}[{index}]", depth + 1)


def _too_deep(path: str) -> str:
    return f"{_at(path)}the template nests more than {MAX_TEMPLATE_DEPTH} levels deep"


def render_template(template: Any, names: Mapping[str, Any]) -> Any:
    """Render a template value: a string with {{ expr }} placeholders becomes a string (values
    inserted as text: strings as-is, None as "", other JSON values as compact JSON); a string that is
    exactly one placeholder (surrounding whitespace allowed) yields the expression's value itself
    (any JSON type); dicts and lists are rendered recursively (keys are not templated).

    Raise ExpressionError, its message starting with the place (``at items[2].title: ...``) when
    the failure is inside a dict or list."""
    return _render(template, names, frozenset(names), "", 0)


def _render(template: Any, names: Mapping[str, Any], allowed: frozenset[str], path: str, depth: int) -> Any:
    if depth > MAX_TEMPLATE_DEPTH:
        raise ExpressionError(_too_deep(path))
    if isinstance(template, str):
        return _render_string(template, names, allowed, path)
    if isinstance(template, dict):
        return {key: _render(value, names, allowed, _child(path, key), depth + 1) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_render(value, names, allowed, f"{path}[{index}]", depth + 1) for index, value in enumerate(template)]
    return template


def _render_string(text: str, names: Mapping[str, Any], allowed: frozenset[str], path: str) -> Any:
    parts, problems = _scan(text)
    if problems:
        raise ExpressionError(_at(path) + problems[0])
    slots = [part for part in parts if isinstance(part, _Slot)]
    if not slots:
        return text
    if len(slots) == 1 and all(isinstance(part, _Slot) or not part.strip() for part in parts):
        return _slot_value(slots[0], names, allowed, path)
    return "".join(part if isinstance(part, str) else _slot_text(part, names, allowed, path) for part in parts)


def _slot_text(slot: _Slot, names: Mapping[str, Any], allowed: frozenset[str], path: str) -> str:
    try:
        return _as_text(_slot_value(slot, names, allowed, path))
    except _Fail as fail:
        raise ExpressionError(f"{_at(path)}{slot.label()}: {fail.message}") from None


def _slot_value(slot: _Slot, names: Mapping[str, Any], allowed: frozenset[str], path: str) -> Any:
    try:
        return _compiled(slot.expression, allowed).evaluate(names)
    except ExpressionError as exc:
        raise ExpressionError(f"{_at(path)}{slot.label()}: {exc.message}", exc.column) from None


def check_template(template: Any, *, names: Iterable[str] = DEFAULT_NAMES) -> list[str]:
    """Every problem in a template value (unclosed or empty placeholder, bad expression), each
    message naming the place, e.g. 'at items[2].title: ...'; [] when fine."""
    allowed = frozenset(names)
    problems: list[str] = []
    for path, text in _walk(template, ""):
        if text is None:
            problems.append(_too_deep(path))
            continue
        parts, syntax = _scan(text)
        problems.extend(_at(path) + problem for problem in syntax)
        for slot in (part for part in parts if isinstance(part, _Slot)):
            if len(problems) >= MAX_PROBLEMS:  # enough to act on; the rest would only cost time
                return [*problems, f"… and perhaps more (the first {MAX_PROBLEMS} are shown)"]
            try:
                _compiled(slot.expression, allowed)
            except ExpressionError as exc:
                problems.append(f"{_at(path)}{slot.label()}: {exc.message}")
    return problems
