"""INSERT, UPDATE, DELETE and COPY: statements become exact row changes on a table's log.

The rows a statement produces are computed by DuckDB (VALUES, INSERT … SELECT,
SET expressions, WHERE conditions over the table's latest rows), cast to the
columns' types, checked against the table's constraints, and handed to the
table's writer as one change set: the statement is applied whole or not at all.
An array column takes a list (``ARRAY[1,2]``) or PostgreSQL's array text
(``'{1,2,NULL}'``), whose elements are cast as the element type's texts are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from tidegate.batch.query import bind_parameters, select_arrow
from tidegate.common.array_text import parse_array
from tidegate.common.chunk import Chunk
from tidegate.common.duck import connect, translate_error
from tidegate.common.result import Column, QueryResult
from tidegate.common.sqltext import position_of, to_duckdb
from tidegate.common.types import SqlType
from tidegate.connectors.table_writer import ROW_ID_COLUMN, TableWriter, update_chunk
from tidegate.errors import (
    AmbiguousColumn,
    FeatureNotSupported,
    InvalidColumnReference,
    InvalidTextRepresentation,
    NotNullViolation,
    SqlError,
    StringDataRightTruncation,
    UndefinedColumn,
    UndefinedRelation,
    UniqueViolation,
    WrongObjectType,
)
from tidegate.meta.catalog import Relation, RelationKind
from tidegate.meta.database import Database
from tidegate.meta.streaming import storage_schema


def target_table(database: Database, table: exp.Table, verb: str) -> Relation:
    relation = database.catalog.get(table.name)
    if relation is None:
        raise UndefinedRelation(f'relation "{table.name}" does not exist', position=position_of(table))
    if relation.kind is not RelationKind.TABLE:
        raise WrongObjectType(f'cannot {verb} {relation.kind.value} "{relation.name}"')
    database.writer(relation)  # a table fed by a connector takes no writes: say so first
    return relation


def _refuse_if_append_only(relation: Relation, verb: str) -> None:
    """An append-only table (APPEND ONLY, or with a WATERMARK) only takes inserts."""
    if relation.append_only:
        why = "it has a WATERMARK" if relation.watermark is not None else "APPEND ONLY"
        raise FeatureNotSupported(f'{verb} of table "{relation.name}" is not supported: it is append-only ({why})')


def _cast_type(sql_type: SqlType) -> str:
    if sql_type.element is not None:
        return sql_type.duckdb_name
    if sql_type.kind == "numeric":
        return "DECIMAL" if sql_type.precision is None else f"DECIMAL({sql_type.precision},{sql_type.scale})"
    if sql_type.kind == "character varying":
        return "VARCHAR"
    if sql_type.kind == "jsonb":
        return "JSON"
    return sql_type.kind.upper()


_INTEGER_TEXT = r"^\s*[+-]?[0-9]+\s*$"


def cast_to_columns(raw: pa.Table, columns: list[tuple[str, SqlType]], sql: str) -> pa.Table:
    """Values cast to their target columns' types, as PostgreSQL's assignment casts would."""
    items = []
    for i, (name, sql_type) in enumerate(columns):
        values = raw.column(i)
        element = sql_type.element
        if element is not None and _is_text(values.type):
            values = _parsed_arrays(values)
            raw = raw.set_column(i, raw.schema.field(i).name, values)
        # Cast from text: the value, or each element of an array that arrives as texts.
        if element is None:
            from_text = _is_text(values.type)
        else:
            from_text = pa.types.is_list(values.type) and _is_text(values.type.value_type)
        target = element or sql_type
        if from_text:
            _check_integer_text(values if element is None else pc.list_flatten(values), target)
        column = f'__raw."_{i}"'
        if from_text and target.kind == "bytea":
            expression = _bytea_from_text(column if element is None else "x")
            if element is not None:
                expression = f"list_transform({column}, lambda x: {expression})"
        else:
            expression = f"CAST({column} AS {_cast_type(sql_type)})"
        items.append(f'{expression} AS "{name}"')
    if not items:
        return pa.table({})
    renamed = raw.rename_columns([f"_{i}" for i in range(raw.num_columns)])
    con = connect()
    try:
        con.register("__raw", renamed)
        return con.sql(f"SELECT {', '.join(items)} FROM __raw").to_arrow_table()
    except duckdb.Error as error:
        raise translate_error(error, sql) from error
    finally:
        con.close()


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _parsed_arrays(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Array literals (``'{1,2,NULL}'``) as lists of their element texts."""
    return pa.array([None if t is None else parse_array(t) for t in texts.to_pylist()], pa.list_(pa.string()))


def _check_integer_text(values: pa.Array | pa.ChunkedArray, sql_type: SqlType) -> None:
    """Text cast to an integer must spell one (DuckDB would round '1.5')."""
    if sql_type.kind not in ("smallint", "integer", "bigint"):
        return
    matches = pc.match_substring_regex(values, _INTEGER_TEXT)
    bad = pc.and_(pc.is_valid(values), pc.invert(matches))
    if pc.any(bad).as_py():
        first = pc.filter(values, bad)[0].as_py()
        raise InvalidTextRepresentation(f'invalid input syntax for type {sql_type}: "{first}"')


def _bytea_from_text(column: str) -> str:
    """PostgreSQL's hex format: '\\x' followed by two hex digits per byte."""
    return f"CASE WHEN starts_with({column}, '\\x') THEN unhex(substr({column}, 3)) ELSE CAST({column} AS BLOB) END"


def _check_constraints(relation: Relation, rows: pa.Table, names: list[str]) -> None:
    for name in names:
        column = relation.columns[relation.column_index(name)]  # type: ignore[index]
        values = rows.column(name)
        if not column.nullable and values.null_count:
            raise NotNullViolation(
                f'null value in column "{name}" of relation "{relation.name}" violates not-null constraint'
            )
        value_type = column.type.element or column.type  # varchar(n)[] limits each element
        if value_type is not column.type and len(values):
            values = pc.list_flatten(values)
        if value_type.kind == "character varying" and value_type.length is not None and len(values):
            longest = pc.max(pc.utf8_length(values)).as_py()
            if longest is not None and longest > value_type.length:
                raise StringDataRightTruncation(f"value too long for type {value_type}")


def insert(database: Database, statement: exp.Insert, sql: str, params: Sequence[Any] | None) -> QueryResult:
    statement = bind_parameters(statement.copy(), params)  # type: ignore[assignment]
    target = statement.this
    table = target.this if isinstance(target, exp.Schema) else target
    relation = target_table(database, table, "insert into")
    visible = [c.name for c in relation.columns if not c.hidden]
    if isinstance(target, exp.Schema) and target.expressions:
        names = [e.name for e in target.expressions]
        for name, node in zip(names, target.expressions):
            if name not in visible:
                raise UndefinedColumn(
                    f'column "{name}" of relation "{relation.name}" does not exist',
                    position=position_of(node),
                )
    else:
        names = visible
    source = statement.expression
    width = _source_width(source)
    if width is not None and width > len(names):
        raise SqlError("INSERT has more expressions than target columns", position=position_of(source))
    if width is not None and width < len(names) and isinstance(target, exp.Schema) and target.expressions:
        raise SqlError("INSERT has more target columns than expressions", position=position_of(source))
    query = source.this if isinstance(source, exp.Subquery) else source
    if isinstance(query, exp.Values):
        columns = [relation.columns[relation.column_index(n)] for n in names]  # type: ignore[index]
        query = _typed_array_texts(query, [c.type for c in columns])
        query = exp.select("*").from_(exp.Subquery(this=query.copy(), alias=exp.TableAlias(this="__values")))
    raw = select_arrow(database, query, sql, latest_tables=True)
    if raw.num_columns > len(names):
        raise SqlError("INSERT has more expressions than target columns", position=position_of(source))
    targets = [relation.columns[relation.column_index(n)] for n in names[: raw.num_columns]]  # type: ignore[index]
    rows = cast_to_columns(raw, [(c.name, c.type) for c in targets], sql)
    writer = database.writer(relation)
    full = _complete_rows(relation, rows, writer)
    _check_constraints(relation, full, [c.name for c in relation.columns if not c.hidden])
    writer.wait_for_room()
    with writer.lock:
        chunks = _resolve_conflicts(
            database, relation, writer, full, statement.args.get("conflict"), sql, table.alias or None
        )
        count = sum(1 for c in chunks for op in c.ops.to_pylist() if op in (0, 3))
        writer.apply(chunks)
    return QueryResult(f"INSERT 0 {count}")


def _typed_array_texts(values: exp.Values, types: list[SqlType]) -> exp.Values:
    """An array literal (``'{1,2}'``) in a VALUES row, cast to its column's type where it stands: DuckDB
    would not unify a string with the ARRAY[…] of another row, as PostgreSQL types an unknown literal."""
    values = values.copy()
    for row in values.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        for item, sql_type in zip(items, types):
            if sql_type.element is None or not (isinstance(item, exp.Literal) and item.is_string):
                continue
            _check_integer_text(pa.array(parse_array(item.this), pa.string()), sql_type.element)
            item.replace(exp.cast(item.copy(), exp.DataType.build(sql_type.duckdb_name, dialect="duckdb")))
    return values


def _source_width(source: exp.Expression) -> int | None:
    if isinstance(source, exp.Values):
        widths = {len(t.expressions) if isinstance(t, exp.Tuple) else 1 for t in source.expressions}
        if len(widths) != 1:
            raise SqlError("VALUES lists must all be the same length", position=position_of(source))
        return widths.pop()
    inner = source.this if isinstance(source, exp.Subquery) else source
    if isinstance(inner, exp.Select) and not any(isinstance(e, exp.Star) for e in inner.expressions):
        return len(inner.expressions)
    return None


def _complete_rows(relation: Relation, rows: pa.Table, writer: TableWriter) -> pa.Table:
    """Rows in storage layout: every column in order, missing ones NULL, row ids assigned."""
    schema = storage_schema(relation)
    arrays = []
    for field in schema:
        if field.name in rows.column_names:
            arrays.append(rows.column(field.name).cast(field.type))
        elif field.name == ROW_ID_COLUMN and writer.has_row_id:
            arrays.append(writer.allocate_row_ids(rows.num_rows))
        else:
            arrays.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _key_sql(relation: Relation, left: str, right: str) -> str:
    return " AND ".join(
        f'{left}."{relation.columns[i].name}" IS NOT DISTINCT FROM {right}."{relation.columns[i].name}"'
        for i in relation.pk
    )


def _resolve_conflicts(
    database: Database,
    relation: Relation,
    writer: TableWriter,
    rows: pa.Table,
    conflict: exp.OnConflict | None,
    sql: str,
    alias: str | None = None,
) -> list[Chunk]:
    keys = [relation.columns[i].name for i in relation.pk]
    if conflict is not None:
        _check_conflict_target(relation, conflict)
    if not relation.user_pk:
        # Without a primary key nothing can conflict; PostgreSQL inserts every row.
        return [Chunk.inserts(rows)]
    key_list = ", ".join(f'"{k}"' for k in keys)
    con = connect()
    try:
        con.register("new_rows", rows.append_column("__n", pa.array(range(rows.num_rows), pa.int64())))
        # Only the existing rows these keys could clash with, not the whole table.
        con.register("latest", writer.rows_with_keys(rows.select(keys)))
        repeated = con.sql(
            f"SELECT {key_list} FROM new_rows GROUP BY {key_list} HAVING count(*) > 1 LIMIT 1"
        ).fetchall()
        clash = con.sql(
            f"SELECT __n FROM new_rows WHERE EXISTS (SELECT 1 FROM latest WHERE "
            f"{_key_sql(relation, 'latest', 'new_rows')}) ORDER BY __n"
        ).fetchall()
        action = conflict.args["action"].this.upper() if conflict is not None else None
        if action is None:
            if repeated or clash:
                key_values = repeated[0] if repeated else _row_key(rows, keys, clash[0][0])
                raise UniqueViolation(
                    f'duplicate key value violates unique constraint "{relation.name}_pkey"',
                    hint=f"Key ({', '.join(keys)})=({', '.join(str(v) for v in key_values)}) already exists.",
                )
            return [Chunk.inserts(rows)]
        if action == "DO NOTHING":
            first = con.sql(
                f"SELECT * EXCLUDE (__n) FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM latest WHERE "
                f"{_key_sql(relation, 'latest', 'n')}) QUALIFY row_number() OVER (PARTITION BY {key_list} "
                f"ORDER BY __n) = 1 ORDER BY __n"
            ).to_arrow_table()
            return [Chunk.inserts(first.cast(rows.schema))]
        if action == "DO UPDATE":
            if repeated:
                raise SqlError(
                    "ON CONFLICT DO UPDATE command cannot affect row a second time",
                    hint="Ensure that no rows proposed for insertion within the same command have duplicate "
                    "constrained values.",
                )
            assert conflict is not None
            return _upsert(con, relation, rows, conflict, alias or relation.name)
        raise FeatureNotSupported(f"ON CONFLICT {action} is not supported")
    except duckdb.Error as error:
        raise translate_error(error, sql) from error
    finally:
        con.close()


def _check_conflict_target(relation: Relation, conflict: exp.OnConflict) -> None:
    target = [k.this.name if isinstance(k, exp.Ordered) else k.name for k in conflict.args.get("conflict_keys") or []]
    action = conflict.args["action"].this.upper()
    keys = [relation.columns[i].name for i in relation.pk] if relation.user_pk else []
    if (target or action == "DO UPDATE") and sorted(target) != sorted(keys):
        raise InvalidColumnReference(
            "there is no unique or exclusion constraint matching the ON CONFLICT specification"
        )


def _row_key(rows: pa.Table, keys: list[str], index: int) -> tuple[Any, ...]:
    return tuple(rows.column(k)[index].as_py() for k in keys)


def _over_conflict(expression: exp.Expression, relation: Relation, alias: str) -> str:
    """DuckDB SQL for a DO UPDATE expression: the table's row is ``latest``, the proposed one ``excluded``."""
    value = expression.copy()
    for ref in value.find_all(exp.Column):
        qualifier = ref.table
        if not qualifier:
            if ref.name in {c.name for c in relation.columns}:
                raise AmbiguousColumn(f'column reference "{ref.name}" is ambiguous', position=position_of(ref))
            raise UndefinedColumn(f'column "{ref.name}" does not exist', position=position_of(ref))
        if qualifier in (alias, relation.name):
            ref.set("table", exp.to_identifier("latest"))
        elif qualifier != "excluded":
            raise UndefinedRelation(f'missing FROM-clause entry for table "{qualifier}"', position=position_of(ref))
    return to_duckdb(value)


def _upsert(
    con: duckdb.DuckDBPyConnection, relation: Relation, rows: pa.Table, conflict: exp.OnConflict, alias: str
) -> list[Chunk]:
    assignments: dict[str, exp.Expression] = {}
    for eq in conflict.expressions:
        name = eq.this.name
        if relation.column_index(name) is None:
            raise UndefinedColumn(
                f'column "{name}" of relation "{relation.name}" does not exist', position=position_of(eq.this)
            )
        assignments[name] = eq.expression
    select_items = []
    for column in relation.columns:
        if column.name in assignments:
            value = _over_conflict(assignments[column.name], relation, alias)
            select_items.append(f'CAST({value} AS {_cast_type(column.type)}) AS "{column.name}"')
        else:
            select_items.append(f'latest."{column.name}"')
    joined = f"FROM latest JOIN new_rows AS excluded ON {_key_sql(relation, 'latest', 'excluded')}"
    where = conflict.args.get("where")
    if where is not None:
        joined += f" WHERE {_over_conflict(where.this, relation, alias)}"
    old = con.sql(f"SELECT latest.* {joined} ORDER BY excluded.__n").to_arrow_table()
    new = con.sql(f"SELECT {', '.join(select_items)} {joined} ORDER BY excluded.__n").to_arrow_table()
    fresh = con.sql(
        f"SELECT * EXCLUDE (__n) FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM latest WHERE "
        f"{_key_sql(relation, 'latest', 'n')}) ORDER BY __n"
    ).to_arrow_table()
    schema = rows.schema
    chunks = []
    if old.num_rows:
        _check_constraints(relation, new.cast(schema), list(assignments))
        if any(relation.columns[i].name in assignments for i in relation.pk):
            raise FeatureNotSupported("ON CONFLICT DO UPDATE cannot change the primary key")
        chunks.append(update_chunk(old.cast(schema), new.cast(schema)))
    if fresh.num_rows:
        chunks.append(Chunk.inserts(fresh.cast(schema)))
    return chunks


def _matching_rows(
    database: Database,
    relation: Relation,
    writer: TableWriter,
    statement: exp.Expression,
    items: list[str],
    sql: str,
) -> pa.Table:
    """Rows of the table's latest state that the statement's WHERE selects, with ``items`` computed."""
    table = statement.this
    alias = table.alias or relation.name
    query = sqlglot.parse_one(f'SELECT {", ".join(items)} FROM "{relation.name}" AS "{alias}"', read="postgres")
    where = statement.args.get("where")
    if where is not None:
        query.set("where", where.copy())
    return select_arrow(database, query, sql, extra_tables={relation.name: writer.latest()})  # type: ignore[arg-type]


def update(database: Database, statement: exp.Update, sql: str, params: Sequence[Any] | None) -> QueryResult:
    statement = bind_parameters(statement.copy(), params)  # type: ignore[assignment]
    relation = target_table(database, statement.this, "update")
    _refuse_if_append_only(relation, "UPDATE")
    if statement.args.get("from") or statement.args.get("from_"):
        raise FeatureNotSupported("UPDATE … FROM is not supported yet")
    alias = statement.this.alias or relation.name
    assignments: dict[str, exp.Expression] = {}
    for eq in statement.expressions:
        name = eq.this.name
        index = relation.column_index(name)
        if index is None or relation.columns[index].hidden:
            raise UndefinedColumn(
                f'column "{name}" of relation "{relation.name}" does not exist', position=position_of(eq.this)
            )
        assignments[name] = eq.expression
    items = [f'"{alias}".*']
    for name, value in assignments.items():
        column = relation.columns[relation.column_index(name)]  # type: ignore[index]
        items.append(f'CAST({value.sql("postgres")} AS {_cast_type(column.type)}) AS "__new_{name}"')
    writer = database.writer(relation)
    writer.wait_for_room()
    with writer.lock:
        matched = _matching_rows(database, relation, writer, statement, items, sql)
        schema = storage_schema(relation)
        old = matched.select(schema.names).cast(schema)
        arrays = [
            matched.column(f"__new_{f.name}").cast(f.type) if f.name in assignments else old.column(f.name)
            for f in schema
        ]
        new = pa.Table.from_arrays(arrays, schema=schema)
        _check_constraints(relation, new, list(assignments))
        key_changed = any(relation.columns[i].name in assignments for i in relation.pk)
        if key_changed and old.num_rows:
            chunks = _key_changing_update(database, relation, writer, old, new, sql)
        else:
            chunks = [update_chunk(old, new)] if old.num_rows else []
        writer.apply(chunks)
    return QueryResult(f"UPDATE {old.num_rows}")


def _key_changing_update(
    database: Database, relation: Relation, writer: TableWriter, old: pa.Table, new: pa.Table, sql: str
) -> list[Chunk]:
    keys = [relation.columns[i].name for i in relation.pk]
    key_list = ", ".join(f'"{k}"' for k in keys)
    con = connect()
    try:
        con.register("old_rows", old)
        con.register("new_rows", new)
        con.register("latest", writer.latest())
        clash = con.sql(
            f"SELECT {key_list} FROM (SELECT * FROM latest EXCEPT ALL SELECT * FROM old_rows "
            f"UNION ALL SELECT * FROM new_rows) GROUP BY {key_list} HAVING count(*) > 1 LIMIT 1"
        ).fetchall()
    finally:
        con.close()
    if clash:
        raise UniqueViolation(
            f'duplicate key value violates unique constraint "{relation.name}_pkey"',
            hint=f"Key ({', '.join(keys)})=({', '.join(str(v) for v in clash[0])}) already exists.",
        )
    return [Chunk.deletes(old), Chunk.inserts(new)]


def delete(database: Database, statement: exp.Delete, sql: str, params: Sequence[Any] | None) -> QueryResult:
    statement = bind_parameters(statement.copy(), params)  # type: ignore[assignment]
    relation = target_table(database, statement.this, "delete from")
    _refuse_if_append_only(relation, "DELETE")
    if statement.args.get("using"):
        raise FeatureNotSupported("DELETE … USING is not supported yet")
    alias = statement.this.alias or relation.name
    writer = database.writer(relation)
    writer.wait_for_room()
    with writer.lock:
        matched = _matching_rows(database, relation, writer, statement, [f'"{alias}".*'], sql)
        schema = storage_schema(relation)
        rows = matched.select(schema.names).cast(schema)
        writer.apply([Chunk.deletes(rows)] if rows.num_rows else [])
    return QueryResult(f"DELETE {rows.num_rows}")


class TableCopyIn:
    """``COPY table FROM STDIN``: rows arrive in batches and are applied as one statement."""

    def __init__(self, database: Database, relation: Relation, names: list[str], options: dict[str, Any]) -> None:
        self.database = database
        self.relation = relation
        self.columns = [Column(n, relation.columns[relation.column_index(n)].type) for n in names]  # type: ignore[index]
        self.format = options.get("format", "text")
        self.delimiter = options.get("delimiter", "," if self.format == "csv" else "\t")
        self.null = options.get("null", "" if self.format == "csv" else "\\N")
        self.header = bool(options.get("header", False))
        self.quote = options.get("quote", '"')
        self.escape = options.get("escape", self.quote)
        self._writer = database.writer(relation)
        self._chunks: list[Chunk] = []
        self._rows = 0

    def write(self, rows: pa.Table) -> None:
        full = _complete_rows(self.relation, rows, self._writer)
        _check_constraints(self.relation, full, [c.name for c in self.relation.columns if not c.hidden])
        if self.relation.user_pk:
            with self._writer.lock:
                self._chunks += _resolve_conflicts(self.database, self.relation, self._writer, full, None, "")
        else:
            self._chunks += [Chunk.inserts(b) for b in full.to_batches(max_chunksize=65536)]
        self._rows += rows.num_rows

    def finish(self) -> QueryResult:
        self._writer.wait_for_room()
        if self.relation.user_pk and len(self._chunks) > 1:
            combined = pa.concat_tables([pa.Table.from_batches([c.data]) for c in self._chunks])
            with self._writer.lock:
                chunks = _resolve_conflicts(self.database, self.relation, self._writer, combined, None, "")
                self._writer.apply(chunks)
        else:
            self._writer.apply(self._chunks)
        self._chunks = []
        return QueryResult(f"COPY {self._rows}")

    def abort(self) -> None:
        self._chunks = []


def copy_from_stdin(database: Database, statement: exp.Copy) -> QueryResult:
    if not statement.args.get("kind"):
        raise FeatureNotSupported("COPY … TO is not supported; use COPY … FROM STDIN")
    files = statement.args.get("files") or []
    if not files or files[0].sql().upper().strip("'\"") != "STDIN":
        raise FeatureNotSupported("COPY reads only FROM STDIN")
    target = statement.this
    table = target.this if isinstance(target, exp.Schema) else target
    relation = target_table(database, table, "copy to")
    visible = [c.name for c in relation.columns if not c.hidden]
    names = [e.name for e in target.expressions] if isinstance(target, exp.Schema) else visible
    for name in names:
        if name not in visible:
            raise UndefinedColumn(f'column "{name}" of relation "{relation.name}" does not exist')
    options: dict[str, Any] = {}
    for param in statement.args.get("params") or []:
        key = param.this.name.lower() if isinstance(param.this, exp.Expression) else str(param.this).lower()
        value = param.args.get("expression")
        text = value.name if isinstance(value, exp.Expression) else None
        if key == "header":
            options["header"] = text is None or text.lower() in ("true", "on", "1", "")
        elif key == "format":
            options["format"] = (text or "text").lower()
        elif key in ("delimiter", "null", "quote", "escape"):
            options[key] = text or ""
        elif key == "csv":
            options["format"] = "csv"
        else:
            raise FeatureNotSupported(f'COPY option "{key}" is not supported')
    if options.get("format", "text") not in ("text", "csv"):
        raise FeatureNotSupported(f"COPY format {options['format']} is not supported")
    return QueryResult("COPY", copy_in=TableCopyIn(database, relation, names, options))
