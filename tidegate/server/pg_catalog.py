"""Answer the catalog queries that psql, psycopg and SQLAlchemy send.

Client tools describe a database by querying ``pg_catalog`` and
``information_schema`` with PostgreSQL-only syntax (``OPERATOR(pg_catalog.~)``,
``::regclass``, ``format_type(...)``, ``COLLATE pg_catalog.default``). The pgwire
server asks :func:`answer_catalog_query` first; for a catalog query it returns
the result, for anything else None (the session runs it).

Under the hood: the query is parsed with sqlglot's PostgreSQL dialect and
rewritten into DuckDB SQL over emulated catalog tables and macros built from the
tidegate :class:`~tidegate.meta.catalog.Catalog`
(:mod:`tidegate.server.pg_catalog_tables`): catalog table names become
``tg_<schema>_<name>``, PostgreSQL functions become ``tg_<name>`` macros,
``regclass``/``regtype`` casts become lookups, session functions
(``current_schema()``, ``version()``, ``current_user``) become literals. The
DuckDB connection is cached per catalog snapshot, so psql's nine queries for one
``\\d`` build it once.

Limitations: a query that mixes catalog tables with user relations is not
supported; catalogs tidegate has nothing for (policies, triggers, publications,
functions) are empty.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from tidegate import __version__ as tidegate_version
from tidegate.common.result import Column, QueryResult
from tidegate.common.types import TEXT, SqlType, from_arrow
from tidegate.errors import FeatureNotSupported, UndefinedRelation
from tidegate.meta.catalog import Catalog, RelationKind
from tidegate.server import pg_catalog_tables as tables

__all__ = ["answer_catalog_query", "catalog_parameter_count", "is_catalog_query"]


class CatalogSession(Protocol):
    user: str
    database: str
    catalog: Catalog

    def get_setting(self, name: str) -> str: ...


# ---- deciding what is a catalog query --------------------------------------------

_PREFILTER = re.compile(
    r"pg_|information_schema|version\s*\(|current_(?:schema|database|user|role|catalog)|session_user"
    r"|format_type|obj_description|col_description|has_\w+_privilege|to_reg|::\s*reg",
    re.IGNORECASE,
)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_QUERY_START = re.compile(r"(?:SELECT|WITH|\()", re.IGNORECASE)
_SHOW = re.compile(r"SHOW\s+([A-Za-z_][A-Za-z_ ]*?)\s*;?\s*$", re.IGNORECASE)
_PARAMETER = re.compile(r"\$(\d+)")
_ARRAY_LITERAL = re.compile(r"^\{[^{}\"]*\}$")

# SHOW answered here: the name shown as the column, the session setting (None:
# the value is fixed), the value when the session has no such setting.
_SHOWN = {
    "transaction isolation level": ("transaction_isolation", None, "read committed"),
    "transaction_isolation": ("transaction_isolation", None, "read committed"),
    "default_transaction_isolation": ("default_transaction_isolation", None, "read committed"),
    "transaction_read_only": ("transaction_read_only", None, "off"),
    "default_transaction_read_only": ("default_transaction_read_only", None, "off"),
    "standard_conforming_strings": ("standard_conforming_strings", "standard_conforming_strings", "on"),
}
_SETTINGS = (
    ("server_version", "15.0"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("application_name", ""),
    ("search_path", '"$user", public'),
    ("max_identifier_length", "63"),
    ("transaction_isolation", "read committed"),
)
_SESSION_FUNCTIONS = (
    exp.CurrentSchema,
    exp.CurrentVersion,
    exp.CurrentDatabase,
    exp.CurrentUser,
    exp.SessionUser,
    exp.CurrentSchemas,
)
_SESSION_WORDS = {"current_role", "current_catalog", "session_user", "current_user"}
# PostgreSQL functions with a tg_<name> macro in pg_catalog_tables.
_MACRO_FUNCTIONS = frozenset(
    {
        "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "pg_collation_is_visible",
        "pg_get_userbyid", "pg_encoding_to_char", "pg_relation_is_publishable",
        "pg_get_statisticsobjdef_columns", "pg_get_partkeydef", "pg_get_triggerdef", "pg_get_ruledef",
        "pg_get_expr", "pg_get_serial_sequence", "pg_get_function_identity_arguments",
        "pg_get_function_result", "pg_get_functiondef", "col_description", "obj_description",
        "shobj_description", "has_table_privilege", "has_schema_privilege", "has_database_privilege",
        "has_column_privilege", "has_any_column_privilege", "has_function_privilege",
        "has_sequence_privilege", "pg_has_role", "pg_is_in_recovery", "pg_backend_pid",
        "pg_postmaster_start_time", "pg_total_relation_size", "pg_relation_size", "pg_table_size",
        "pg_indexes_size", "inet_server_addr", "inet_server_port", "current_setting", "txid_current",
        "pg_current_xact_id", "format_type", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_viewdef",
        "to_regtype", "to_regclass", "current_database", "array_upper", "array_lower", "quote_ident",
        "pg_size_pretty",
    }
)  # fmt: skip
_CATALOG_SCHEMAS = ("pg_catalog", "information_schema")


def _strip_noise(sql: str) -> str:
    return _LEADING_NOISE.sub("", sql, count=1)


@functools.lru_cache(maxsize=512)
def _parse(sql: str) -> exp.Expr | None:
    """The parsed query when it may be a catalog query; None otherwise. Cached: treat as read-only."""
    if not _PREFILTER.search(sql) or not _QUERY_START.match(_strip_noise(sql)):
        return None
    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return None
    return statements[0]


def _cte_names(tree: exp.Expr) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def _catalog_table(table: exp.Table, ctes: set[str], catalog: Catalog) -> tuple[str, str] | None:
    """(schema, name) when ``table`` names an emulated catalog table."""
    if not isinstance(table.this, exp.Identifier):
        return None
    schema, name = table.db.lower(), table.name.lower()
    if schema in _CATALOG_SCHEMAS:
        return schema, name
    if not schema and name.startswith("pg_") and name not in ctes and catalog.get(table.name) is None:
        return "pg_catalog", name
    return None


def _function_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return None


def _references_catalog(tree: exp.Expr, catalog: Catalog) -> bool:
    ctes = _cte_names(tree)
    for node in tree.walk():
        if isinstance(node, exp.Table) and _catalog_table(node, ctes, catalog) is not None:
            return True
        if isinstance(node, _SESSION_FUNCTIONS):
            return True
        name = _function_name(node)
        if name is not None and (name in _MACRO_FUNCTIONS or name in ("version", "current_schema")):
            return True
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name == "pg_catalog":
            return True
        if isinstance(node, exp.Cast) and _type_name(node.to) in _REG_TYPES:
            return True
    return False


def _show_name(sql: str) -> str | None:
    match = _SHOW.match(_strip_noise(sql))
    if match is None:
        return None
    name = " ".join(match.group(1).lower().split())
    return name if name in _SHOWN else None


def is_catalog_query(sql: str, session: CatalogSession) -> bool:
    """True when :func:`answer_catalog_query` answers ``sql`` (cheap; the parse is cached)."""
    if _show_name(sql) is not None:
        return True
    tree = _parse(sql)
    return tree is not None and _references_catalog(tree, session.catalog)


def catalog_parameter_count(sql: str) -> int:
    """The highest ``$n`` placeholder in ``sql`` (0 when none)."""
    return max((int(n) for n in _PARAMETER.findall(sql)), default=0)


# ---- answering ----------------------------------------------------------------------


def answer_catalog_query(
    sql: str, session: CatalogSession, params: Sequence[object] | None = None
) -> QueryResult | None:
    """The result of a catalog query, or None when ``sql`` is not one.

    ``params`` are the values of ``$1..$n`` (extended protocol); when None,
    every placeholder is NULL, which still yields the right result columns.
    """
    show = _show_name(sql)
    if show is not None:
        return _answer_show(show, session)
    parsed = _parse(sql)
    if parsed is None or not _references_catalog(parsed, session.catalog):
        return None
    tree = parsed.copy()
    names = _output_names(tree)
    lowered = sql.lower()
    facts = _facts(session, with_settings="pg_settings" in lowered or "current_setting" in lowered)
    rewritten = _Rewriter(facts, session.catalog, params).rewrite(tree)
    for expression, name in zip(_first_select(rewritten).expressions, names):
        if name is not None and not isinstance(expression, exp.Alias):
            expression.replace(exp.alias_(expression.copy(), name, quoted=True))
    duck_sql = rewritten.sql(dialect="duckdb")
    engine = _engine(facts)
    try:
        with engine.lock:
            relation = engine.connection.sql(duck_sql)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as e:
        if _provably_empty(parsed):
            return QueryResult(command_tag="SELECT 0", columns=[Column(n or "?column?", TEXT) for n in names])
        raise FeatureNotSupported(f"tidegate cannot answer this catalog query: {e}") from e
    return _to_result(table)


def _answer_show(name: str, session: CatalogSession) -> QueryResult:
    column, setting, default = _SHOWN[name]
    value = default
    if setting is not None:
        try:
            value = session.get_setting(setting)
        except Exception:
            value = default
    return QueryResult(command_tag="SHOW", columns=[Column(column, TEXT)], rows=[(value,)])


def _setting(session: CatalogSession, name: str, default: str) -> str:
    try:
        return session.get_setting(name)
    except Exception:
        return default


def _facts(session: CatalogSession, *, with_settings: bool) -> tables.CatalogFacts:
    settings = tuple((n, _setting(session, n, d)) for n, d in _SETTINGS) if with_settings else ()
    return tables.CatalogFacts(
        user=session.user,
        database=session.database,
        server_version=_setting(session, "server_version", "15.0"),
        settings=settings,
        # Sinks are jobs, not relations a client can read: pg_class does not list them.
        relations=tuple(r for r in session.catalog.relations() if r.kind is not RelationKind.SINK),
    )


@dataclass
class _Engine:
    connection: duckdb.DuckDBPyConnection
    lock: threading.Lock


_ENGINES: OrderedDict[tuple[Any, ...], _Engine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()
_ENGINES_MAX = 8


def _engine(facts: tables.CatalogFacts) -> _Engine:
    key = facts.fingerprint()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            _ENGINES.move_to_end(key)
            return engine
    engine = _Engine(tables.build_catalog_connection(facts), threading.Lock())
    with _ENGINES_LOCK:
        _ENGINES[key] = engine
        while len(_ENGINES) > _ENGINES_MAX:
            _, old = _ENGINES.popitem(last=False)
            with old.lock:
                old.connection.close()
    return engine


# ---- result conversion ------------------------------------------------------------------


def _sql_type(arrow_type: pa.DataType) -> SqlType:
    """A catalog result column's type: arrays as PostgreSQL's (``text[]`` is ``_text``), the rest as
    tidegate reports them; a type tidegate has no name for is sent as text."""
    try:
        return from_arrow(arrow_type)
    except FeatureNotSupported:
        return TEXT


def _to_result(table: pa.Table) -> QueryResult:
    columns = [Column(field.name, _sql_type(field.type)) for field in table.schema]
    values = [column.to_pylist() for column in table.columns]
    rows = list(zip(*values)) if values else []
    return QueryResult(command_tag=f"SELECT {table.num_rows}", columns=columns, rows=rows)


# ---- output column names, as PostgreSQL names them ------------------------------------


def _first_select(tree: exp.Expr) -> exp.Select:
    node = tree
    while not isinstance(node, exp.Select):
        if isinstance(node, (exp.SetOperation, exp.Subquery)):
            node = node.this
        else:
            raise FeatureNotSupported("unsupported catalog query shape")
    return node


_FUNCTION_NAMES: dict[type[exp.Expr], str] = {
    exp.CurrentSchema: "current_schema",
    exp.CurrentVersion: "version",
    exp.CurrentDatabase: "current_database",
    exp.CurrentUser: "current_user",
    exp.SessionUser: "session_user",
    exp.CurrentSchemas: "current_schemas",
    exp.Array: "array",
}


def _pg_name(node: exp.Expr) -> str | None:
    """The column name PostgreSQL gives an unaliased select expression; None for ``*``."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
        return None
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, (exp.Paren, exp.Collate)):
        return _pg_name(node.this)
    if isinstance(node, exp.Cast):
        inner = node.this
        return _pg_name(inner) if not isinstance(inner, exp.Literal) else _type_name(node.to) or "?column?"
    if isinstance(node, exp.Dot):
        return _pg_name(node.expression)
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select) and node.this.expressions:
        return _pg_name(node.this.expressions[0])
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.Boolean):
        return "bool"
    for cls, name in _FUNCTION_NAMES.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func) and not isinstance(node, (exp.Binary, exp.Not)):
        return node.sql_name().lower()
    return "?column?"


def _output_names(tree: exp.Expr) -> list[str | None]:
    return [_pg_name(e) for e in _first_select(tree).expressions]


# ---- the rewrite into DuckDB ---------------------------------------------------------------

_REG_TYPES = {"regclass", "regtype", "regnamespace", "regproc", "regprocedure", "regrole", "regoper", "regconfig"}
_DUCK_TYPES = {
    "oid": "BIGINT", "xid": "BIGINT", "cid": "BIGINT", "tid": "VARCHAR",
    "name": "VARCHAR", "char": "VARCHAR", "bpchar": "VARCHAR", "text": "VARCHAR", "varchar": "VARCHAR",
    "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "REAL", "float8": "DOUBLE",
    "bool": "BOOLEAN", "regproc": "VARCHAR", "regprocedure": "VARCHAR", "regrole": "VARCHAR",
    "regoper": "VARCHAR", "regconfig": "VARCHAR", "int2vector": "SMALLINT[]", "oidvector": "BIGINT[]",
}  # fmt: skip
_OPERATORS = {
    "~": lambda a, b: exp.RegexpLike(this=a, expression=b),
    "!~": lambda a, b: exp.Not(this=exp.RegexpLike(this=a, expression=b)),
    "~*": lambda a, b: exp.RegexpILike(this=a, expression=b),
    "!~*": lambda a, b: exp.Not(this=exp.RegexpILike(this=a, expression=b)),
    "~~": lambda a, b: exp.Like(this=a, expression=b),
    "!~~": lambda a, b: exp.Not(this=exp.Like(this=a, expression=b)),
    "=": lambda a, b: exp.EQ(this=a, expression=b),
    "<>": lambda a, b: exp.NEQ(this=a, expression=b),
    "!=": lambda a, b: exp.NEQ(this=a, expression=b),
    "<": lambda a, b: exp.LT(this=a, expression=b),
    ">": lambda a, b: exp.GT(this=a, expression=b),
    "<=": lambda a, b: exp.LTE(this=a, expression=b),
    ">=": lambda a, b: exp.GTE(this=a, expression=b),
}


def _type_name(data_type: exp.Expr | None) -> str | None:
    """The lower-case PostgreSQL type name of a cast target, without ``pg_catalog.``."""
    if data_type is None:
        return None
    if isinstance(data_type, exp.ObjectIdentifier):
        return str(data_type.this).lower()
    if isinstance(data_type, exp.DataType):
        if data_type.this == exp.DataType.Type.USERDEFINED:
            kind = data_type.args.get("kind")
            if isinstance(kind, exp.Dot):
                return kind.expression.name.lower()
            if isinstance(kind, exp.Expr):
                return kind.name.lower()
            return str(kind).lower() if kind else None
        return data_type.this.value.lower()
    return None


def _literal(value: object) -> exp.Expr:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, decimal.Decimal)):
        return exp.Literal.number(str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return exp.Literal.string("\\x" + bytes(value).hex())
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return exp.Literal.string(value.isoformat())
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v) for v in value])
    return exp.Literal.string(str(value))


def _array_literal(text: str) -> exp.Expr:
    items = [item.strip() for item in text[1:-1].split(",") if item.strip()]
    if all(re.fullmatch(r"-?\d+", item) for item in items):
        return exp.Array(expressions=[exp.Literal.number(item) for item in items])
    return exp.Array(expressions=[exp.Literal.string(item) for item in items])


class _Rewriter:
    """PostgreSQL catalog SQL → DuckDB SQL over the emulated catalog tables."""

    def __init__(self, facts: tables.CatalogFacts, catalog: Catalog, params: Sequence[object] | None) -> None:
        self._facts = facts
        self._catalog = catalog
        self._params = params

    def rewrite(self, tree: exp.Expr) -> exp.Expr:
        ctes = _cte_names(tree)
        # Replace bottom-up so that replaced nodes are not visited again.
        for node in list(tree.walk(bfs=False))[::-1]:
            replacement = self._replace(node, ctes)
            if replacement is not None and replacement is not node:
                if node is tree:
                    tree = replacement
                else:
                    node.replace(replacement)
        return tree

    def _replace(self, node: exp.Expr, ctes: set[str]) -> exp.Expr | None:
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            return self._parameter(node)
        if isinstance(node, exp.Table):
            return self._table(node, ctes)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier):
            if node.this.name.lower() == "pg_catalog":
                inner = node.expression
                return (self._function(inner) if isinstance(inner, exp.Func) else None) or inner
            return None
        if isinstance(node, exp.Operator):
            symbol = str(node.args.get("operator", "")).split(".")[-1].strip()
            build = _OPERATORS.get(symbol)
            if build is None:
                raise FeatureNotSupported(f"operator {symbol} is not supported in catalog queries")
            return build(node.this, node.expression)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, exp.Literal) and node.is_string and _ARRAY_LITERAL.match(node.this):
            if isinstance(node.parent, (exp.EQ, exp.NEQ)):
                return _array_literal(node.this)
            return None
        if isinstance(node, exp.Func):
            return self._function(node)
        return None

    def _parameter(self, node: exp.Expr) -> exp.Expr:
        text = node.name if isinstance(node, exp.Parameter) else str(node.this or "")
        if not text.isdigit():
            raise FeatureNotSupported(f"parameter {node.sql()} is not supported in catalog queries")
        index = int(text) - 1
        if self._params is None or index >= len(self._params):
            return exp.Null()
        return _literal(self._params[index])

    def _table(self, node: exp.Table, ctes: set[str]) -> exp.Expr | None:
        key = _catalog_table(node, ctes, self._catalog)
        if key is None:
            if node.db.lower() == "pg_catalog" and not isinstance(node.this, exp.Identifier):
                node.set("db", None)  # a set-returning function such as pg_catalog.generate_series
            return None
        if key not in tables.TABLES:
            raise UndefinedRelation(f'relation "{key[0]}.{key[1]}" does not exist (not emulated by tidegate)')
        alias = node.alias or key[1]
        return exp.Table(
            this=exp.to_identifier(tables.table_name(*key)),
            alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
        )

    def _column(self, node: exp.Column) -> exp.Expr | None:
        if node.args.get("db") is not None:
            # pg_catalog.pg_class.relname: the table keeps its name as alias, so drop the schema.
            node.set("db", None)
            node.set("catalog", None)
            return node
        if not node.table and node.name.lower() in _SESSION_WORDS and not node.this.quoted:
            word = node.name.lower()
            return exp.Literal.string(self._facts.database if word == "current_catalog" else self._facts.user)
        return None

    def _cast(self, node: exp.Cast) -> exp.Expr | None:
        name = _type_name(node.to)
        inner = node.this
        if name == "regclass":
            if isinstance(inner, exp.Literal) and inner.is_string:
                return exp.Literal.number(str(self._relation_oid(inner.this)))
            return exp.Anonymous(this="tg_regclass_name", expressions=[inner])
        if name == "regtype":
            if isinstance(inner, exp.Literal) and inner.is_string:
                return exp.Anonymous(this="tg_to_regtype", expressions=[inner])
            return exp.Anonymous(this="tg_regtype_name", expressions=[inner])
        if name == "regnamespace":
            return exp.Anonymous(this="tg_regnamespace_name", expressions=[inner])
        if name in _DUCK_TYPES:
            return exp.Cast(this=inner, to=exp.DataType.build(_DUCK_TYPES[name], dialect="duckdb"))
        to = node.to
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.ARRAY and to.expressions:
            element = _type_name(to.expressions[0]) or "text"
            duck = _DUCK_TYPES.get(element, element.upper())
            return exp.Cast(this=inner, to=exp.DataType.build(f"{duck}[]", dialect="duckdb"))
        return None

    def _relation_oid(self, name: str) -> int:
        bare = name.split(".")[-1].strip('"')
        relation = self._catalog.get(bare)
        if relation is not None:
            return relation.id
        if bare.lower() in tables.SYSTEM_RELATION_OIDS:
            return tables.SYSTEM_RELATION_OIDS[bare.lower()]
        raise UndefinedRelation(f'relation "{name}" does not exist')

    def _function(self, node: exp.Expr) -> exp.Expr | None:
        facts = self._facts
        if isinstance(node, exp.CurrentSchema):
            return exp.Literal.string("public")
        if isinstance(node, exp.CurrentVersion):
            return exp.Literal.string(_version(facts.server_version))
        if isinstance(node, exp.CurrentDatabase):
            return exp.Literal.string(facts.database)
        if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
            return exp.Literal.string(facts.user)
        if isinstance(node, exp.CurrentSchemas):
            implicit = isinstance(node.this, exp.Boolean) and node.this.this
            names = ["pg_catalog", "public"] if implicit else ["public"]
            return exp.Array(expressions=[exp.Literal.string(n) for n in names])
        name = _function_name(node)
        if name is None:
            return None
        if name == "version":
            return exp.Literal.string(_version(facts.server_version))
        if name == "current_schema":
            return exp.Literal.string("public")
        if name == "json_build_object":
            arguments = [
                exp.Cast(this=a, to=exp.DataType.build("VARCHAR")) if i % 2 == 0 else a
                for i, a in enumerate(node.expressions)
            ]
            return exp.Anonymous(this="json_object", expressions=arguments)
        if name in _MACRO_FUNCTIONS:
            return exp.Anonymous(this=f"tg_{name}", expressions=list(node.expressions))
        return None


def _version(server_version: str) -> str:
    return f"PostgreSQL {server_version} (tidegate {tidegate_version}) on x86_64-pc-linux-gnu, 64-bit"


def _provably_empty(tree: exp.Expr) -> bool:
    """True when every branch of the query inner-joins a catalog that has no rows here."""
    if isinstance(tree, exp.Union):
        return _provably_empty(tree.this) and _provably_empty(tree.expression)
    if not isinstance(tree, exp.Select) or (tree.args.get("group") is None and tree.find(exp.AggFunc)):
        return False
    sources: list[exp.Expr] = []
    from_ = tree.args.get("from_") or tree.args.get("from")
    if from_ is not None:
        sources.append(from_.this)
    for join in tree.args.get("joins") or []:
        if (join.side or "").upper() not in ("LEFT", "FULL"):
            sources.append(join.this)
    return any(isinstance(s, exp.Table) and s.name.lower() in tables.EMPTY_TABLES for s in sources)
