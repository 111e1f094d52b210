"""DuckDB connections configured like PostgreSQL, and DuckDB errors as tidegate errors.

Both the stream operators (expression evaluation) and the batch engine (SELECT)
run on DuckDB; both get integer division as PostgreSQL does it. The stream side
turns division by zero into NULL instead of failing a job, as streaming
databases do; the batch side reports it.
"""

from __future__ import annotations

import re

import duckdb

from tidegate import errors


def connect(*, streaming: bool = False) -> duckdb.DuckDBPyConnection:
    config: dict[str, str | bool | int | float | list[str]] = {"integer_division": True}
    if streaming:
        config["error_on_division_by_zero"] = False
    config["threads"] = 1
    return duckdb.connect(config=config)


_COLUMN_NOT_FOUND = re.compile(r'Referenced column "([^"]+)" not found')
_TABLE_NOT_FOUND = re.compile(r"Table with name ([^ ]+) does not exist")
_FUNCTION = re.compile(r'(Scalar |Aggregate |Table )?Function with name "?([\w]+)"? does not exist')


def translate_error(error: duckdb.Error, sql: str = "") -> errors.TidegateError:
    """The tidegate error a DuckDB error stands for, with a PostgreSQL-like message."""
    text = str(error).split("\n")[0]
    message = re.sub(r"^[A-Za-z ]+ Error: ", "", text)
    if isinstance(error, duckdb.ConversionException):
        if "out of range" in message:
            return errors.NumericValueOutOfRange(message)
        return errors.InvalidTextRepresentation(message)
    if isinstance(error, duckdb.OutOfRangeException):
        return errors.NumericValueOutOfRange(message)
    if "Division by zero" in message:
        return errors.DivisionByZero("division by zero")
    if isinstance(error, duckdb.ParserException):
        return errors.SqlSyntaxError(message)
    if isinstance(error, duckdb.BinderException):
        match = _COLUMN_NOT_FOUND.search(message)
        if match:
            name = match.group(1)
            return errors.UndefinedColumn(f'column "{name}" does not exist', position=find_word(sql, name))
        if "No function matches" in message or "Could not choose a best candidate" in message:
            return errors.UndefinedFunction(message)
        if "must appear in the GROUP BY" in message:
            return errors.GroupingError(message)
        if "Ambiguous reference" in message:
            return errors.AmbiguousColumn(message)
        return errors.DatatypeMismatch(message)
    if isinstance(error, duckdb.CatalogException):
        match = _TABLE_NOT_FOUND.search(message)
        if match:
            name = match.group(1)
            return errors.UndefinedRelation(
                f'relation "{name}" does not exist', position=find_word(sql, name)
            )
        if _FUNCTION.search(message):
            return errors.UndefinedFunction(message)
        return errors.UndefinedRelation(message)
    if isinstance(error, duckdb.InvalidInputException | duckdb.ConstraintException):
        return errors.DataError(message)
    if isinstance(error, duckdb.NotImplementedException):
        return errors.FeatureNotSupported(message)
    return errors.InternalError(message)


def find_word(sql: str, word: str) -> int | None:
    """1-based position of ``word`` as a whole identifier in ``sql``."""
    match = re.search(rf"(?<![\w.\"]){re.escape(word)}(?![\w\"])", sql, flags=re.IGNORECASE)
    if match is None:
        match = re.search(re.escape(word), sql, flags=re.IGNORECASE)
    return match.start() + 1 if match else None
