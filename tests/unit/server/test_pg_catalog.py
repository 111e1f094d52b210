"""The pg_catalog emulation, driven with the queries psql 15, psycopg and SQLAlchemy really send."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.common.types import INTEGER
from tidegate.errors import UndefinedRelation
from tidegate.meta.catalog import ColumnDef, Relation, RelationKind
from tidegate.server.pg_catalog import answer_catalog_query, catalog_parameter_count, is_catalog_query

# Captured with `psql -E` (psql 15) against PostgreSQL 15.
PSQL_LOOKUP = """SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;"""

PSQL_LIST = """SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','v','m','S','f','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"""  # noqa: E501

PSQL_COLUMNS = """SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '{oid}' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;"""

PSQL_INDEXES = """SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x'))
WHERE c.oid = '{oid}' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;"""  # noqa: E501

PSQL_PUBLICATIONS = """SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid ='{oid}' and pg_catalog.pg_relation_is_publishable('{oid}')
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = '{oid}'
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('{oid}')
ORDER BY 1;"""

PSQL_ROLES = """SELECT r.rolname, r.rolsuper, r.rolinherit,
  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
  r.rolconnlimit, r.rolvaliduntil,
  ARRAY(SELECT b.rolname
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
        WHERE m.member = r.oid) as memberof
, r.rolreplication
, r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1;"""

# Sent by psycopg's TypeInfo.fetch (SQLAlchemy looks up hstore at connect).
PSYCOPG_TYPE_INFO = """SELECT
    typname AS name, oid, typarray AS array_oid,
    oid::regtype::text AS regtype, typdelim AS delimiter
FROM pg_type t
WHERE t.oid = to_regtype($1)
ORDER BY t.oid"""

# SQLAlchemy 2 postgresql dialect: has_table / get_table_names and the primary key reflection.
SQLALCHEMY_HAS_TABLE = """SELECT pg_catalog.pg_class.relname
FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace
WHERE pg_catalog.pg_class.relname IN ($1::VARCHAR) AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $7::VARCHAR"""  # noqa: E501

SQLALCHEMY_PK = """SELECT attr.conrelid, array_agg(CAST(attr.attname AS TEXT) ORDER BY attr.ord) AS cols, attr.conname, min(attr.description) AS description, min(attr.indnkeyatts) AS indnkeyatts, bool_and(attr.indnullsnotdistinct) AS indnullsnotdistinct
FROM (SELECT con.conrelid AS conrelid, con.conname AS conname, con.description AS description, con.ord AS ord, con.indnkeyatts AS indnkeyatts, con.indnullsnotdistinct AS indnullsnotdistinct, pg_catalog.pg_attribute.attname AS attname
FROM pg_catalog.pg_attribute JOIN (SELECT pg_catalog.pg_constraint.conrelid AS conrelid, pg_catalog.pg_constraint.conname AS conname, unnest(pg_catalog.pg_index.indkey) AS attnum, generate_subscripts(pg_catalog.pg_index.indkey, $1::INTEGER) AS ord, pg_catalog.pg_index.indnkeyatts AS indnkeyatts, pg_catalog.pg_index.indnullsnotdistinct AS indnullsnotdistinct, pg_catalog.pg_description.description AS description
FROM pg_catalog.pg_constraint JOIN pg_catalog.pg_index ON pg_catalog.pg_constraint.conindid = pg_catalog.pg_index.indexrelid LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_description.objoid = pg_catalog.pg_constraint.oid AND pg_catalog.pg_description.classoid = CAST($2 AS REGCLASS)
WHERE pg_catalog.pg_constraint.contype = $3::VARCHAR AND pg_catalog.pg_constraint.conrelid IN ($4)) AS con ON pg_catalog.pg_attribute.attnum = con.attnum AND pg_catalog.pg_attribute.attrelid = con.conrelid
WHERE con.conrelid IN ($4)) AS attr GROUP BY attr.conrelid, attr.conname ORDER BY attr.conrelid, attr.conname"""  # noqa: E501


# The relation ids of conftest.make_catalog.
ORDERS_ID = 1001
MV_ID = 1002


@pytest.fixture
def session(factory: Any) -> Any:
    session = factory("root", "dev")
    assert session.catalog.get("orders").id == ORDERS_ID
    assert session.catalog.get("category_totals").id == MV_ID
    return session


def rows(sql: str, session: Any, params: list[object] | None = None) -> list[tuple[object, ...]]:
    result = answer_catalog_query(sql, session, params)
    assert result is not None, "expected a catalog query"
    return result.rows


def test_ordinary_statements_are_not_catalog_queries(session: Any) -> None:
    for sql in ("select 1", "SELECT * FROM orders", "INSERT INTO orders VALUES (1)", "select 'pg_class'", "FLUSH"):
        assert answer_catalog_query(sql, session) is None
        assert not is_catalog_query(sql, session)


def test_session_functions(session: Any) -> None:
    assert rows("select current_schema()", session) == [("public",)]
    version = rows("select pg_catalog.version()", session)[0][0]
    assert isinstance(version, str) and version.startswith("PostgreSQL 15.0 ")
    assert rows("select current_database(), current_user, session_user", session) == [("dev", "root", "root")]
    result = answer_catalog_query("select version()", session)
    assert result is not None and result.columns is not None and result.columns[0].name == "version"


def test_show_answers(session: Any) -> None:
    result = answer_catalog_query("SHOW TRANSACTION ISOLATION LEVEL", session)
    assert result is not None and result.command_tag == "SHOW" and result.rows == [("read committed",)]
    assert result.columns is not None and result.columns[0].name == "transaction_isolation"
    assert rows("show standard_conforming_strings", session) == [("on",)]
    assert answer_catalog_query("SHOW implicit_flush", session) is None


def test_psql_list_relations(session: Any) -> None:
    assert rows(PSQL_LIST, session) == [
        ("public", "category_totals", "materialized view", "root"),
        ("public", "orders", "table", "root"),
    ]


def test_psql_describe_table(session: Any) -> None:
    assert rows(PSQL_LOOKUP, session) == [(ORDERS_ID, "public", "orders")]
    assert rows(PSQL_COLUMNS.format(oid=ORDERS_ID), session) == [
        ("order_id", "integer", None, True, None, "", ""),
        ("product_category", "character varying", None, False, None, "", ""),
        ("amount", "numeric(10,2)", None, False, None, "", ""),
        ("order_time", "timestamp without time zone", None, False, None, "", ""),
    ]
    (index,) = rows(PSQL_INDEXES.format(oid=ORDERS_ID), session)
    assert index[:3] == ("orders_pkey", True, True)
    assert index[5] == "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (order_id)"
    assert index[6:8] == ("PRIMARY KEY (order_id)", "p")


def test_materialized_view_hides_hidden_columns_and_has_definition(session: Any) -> None:
    names = [r[0] for r in rows(PSQL_COLUMNS.format(oid=MV_ID), session)]
    assert names == ["product_category", "total"]
    assert rows(PSQL_INDEXES.format(oid=MV_ID), session) == []
    definition = rows(f"SELECT pg_catalog.pg_get_viewdef('{MV_ID}'::pg_catalog.oid, true);", session)[0][0]
    assert definition == " SELECT product_category, sum(amount) AS total FROM orders GROUP BY product_category;"


def test_catalogs_without_rows_answer_empty(session: Any) -> None:
    assert rows(PSQL_PUBLICATIONS.format(oid=ORDERS_ID), session) == []
    assert rows(f"SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i "
                f"WHERE c.oid = i.inhparent AND i.inhrelid = '{ORDERS_ID}'", session) == []  # fmt: skip


def test_roles_arrays_are_postgres_arrays(session: Any) -> None:
    result = answer_catalog_query(PSQL_ROLES, session)
    assert result is not None and result.columns is not None
    assert result.rows[0][0] == "root" and result.rows[0][8] == []
    memberof = result.columns[8].type
    assert memberof.pg_oid == 1015 and memberof.to_text(["a", "b c", None]) == '{a,"b c",NULL}'


def test_psycopg_type_lookup_finds_builtin_and_not_hstore(session: Any) -> None:
    assert rows(PSYCOPG_TYPE_INFO, session, ["hstore"]) == []
    assert rows(PSYCOPG_TYPE_INFO, session, ["numeric"]) == [("numeric", 1700, 1231, "numeric", ",")]


def test_sqlalchemy_has_table_and_primary_key(session: Any) -> None:
    kinds = ["r", "p", "f", "v", "m"]
    assert rows(SQLALCHEMY_HAS_TABLE, session, ["orders", *kinds, "pg_catalog"]) == [("orders",)]
    assert rows(SQLALCHEMY_HAS_TABLE, session, ["nope", *kinds, "pg_catalog"]) == []
    assert rows(SQLALCHEMY_PK, session, [1, "pg_constraint", "p", ORDERS_ID]) == [
        (ORDERS_ID, ["order_id"], "orders_pkey", None, 1, False)
    ]
    assert catalog_parameter_count(SQLALCHEMY_PK) == 4


def test_describe_with_null_parameters_keeps_columns(session: Any) -> None:
    result = answer_catalog_query(SQLALCHEMY_HAS_TABLE, session, None)
    assert result is not None and result.rows == []
    assert [c.name for c in result.columns or []] == ["relname"]


def test_information_schema(session: Any) -> None:
    assert rows("select table_name, table_type from information_schema.tables", session) == [("orders", "BASE TABLE")]
    columns = rows(
        "select column_name, data_type, is_nullable, numeric_precision, numeric_scale, udt_name "
        "from information_schema.columns where table_name = 'orders' order by ordinal_position",
        session,
    )
    assert columns[0] == ("order_id", "integer", "NO", 32, 0, "int4")
    assert columns[2] == ("amount", "numeric", "YES", 10, 2, "numeric")
    assert rows("select schema_name from information_schema.schemata order by 1", session) == [
        ("information_schema",),
        ("pg_catalog",),
        ("public",),
    ]


def test_catalog_changes_are_seen(factory: Any, session: Any) -> None:
    before = rows("select relname from pg_catalog.pg_class where relkind = 'r'", session)
    factory.catalog.add(
        Relation(id=1003, name="late", kind=RelationKind.TABLE, columns=[ColumnDef("x", INTEGER)], pk=[])
    )
    after = rows("select relname from pg_catalog.pg_class where relkind = 'r' order by 1", session)
    assert before == [("orders",)] and after == [("late",), ("orders",)]


def test_unknown_catalog_and_user_relation_named_like_one(factory: Any, session: Any) -> None:
    with pytest.raises(UndefinedRelation, match=r"pg_catalog\.pg_stat_nothing"):
        answer_catalog_query("select * from pg_catalog.pg_stat_nothing", session)
    factory.catalog.add(Relation(id=1004, name="pg_mine", kind=RelationKind.TABLE, columns=[], pk=[]))
    assert answer_catalog_query("select * from pg_mine", session) is None
