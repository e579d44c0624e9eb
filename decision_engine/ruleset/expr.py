"""The condition language of rule files: tokens → AST, with positions.

    condition := or
    or        := and ("or" and)*
    and       := not ("and" not)*
    not       := "not" not | compare
    compare   := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum
                      | ["not"] "in" "[" literal ("," literal)* "]"]
    sum       := product (("+" | "-") product)*
    product   := unary (("*" | "/") unary)*
    unary     := "-" unary | atom
    atom      := number | string | "true" | "false" | field | name "(" args ")" | "(" condition ")"
    args      := [arg ("," arg)*]
    arg       := sum | name "=" string      (keyword arguments: days_since_outcome)

Nothing here is ever handed to Python's eval: the AST is type-checked and
compiled into closures by ruleset/closures.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

FUNCTIONS = {
    # name: (argument kinds, result kind); "field" = a field name whose value may be absent
    "exists": (("field",), "bool"),
    "days_until": (("date",), "number"),
    "days_since": (("date",), "number"),
    "min": (("number", "number"), "number"),
    "max": (("number", "number"), "number"),
    "round": (("number",), "number"),
    "abs": (("number",), "number"),
    # keyword arguments only: category= or offer=, and optionally outcome= (see typecheck)
    "days_since_outcome": ((), "number"),
    "days_since_notice": ((), "number"),
}
OUTCOME_DAYS = "days_since_outcome"
NOTICE_DAYS = "days_since_notice"
HISTORY_FUNCTIONS = frozenset({OUTCOME_DAYS, NOTICE_DAYS})
"""Functions whose value the facts carry, computed from the customer's history."""
"""Days since the customer's latest outcome on an offer or a category: a value the
decision core computes from the offer history, only for rulesets that use it."""
OUTCOME_KEYWORDS = ("category", "offer", "outcome")
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


class ExprError(Exception):
    """A condition that does not parse or type-check; col is 1-based within the text."""

    def __init__(self, message: str, col: int) -> None:
        self.message = message
        self.col = col
        super().__init__(f"column {col}: {message}")


@dataclass(frozen=True, slots=True)
class Literal:
    value: float | str | bool
    col: int


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Node, ...]
    col: int
    keywords: tuple[tuple[str, Literal], ...] = ()
    """`name="text"` arguments, in the order written."""


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Node
    col: int


@dataclass(frozen=True, slots=True)
class Arith:
    op: str
    left: Node
    right: Node
    col: int


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node
    col: int


@dataclass(frozen=True, slots=True)
class Member:
    """`left in [items]` (or `not in` when negated)."""

    left: Node
    items: tuple[Literal, ...]
    negated: bool
    col: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    col: int


@dataclass(frozen=True, slots=True)
class Logic:
    op: str
    """"and" or "or"."""
    operands: tuple[Node, ...]
    col: int


Node = Literal | Field | Call | Neg | Arith | Compare | Member | Not | Logic

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|=)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    col: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            bad = len(text) - len(text[pos:].lstrip())
            col = bad + 1
            hint = " (use == to compare)" if text[bad] == "=" else ""
            raise ExprError(f"unexpected character {text[bad]!r}{hint}", col)
        kind = match.lastgroup
        token_text = match.group(kind)
        if token_text == "=" and not _keyword_position(tokens):
            col = match.start(kind) + 1
            raise ExprError("unexpected character '=' (use == to compare)", col)
        tokens.append(_Token(kind, token_text, match.start(kind) + 1))
        pos = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _keyword_position(tokens: list[_Token]) -> bool:
    """Whether a `=` here names a keyword argument: it follows `(name` or `, name`."""
    return (
        len(tokens) >= 2
        and tokens[-1].kind == "name"
        and tokens[-2].kind == "op"
        and tokens[-2].text in ("(", ",")
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def _at(self, *texts: str) -> bool:
        tok = self.token
        return tok.kind in ("op", "name") and tok.text in texts

    def _take(self) -> _Token:
        tok = self.token
        self.index += 1
        return tok

    def _expect(self, text: str) -> _Token:
        if not self._at(text):
            raise ExprError(f"expected {text!r}, found {self._describe()}", self.token.col)
        return self._take()

    def _describe(self) -> str:
        tok = self.token
        return "end of condition" if tok.kind == "end" else repr(tok.text)

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise ExprError("empty condition", 1)
        node = self._or()
        if self.token.kind != "end":
            raise ExprError(f"unexpected {self._describe()}", self.token.col)
        return node

    def _logic(self, op: str, sub: str) -> Node:
        parse_sub = getattr(self, sub)
        first: Node = parse_sub()
        operands = [first]
        while self._at(op):
            self._take()
            operands.append(parse_sub())
        if len(operands) == 1:
            return first
        return Logic(op, tuple(operands), _col(first))

    def _or(self) -> Node:
        return self._logic("or", "_and")

    def _and(self) -> Node:
        return self._logic("and", "_not")

    def _not(self) -> Node:
        if self._at("not"):
            col = self._take().col
            return Not(self._not(), col)
        return self._compare()

    def _compare(self) -> Node:
        left = self._sum()
        tok = self.token
        if tok.kind == "op" and tok.text in COMPARISONS:
            self._take()
            return Compare(tok.text, left, self._sum(), tok.col)
        if self._at("in"):
            self._take()
            return Member(left, self._list(), False, tok.col)
        if self._at("not") and self.tokens[self.index + 1].text == "in":
            self._take()
            self._take()
            return Member(left, self._list(), True, tok.col)
        return left

    def _list(self) -> tuple[Literal, ...]:
        opening = self._expect("[")
        items: list[Literal] = []
        while not self._at("]"):
            negative = self._at("-")
            if negative:
                self._take()
            item = self._atom()
            if not isinstance(item, Literal) or (negative and isinstance(item.value, str | bool)):
                raise ExprError("a list holds literal values only", _col(item))
            if negative:
                item = Literal(-item.value, item.col)  # type: ignore[operator]
            items.append(item)
            if not self._at("]"):
                self._expect(",")
        self._take()
        if not items:
            raise ExprError("empty list", opening.col)
        return tuple(items)

    def _sum(self) -> Node:
        node = self._product()
        while self._at("+", "-"):
            tok = self._take()
            node = Arith(tok.text, node, self._product(), tok.col)
        return node

    def _product(self) -> Node:
        node = self._unary()
        while self._at("*", "/"):
            tok = self._take()
            node = Arith(tok.text, node, self._unary(), tok.col)
        return node

    def _unary(self) -> Node:
        if self._at("-"):
            col = self._take().col
            operand = self._unary()
            if isinstance(operand, Literal) and isinstance(operand.value, float):
                return Literal(-operand.value, col)
            return Neg(operand, col)
        return self._atom()

    def _atom(self) -> Node:
        tok = self._take()
        if tok.kind == "number":
            return Literal(float(tok.text), tok.col)
        if tok.kind == "string":
            return Literal(_unquote(tok.text), tok.col)
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return Literal(tok.text == "true", tok.col)
            if tok.text in KEYWORDS:
                raise ExprError(f"unexpected {tok.text!r}", tok.col)
            if self._at("("):
                return self._call(tok)
            return Field(tok.text, tok.col)
        if tok.text == "(":
            node = self._or()
            self._expect(")")
            return node
        self.index -= 1
        raise ExprError(f"expected a value, found {self._describe()}", tok.col)

    def _call(self, name: _Token) -> Node:
        self._take()
        args: list[Node] = []
        keywords: list[tuple[str, Literal]] = []
        while not self._at(")"):
            if self.token.kind == "name" and self.tokens[self.index + 1].text == "=":
                key = self._take()
                self._take()
                value = self._atom()
                if not (isinstance(value, Literal) and isinstance(value.value, str)):
                    raise ExprError(f"{key.text}= takes a quoted name", value.col)
                if any(k == key.text for k, _ in keywords):
                    raise ExprError(f"{key.text}= is given twice", key.col)
                keywords.append((key.text, value))
            elif keywords:
                raise ExprError("a positional argument after a keyword argument", self.token.col)
            else:
                args.append(self._sum())
            if not self._at(")"):
                self._expect(",")
        self._take()
        return Call(name.text, tuple(args), name.col, tuple(keywords))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _col(node: Node) -> int:
    return node.col


def parse(text: str) -> Node:
    """Parse a condition or a numeric expression; ExprError says where it is wrong."""
    return _Parser(text).parse()


def walk(node: Node) -> Iterator[Node]:
    """The node and every node under it, parents first."""
    yield node
    if isinstance(node, Call):
        children: tuple[Node, ...] = node.args
    elif isinstance(node, Logic):
        children = node.operands
    elif isinstance(node, Neg | Not):
        children = (node.operand,)
    elif isinstance(node, Member):
        children = (node.left,)
    elif isinstance(node, Arith | Compare):
        children = (node.left, node.right)
    else:
        children = ()
    for child in children:
        yield from walk(child)


def outcome_calls(node: Node, function: str = OUTCOME_DAYS) -> Iterator[Call]:
    """The `days_since_outcome(...)` (or other history function's) calls in a condition."""
    for sub in walk(node):
        if isinstance(sub, Call) and sub.function == function:
            yield sub


def conjuncts(node: Node) -> tuple[Node, ...]:
    """The top-level `and` terms of a condition."""
    if isinstance(node, Logic) and node.op == "and":
        return tuple(term for operand in node.operands for term in conjuncts(operand))
    return (node,)


_LEVEL = {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6}
_NOT, _COMPARE, _NEG, _ATOM = 3, 4, 7, 8


def _level(node: Node) -> int:
    if isinstance(node, Logic | Arith):
        return _LEVEL[node.op]
    if isinstance(node, Not):
        return _NOT
    if isinstance(node, Compare | Member):
        return _COMPARE
    if isinstance(node, Neg):
        return _NEG
    return _ATOM


def render(node: Node) -> str:
    """Canonical text of a node, parenthesised so that it parses back to the same tree."""

    def sub(child: Node, minimum: int) -> str:
        text = render(child)
        return f"({text})" if _level(child) < minimum else text

    if isinstance(node, Literal):
        return _literal(node.value)
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Call):
        args = [render(a) for a in node.args]
        args += [f"{key}={_literal(value.value)}" for key, value in node.keywords]
        return f"{node.function}({', '.join(args)})"
    if isinstance(node, Neg):
        return f"-{sub(node.operand, _NEG)}"
    if isinstance(node, Arith):
        level = _level(node)
        # Left-associative: only the right operand needs brackets at the same level.
        return f"{sub(node.left, level)} {node.op} {sub(node.right, level + 1)}"
    if isinstance(node, Compare):
        # Comparisons do not chain: a comparison inside one is always bracketed.
        return f"{sub(node.left, _COMPARE + 1)} {node.op} {sub(node.right, _COMPARE + 1)}"
    if isinstance(node, Member):
        items = ", ".join(_literal(i.value) for i in node.items)
        op = "not in" if node.negated else "in"
        return f"{sub(node.left, _COMPARE + 1)} {op} [{items}]"
    if isinstance(node, Not):
        return f"not {sub(node.operand, _NOT)}"
    level = _level(node)
    return f" {node.op} ".join(sub(o, level + 1) for o in node.operands)


def _literal(value: float | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)
