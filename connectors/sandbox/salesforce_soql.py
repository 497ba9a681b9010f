"""A SOQL subset for the Salesforce emulator: a tokenizer, a recursive-descent parser into a small AST, and a
compiler that checks the AST against an object's fields and returns a predicate and a sort key.

Supported (vendor notes shared/vendors/salesforce.md §3):
  SELECT f1, f2, Rel.f3 | COUNT()  FROM obj
  [WHERE cond]   cond := cond OR cond | cond AND cond | NOT cond | (cond)
                         | f (=|!=|<>|<|<=|>|>=) literal | f [NOT] IN (lit, ...) | f [NOT] LIKE 'pat%'
  [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]  [LIMIT n]  [OFFSET n]
Literals: 'strings' (backslash escapes), numbers, true/false, null, unquoted datetimes
(2025-03-01T00:00:00Z, with optional .sss and ±hh:mm offset) and dates (2025-03-01).

Like Salesforce: keywords and field names are case-insensitive, string comparisons too; a datetime field only
compares with an unquoted datetime literal (a quoted one is INVALID_FIELD); `!=` matches nulls; AND binds
tighter than OR (real SOQL refuses mixing them without parentheses; the emulator accepts it).
Not supported (refused as MALFORMED_QUERY): date literals such as TODAY or LAST_N_DAYS:n, GROUP BY,
aggregate functions other than COUNT(), sub-queries, FIELDS(ALL), INCLUDES/EXCLUDES.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

KEYWORDS = frozenset({
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST",
    "LAST", "LIMIT", "OFFSET", "TRUE", "FALSE", "NULL", "COUNT", "GROUP", "HAVING",
})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>[+-]?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[,()])
  | (?P<colon>:)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\", "%": "\\%",
            "_": "\\_"}


class SoqlError(ValueError):
    """A query Salesforce would refuse; `code` is its errorCode (MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def keyword(self) -> str | None:
        return self.text.upper() if self.kind == "ident" and self.text.upper() in KEYWORDS else None


@dataclass(frozen=True)
class Literal:
    kind: str  # string | datetime | date | number | boolean | null
    value: Any


@dataclass(frozen=True)
class Compare:
    path: str
    op: str
    literal: Literal


@dataclass(frozen=True)
class InList:
    path: str
    literals: tuple[Literal, ...]
    negate: bool = False


@dataclass(frozen=True)
class Like:
    path: str
    pattern: str
    negate: bool = False


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class OrderItem:
    path: str
    descending: bool = False
    nulls_last: bool = False


@dataclass
class Query:
    fields: list[str]
    sobject: str
    count: bool = False
    where: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected character {text[pos]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise SoqlError("MALFORMED_QUERY", f"invalid escape sequence \\{nxt} in {text}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_datetime(text: str) -> datetime:
    """A SOQL literal or a Salesforce wire datetime (…+0000 or Z) as an aware UTC datetime."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", value):
        value = value[:-2] + ":" + value[-2:]
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # ----- token helpers
    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.keyword in words

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        self.i += 1
        return tok

    def expect_keyword(self, word: str) -> None:
        tok = self.take()
        if tok.keyword != word:
            raise SoqlError("MALFORMED_QUERY", f"expecting {word}, found {tok.text!r} at column {tok.pos + 1}")

    def expect_punct(self, ch: str) -> None:
        tok = self.take()
        if tok.text != ch:
            raise SoqlError("MALFORMED_QUERY", f"expecting '{ch}', found {tok.text!r} at column {tok.pos + 1}")

    def name(self, what: str) -> str:
        tok = self.take()
        if tok.kind != "ident" or tok.keyword in ("FROM", "WHERE", "ORDER", "LIMIT", "AND", "OR"):
            raise SoqlError("MALFORMED_QUERY", f"expecting {what}, found {tok.text!r} at column {tok.pos + 1}")
        return tok.text

    # ----- grammar
    def query(self) -> Query:
        self.expect_keyword("SELECT")
        fields: list[str] = []
        count = False
        if self.at_keyword("COUNT"):
            self.take()
            self.expect_punct("(")
            self.expect_punct(")")
            count = True
        else:
            fields.append(self.name("a field name"))
            while self.peek() is not None and self.peek().text == ",":
                self.take()
                fields.append(self.name("a field name"))
        self.expect_keyword("FROM")
        query = Query(fields=fields, sobject=self.name("an object name"), count=count)
        if "." in query.sobject:
            raise SoqlError("MALFORMED_QUERY", f"invalid object name {query.sobject!r}")
        if self.at_keyword("WHERE"):
            self.take()
            query.where = self.condition()
        if self.at_keyword("GROUP", "HAVING"):
            raise SoqlError("MALFORMED_QUERY", "GROUP BY and HAVING are not supported by the sandbox")
        if self.at_keyword("ORDER"):
            self.take()
            self.expect_keyword("BY")
            query.order.append(self.order_item())
            while self.peek() is not None and self.peek().text == ",":
                self.take()
                query.order.append(self.order_item())
        if self.at_keyword("LIMIT"):
            self.take()
            query.limit = self.integer("LIMIT")
        if self.at_keyword("OFFSET"):
            self.take()
            query.offset = self.integer("OFFSET")
            if query.offset > 2000:
                raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
        tok = self.peek()
        if tok is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token {tok.text!r} at column {tok.pos + 1}")
        return query

    def integer(self, what: str) -> int:
        tok = self.take()
        if tok.kind != "number" or not tok.text.isdigit():
            raise SoqlError("MALFORMED_QUERY", f"{what} expects a non-negative integer, found {tok.text!r}")
        return int(tok.text)

    def order_item(self) -> OrderItem:
        path = self.name("a field name")
        descending = False
        if self.at_keyword("ASC", "DESC"):
            descending = self.take().keyword == "DESC"
        nulls_last = descending  # Salesforce: ASC puts nulls first, DESC puts them last
        if self.at_keyword("NULLS"):
            self.take()
            tok = self.take()
            if tok.keyword not in ("FIRST", "LAST"):
                raise SoqlError("MALFORMED_QUERY", f"expecting FIRST or LAST after NULLS, found {tok.text!r}")
            nulls_last = tok.keyword == "LAST"
        return OrderItem(path, descending, nulls_last)

    def condition(self) -> Any:
        items = [self.conjunction()]
        while self.at_keyword("OR"):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def conjunction(self) -> Any:
        items = [self.negation()]
        while self.at_keyword("AND"):
            self.take()
            items.append(self.negation())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def negation(self) -> Any:
        if self.at_keyword("NOT"):
            self.take()
            return Not(self.negation())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.take()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.predicate()

    def predicate(self) -> Any:
        path = self.name("a field name")
        negate = False
        if self.at_keyword("NOT"):
            self.take()
            negate = True
            if not self.at_keyword("IN", "LIKE"):
                raise SoqlError("MALFORMED_QUERY", "expecting IN or LIKE after NOT")
        if self.at_keyword("IN"):
            self.take()
            self.expect_punct("(")
            literals = [self.literal()]
            while self.peek() is not None and self.peek().text == ",":
                self.take()
                literals.append(self.literal())
            self.expect_punct(")")
            return InList(path, tuple(literals), negate)
        if self.at_keyword("LIKE"):
            self.take()
            lit = self.literal()
            if lit.kind != "string":
                raise SoqlError("MALFORMED_QUERY", "LIKE expects a quoted string pattern")
            return Like(path, lit.value, negate)
        tok = self.take()
        if tok.kind != "op":
            raise SoqlError("MALFORMED_QUERY", f"expecting an operator after {path}, found {tok.text!r}")
        return Compare(path, "!=" if tok.text == "<>" else tok.text, self.literal())

    def literal(self) -> Literal:
        tok = self.take()
        if tok.kind == "string":
            return Literal("string", _unquote(tok.text))
        if tok.kind == "datetime":
            return Literal("datetime", parse_datetime(tok.text))
        if tok.kind == "date":
            try:
                return Literal("date", date.fromisoformat(tok.text))
            except ValueError:
                raise SoqlError("MALFORMED_QUERY", f"invalid date {tok.text}") from None
        if tok.kind == "number":
            return Literal("number", float(tok.text))
        if tok.keyword in ("TRUE", "FALSE"):
            return Literal("boolean", tok.keyword == "TRUE")
        if tok.keyword == "NULL":
            return Literal("null", None)
        if tok.kind == "ident":
            raise SoqlError("MALFORMED_QUERY", f"unsupported literal {tok.text!r} (date literals such as TODAY "
                                               "are not supported by the sandbox; use an explicit datetime)")
        raise SoqlError("MALFORMED_QUERY", f"expecting a value, found {tok.text!r} at column {tok.pos + 1}")


def parse_query(text: str) -> Query:
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "the q parameter is empty")
    return _Parser(text).query()


# ----- compiling against an object's fields ------------------------------------------------------------------------

# Resolves a (possibly dotted) field path of the queried object to (getter(record) -> value, field type).
Resolver = Callable[[str], tuple[Callable[[dict], Any], str]]

TEXT_TYPES = frozenset({"string", "textarea", "picklist", "phone", "url", "email", "id", "reference"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})


def _normalise(value: Any, ftype: str) -> Any:
    """A stored value as something comparable for its field type (None stays None)."""
    if value is None:
        return None
    if ftype == "datetime":
        return parse_datetime(value) if isinstance(value, str) else value
    if ftype == "date":
        return date.fromisoformat(value) if isinstance(value, str) else value
    if ftype in TEXT_TYPES:
        return str(value).lower()
    if ftype in NUMBER_TYPES:
        return float(value)
    return value


def _literal_value(path: str, literal: Literal, ftype: str, normalise_id: Callable[[str], str]) -> Any:
    if literal.kind == "null":
        return None
    if ftype == "datetime":
        if literal.kind != "datetime":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type "
                                             "dateTime and should not be enclosed in quotes")
        return literal.value
    if ftype == "date":
        if literal.kind != "date":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type date "
                                             "and should not be enclosed in quotes")
        return literal.value
    if ftype == "boolean":
        if literal.kind != "boolean":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type "
                                             "boolean and should not be enclosed in quotes")
        return literal.value
    if ftype in NUMBER_TYPES:
        if literal.kind != "number":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type "
                                             f"{ftype} and should not be enclosed in quotes")
        return literal.value
    if ftype in TEXT_TYPES:
        if literal.kind != "string":
            raise SoqlError("INVALID_FIELD", f"value of filter criterion for field '{path}' must be of type "
                                             f"{ftype} and should be enclosed in quotes")
        if ftype in ("id", "reference"):
            return normalise_id(literal.value).lower()
        return literal.value.lower()
    raise SoqlError("INVALID_FIELD", f"field '{path}' of type {ftype} can not be filtered in a query call")


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):  # \% and \_ are literal
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def compile_where(node: Any, resolve: Resolver, normalise_id: Callable[[str], str]) -> Callable[[dict], bool]:
    if node is None:
        return lambda record: True
    if isinstance(node, BoolOp):
        parts = [compile_where(item, resolve, normalise_id) for item in node.items]
        if node.op == "AND":
            return lambda record: all(p(record) for p in parts)
        return lambda record: any(p(record) for p in parts)
    if isinstance(node, Not):
        inner = compile_where(node.item, resolve, normalise_id)
        return lambda record: not inner(record)
    if isinstance(node, Like):
        getter, ftype = resolve(node.path)
        if ftype not in TEXT_TYPES:
            raise SoqlError("INVALID_FIELD", f"invalid operator on field '{node.path}': LIKE needs a text field")
        regex = _like_regex(node.pattern)

        def like(record: dict) -> bool:
            value = getter(record)
            hit = value is not None and regex.fullmatch(str(value)) is not None
            return hit != node.negate

        return like
    if isinstance(node, InList):
        getter, ftype = resolve(node.path)
        values = {_literal_value(node.path, lit, ftype, normalise_id) for lit in node.literals}

        def in_list(record: dict) -> bool:
            hit = _normalise(getter(record), ftype) in values
            return hit != node.negate

        return in_list
    if isinstance(node, Compare):
        getter, ftype = resolve(node.path)
        target = _literal_value(node.path, node.literal, ftype, normalise_id)
        if ftype == "boolean" and node.op not in ("=", "!="):
            raise SoqlError("INVALID_FIELD", f"invalid operator on boolean field '{node.path}'")
        if node.op == "=":
            return lambda record: _normalise(getter(record), ftype) == target
        if node.op == "!=":
            return lambda record: _normalise(getter(record), ftype) != target
        if target is None:
            raise SoqlError("MALFORMED_QUERY", f"null can only be compared with = or != (field '{node.path}')")
        compare = _OPS[node.op]

        def ordered(record: dict) -> bool:
            value = _normalise(getter(record), ftype)
            return value is not None and compare(value, target)

        return ordered
    raise SoqlError("MALFORMED_QUERY", f"unsupported condition {node!r}")


def sort_records(records: list[dict], order: list[OrderItem], resolve: Resolver) -> list[dict]:
    """Sorts by each ORDER BY item (stable sorts, last key first), nulls first or last as asked."""
    result = list(records)
    for item in reversed(order):
        getter, ftype = resolve(item.path)
        if ftype == "address":
            raise SoqlError("INVALID_FIELD", f"field '{item.path}' of type address can not be sorted")
        present = [r for r in result if getter(r) is not None]
        missing = [r for r in result if getter(r) is None]
        present.sort(key=lambda r: _normalise(getter(r), ftype), reverse=item.descending)
        result = present + missing if item.nulls_last else missing + present
    return result
