"""The tidegate SQL dialect: PostgreSQL as sqlglot reads it, plus tidegate's own statements.

Statements sqlglot does not know (FLUSH, SHOW …, EXPLAIN, SET forms it leaves
as commands) are recognised here by their leading keywords and returned as
small typed statements; everything else is a sqlglot expression tree. Parse
errors become ``SqlSyntaxError`` with PostgreSQL's 1-based position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import TokenType

from tidegate.errors import SqlSyntaxError


class Tidegate(Postgres):
    """PostgreSQL, as tidegate speaks it."""


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


Statement = exp.Expression | Flush | Show | SetVariable | Explain | TransactionControl

_SET = re.compile(
    r"^\s*SET\s+(?:(?:SESSION|LOCAL)\s+)?([A-Za-z_][\w.]*)\s*(?:=|\s+TO\s+)\s*(.+?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SET_TIME_ZONE = re.compile(r"^\s*SET\s+(?:(?:SESSION|LOCAL)\s+)?TIME\s+ZONE\s+(.+?)\s*;?\s*$", re.I | re.S)
_RESET = re.compile(r"^\s*RESET\s+([A-Za-z_][\w.]*)\s*;?\s*$", re.IGNORECASE)
_SHOW = re.compile(r"^\s*SHOW\s+(.+?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:\((?:[^)]*)\)\s*|VERBOSE\s+)?(.+?)\s*;?\s*$", re.I | re.S)
_TRANSACTION = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b.*$", re.IGNORECASE | re.DOTALL)


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
    return parse_sql(stripped)


def parse_sql(sql: str) -> exp.Expression:
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
    return statement  # type: ignore[return-value]


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


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
