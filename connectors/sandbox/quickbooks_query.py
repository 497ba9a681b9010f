"""The QuickBooks Online query language, as the sandbox emulator understands it.

    SELECT * | count(*) FROM <Entity> [WHERE <prop> <op> <value> [AND ...]]
        [ORDERBY <prop> [ASC|DESC] [, ...]] [STARTPOSITION n] [MAXRESULTS m]

Operators: =, <, >, <=, >=, IN (...), LIKE (only the % wildcard). OR, NOT, JOIN, GROUP BY, projections and
!= are refused, like Intuit refuses them. Parsing yields a hashable `Query`; `compile_where` turns its
conditions into one predicate over a record (cached, so a paging loop compiles once), and `sort_key` gives a
total order over any JSON value, so bad fixture records sort instead of raising.

Comparison rules (the intent of Intuit's, made explicit):
- a quoted literal that looks like a date or datetime compares as an instant, so offsets (-08:00 vs Z) and
  dates (midnight, company time zone) compare correctly;
- a reference property (CustomerRef) compares by its "value";
- strings compare case-insensitively; digit strings (Ids) compare as integers;
- a record whose value has the wrong type never matches (and never raises).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# QuickBooks answers in the company's time zone; the sandbox companies all sit in US Pacific (standard time).
COMPANY_TZ = timezone(timedelta(hours=-8))

DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_CAP = 1000

Literal = str | int | float | bool
Predicate = Callable[[dict], bool]


class QuerySyntaxError(ValueError):
    """The statement does not parse (Intuit: 4000 QueryParserError)."""


class QueryValidationError(ValueError):
    """The statement parses but asks for something not allowed (Intuit: 4001 QueryValidationError)."""


@dataclass(frozen=True)
class Condition:
    path: str
    op: str  # "=", "<", ">", "<=", ">=", "IN", "LIKE"
    value: Literal | tuple[Literal, ...]
    # The literal types, part of equality and hashing: True == 1 in Python, yet `= true` and `= 1` compare
    # differently, and conditions key the predicate and result caches.
    kinds: tuple[str, ...] = ()

    @classmethod
    def of(cls, path: str, op: str, value: Literal | tuple[Literal, ...]) -> Condition:
        values = value if isinstance(value, tuple) else (value,)
        return cls(path, op, value, tuple(type(v).__name__ for v in values))


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool
    conditions: tuple[Condition, ...]
    order: tuple[tuple[str, bool], ...]  # (path, descending)
    start_position: int
    max_results: int

    def mentions(self, path: str) -> bool:
        return any(c.path == path for c in self.conditions)


# ----- parsing --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<string>'(?:\\.|[^'\\])*')
      | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
      | (?P<op><=|>=|<>|!=|=|<|>)
      | (?P<punct>[(),*])
      | (?P<word>[A-Za-z_][\w.]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    "select from where and or not in like orderby order by asc desc startposition maxresults count join group "
    "having limit offset".split()
)


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, op, punct, word, end
    text: str
    column: int

    @property
    def keyword(self) -> str | None:
        return self.text.lower() if self.kind == "word" and self.text.lower() in _KEYWORDS else None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QuerySyntaxError(f'Encountered "{text[pos]}" at line 1, column {pos + 1}.')
        if match.lastgroup != "ws":
            tokens.append(_Token(match.lastgroup or "", match.group(), pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "<EOF>", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def unexpected(self, expecting: str) -> QuerySyntaxError:
        token = self.current
        return QuerySyntaxError(
            f'Encountered "{token.text}" at line 1, column {token.column}. Was expecting one of: {expecting}'
        )

    def accept_keyword(self, *words: str) -> str | None:
        if self.current.keyword in words:
            return self.advance().text.lower()
        return None

    def expect_keyword(self, word: str) -> None:
        if self.accept_keyword(word) is None:
            raise self.unexpected(f'"{word.upper()}"')

    def accept_order_by(self) -> bool:
        """ORDER BY in two words, as some clients write it; ORDERBY is Intuit's spelling."""
        if self.accept_keyword("order") is None:
            return False
        self.expect_keyword("by")
        return True

    def expect_punct(self, char: str) -> None:
        if not (self.current.kind == "punct" and self.current.text == char):
            raise self.unexpected(f'"{char}"')
        self.advance()

    def property_path(self) -> str:
        token = self.current
        if token.kind != "word" or token.keyword is not None:
            raise self.unexpected("<property>")
        self.advance()
        return token.text

    def literal(self) -> Literal:
        token = self.current
        if token.kind == "string":
            self.advance()
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "number":
            self.advance()
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            self.advance()
            return token.text.lower() == "true"
        raise self.unexpected("<string> | <number> | true | false")

    def integer(self, clause: str) -> int:
        token = self.current
        if token.kind != "number" or "." in token.text:
            raise self.unexpected(f"<integer> after {clause}")
        self.advance()
        return int(token.text)

    def parse(self) -> Query:
        self.expect_keyword("select")
        count = False
        if self.current.kind == "punct" and self.current.text == "*":
            self.advance()
        elif self.current.keyword == "count":
            self.advance()
            self.expect_punct("(")
            self.expect_punct("*")
            self.expect_punct(")")
            count = True
        else:
            # Projections (SELECT Id, Name ...) are not part of the supported grammar.
            raise self.unexpected('"*" | "count(*)"')
        self.expect_keyword("from")
        entity_token = self.current
        if entity_token.kind != "word" or entity_token.keyword is not None or "." in entity_token.text:
            raise self.unexpected("<entity>")
        self.advance()

        conditions: list[Condition] = []
        if self.accept_keyword("where"):
            conditions.append(self.condition())
            while self.accept_keyword("and"):
                conditions.append(self.condition())

        order: list[tuple[str, bool]] = []
        if self.accept_keyword("orderby") or self.accept_order_by():
            while True:
                path = self.property_path()
                direction = self.accept_keyword("asc", "desc")
                order.append((path, direction == "desc"))
                if not (self.current.kind == "punct" and self.current.text == ","):
                    break
                self.advance()

        start_position: int | None = None
        max_results: int | None = None
        while True:
            if start_position is None and self.accept_keyword("startposition"):
                start_position = self.integer("STARTPOSITION")
            elif max_results is None and self.accept_keyword("maxresults"):
                max_results = self.integer("MAXRESULTS")
            else:
                break
        if self.current.kind != "end":
            expecting = '"AND" | "ORDERBY" | "STARTPOSITION" | "MAXRESULTS" | <EOF>'
            raise self.unexpected(expecting)

        if max_results is None:
            max_results = DEFAULT_MAX_RESULTS
        if max_results < 1 or max_results > MAX_RESULTS_CAP:
            raise QueryValidationError(f"MAXRESULTS must be between 1 and {MAX_RESULTS_CAP}, was {max_results}")
        if start_position is None:
            start_position = 1
        if start_position < 0:
            raise QueryValidationError(f"STARTPOSITION must not be negative, was {start_position}")
        return Query(
            entity=entity_token.text,
            count=count,
            conditions=tuple(conditions),
            order=tuple(order),
            # Intuit treats STARTPOSITION 0 as the first row; positions are 1-based.
            start_position=max(1, start_position),
            max_results=max_results,
        )

    def condition(self) -> Condition:
        if self.current.keyword == "not":
            raise self.unexpected("<property>")
        path = self.property_path()
        token = self.current
        if token.kind == "op":
            if token.text in ("!=", "<>"):
                raise self.unexpected('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')
            self.advance()
            condition = Condition.of(path, token.text, self.literal())
        elif token.keyword == "in":
            self.advance()
            self.expect_punct("(")
            values = [self.literal()]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                values.append(self.literal())
            self.expect_punct(")")
            condition = Condition.of(path, "IN", tuple(values))
        elif token.keyword == "like":
            self.advance()
            pattern = self.literal()
            if not isinstance(pattern, str):
                raise QueryValidationError("LIKE needs a quoted string pattern")
            condition = Condition.of(path, "LIKE", pattern)
        else:
            raise self.unexpected('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')
        if self.current.keyword in ("or", "not"):
            raise self.unexpected('"AND" | "ORDERBY" | "STARTPOSITION" | "MAXRESULTS" | <EOF>')
        return condition


@functools.lru_cache(maxsize=512)
def parse_query(text: str) -> Query:
    """Parses one statement; raises QuerySyntaxError or QueryValidationError."""
    return _Parser(text).parse()


# ----- values ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 18)
def instant(text: str) -> float | None:
    """Epoch seconds of an ISO date or datetime; naive ones are in company time. None when not a date."""
    # Cheap shape test first (YYYY-MM-DD, optionally followed by T...), so plain strings cost little.
    if len(text) < 10 or text[4] != "-" or text[7] != "-" or not text[:4].isdigit() or (
            len(text) > 10 and text[10] != "T"):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=COMPANY_TZ)
    return moment.timestamp()


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def compile_path(path: str) -> Callable[[Any], Any]:
    """A getter for a dotted property; a reference object ({"value", "name"}) yields its value."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        (key,) = parts

        def get_top(record: Any) -> Any:
            value = record.get(key) if isinstance(record, dict) else None
            return value.get("value") if isinstance(value, dict) else value
        return get_top
    if len(parts) == 2:
        outer, inner = parts

        def get_nested(record: Any) -> Any:  # MetaData.LastUpdatedTime, the hot path of incremental reads
            parent = record.get(outer) if isinstance(record, dict) else None
            value = parent.get(inner) if isinstance(parent, dict) else None
            return value.get("value") if isinstance(value, dict) else value
        return get_nested

    def get(record: Any) -> Any:
        value = record
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        if isinstance(value, dict):
            return value.get("value")
        return value

    return get


def _normalizer(literal: Literal) -> tuple[Callable[[Any], Any], Any]:
    """How to turn a record's value into something comparable with this literal, and the literal's own form.
    The normalizer returns None when the value cannot be compared (wrong type): such rows never match."""
    if isinstance(literal, bool):
        def as_bool(value: Any) -> bool | None:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            return None
        return as_bool, literal
    if isinstance(literal, (int, float)):
        def as_number(value: Any) -> float | None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    return None
            return None
        return as_number, float(literal)
    moment = instant(literal)
    if moment is not None:
        def as_instant(value: Any) -> float | None:
            return instant(value) if isinstance(value, str) else None
        return as_instant, moment
    if _is_digits(literal):
        def as_integer(value: Any) -> int | float | None:
            if isinstance(value, str):
                return int(value) if _is_digits(value) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            return None
        return as_integer, int(literal)

    def as_text(value: Any) -> str | None:
        return value.casefold() if isinstance(value, str) else None
    return as_text, literal.casefold()


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}


def _compile_condition(condition: Condition) -> Predicate:
    get = compile_path(condition.path)
    if condition.op == "LIKE":
        assert isinstance(condition.value, str)
        pieces = (re.escape(piece) for piece in condition.value.split("%"))
        pattern = re.compile(".*".join(pieces), re.IGNORECASE | re.DOTALL)
        return lambda record: isinstance(value := get(record), str) and pattern.fullmatch(value) is not None
    if condition.op == "IN":
        assert isinstance(condition.value, tuple)
        members = [_normalizer(literal) for literal in condition.value]

        def is_member(record: dict) -> bool:
            value = get(record)
            return value is not None and any(normalize(value) == wanted for normalize, wanted in members)
        return is_member
    compare = _OPERATORS[condition.op]
    normalize, wanted = _normalizer(condition.value)  # type: ignore[arg-type]

    def test(record: dict) -> bool:
        value = get(record)
        if value is None:
            return False
        have = normalize(value)
        if have is None:
            return False
        try:
            return compare(have, wanted)
        except TypeError:
            return False
    return test


@functools.lru_cache(maxsize=256)
def compile_where(conditions: tuple[Condition, ...]) -> Predicate:
    """One predicate for a conjunction of conditions (compiled once per distinct WHERE clause)."""
    predicates = [_compile_condition(c) for c in conditions]
    if len(predicates) == 1:
        return predicates[0]

    def all_hold(record: dict) -> bool:
        for predicate in predicates:
            if not predicate(record):
                return False
        return True
    return all_hold


# ----- ordering -------------------------------------------------------------------------------------------------

def sort_key(path: str) -> Callable[[Any], tuple[int, Any]]:
    """A total order over whatever a property holds: numbers, dates and digit strings by value, other strings
    case-insensitively, then anything else (missing, objects, lists) last."""
    get = compile_path(path)

    def key(record: Any) -> tuple[int, Any]:
        value = get(record)
        if type(value) is str:
            moment = instant(value)
            if moment is not None:
                return (0, moment)
            if _is_digits(value):
                return (0, float(int(value)))
            return (1, value.casefold())
        if isinstance(value, (bool, int, float)):
            return (0, float(value))
        return (2, 0)
    return key


def referenced_paths(query: Query) -> Iterable[str]:
    yield from (c.path for c in query.conditions)
    yield from (path for path, _ in query.order)
