"""The tidegate SQL dialect: PostgreSQL as sqlglot reads it, plus tidegate's own statements.

Statements sqlglot does not know (FLUSH, SHOW …, EXPLAIN, SET forms it leaves
as commands, CREATE SOURCE, DROP SOURCE) are recognised here by their leading
keywords and returned as small typed statements; everything else is a sqlglot
expression tree. Parse errors become ``SqlSyntaxError`` with PostgreSQL's
1-based position.

RisingWave's streaming clauses: ``WATERMARK FOR col AS expr`` in a column list
(a ``WatermarkColumnConstraint`` item), ``APPEND ONLY`` after CREATE TABLE's
column list (an ``APPEND_ONLY`` property), and a trailing ``EMIT ON WINDOW
CLOSE``, which is cut off before sqlglot parses the statement and recorded in
the tree's ``meta`` (``emits_on_window_close``). Likewise a trailing
``FORMAT PLAIN ENCODE JSON [(…)]`` of CREATE TABLE/SOURCE/SINK is cut off and
recorded (``format_encode_of``). CREATE SINK and DROP SINK are typed statements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokens import Token, TokenType

from tidegate.common.functions import CALLS_KEPT_BY_THE_PARSER
from tidegate.errors import SqlError, SqlSyntaxError


class Tidegate(Postgres):
    """PostgreSQL, as tidegate speaks it."""

    class Parser(PostgresParser):
        # TO_CHAR, date_part and MOD stay calls; common.functions gives them PostgreSQL's meaning.
        FUNCTIONS = {**PostgresParser.FUNCTIONS, **CALLS_KEPT_BY_THE_PARSER}
        FUNCTION_PARSERS = {k: v for k, v in PostgresParser.FUNCTION_PARSERS.items() if k != "DATE_PART"}
        # WATERMARK FOR col AS expr among a table's columns, as RisingWave's parser reads it.
        CONSTRAINT_PARSERS = {
            **PostgresParser.CONSTRAINT_PARSERS,
            "WATERMARK": lambda self: self.expression(
                exp.WatermarkColumnConstraint(
                    this=self._match(TokenType.FOR) and self._parse_column(),
                    expression=self._match(TokenType.ALIAS) and self._parse_disjunction(),
                )
            ),
        }
        SCHEMA_UNNAMED_CONSTRAINTS = {*PostgresParser.SCHEMA_UNNAMED_CONSTRAINTS, "WATERMARK"}
        PROPERTY_PARSERS = {
            **PostgresParser.PROPERTY_PARSERS,
            "APPEND": lambda self: (
                self._match_text_seq("ONLY")
                and self.expression(exp.Property(this=exp.var(APPEND_ONLY), value=exp.true()))
            ),
        }

        def parse(self, raw_tokens: list[Token], sql: str) -> list[exp.Expr | None]:
            return super().parse(_array_suffixes(raw_tokens), sql)

        def _parse_interval_span(self, this: exp.Expr, parse_function_unit: bool = True) -> exp.Interval:
            interval = super()._parse_interval_span(this, parse_function_unit=parse_function_unit)
            # sqlglot reads '1 day 02:00:00' as '1' DAY and drops the rest: keep such text whole.
            text = this.name if this is not None and this.is_string else None
            if text is not None and not exp.INTERVAL_STRING_RE.fullmatch(text) and interval.this is not this:
                interval.set("this", exp.Literal.string(text))
                interval.set("unit", None)
            return interval


def _array_suffixes(tokens: list[Token]) -> list[Token]:
    """``INT ARRAY`` as ``INT[]``: sqlglot reads ``ARRAY[3]`` after a type, but a bare ARRAY followed
    by more columns makes it parse the rest of the list as array bounds. Everywhere else ARRAY is
    followed by ``[`` or ``(`` (the ARRAY[…] and ARRAY(subquery) constructors)."""
    out: list[Token] = []
    for i, token in enumerate(tokens):
        following = tokens[i + 1].token_type if i + 1 < len(tokens) else None
        if token.token_type == TokenType.ARRAY and following not in (TokenType.L_BRACKET, TokenType.L_PAREN):
            where = (token.line, token.col, token.start, token.end)
            out += [Token(TokenType.L_BRACKET, "[", *where), Token(TokenType.R_BRACKET, "]", *where)]
        else:
            out.append(token)
    return out


APPEND_ONLY = "APPEND_ONLY"  # the property CREATE TABLE … APPEND ONLY carries
_EMIT_ON_WINDOW_CLOSE = "emit_on_window_close"  # the meta key of a trailing EMIT ON WINDOW CLOSE


def emits_on_window_close(statement: exp.Expression) -> bool:
    """Whether the statement ended with ``EMIT ON WINDOW CLOSE``."""
    return bool(statement.meta.get(_EMIT_ON_WINDOW_CLOSE))


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Show:
    name: str  # lower-cased; "tables", "materialized views", "all", or a setting


@dataclass(frozen=True)
class SetVariable:
    name: str
    value: str  # without quotes; "DEFAULT" resets


@dataclass(frozen=True)
class Explain:
    statement: str  # the statement text after EXPLAIN


@dataclass(frozen=True)
class TransactionControl:
    tag: str  # BEGIN, COMMIT, ROLLBACK


@dataclass(frozen=True)
class CreateSource:
    name: str
    # The declared (name, type text) columns, or None when the statement lists none.
    columns: tuple[tuple[str, str], ...] | None
    options: tuple[tuple[str, str], ...]  # WITH (key = 'value', …), keys lower-cased, in order
    if_not_exists: bool = False
    # The WATERMARK FOR items of the column list (normally at most one).
    watermarks: tuple[exp.WatermarkColumnConstraint, ...] = ()


@dataclass(frozen=True)
class DropSource:
    names: tuple[str, ...]
    if_exists: bool = False
    cascade: bool = False


@dataclass(frozen=True)
class FormatEncode:
    """``FORMAT PLAIN|UPSERT ENCODE JSON|CSV|PARQUET [(key = 'value', …)]``, words upper-cased."""

    format: str
    encode: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CreateSink:
    """``CREATE SINK name FROM relation | AS query WITH (…) [FORMAT … ENCODE …]``."""

    name: str
    from_name: str | None  # FROM relation
    query: str | None  # AS query (its text)
    options: tuple[tuple[str, str], ...]
    format_encode: FormatEncode | None = None
    if_not_exists: bool = False


@dataclass(frozen=True)
class DropSink:
    names: tuple[str, ...]
    if_exists: bool = False


Statement = (
    exp.Expression
    | Flush
    | Show
    | SetVariable
    | Explain
    | TransactionControl
    | CreateSource
    | DropSource
    | CreateSink
    | DropSink
)

_SET = re.compile(
    r"^\s*SET\s+(?:(?:SESSION|LOCAL)\s+)?([A-Za-z_][\w.]*)\s*(?:=|\s+TO\s+)\s*(.+?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SET_TIME_ZONE = re.compile(r"^\s*SET\s+(?:(?:SESSION|LOCAL)\s+)?TIME\s+ZONE\s+(.+?)\s*;?\s*$", re.I | re.S)
_RESET = re.compile(r"^\s*RESET\s+([A-Za-z_][\w.]*)\s*;?\s*$", re.IGNORECASE)
_SHOW = re.compile(r"^\s*SHOW\s+(.+?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:\((?:[^)]*)\)\s*|VERBOSE\s+)?(.+?)\s*;?\s*$", re.I | re.S)
_TRANSACTION = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b.*$", re.IGNORECASE | re.DOTALL)


_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_CREATE_SOURCE = re.compile(
    rf"^\s*CREATE\s+SOURCE\s+(IF\s+NOT\s+EXISTS\s+)?({_IDENTIFIER})\s*(.*)$", re.IGNORECASE | re.DOTALL
)
_DROP_SOURCE = re.compile(
    rf"^\s*DROP\s+SOURCE\s+(IF\s+EXISTS\s+)?({_IDENTIFIER}(?:\s*,\s*{_IDENTIFIER})*)\s*(CASCADE|RESTRICT)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CREATE_SINK = re.compile(
    rf"^\s*CREATE\s+SINK\s+(IF\s+NOT\s+EXISTS\s+)?({_IDENTIFIER})\s+(FROM|AS)\s+(.*)$", re.IGNORECASE | re.DOTALL
)
_DROP_SINK = re.compile(
    rf"^\s*DROP\s+SINK\s+(IF\s+EXISTS\s+)?({_IDENTIFIER}(?:\s*,\s*{_IDENTIFIER})*)\s*(?:CASCADE|RESTRICT)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_FORMAT_ENCODE = re.compile(
    r"FORMAT\s+([A-Za-z_]+)\s+ENCODE\s+([A-Za-z_]+)\s*(\(.*\))?\s*;?\s*$", re.IGNORECASE | re.DOTALL
)
_FORMAT_ENCODE_META = "format_encode"
_OPTION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*('(?:[^']|'')*'|[\w.+-]+)\s*$", re.DOTALL)


def split_statements(sql: str) -> list[str]:
    """Split a script at top-level semicolons (strings, comments and $$ quotes respected)."""
    try:
        tokens = Tidegate().tokenize(sql)
    except TokenError as error:
        raise SqlSyntaxError(f"syntax error: {error}") from error
    statements: list[str] = []
    start = 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            text = sql[start : token.start].strip()
            if text:
                statements.append(text)
            start = token.end + 1
    tail = sql[start:].strip()
    if tail and not _only_comments(tail):
        statements.append(tail)
    return statements


def _only_comments(text: str) -> bool:
    try:
        return not Tidegate().tokenize(text)
    except TokenError:
        return False


def parse_statement(sql: str) -> Statement:
    stripped = sql.strip().rstrip(";").strip()
    upper = stripped.upper()
    if upper == "FLUSH":
        return Flush()
    if match := _TRANSACTION.match(stripped):
        word = match.group(1).split()[0].upper()
        tag = {"START": "BEGIN", "END": "COMMIT", "ABORT": "ROLLBACK"}.get(word, word)
        return TransactionControl(tag)
    if match := _RESET.match(stripped):
        return SetVariable(match.group(1).lower(), "DEFAULT")
    if match := _SHOW.match(stripped):
        return Show(" ".join(match.group(1).lower().split()))
    if match := _SET_TIME_ZONE.match(stripped):
        return SetVariable("timezone", _unquote(match.group(1)))
    if upper.startswith("SET ") and (match := _SET.match(stripped)):
        return SetVariable(match.group(1).lower(), _unquote(match.group(2)))
    if upper.startswith("EXPLAIN") and (match := _EXPLAIN.match(stripped)):
        return Explain(match.group(1))
    if match := _CREATE_SOURCE.match(stripped):
        return _create_source(match)
    if match := _CREATE_SINK.match(stripped):
        return _create_sink(match)
    if match := _DROP_SINK.match(stripped):
        return DropSink(tuple(_identifier(n) for n in _split_top_level(match.group(2))), bool(match.group(1)))
    if match := _DROP_SOURCE.match(stripped):
        names = tuple(_identifier(n) for n in _split_top_level(match.group(2)))
        return DropSource(names, bool(match.group(1)), (match.group(3) or "").upper() == "CASCADE")
    return parse_sql(stripped)


def parse_sql(sql: str) -> exp.Expression:
    sql, emit_on_window_close = _cut_emit_on_window_close(sql)
    sql, format_encode = cut_format_encode(sql)
    try:
        expressions = sqlglot.parse(sql, read=Tidegate)
    except ParseError as error:
        raise _syntax_error(sql, error) from error
    except TokenError as error:
        raise SqlSyntaxError(f"syntax error: {error}") from error
    parsed = [e for e in expressions if e is not None]
    if len(parsed) != 1:
        raise SqlSyntaxError("expected exactly one statement")
    # Unquoted identifiers fold to lower case, quoted ones keep theirs, as in PostgreSQL.
    statement = normalize_identifiers(parsed[0], dialect=Tidegate)
    if isinstance(statement, exp.Command):
        raise SqlSyntaxError(f'syntax error at or near "{statement.name}"', position=1)
    if emit_on_window_close:
        view = isinstance(statement, exp.Create) and (statement.args.get("kind") or "").upper() == "VIEW"
        if not (view or isinstance(statement, exp.Query)):
            raise SqlSyntaxError('syntax error at or near "EMIT"', position=len(sql) + 2)
        statement.meta[_EMIT_ON_WINDOW_CLOSE] = True
    if format_encode is not None:
        if not (isinstance(statement, exp.Create) and (statement.args.get("kind") or "").upper() == "TABLE"):
            raise SqlSyntaxError('syntax error at or near "FORMAT"')
        statement.meta[_FORMAT_ENCODE_META] = format_encode
    return statement  # type: ignore[return-value]


def format_encode_of(statement: exp.Expression) -> FormatEncode | None:
    """The ``FORMAT … ENCODE …`` clause parse_sql cut off a CREATE TABLE, if it had one."""
    return statement.meta.get(_FORMAT_ENCODE_META)


def cut_format_encode(sql: str) -> tuple[str, FormatEncode | None]:
    """``sql`` without a trailing top-level ``FORMAT x ENCODE y [(…)]``, and that clause."""
    if "format" not in sql.lower():
        return sql, None
    top_level = {i for i, _, depth in _unquoted(sql) if depth == 0}
    for match in reversed(list(re.finditer(r"\bFORMAT\b", sql, re.IGNORECASE))):
        if match.start() not in top_level:
            continue
        clause = _FORMAT_ENCODE.match(sql, match.start())
        if clause is None:
            continue
        options = _options(clause.group(3)[1:-1]) if clause.group(3) else ()
        return sql[: match.start()].rstrip(), FormatEncode(clause.group(1).upper(), clause.group(2).upper(), options)
    return sql, None


_CLOSE = re.compile(r"\bCLOSE\b", re.IGNORECASE)


def _cut_emit_on_window_close(sql: str) -> tuple[str, bool]:
    """``sql`` without a trailing ``EMIT ON WINDOW CLOSE`` (tokens, so strings and comments are safe)."""
    if not _CLOSE.search(sql):
        return sql, False  # most statements: no second tokenization
    try:
        tokens = Tidegate().tokenize(sql)
    except TokenError:
        return sql, False  # parse_sql reports it
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens = tokens[:-1]
    words = [t.text.upper() for t in tokens[-4:]]
    if words != ["EMIT", "ON", "WINDOW", "CLOSE"] or tokens[-4].token_type != TokenType.VAR:
        return sql, False
    return sql[: tokens[-4].start].rstrip(), True


def _syntax_error(sql: str, error: ParseError) -> SqlSyntaxError:
    details = error.errors[0] if error.errors else {}
    highlight = details.get("highlight") or ""
    line, col = details.get("line"), details.get("col")
    position = None
    if line is not None and col is not None:
        lines = sql.split("\n")
        offset = sum(len(lines[i]) + 1 for i in range(min(line - 1, len(lines))))
        # sqlglot points at the end of the offending token; PostgreSQL at its start.
        position = offset + col - len(highlight) + 1 if highlight else offset + col
    near = f' at or near "{highlight}"' if highlight else " at end of input"
    return SqlSyntaxError(f"syntax error{near}", position=position)


def _create_source(match: re.Match[str]) -> CreateSource:
    """``CREATE SOURCE name [(column type, …)] WITH (key = 'value', …) [FORMAT … ENCODE …]``.

    The format and encode words are kept as the options ``format`` and ``encode``."""
    name = _identifier(match.group(2))
    rest, format_encode = cut_format_encode(match.group(3).strip())
    columns: tuple[tuple[str, str], ...] | None = None
    watermarks: list[exp.WatermarkColumnConstraint] = []
    if rest.startswith("("):
        inside, rest = _parenthesized(rest)
        items = _split_top_level(inside)
        watermarks = [_watermark(item) for item in items if _WATERMARK.match(item)]
        columns = tuple(_column(item) for item in items if not _WATERMARK.match(item))
    with_match = re.match(r"^WITH\s*(\(.*)$", rest, re.IGNORECASE | re.DOTALL)
    if with_match is None:
        raise SqlSyntaxError("CREATE SOURCE needs WITH (connector = '…', …)")
    inside, rest = _parenthesized(with_match.group(1))
    if rest.strip():
        raise SqlSyntaxError(f'syntax error at or near "{rest.split()[0]}"')
    options = _options(inside)
    if format_encode is not None:
        options += (("format", format_encode.format), ("encode", format_encode.encode), *format_encode.options)
    return CreateSource(name, columns, options, bool(match.group(1)), tuple(watermarks))


def _options(inside: str) -> tuple[tuple[str, str], ...]:
    """``key = 'value', …`` (the inside of a WITH (…)): keys lower-cased, in order, none twice."""
    options: list[tuple[str, str]] = []
    for item in _split_top_level(inside):
        option = _OPTION.match(item)
        if option is None:
            raise SqlSyntaxError(f"syntax error in WITH option {item.strip()!r} (expected key = 'value')")
        key = option.group(1).lower()
        if any(k == key for k, _ in options):
            raise SqlError(f'option "{key}" specified more than once')
        value = option.group(2)
        options.append((key, value[1:-1].replace("''", "'") if value.startswith("'") else value))
    return tuple(options)


def _create_sink(match: re.Match[str]) -> CreateSink:
    name = _identifier(match.group(2))
    rest, format_encode = cut_format_encode(match.group(4).strip())
    # The options are the last top-level WITH (…) that runs to the end (a query's CTEs read ``WITH name AS``).
    top_level = {i for i, _, depth in _unquoted(rest) if depth == 0}
    body = options_text = None
    for with_match in reversed(list(re.finditer(r"\bWITH\s*\(", rest, re.IGNORECASE))):
        if with_match.start() not in top_level:
            continue
        inside, after = _parenthesized(rest[with_match.end() - 1 :])
        if not after.strip():
            body, options_text = rest[: with_match.start()].strip(), inside
            break
    if body is None or options_text is None:
        raise SqlSyntaxError("CREATE SINK needs WITH (connector = '…', …) after its FROM relation or AS query")
    if match.group(3).upper() == "FROM":
        if not re.fullmatch(_IDENTIFIER, body):
            raise SqlSyntaxError(f"CREATE SINK … FROM names one relation, got {body!r}; write AS SELECT … instead")
        return CreateSink(name, _identifier(body), None, _options(options_text), format_encode, bool(match.group(1)))
    return CreateSink(name, None, body, _options(options_text), format_encode, bool(match.group(1)))


_WATERMARK = re.compile(r"^\s*WATERMARK\s+FOR\b", re.IGNORECASE)


def _watermark(item: str) -> exp.WatermarkColumnConstraint:
    """A ``WATERMARK FOR col AS expr`` item of CREATE SOURCE's column list, parsed as CREATE TABLE's is."""
    statement = parse_sql(f"CREATE TABLE __watermark ({item.strip()})")
    found = statement.find(exp.WatermarkColumnConstraint)
    if found is None:
        raise SqlSyntaxError(f"syntax error in {item.strip()!r} (expected WATERMARK FOR column AS expression)")
    return found


def _unquoted(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, parentheses open after it) of every character outside quotes."""
    depth, quote = 0, ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            depth += (char == "(") - (char == ")")
            yield i, char, depth


def _parenthesized(text: str) -> tuple[str, str]:
    """``(inside) rest`` → (inside, rest), quotes respected."""
    assert text.startswith("(")
    for i, char, depth in _unquoted(text):
        if char == ")" and depth == 0:
            return text[1:i], text[i + 1 :].strip()
    raise SqlSyntaxError("syntax error at end of input (unbalanced parentheses)")


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses and quotes."""
    items: list[str] = []
    start = 0
    for i, char, depth in _unquoted(text):
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _column(item: str) -> tuple[str, str]:
    match = re.match(rf"^\s*({_IDENTIFIER})\s+(.+?)\s*$", item, re.DOTALL)
    if match is None:
        raise SqlSyntaxError(f"syntax error in column definition {item.strip()!r} (expected name type)")
    return _identifier(match.group(1)), match.group(2)


def _identifier(text: str) -> str:
    """Unquoted identifiers fold to lower case, quoted ones keep theirs, as in PostgreSQL."""
    text = text.strip()
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
