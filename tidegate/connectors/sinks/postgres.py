"""The PostgreSQL sink target: rows into a table, progress into ``tidegate_sink_progress``.

Place in the data flow (DESIGN §7): the sink's deliverer calls ``deliver(epoch, changes)`` after
checkpoint ``epoch`` commits. One PostgreSQL transaction then

1. upserts this sink's row of the progress table to ``epoch`` — only if the stored epoch is
   smaller: when it is not, the epoch was delivered already (a replay after a crash between the
   commit and our own record of it) and nothing is applied. Doing this first also locks the row, so
   two deliverers of the same sink (a zombie and its successor) apply an epoch once;
2. applies the changes: an append-only sink COPYs the rows into the table; an upsert sink COPYs
   the last change per key into a temporary table (``ON COMMIT DROP``), then deletes the keys whose
   last change is a delete and ``INSERT … ON CONFLICT (key) DO UPDATE`` the others;
3. commits. A failure anywhere rolls back both rows and progress.

Values travel as COPY text (``row_encode.table_to_copy_text``), which PostgreSQL parses with each
column's own input function: decimals keep their digits, timestamptz values carry ``+00``.

Options: ``url`` (``postgresql://user:password@host:port/database``) or ``host``, ``port`` (5432),
``user``, ``password``, ``database``; ``table`` (required) and ``schema`` (``public``).
"""

from __future__ import annotations

import psycopg
import psycopg.errors
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tidegate.common.types import BOOLEAN, SqlType
from tidegate.connectors.row_encode import table_to_copy_text
from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.connectors.sinks.changes import data_columns, has_deletes, is_delete, last_change_per_key
from tidegate.connectors.sinks.options import (
    check_known_options,
    check_no_format,
    check_sink_type,
    integer_option,
    required_option,
)
from tidegate.errors import (
    ConnectionFailure,
    DataError,
    InternalError,
    InvalidColumnReference,
    InvalidParameterValue,
    NotNullViolation,
    TidegateError,
    UndefinedColumn,
    UndefinedRelation,
    UniqueViolation,
    WrongObjectType,
)

CONNECTOR = "postgres"
PROGRESS_TABLE = "tidegate_sink_progress"
CONNECT_TIMEOUT_S = 10
PORT_DEFAULT = 5432
_OPTIONS = ("url", "host", "port", "user", "password", "database", "table", "schema")
_DELETE_FLAG = "__tidegate_delete"
_STAGE_TABLE = "tidegate_sink_stage"


def check_postgres_options(spec: SinkSpec) -> None:
    check_known_options(spec, CONNECTOR, _OPTIONS)
    check_sink_type(spec)
    check_no_format(spec, CONNECTOR)
    required_option(spec, CONNECTOR, "table")
    postgres_conninfo(spec)


def postgres_conninfo(spec: SinkSpec) -> str:
    """The libpq connection string the options describe."""
    options = spec.options
    url = options.get("url")
    if url is not None:
        separate = [name for name in ("host", "port", "user", "password", "database") if name in options]
        if separate:
            raise InvalidParameterValue(
                f"a postgres sink takes either the option url or {', '.join(separate)}, not both"
            )
        if not url.strip().startswith(("postgresql://", "postgres://")):
            raise InvalidParameterValue(
                "option url must be a PostgreSQL URL: postgresql://user:password@host:port/database"
            )
        try:
            conninfo_to_dict(url.strip())
        except psycopg.ProgrammingError as e:
            raise InvalidParameterValue(f"option url is not a valid PostgreSQL URL: {e}") from e
        return url.strip()
    if "host" not in options:
        raise InvalidParameterValue(
            "a postgres sink needs the option url (postgresql://user:password@host:port/database) "
            "or the options host, user and database"
        )
    port = integer_option(spec, "port", PORT_DEFAULT, 1, 65535)
    return make_conninfo(
        host=required_option(spec, CONNECTOR, "host"),
        port=str(port),
        user=required_option(spec, CONNECTOR, "user"),
        password=options.get("password"),
        dbname=required_option(spec, CONNECTOR, "database"),
    )


class PostgresSinkTarget(SinkTarget):
    def __init__(self, spec: SinkSpec) -> None:
        check_postgres_options(spec)
        super().__init__(spec)
        self._conninfo = postgres_conninfo(spec)
        parts = conninfo_to_dict(self._conninfo)
        # Where, for messages: never the password.
        self._where = f"{parts.get('host', 'localhost')}:{parts.get('port', PORT_DEFAULT)}/{parts.get('dbname', '')}"
        self._schema = spec.options.get("schema", "public").strip()
        self._table_name = spec.options["table"].strip()
        self._table = sql.Identifier(self._schema, self._table_name)
        self._progress = sql.Identifier(self._schema, PROGRESS_TABLE)
        self._columns = sql.SQL(", ").join(sql.Identifier(name) for name in spec.column_names)
        self._key_names = [spec.column_names[i] for i in spec.key]
        self._connection: psycopg.Connection | None = None

    # ---- SinkTarget --------------------------------------------------------------------------

    def open(self) -> None:
        connection = self._connect()
        try:
            self._check_table(connection)
            self._create_progress_table(connection)
        except psycopg.Error as e:
            raise self._failure(e, "checking the target table") from e

    def last_delivered_epoch(self) -> int:
        connection = self._connect()
        query = sql.SQL("SELECT epoch FROM {} WHERE sink_name = %s").format(self._progress)
        try:
            row = connection.execute(query, (self.spec.name,)).fetchone()
        except psycopg.Error as e:
            raise self._failure(e, "reading the delivered epoch") from e
        return 0 if row is None else int(row[0])

    def deliver(self, epoch: int, changes: pa.Table) -> None:
        connection = self._connect()
        record = sql.SQL(
            "INSERT INTO {} AS p (sink_name, epoch) VALUES (%s, %s) "
            "ON CONFLICT (sink_name) DO UPDATE SET epoch = EXCLUDED.epoch, delivered_at = now() "
            "WHERE p.epoch < EXCLUDED.epoch RETURNING p.epoch"
        ).format(self._progress)
        try:
            with connection.transaction():
                # First, so that it locks the row: a concurrent delivery of this epoch waits here,
                # then finds it recorded and applies nothing.
                if connection.execute(record, (self.spec.name, epoch)).fetchone() is None:
                    return  # delivered already: a replay
                self._apply(connection, changes)
        except psycopg.Error as e:
            raise self._failure(e, f"delivering epoch {epoch}") from e

    def write(self, changes: pa.Table) -> None:
        connection = self._connect()
        try:
            with connection.transaction():
                self._apply(connection, changes)
        except psycopg.Error as e:
            raise self._failure(e, "writing changes") from e

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---- applying changes --------------------------------------------------------------------

    def _apply(self, connection: psycopg.Connection, changes: pa.Table) -> None:
        if changes.num_rows == 0:
            return
        if self.spec.sink_type == "append-only":
            assert not has_deletes(changes), "an append-only sink received a delete"
            self._copy(connection, self._table, self._columns, data_columns(changes), self.spec.column_types)
            return
        last = last_change_per_key(changes, self._key_names)
        staged = data_columns(last).add_column(0, _DELETE_FLAG, is_delete(last))
        stage = sql.Identifier(_STAGE_TABLE)
        flag = sql.Identifier(_DELETE_FLAG)
        connection.execute(
            sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT false AS {}, {} FROM {} WITH NO DATA").format(
                stage, flag, self._columns, self._table
            )
        )
        columns = sql.SQL(", ").join([flag, self._columns])
        self._copy(connection, stage, columns, staged, [BOOLEAN, *self.spec.column_types])
        matches = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = s.{0}").format(sql.Identifier(name)) for name in self._key_names
        )
        connection.execute(
            sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE s.{} AND {}").format(self._table, stage, flag, matches)
        )
        others = [name for name in self.spec.column_names if name not in self._key_names]
        if others:
            assignments = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in others)
            on_conflict: sql.Composable = sql.SQL("DO UPDATE SET {}").format(assignments)
        else:
            on_conflict = sql.SQL("DO NOTHING")
        keys = sql.SQL(", ").join(sql.Identifier(name) for name in self._key_names)
        connection.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE NOT {} ON CONFLICT ({}) {}").format(
                self._table, self._columns, self._columns, stage, flag, keys, on_conflict
            )
        )

    @staticmethod
    def _copy(
        connection: psycopg.Connection,
        table: sql.Composable,
        columns: sql.Composable,
        rows: pa.Table,
        types: list[SqlType],
    ) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(table_to_copy_text(rows, types))

    # ---- connection and checks ---------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        connection = self._connection
        if connection is not None and not connection.closed and not connection.broken:
            return connection
        self.close()
        try:
            connection = psycopg.connect(self._conninfo, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
            # The interval text we send is in the 'postgres' style; the session's own must read it so.
            connection.execute("SET IntervalStyle = 'postgres'")
        except psycopg.Error as e:
            raise ConnectionFailure(f"cannot connect to the PostgreSQL sink target {self._where}: {e}") from e
        self._connection = connection
        return connection

    def _check_table(self, connection: psycopg.Connection) -> None:
        found = connection.execute(
            "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self._schema, self._table_name),
        ).fetchone()
        qualified = f"{self._schema}.{self._table_name}"
        if found is None:
            raise UndefinedRelation(
                f'table "{qualified}" does not exist in the PostgreSQL database {self._where}',
                hint=f"Create it there first (CREATE TABLE {qualified} (…)), or fix the options schema and table.",
            )
        oid, kind = found
        if kind not in ("r", "p"):
            raise WrongObjectType(f'"{qualified}" in the PostgreSQL database {self._where} is not a table')
        rows = connection.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (oid,)
        ).fetchall()
        present = {row[0] for row in rows}
        missing = [name for name in self.spec.column_names if name not in present]
        if missing:
            raise UndefinedColumn(
                f'table "{qualified}" in the PostgreSQL database {self._where} has no column '
                + ", ".join(f'"{name}"' for name in missing),
                hint="The target table needs a column of the same name for every column of the sink; "
                f"add them (ALTER TABLE {qualified} ADD COLUMN …) or rename the sink's columns.",
            )
        if self.spec.sink_type == "upsert":
            self._check_key(connection, oid, qualified)

    def _check_key(self, connection: psycopg.Connection, oid: int, qualified: str) -> None:
        # ON CONFLICT (key) needs a unique index on exactly the key columns, neither partial, nor
        # on expressions, nor deferrable.
        rows = connection.execute(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) AS k(attnum) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) "
            "FROM pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indimmediate "
            "AND i.indpred IS NULL AND i.indexprs IS NULL",
            (oid,),
        ).fetchall()
        if any(set(row[0]) == set(self._key_names) for row in rows):
            return
        keys = ", ".join(self._key_names)
        raise InvalidColumnReference(
            f'table "{qualified}" in the PostgreSQL database {self._where} has no primary key or unique '
            f"constraint on ({keys}), the key of the upsert sink",
            hint=f"Add one: ALTER TABLE {qualified} ADD PRIMARY KEY ({keys}).",
        )

    def _create_progress_table(self, connection: psycopg.Connection) -> None:
        exists = connection.execute("SELECT to_regclass(%s)", (f'"{self._schema}"."{PROGRESS_TABLE}"',)).fetchone()
        if exists is not None and exists[0] is not None:
            return
        create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (sink_name text PRIMARY KEY, epoch bigint NOT NULL, "
            "delivered_at timestamptz NOT NULL DEFAULT now())"
        ).format(self._progress)
        try:
            connection.execute(create)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateObject):
            # Another sink created it at the same moment: IF NOT EXISTS does not cover that race.
            pass
        except psycopg.errors.InsufficientPrivilege as e:
            raise InvalidParameterValue(
                f"the PostgreSQL user cannot create the progress table {self._schema}.{PROGRESS_TABLE} "
                f"in {self._where}: {e.diag.message_primary}",
                hint=f"Create it once as a privileged user: {create.as_string(connection)}",
            ) from e

    def _failure(self, error: psycopg.Error, doing: str) -> TidegateError:
        """A tidegate error for a PostgreSQL error while ``doing``; a broken connection is dropped so
        that the next call opens a new one."""
        if self._connection is not None and (self._connection.broken or self._connection.closed):
            self.close()
        message = f"PostgreSQL sink target {self._where}, {doing}: {error.diag.message_primary or error}"
        if isinstance(error, psycopg.errors.NotNullViolation):
            return NotNullViolation(message)
        if isinstance(error, psycopg.errors.UniqueViolation):
            return UniqueViolation(message)
        if isinstance(error, psycopg.errors.DataError):
            return DataError(message)
        if isinstance(error, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
            return UndefinedRelation(message, hint="Was the target table dropped or altered?")
        return InternalError(message)
