"""Derived columns from a small arithmetic language, e.g. `log1p(amount) / maximum(card_age_days, 1)`.

The same compiled expression runs on a Ray Data batch (dict of numpy arrays) and on a serving request,
so a derived feature cannot drift between training and serving. Text comes from a config file, so it is
parsed with `ast` and compiled by walking a whitelist of node types into numpy closures: nothing is
ever passed to eval/exec, and anything outside the whitelist fails at compile time, when the config loads.

Every value is float64 and missing values are NaN. NaN propagates through everything: arithmetic (as in
numpy), comparisons (NaN if either side is NaN, not False as in numpy, so a missing value is not silently
classed as "no"), `and`/`or`/`not` and the condition of `where`. Booleans are 1.0/0.0 and any non-zero
value is true. Division by zero and logs of non-positive numbers give inf/NaN without warnings.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Env = Mapping[str, np.ndarray]
Node = Callable[[Env], np.ndarray]

_BINARY: dict[type[ast.operator], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.true_divide,
    ast.FloorDiv: np.floor_divide,
    ast.Mod: np.mod,
    ast.Pow: np.power,
}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive}
_COMPARE: dict[type[ast.cmpop], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


def _where(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(cond), np.nan, np.where(cond != 0, a, b))


FUNCTIONS: dict[str, tuple[int, Callable[..., np.ndarray]]] = {
    "log": (1, np.log),
    "log1p": (1, np.log1p),
    "exp": (1, np.exp),
    "sqrt": (1, np.sqrt),
    "abs": (1, np.abs),
    "floor": (1, np.floor),
    "ceil": (1, np.ceil),
    "minimum": (2, np.minimum),
    "maximum": (2, np.maximum),
    "clip": (3, np.clip),
    "where": (3, _where),
}
"""Function name -> (number of arguments, implementation)."""

ALLOWED = (
    "allowed: numbers, column names, col(\"any name\"), + - * / // % **, unary + -, "
    "< <= > >= == !=, and/or/not, and the functions " + ", ".join(f"{n}()" for n in FUNCTIONS)
)


class ExpressionError(ValueError):
    """An expression that does not compile, or cannot be evaluated on the given columns."""


@dataclass(frozen=True)
class Expression:
    """A compiled expression; only `text` is state, so it round-trips through JSON as a plain string."""

    text: str

    def __post_init__(self) -> None:
        _compile(self.text)  # fail on construction, not on the first batch

    @property
    def columns(self) -> list[str]:
        """The sorted names of the columns the expression reads."""
        return sorted(_compile(self.text)[1])

    def evaluate(self, columns: Mapping[str, Any]) -> np.ndarray:
        """One float64 value per row; `columns` maps names to equal-length array-likes (scalars are one row)."""
        fn, names = _compile(self.text)
        env = {name: _column(self.text, name, columns) for name in names}
        if env:
            lengths = {len(v) for v in env.values()}
            if len(lengths) > 1:
                raise ExpressionError(f"expression {self.text!r}: columns {sorted(names)} differ in length {lengths}")
            rows = lengths.pop()
        else:  # a constant still gives one value per row of the batch
            rows = len(np.atleast_1d(next(iter(columns.values())))) if columns else 1
        with np.errstate(all="ignore"):
            out = fn(env)
        return np.array(np.broadcast_to(out, (rows,)), dtype=np.float64)


def compile_expression(text: str) -> Expression:
    """Parse and check `text`; raises ExpressionError naming the first construct outside the language."""
    return Expression(text)


def _column(text: str, name: str, columns: Mapping[str, Any]) -> np.ndarray:
    if name not in columns:
        raise ExpressionError(f"expression {text!r}: column {name!r} is not in the data; it has {sorted(columns)}")
    try:
        return np.atleast_1d(np.asarray(columns[name], dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ExpressionError(f"expression {text!r}: column {name!r} is not numeric ({e})") from None


@functools.lru_cache(maxsize=256)
def _compile(text: str) -> tuple[Node, frozenset[str]]:
    """The closure tree and the column names, cached because a batch job evaluates the same text per batch."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expression {text!r} is empty; {ALLOWED}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"expression {text!r} is not valid syntax ({e.msg}); {ALLOWED}") from None
    names: set[str] = set()
    return _Compiler(text.strip(), names).visit(tree.body), frozenset(names)


class _Compiler:
    def __init__(self, text: str, names: set[str]) -> None:
        self.text = text
        self.names = names

    def reject(self, node: ast.AST, why: str) -> ExpressionError:
        piece = ast.get_source_segment(self.text, node) or type(node).__name__
        return ExpressionError(f"expression {self.text!r}: {why} {piece!r} is not allowed; {ALLOWED}")

    def visit(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            # bool is an int subclass, but True/False are not part of the language
            if type(node.value) not in (int, float):
                raise self.reject(node, "literal")
            value = np.float64(node.value)
            return lambda env: value
        if isinstance(node, ast.Name):
            return self.column(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op, left, right = _BINARY[type(node.op)], self.visit(node.left), self.visit(node.right)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            uop, operand = _UNARY[type(node.op)], self.visit(node.operand)
            return lambda env: uop(operand(env))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            operand = self.visit(node.operand)
            return lambda env: _nan_aware(lambda v: v == 0, operand(env))
        if isinstance(node, ast.BoolOp):
            parts = [self.visit(v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

            def truth(*values: np.ndarray) -> np.ndarray:
                return functools.reduce(combine, [v != 0 for v in values])

            return lambda env: _nan_aware(truth, *[p(env) for p in parts])
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.reject(node, "construct")

    def column(self, name: str) -> Node:
        self.names.add(name)
        return lambda env: env[name]

    def compare(self, node: ast.Compare) -> Node:
        # `a < b < c` means `a < b and b < c`, as in Python
        operands = [self.visit(node.left)] + [self.visit(c) for c in node.comparators]
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise self.reject(node, "comparison")
        ops = [_COMPARE[type(op)] for op in node.ops]

        def fn(env: Env) -> np.ndarray:
            values = [o(env) for o in operands]
            steps = [_nan_aware(op, a, b) for op, a, b in zip(ops, values[:-1], values[1:])]
            return functools.reduce(lambda a, b: _nan_aware(np.logical_and, a, b), steps)

        return fn

    def call(self, node: ast.Call) -> Node:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if node.keywords or (name != "col" and name not in FUNCTIONS):
            raise self.reject(node, "call")
        if name == "col":
            arg = node.args[0] if len(node.args) == 1 else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise self.reject(node, 'col() takes one string literal, e.g. col("unit price"):')
            return self.column(arg.value)
        arity, fn = FUNCTIONS[name]
        if len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.reject(node, f"{name}() takes {arity} argument(s);")
        args = [self.visit(a) for a in node.args]
        return lambda env: fn(*[a(env) for a in args])


def _nan_aware(fn: Callable[..., np.ndarray], *values: np.ndarray) -> np.ndarray:
    """`fn` as 1.0/0.0, NaN wherever any input is NaN."""
    missing = functools.reduce(np.logical_or, [np.isnan(v) for v in values])
    return np.where(missing, np.nan, np.asarray(fn(*values), dtype=np.float64))
