"""The `where` and `order` query parameters of the Xero Accounting API, parsed (not pattern-matched) for the Xero
emulator. Xero evaluates them with a .NET dynamic-LINQ dialect; this is the subset the vendor notes and common
clients use:

  expression  := or
  or          := and (("OR" | "||") and)*
  and         := unary (("AND" | "&&") unary)*
  unary       := ("NOT" | "!") unary | comparison
  comparison  := operand (("==" | "=" | "!=" | "<>" | ">" | ">=" | "<" | "<=") operand)?
  operand     := "(" expression ")" | string | number | true | false | null
               | Guid("…") | DateTime(y, m, d[, h, mi, s]) | DateTime.Parse("…")
               | path ("." method "(" [string] ")")*          e.g. Contact.ContactID, Name.ToLower()
  method      := Contains | StartsWith | EndsWith | ToLower | ToUpper | ToString

Strings use double quotes; a doubled quote ("") is a literal quote. Keywords are case-insensitive, property
names are not (as in Xero). A bare boolean property (`IsCustomer`) is a condition of its own. Errors raise
WhereError with Xero's QueryParseException wording ("Expression expected", "No property or field 'X' exists in
type 'Invoice'", "Operator '==' incompatible with operand types 'Boolean' and 'String'").

Values compare by the literal's kind: DateTime literals against `/Date(ms+0000)/` or ISO text, Guid literals
case-insensitively, numbers as Decimal, strings ordinally. A missing property is null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"]|"")*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>==|!=|<>|>=|<=|&&|\|\||[=<>!().,])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_METHODS = {"contains", "startswith", "endswith", "tolower", "toupper", "tostring"}
_COMPARISONS = {"==": "==", "=": "==", "!=": "!=", "<>": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class WhereError(ValueError):
    """A where/order text Xero would refuse with a QueryParseException (ErrorNumber 16)."""


def parse_ms_date(value: Any) -> datetime | None:
    """`/Date(1740873600000+0000)/` (or ISO text) as an aware UTC datetime; None when it is neither."""
    if not isinstance(value, str):
        return None
    match = _MS_DATE.match(value)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
    return parse_iso(value)


def parse_iso(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ----- tokens ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # string | number | op | name | end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise WhereError(f"Syntax error '{bad}'" if bad != '"' else "Unterminated string literal")
        kind = match.lastgroup or "op"
        tokens.append(_Tok(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


# ----- the syntax tree: every node evaluates against a record ---------------------------------------------------

@dataclass(frozen=True)
class _Literal:
    kind: str  # string | number | bool | null | guid | datetime
    value: Any


@dataclass(frozen=True)
class _Path:
    parts: tuple[str, ...]
    methods: tuple[tuple[str, str | None], ...] = ()


def _resolve(record: Record, path: _Path) -> Any:
    value: Any = record
    for part in path.parts:
        value = value.get(part) if isinstance(value, dict) else None
    for name, arg in path.methods:
        if name in ("contains", "startswith", "endswith"):
            if not isinstance(value, str) or arg is None:
                return False
            return {"contains": arg in value, "startswith": value.startswith(arg),
                    "endswith": value.endswith(arg)}[name]
        if value is None:
            return None
        if name == "tolower":
            value = str(value).lower()
        elif name == "toupper":
            value = str(value).upper()
        else:  # tostring
            value = str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, (int, float, Decimal)):
        return "Decimal"
    if isinstance(value, datetime):
        return "DateTime"
    return "String"


def _coerce(value: Any, like: _Literal, op: str) -> Any:
    """A record value in the comparison domain of the literal it meets."""
    if value is None or like.kind == "null":
        return value
    if like.kind == "datetime":
        moment = parse_ms_date(value) if isinstance(value, str) else None
        if moment is None:
            raise WhereError(f"Operator '{op}' incompatible with operand types '{_type_name(value)}' and 'DateTime'")
        return moment
    if like.kind == "guid":
        return str(value).lower()
    if like.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise WhereError(f"Operator '{op}' incompatible with operand types '{_type_name(value)}' and 'Decimal'")
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise WhereError(f"Operator '{op}' incompatible with operand types 'String' and 'Decimal'") from None
    if like.kind == "bool":
        if not isinstance(value, bool):
            raise WhereError(f"Operator '{op}' incompatible with operand types '{_type_name(value)}' and 'Boolean'")
        return value
    # string literal
    if isinstance(value, (bool, int, float, Decimal)):
        raise WhereError(f"Operator '{op}' incompatible with operand types '{_type_name(value)}' and 'String'")
    return value if isinstance(value, str) else str(value)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False  # ordering against null is never true (SQL/LINQ semantics)
    try:
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
    except TypeError:
        raise WhereError(f"Operator '{op}' incompatible with operand types "
                         f"'{_type_name(left)}' and '{_type_name(right)}'") from None


# ----- the parser ----------------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str, fields: frozenset[str] | None, type_name: str):
        self.tokens = _tokenize(text)
        self.i = 0
        self.fields = fields
        self.type_name = type_name

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_keyword(self, *words: str) -> bool:
        return self.tok.kind == "name" and self.tok.text.upper() in words

    def expect(self, text: str) -> None:
        if self.tok.text != text:
            raise WhereError(f"'{text}' expected")
        self.take()

    def parse(self) -> Predicate:
        if self.tok.kind == "end":
            raise WhereError("Expression expected")
        predicate = self.or_()
        if self.tok.kind != "end":
            raise WhereError("Syntax error")
        return predicate

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.is_keyword("OR") or self.tok.text == "||":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): any(p(r) for p in ps))

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while self.is_keyword("AND") or self.tok.text == "&&":
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda r, ps=tuple(parts): all(p(r) for p in ps))

    def unary(self) -> Predicate:
        if self.is_keyword("NOT") or (self.tok.kind == "op" and self.tok.text == "!"):
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        return self.comparison()

    def comparison(self) -> Predicate:
        if self.tok.text == "(":
            # a parenthesised condition (an operand in parentheses would be a literal or path: not needed here)
            self.take()
            inner = self.or_()
            self.expect(")")
            return inner
        left = self.operand()
        if self.tok.kind == "op" and self.tok.text in _COMPARISONS:
            op = _COMPARISONS[self.take().text]
            right = self.operand()
            return _comparison(op, left, right)
        if isinstance(left, _Path):  # a bare boolean property or a boolean method call (Name.Contains("x"))
            def truthy(r: Record, path: _Path = left) -> bool:
                value = _resolve(r, path)
                if value is not None and not isinstance(value, bool):
                    raise WhereError(f"Expression of type 'Boolean' expected, found '{_type_name(value)}'")
                return value is True
            return truthy
        if left.kind == "bool":
            constant = bool(left.value)
            return lambda r: constant
        raise WhereError("Expression of type 'Boolean' expected")

    def operand(self) -> _Literal | _Path:
        tok = self.tok
        if tok.kind == "string":
            self.take()
            return _Literal("string", tok.text[1:-1].replace('""', '"'))
        if tok.kind == "number":
            self.take()
            return _Literal("number", Decimal(tok.text))
        if tok.kind != "name":
            raise WhereError("Expression expected")
        word = tok.text
        upper = word.upper()
        if upper in ("TRUE", "FALSE"):
            self.take()
            return _Literal("bool", upper == "TRUE")
        if upper == "NULL":
            self.take()
            return _Literal("null", None)
        if word == "Guid" and self.tokens[self.i + 1].text == "(":
            self.take()
            self.expect("(")
            text = self.string_arg("Guid")
            self.expect(")")
            if not re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text):
                raise WhereError(f"'{text}' is not a valid Guid")
            return _Literal("guid", text.lower())
        if word == "DateTime" and self.tokens[self.i + 1].text in ("(", "."):
            return self.datetime_literal()
        return self.path()

    def string_arg(self, context: str) -> str:
        if self.tok.kind != "string":
            raise WhereError(f"No applicable method or constructor for '{context}' with these arguments")
        return self.take().text[1:-1].replace('""', '"')

    def datetime_literal(self) -> _Literal:
        self.take()
        if self.tok.text == ".":
            self.take()
            if self.tok.text != "Parse":
                raise WhereError(f"No applicable method '{self.tok.text}' exists in type 'DateTime'")
            self.take()
            self.expect("(")
            text = self.string_arg("DateTime.Parse")
            self.expect(")")
            moment = parse_iso(text)
            if moment is None:
                raise WhereError(f"String '{text}' was not recognized as a valid DateTime.")
            return _Literal("datetime", moment)
        self.expect("(")
        numbers: list[int] = []
        while True:
            if self.tok.kind != "number" or "." in self.tok.text:
                raise WhereError("No applicable constructor exists in type 'DateTime'")
            numbers.append(int(self.take().text))
            if self.tok.text == ",":
                self.take()
                continue
            break
        self.expect(")")
        if len(numbers) not in (3, 6):
            raise WhereError("No applicable constructor exists in type 'DateTime'")
        try:
            return _Literal("datetime", datetime(*numbers, tzinfo=UTC))  # type: ignore[misc]
        except ValueError as exc:
            raise WhereError(f"Year, Month, and Day parameters describe an un-representable DateTime ({exc})") from None

    def path(self) -> _Path:
        parts = [self.take().text]
        if self.fields is not None and parts[0] not in self.fields:
            raise WhereError(f"No property or field '{parts[0]}' exists in type '{self.type_name}'")
        methods: list[tuple[str, str | None]] = []
        while self.tok.text == ".":
            self.take()
            if self.tok.kind != "name":
                raise WhereError("Identifier expected")
            name = self.take().text
            if self.tok.text == "(":
                if name.lower() not in _METHODS:
                    raise WhereError(f"No applicable method '{name}' exists in type 'String'")
                self.take()
                arg = None
                if name.lower() in ("contains", "startswith", "endswith"):
                    arg = self.string_arg(name)
                self.expect(")")
                methods.append((name.lower(), arg))
            elif methods:
                raise WhereError(f"No property or field '{name}' exists in type 'String'")
            else:
                parts.append(name)
        return _Path(tuple(parts), tuple(methods))


def _comparison(op: str, left: _Literal | _Path, right: _Literal | _Path) -> Predicate:
    if isinstance(left, _Literal) and isinstance(right, _Literal):
        result = _compare(op, left.value, right.value)
        return lambda r: result
    if isinstance(left, _Path) and isinstance(right, _Path):
        return lambda r: _compare(op, _resolve(r, left), _resolve(r, right))
    if isinstance(left, _Literal):  # literal on the left: mirror the operator
        op = {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(op, op)
        left, right = right, left
    path, literal = left, right
    assert isinstance(path, _Path) and isinstance(literal, _Literal)
    if literal.kind in ("bool", "null") and op not in ("==", "!="):
        raise WhereError(f"Operator '{op}' incompatible with operand types 'Object' and '{literal.kind.title()}'")

    def predicate(record: Record) -> bool:
        value = _coerce(_resolve(record, path), literal, op)
        return _compare(op, value, literal.value)

    return predicate


def compile_where(text: str, fields: frozenset[str] | None = None, type_name: str = "Object") -> Predicate:
    """A predicate over records for a `where` text; `fields` are the property names the type has."""
    return _Parser(text, fields, type_name).parse()


def compile_order(text: str, fields: frozenset[str] | None = None,
                  type_name: str = "Object") -> list[tuple[tuple[str, ...], bool]]:
    """`order=UpdatedDateUTC DESC, Name` as [(path, descending)]."""
    keys: list[tuple[tuple[str, ...], bool]] = []
    for clause in text.split(","):
        words = clause.split()
        if not words:
            raise WhereError("Expression expected")
        if len(words) > 2 or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC", "ASCENDING", "DESCENDING")):
            raise WhereError(f"Syntax error in order clause '{clause.strip()}'")
        path = tuple(words[0].split("."))
        if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in path):
            raise WhereError(f"Syntax error in order clause '{clause.strip()}'")
        if fields is not None and path[0] not in fields:
            raise WhereError(f"No property or field '{path[0]}' exists in type '{type_name}'")
        keys.append((path, len(words) == 2 and words[1].upper().startswith("DESC")))
    return keys


def order_key(record: Record, path: Iterable[str]) -> tuple:
    """A sort key that orders nulls first and dates chronologically, whatever the record holds."""
    value: Any = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (2, Decimal(str(value)))
    if isinstance(value, str):
        moment = _MS_DATE.match(value)
        if moment:
            return (3, int(moment.group(1)))
        return (4, value)
    return (5, str(value))
