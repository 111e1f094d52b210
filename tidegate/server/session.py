"""A client session: parses each statement and runs it against the database.

Used by the pgwire server (one session per connection) and by the embedded API.
Every statement autocommits. Reads see committed epochs only; to read its own
writes, a session that wrote since its last read flushes before reading
(setting ``implicit_flush``, on by default), so ``INSERT`` then ``SELECT``
behaves as a PostgreSQL user expects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from tidegate.batch.query import run_select, select_arrow
from tidegate.common.result import Column, QueryResult
from tidegate.common.types import TEXT, from_arrow
from tidegate.connectors.sinks import make_sink_target
from tidegate.connectors.source_connectors import source_connector
from tidegate.errors import DuplicateObject, FeatureNotSupported, InvalidParameterValue, SqlError, UndefinedObject
from tidegate.meta.catalog import Catalog, RelationKind
from tidegate.meta.database import SYSTEM_SETTINGS, Database
from tidegate.sql import ddl, ddl_connectors, dml
from tidegate.sql.dialect import (
    CreateSink,
    CreateSource,
    DropSink,
    DropSource,
    Explain,
    Flush,
    SetVariable,
    Show,
    TransactionControl,
    emits_on_window_close,
    parse_sql,
    parse_statement,
    split_statements,
)
from tidegate.sql.planner import explain_lines, plan_materialized_view

log = logging.getLogger(__name__)

SESSION_DEFAULTS = {
    "server_version": "15.0.0",
    "server_version_num": "150000",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "intervalstyle": "postgres",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "application_name": "",
    "is_superuser": "on",
    "extra_float_digits": "1",
    "search_path": '"$user", public',
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "implicit_flush": "on",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "max_identifier_length": "63",
}
SETTING_DESCRIPTIONS = {
    "barrier_interval_ms": "Milliseconds between barriers (system-wide, kept across restarts).",
    "checkpoint_frequency": "Every how many barriers one is a checkpoint (system-wide, kept across restarts).",
    "implicit_flush": "A SELECT after this session's own writes first waits for them to be committed.",
    "delivery_guarantee": "exactly_once, at_least_once or at_most_once: what jobs created from now on run with "
    "(system-wide, kept across restarts; a job's WITH (delivery_guarantee = …) overrides it).",
}
READ_ONLY_SETTINGS = {
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
}
_SETTING_ALIASES = {"transaction isolation level": "transaction_isolation", "time zone": "timezone"}


class Session:
    def __init__(self, database: Database, user: str = "root", database_name: str = "dev") -> None:
        self.db = database
        self.user = user
        self.database = database_name
        self.settings = dict(SESSION_DEFAULTS)
        self.catalog: Catalog = database.catalog
        self._wrote_since_read = False

    # ---- the pgwire / embedded contract ------------------------------------
    def split_statements(self, sql: str) -> list[str]:
        return split_statements(sql)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
        statement = parse_statement(sql)
        if isinstance(statement, Flush):
            self.db.flush()
            self._wrote_since_read = False
            return QueryResult("FLUSH")
        if isinstance(statement, TransactionControl):
            return QueryResult(statement.tag)
        if isinstance(statement, Show):
            return self._show(statement.name)
        if isinstance(statement, SetVariable):
            self.set_setting(statement.name, statement.value)
            return QueryResult("SET")
        if isinstance(statement, Explain):
            return self._explain(statement.statement)
        if isinstance(statement, CreateSource):
            return self._create_source(statement, sql)
        if isinstance(statement, DropSource):
            return self._drop_source(statement)
        if isinstance(statement, CreateSink):
            return self._create_sink(statement, sql)
        if isinstance(statement, DropSink):
            return self._drop_sink(statement)
        return self._execute_tree(statement, sql, params)

    def describe(self, sql: str, param_oids: list[int]) -> tuple[list[int], list[Column] | None]:
        statement = parse_statement(sql)
        count = _parameter_count(statement) if isinstance(statement, exp.Expression) else 0
        oids = list(param_oids) + [0] * max(0, count - len(param_oids))
        oids = [oid or TEXT.pg_oid for oid in oids]
        if isinstance(statement, Show):
            return oids, [Column(statement.name, TEXT)]
        if isinstance(statement, Explain):
            return oids, [Column("QUERY PLAN", TEXT)]
        if isinstance(statement, exp.Query) and not _is_catalog_query(sql):
            limited = statement.copy()
            table = select_arrow(self.db, exp.select("*").from_(limited.subquery("__d")).limit(0), sql, [None] * count)
            return oids, [Column(f.name, from_arrow(f.type)) for f in table.schema]
        if isinstance(statement, exp.Query):
            result = self.execute(sql, [None] * count)
            return oids, result.columns
        return oids, None

    def get_setting(self, name: str) -> str:
        key = _SETTING_ALIASES.get(name.lower(), name.lower())
        if key in SYSTEM_SETTINGS:
            return self.db.get_system_setting(key)
        if key not in self.settings:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        return self.settings[key]

    def set_setting(self, name: str, value: str) -> None:
        key = _SETTING_ALIASES.get(name.lower(), name.lower())
        if key in SYSTEM_SETTINGS:
            if value.upper() == "DEFAULT":
                value = SYSTEM_SETTINGS[key]
            self.db.set_system_setting(key, value)
            return
        if key in READ_ONLY_SETTINGS:
            raise InvalidParameterValue(f'parameter "{name}" cannot be changed')
        if key not in self.settings:
            raise UndefinedObject(f'unrecognized configuration parameter "{name}"')
        if value.upper() == "DEFAULT":
            value = SESSION_DEFAULTS[key]
        if key == "implicit_flush" and value.lower() not in ("on", "off", "true", "false"):
            raise InvalidParameterValue('parameter "implicit_flush" requires a Boolean value')
        self.settings[key] = value

    def cancel(self) -> None:
        """Statements run to completion in this release; cancel is accepted and ignored."""

    def close(self) -> None:
        self._wrote_since_read = False

    # ---- statements ---------------------------------------------------------
    def _execute_tree(self, statement: exp.Expression, sql: str, params: Sequence[Any] | None) -> QueryResult:
        if isinstance(statement, exp.Query):
            return self._select(statement, sql, params)
        if isinstance(statement, exp.Insert):
            result = dml.insert(self.db, statement, sql, params)
        elif isinstance(statement, exp.Update):
            result = dml.update(self.db, statement, sql, params)
        elif isinstance(statement, exp.Delete):
            result = dml.delete(self.db, statement, sql, params)
        elif isinstance(statement, exp.Copy):
            result = dml.copy_from_stdin(self.db, statement)
        elif isinstance(statement, exp.Create):
            return self._create(statement, sql)
        elif isinstance(statement, exp.Drop):
            return self._drop(statement)
        else:
            raise FeatureNotSupported(f"statement {statement.key.upper()} is not supported")
        self._wrote_since_read = True
        return result

    def _select(self, statement: exp.Expression, sql: str, params: Sequence[Any] | None) -> QueryResult:
        if emits_on_window_close(statement):
            raise FeatureNotSupported("EMIT ON WINDOW CLOSE is for materialized views, not for SELECT")
        if _is_catalog_query(sql):
            from tidegate.server.pg_catalog import answer_catalog_query

            answer = answer_catalog_query(sql, self)
            if answer is not None:
                return answer
        if self._wrote_since_read and self.settings["implicit_flush"].lower() in ("on", "true"):
            self.db.flush()
            self._wrote_since_read = False
        return run_select(self.db, statement, sql, params)

    def _create(self, statement: exp.Create, sql: str) -> QueryResult:
        kind = (statement.args.get("kind") or "").upper()
        properties = statement.args.get("properties")
        materialized = properties is not None and any(
            isinstance(p, exp.MaterializedProperty) for p in properties.expressions
        )
        name_node = statement.this.this if isinstance(statement.this, exp.Schema) else statement.this
        existing = self.catalog.get(name_node.name)
        if existing is not None and statement.args.get("exists"):
            return QueryResult(
                "CREATE TABLE" if kind == "TABLE" else "CREATE MATERIALIZED VIEW",
                notices=[f'relation "{existing.name}" already exists, skipping'],
            )
        with self.db.ddl_lock:
            ddl.check_name_free(self.catalog, name_node.name, name_node)
            guarantee = self.db.get_system_setting("delivery_guarantee")
            if kind == "TABLE":
                if statement.args.get("expression") is not None:
                    raise FeatureNotSupported("CREATE TABLE … AS is not supported yet")
                relation = ddl.bind_create_table(statement, self.catalog, self.db.next_relation_id(), sql)
                if ddl_connectors.table_connector(statement) is not None:
                    relation = ddl_connectors.bind_connector_table(relation, statement, sql, guarantee)
                    self.db.create_connector_table(relation)
                else:
                    self.db.create_table(relation)
                return QueryResult("CREATE TABLE")
            if kind == "VIEW" and materialized:
                relation = ddl.bind_create_materialized_view(statement, self.catalog, self.db.next_relation_id(), sql)
                relation.guarantee = ddl_connectors.view_guarantee(statement, guarantee)
                self.db.create_materialized_view(relation)
                return QueryResult("CREATE MATERIALIZED VIEW")
        raise FeatureNotSupported(f"CREATE {'MATERIALIZED ' if materialized else ''}{kind} is not supported")

    def _create_source(self, statement: CreateSource, sql: str) -> QueryResult:
        with self.db.ddl_lock:
            existing = self.catalog.get(statement.name)
            if existing is not None and statement.if_not_exists:
                return QueryResult("CREATE SOURCE", notices=[f'relation "{existing.name}" already exists, skipping'])
            if existing is not None:
                raise DuplicateObject(f'relation "{statement.name}" already exists')
            options = dict(statement.options)
            if source_connector(options) in ddl_connectors.READER_CONNECTORS:
                options["connector"] = source_connector(options)
                relation = ddl_connectors.bind_reader_source(statement, self.db.next_relation_id(), sql, options)
            else:
                relation = ddl.bind_create_source(statement, self.db.next_relation_id(), sql)
            self.db.create_source(relation)
        return QueryResult("CREATE SOURCE")

    def _create_sink(self, statement: CreateSink, sql: str) -> QueryResult:
        with self.db.ddl_lock:
            existing = self.catalog.get(statement.name)
            if existing is not None and statement.if_not_exists:
                return QueryResult("CREATE SINK", notices=[f'relation "{existing.name}" already exists, skipping'])
            if existing is not None:
                raise DuplicateObject(f'relation "{statement.name}" already exists')
            guarantee = self.db.get_system_setting("delivery_guarantee")
            relation, spec = ddl_connectors.bind_create_sink(
                statement, self.catalog, self.db.next_relation_id(), sql, guarantee
            )
            # A target that cannot be reached or does not fit fails the statement, not the job.
            target = make_sink_target(spec)
            try:
                target.open()
            finally:
                target.close()
            self.db.create_sink(relation)
        return QueryResult("CREATE SINK")

    def _drop_sink(self, statement: DropSink) -> QueryResult:
        with self.db.ddl_lock:
            relations = ddl.bind_drop_sink(statement, self.catalog)
            if not relations:
                return QueryResult("DROP SINK", notices=["sink does not exist, skipping"])
            self.db.drop_relations(relations)
        return QueryResult("DROP SINK")

    def _drop_source(self, statement: DropSource) -> QueryResult:
        with self.db.ddl_lock:
            relations = ddl.bind_drop_source(statement, self.catalog)
            if not relations:
                return QueryResult("DROP SOURCE", notices=["source does not exist, skipping"])
            self.db.drop_relations(relations)
        return QueryResult("DROP SOURCE")

    def _drop(self, statement: exp.Drop) -> QueryResult:
        kind = (statement.args.get("kind") or "").upper()
        with self.db.ddl_lock:
            relations = ddl.bind_drop(statement, self.catalog)
            tag = "DROP TABLE" if kind == "TABLE" else "DROP MATERIALIZED VIEW"
            if not relations:
                return QueryResult(tag, notices=["relation does not exist, skipping"])
            self.db.drop_relations(relations)
        return QueryResult(tag)

    def _show(self, name: str) -> QueryResult:
        if name in ("tables", "materialized views", "sources", "sinks"):
            kinds = {"tables": RelationKind.TABLE, "sources": RelationKind.SOURCE, "sinks": RelationKind.SINK}
            kind = kinds.get(name, RelationKind.MATERIALIZED_VIEW)
            rows = [(r.name,) for r in self.catalog.relations() if r.kind is kind]
            return QueryResult(f"SHOW {len(rows)}", [Column("Name", TEXT)], sorted(rows))
        if name == "all":
            settings: list[tuple[Any, ...]] = [
                (k, self.get_setting(k), SETTING_DESCRIPTIONS.get(k, ""))
                for k in sorted({*self.settings, *SYSTEM_SETTINGS})
            ]
            columns = [Column("name", TEXT), Column("setting", TEXT), Column("description", TEXT)]
            return QueryResult(f"SHOW {len(settings)}", columns, settings)
        key = _SETTING_ALIASES.get(name, name)
        return QueryResult("SHOW", [Column(key, TEXT)], [(self.get_setting(key),)])

    def _explain(self, text: str) -> QueryResult:
        statement = parse_sql(text)
        if isinstance(statement, exp.Create):
            select = statement.args.get("expression")
            if select is None:
                raise SqlError("EXPLAIN CREATE needs a MATERIALIZED VIEW … AS SELECT")
            eowc = emits_on_window_close(statement)
            view = plan_materialized_view(select, self.catalog, emit_on_window_close=eowc)
            lines = explain_lines(statement.this.name, view)
        elif isinstance(statement, exp.Query):
            view = plan_materialized_view(
                statement, self.catalog, emit_on_window_close=emits_on_window_close(statement)
            )
            lines = explain_lines("", view)
        else:
            raise FeatureNotSupported("EXPLAIN shows the stream plan of a SELECT or CREATE MATERIALIZED VIEW")
        return QueryResult(f"EXPLAIN {len(lines)}", [Column("QUERY PLAN", TEXT)], [(line,) for line in lines])


def _parameter_count(statement: exp.Expression) -> int:
    numbers = [0]
    for node in statement.find_all(exp.Placeholder, exp.Parameter):
        text = str(node.this.this if isinstance(node.this, exp.Expression) else node.this)
        if text.isdigit():
            numbers.append(int(text))
    return max(numbers)


def _is_catalog_query(sql: str) -> bool:
    lowered = sql.lower()
    return any(
        marker in lowered
        for marker in (
            "pg_catalog",
            "information_schema",
            "pg_type",
            "pg_class",
            "pg_namespace",
            "version()",
            "current_schema",
            "pg_settings",
            "current_database",
            "pg_database",
            "current_setting",
            "pg_roles",
            "pg_user",
            "pg_attribute",
            "has_table_privilege",
            "current_user",
            "session_user",
        )
    )
