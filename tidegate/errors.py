"""Every error tidegate raises on purpose.

The tree::

    TidegateError                      base; never raised itself
    ├── SqlError                       the statement is wrong; carries a position in the SQL text
    │   ├── SqlSyntaxError             the text does not parse
    │   ├── UndefinedRelation          a table or view name that does not exist
    │   ├── UndefinedColumn            a column name that no input has
    │   ├── AmbiguousColumn            a column name that several inputs have
    │   ├── UndefinedFunction          a function or operator with no matching signature
    │   ├── DuplicateObject            CREATE of a name that is taken
    │   ├── DuplicateColumn            a column named twice in one table or view
    │   ├── InvalidTableDefinition     two primary keys, and the like
    │   ├── DatatypeMismatch           an expression of the wrong type (WHERE 1, a non-boolean HAVING)
    │   ├── GroupingError              a column neither grouped nor aggregated
    │   ├── DependentObjectsExist      DROP of a relation others read, without CASCADE
    │   ├── WrongObjectType            DROP TABLE of a view, INSERT into a view, ...
    │   ├── InvalidParameterValue      SET of a setting to a value it does not accept; a bad source option
    │   ├── UndefinedObject            SET / SHOW of a setting that does not exist
    │   ├── InvalidColumnReference     GROUP BY / ORDER BY position out of range, bad ON CONFLICT target
    │   └── FeatureNotSupported        valid SQL that tidegate does not run (yet)
    ├── DataError                      a value that does not fit (22xxx)
    │   ├── NumericValueOutOfRange
    │   ├── InvalidTextRepresentation
    │   ├── StringDataRightTruncation
    │   ├── DivisionByZero
    │   ├── InvalidDatetimeFormat
    │   └── DatetimeFieldOverflow
    ├── IntegrityError
    │   ├── UniqueViolation            INSERT of an existing primary key without ON CONFLICT
    │   └── NotNullViolation           NULL into a NOT NULL or primary-key column
    ├── JobFailed                      a view or table whose streaming job was stopped after failing
    ├── WriteTimeout                   a write held back by backpressure longer than the limit
    ├── DiskFull                       a write refused for want of disk space
    ├── ProtocolViolation              a client broke the wire protocol
    ├── ConnectionFailure              an external system (Kafka, a sink's PostgreSQL) cannot be reached
    └── InternalError                  a bug or an engine failure; the message names it

The pgwire layer (``tidegate.server.pgwire``) is the only place that maps these
classes to SQLSTATE codes.
"""

from __future__ import annotations


class TidegateError(Exception):
    """Base of every error tidegate raises on purpose."""

    def __init__(self, message: str, *, position: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # 1-based character offset into the statement text, as PostgreSQL reports it.
        self.position = position
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SqlError(TidegateError):
    """The statement is wrong."""


class SqlSyntaxError(SqlError):
    """The text does not parse."""


class UndefinedRelation(SqlError):
    """A table or view name that does not exist."""


class UndefinedColumn(SqlError):
    """A column name that no input relation has."""


class AmbiguousColumn(SqlError):
    """A column name that several input relations have."""


class UndefinedFunction(SqlError):
    """A function or operator with no matching signature."""


class DuplicateObject(SqlError):
    """CREATE of a name that already exists."""


class DuplicateColumn(SqlError):
    """A column name given twice in one table or view."""


class InvalidTableDefinition(SqlError):
    """A table definition that contradicts itself (two primary keys)."""


class DatatypeMismatch(SqlError):
    """An expression of the wrong type for its place."""


class GroupingError(SqlError):
    """A column that is neither grouped nor inside an aggregate."""


class DependentObjectsExist(SqlError):
    """DROP of a relation that other relations read, without CASCADE."""


class WrongObjectType(SqlError):
    """The named object exists but is of another kind."""


class InvalidParameterValue(SqlError):
    """SET of an unknown setting, or a value it does not accept; an unknown or bad source option."""


class UndefinedObject(SqlError):
    """SET or SHOW of a setting that does not exist."""


class UndefinedType(UndefinedObject):
    """A type name that does not exist."""


class InvalidColumnReference(SqlError):
    """A position or conflict target that names no column or constraint."""


class FeatureNotSupported(SqlError):
    """Valid SQL that tidegate does not run."""


class DataError(TidegateError):
    """A value that does not fit its column or its operation."""


class NumericValueOutOfRange(DataError):
    """A number too large for its type."""


class InvalidTextRepresentation(DataError):
    """A string that is not a valid literal of the target type."""


class StringDataRightTruncation(DataError):
    """A string longer than its VARCHAR(n) column."""


class DivisionByZero(DataError):
    """Division by zero."""


class InvalidDatetimeFormat(DataError):
    """A string that is not a valid date, time or timestamp."""


class DatetimeFieldOverflow(DataError):
    """A date or time field out of range (February 30th)."""


class IntegrityError(TidegateError):
    """A write that would break a table constraint."""


class UniqueViolation(IntegrityError):
    """INSERT of a primary key that exists, without ON CONFLICT."""


class NotNullViolation(IntegrityError):
    """NULL written into a NOT NULL or primary-key column."""


class ProtocolViolation(TidegateError):
    """A client broke the PostgreSQL wire protocol."""


class ConnectionFailure(TidegateError):
    """A source's or sink's external system cannot be reached (the broker, the target database)."""


class InternalError(TidegateError):
    """A bug or an engine failure; the message names what failed."""


class JobFailed(TidegateError):
    """A view whose streaming job failed repeatedly and was stopped: its rows are no longer current."""


class WriteTimeout(TidegateError):
    """A write that waited too long for checkpoints to make room in its table's log; not applied."""


class DiskFull(TidegateError):
    """A write refused because the disk is full; nothing acknowledged before it is lost."""
