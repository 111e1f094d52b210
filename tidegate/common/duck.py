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
    message = re.sub(r" when casting from source column \w+$", "", message)
    if isinstance(error, duckdb.ConversionException):
        return _conversion_error(message)
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
            return errors.UndefinedRelation(f'relation "{name}" does not exist', position=find_word(sql, name))
        if _FUNCTION.search(message):
            return errors.UndefinedFunction(message)
        return errors.UndefinedRelation(message)
    if isinstance(error, duckdb.InvalidInputException | duckdb.ConstraintException):
        return errors.DataError(message)
    if isinstance(error, duckdb.NotImplementedException):
        return errors.FeatureNotSupported(message)
    return errors.InternalError(message)


_DUCK_TYPE_NAMES = {
    "INT8": "smallint",
    "INT16": "smallint",
    "INT32": "integer",
    "INT64": "bigint",
    "INT128": "numeric",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "BOOL": "boolean",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "INTERVAL": "interval",
    "BLOB": "bytea",
}
_CANNOT_CONVERT = re.compile(r"Could not convert string '(.*)' to ([A-Z0-9 ]+)")
_OUT_OF_RANGE = re.compile(r"out of range for the destination type ([A-Z0-9]+)")
_DATETIME = re.compile(r"(?:date|timestamp|time|interval) field value|invalid (?:date|timestamp)", re.I)


def _conversion_error(message: str) -> errors.TidegateError:
    """PostgreSQL's wording for DuckDB's cast failures."""
    if match := _CANNOT_CONVERT.search(message):
        value, duck_type = match.groups()
        type_name = _DUCK_TYPE_NAMES.get(duck_type.strip(), duck_type.strip().lower())
        return errors.InvalidTextRepresentation(f'invalid input syntax for type {type_name}: "{value}"')
    if match := _OUT_OF_RANGE.search(message):
        type_name = _DUCK_TYPE_NAMES.get(match.group(1), match.group(1).lower())
        return errors.NumericValueOutOfRange(f"{type_name} out of range")
    if "DECIMAL" in message and ("out of range" in message or "Could not cast value" in message):
        return errors.NumericValueOutOfRange("numeric field overflow", hint=message)
    if "field value out of range" in message:
        return errors.DatetimeFieldOverflow(message)
    if _DATETIME.search(message):
        return errors.InvalidDatetimeFormat(message)
    if "out of range" in message:
        return errors.NumericValueOutOfRange(message)
    return errors.InvalidTextRepresentation(message)


def find_word(sql: str, word: str) -> int | None:
    """1-based position of ``word`` as a whole identifier in ``sql``."""
    match = re.search(rf"(?<![\w.\"]){re.escape(word)}(?![\w\"])", sql, flags=re.IGNORECASE)
    if match is None:
        match = re.search(re.escape(word), sql, flags=re.IGNORECASE)
    return match.start() + 1 if match else None
