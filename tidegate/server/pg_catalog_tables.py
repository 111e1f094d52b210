"""The emulated ``pg_catalog`` and ``information_schema`` as Arrow tables and DuckDB macros.

:func:`build_catalog_connection` turns one snapshot of the tidegate
:class:`~tidegate.meta.catalog.Catalog` into a DuckDB connection holding a table
per PostgreSQL catalog (``pg_catalog.pg_class`` becomes ``tg_pg_catalog_pg_class``)
and a macro per PostgreSQL function client tools call (``format_type`` becomes
``tg_format_type``). :mod:`tidegate.server.pg_catalog` rewrites a client's query
to those names and runs it there.

Mapping: schema ``public`` (oid 2200) holds every relation; a relation's oid is
``Relation.id``; TABLE is relkind 'r', MATERIALIZED VIEW 'm'; hidden columns are
left out and the visible ones numbered from 1. A table with a user-declared
primary key gets a btree index ``<name>_pkey`` and a 'p' constraint, so psql's
``\\d`` prints the PRIMARY KEY line. Tables the emulation does not fill (policies,
publications, triggers, ...) exist with PostgreSQL's columns and no rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from tidegate.common.types import SqlType
from tidegate.meta.catalog import Relation, RelationKind

__all__ = ["EMPTY_TABLES", "SYSTEM_RELATION_OIDS", "TABLES", "CatalogFacts", "build_catalog_connection"]

NAMESPACE_PG_CATALOG = 11
NAMESPACE_PUBLIC = 2200
NAMESPACE_INFORMATION_SCHEMA = 13183
USER_OID = 10
DATABASE_OID = 16384
HEAP_AM = 2
BTREE_AM = 403
INDEX_OID_BASE = 2_000_000_000
CONSTRAINT_OID_BASE = 2_100_000_000
DEFAULT_COLLATION = 100

# Fixed oids of system catalogs, for literals such as 'pg_constraint'::regclass.
SYSTEM_RELATION_OIDS = {
    "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_class": 1259, "pg_database": 1262,
    "pg_am": 2601, "pg_attrdef": 2604, "pg_constraint": 2606, "pg_inherits": 2611, "pg_index": 2610,
    "pg_description": 2609, "pg_namespace": 2615, "pg_rewrite": 2618, "pg_trigger": 2620,
    "pg_collation": 3456, "pg_extension": 3079, "pg_roles": 1260, "pg_authid": 1260,
}  # fmt: skip


@dataclass(frozen=True)
class _TypeInfo:
    oid: int
    typname: str
    format_name: str
    typlen: int
    category: str
    storage: str
    align: str
    array_oid: int
    collatable: bool = False
    udt_kind: str = ""  # information_schema data_type when it differs from format_name


_BASE_TYPES = [
    _TypeInfo(16, "bool", "boolean", 1, "B", "p", "c", 1000),
    _TypeInfo(17, "bytea", "bytea", -1, "U", "x", "i", 1001),
    _TypeInfo(18, "char", '"char"', 1, "Z", "p", "c", 1002),
    _TypeInfo(19, "name", "name", 64, "S", "p", "c", 1003, collatable=True),
    _TypeInfo(20, "int8", "bigint", 8, "N", "p", "d", 1016),
    _TypeInfo(21, "int2", "smallint", 2, "N", "p", "s", 1005),
    _TypeInfo(22, "int2vector", "int2vector", -1, "A", "p", "i", 1006),
    _TypeInfo(23, "int4", "integer", 4, "N", "p", "i", 1007),
    _TypeInfo(24, "regproc", "regproc", 4, "N", "p", "i", 1008),
    _TypeInfo(25, "text", "text", -1, "S", "x", "i", 1009, collatable=True),
    _TypeInfo(26, "oid", "oid", 4, "N", "p", "i", 1028),
    _TypeInfo(30, "oidvector", "oidvector", -1, "A", "p", "i", 1013),
    _TypeInfo(114, "json", "json", -1, "U", "x", "i", 199),
    _TypeInfo(700, "float4", "real", 4, "N", "p", "i", 1021),
    _TypeInfo(701, "float8", "double precision", 8, "N", "p", "d", 1022),
    _TypeInfo(705, "unknown", "unknown", -2, "X", "p", "c", 0),
    _TypeInfo(1042, "bpchar", "character", -1, "S", "x", "i", 1014, collatable=True),
    _TypeInfo(1043, "varchar", "character varying", -1, "S", "x", "i", 1015, collatable=True),
    _TypeInfo(1082, "date", "date", 4, "D", "p", "i", 1182),
    _TypeInfo(1083, "time", "time without time zone", 8, "D", "p", "d", 1183),
    _TypeInfo(1114, "timestamp", "timestamp without time zone", 8, "D", "p", "d", 1115),
    _TypeInfo(1184, "timestamptz", "timestamp with time zone", 8, "D", "p", "d", 1185),
    _TypeInfo(1186, "interval", "interval", 16, "T", "p", "d", 1187),
    _TypeInfo(1700, "numeric", "numeric", -1, "N", "m", "i", 1231),
    _TypeInfo(2205, "regclass", "regclass", 4, "N", "p", "i", 2210),
    _TypeInfo(2206, "regtype", "regtype", 4, "N", "p", "i", 2211),
    _TypeInfo(3802, "jsonb", "jsonb", -1, "U", "x", "i", 3807),
]
_ARRAY_TYPES = [
    _TypeInfo(t.array_oid, "_" + t.typname, t.format_name + "[]", -1, "A", "x", t.align, 0, t.collatable, "ARRAY")
    for t in _BASE_TYPES
    if t.array_oid
]
TYPES: dict[int, _TypeInfo] = {t.oid: t for t in _BASE_TYPES + _ARRAY_TYPES}
ARRAY_ELEMENT = {t.array_oid: t.oid for t in _BASE_TYPES if t.array_oid}

# ---- table layouts: "name type[=default], ..." ---------------------------------

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.string(),
    "bool": pa.bool_(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "int2[]": pa.list_(pa.int16()),
    "int8[]": pa.list_(pa.int64()),
    "text[]": pa.list_(pa.string()),
}


def _default(text: str) -> Any:
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("'"):
        return text.strip("'")
    return int(text)


@dataclass(frozen=True)
class _Layout:
    schema: pa.Schema
    defaults: dict[str, Any]

    @staticmethod
    def parse(spec: str) -> _Layout:
        fields, defaults = [], {}
        for item in re.split(r",\s+(?=[a-z_]+ )", spec):
            name, _, rest = item.strip().partition(" ")
            type_name, _, default = rest.partition("=")
            fields.append(pa.field(name, _ARROW_TYPES[type_name.strip()]))
            defaults[name] = _default(default.strip()) if default else None
        return _Layout(pa.schema(fields), defaults)

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        columns = {
            field.name: [row.get(field.name, self.defaults[field.name]) for row in rows] for field in self.schema
        }
        return pa.Table.from_pydict(columns, schema=self.schema)


_PG = {
    "pg_namespace": "oid int8, nspname text, nspowner int8=10, nspacl text[]",
    "pg_class": (
        "oid int8, relname text, relnamespace int8=2200, reltype int8=0, reloftype int8=0, relowner int8=10, "
        "relam int8=0, relfilenode int8=0, reltablespace int8=0, relpages int4=0, reltuples float4=-1, "
        "relallvisible int4=0, reltoastrelid int8=0, relhasindex bool=false, relisshared bool=false, "
        "relpersistence text='p', relkind text, relnatts int2=0, relchecks int2=0, relhasrules bool=false, "
        "relhastriggers bool=false, relhassubclass bool=false, relrowsecurity bool=false, "
        "relforcerowsecurity bool=false, relispopulated bool=true, relreplident text='d', "
        "relispartition bool=false, relrewrite int8=0, relfrozenxid int8=0, relminmxid int8=0, relacl text[], "
        "reloptions text[], relpartbound text"
    ),
    "pg_attribute": (
        "attrelid int8, attname text, atttypid int8, attstattarget int4=-1, attlen int2, attnum int2, "
        "attndims int4=0, attcacheoff int4=-1, atttypmod int4=-1, attbyval bool, attalign text, attstorage text, "
        "attcompression text='', attnotnull bool=false, atthasdef bool=false, atthasmissing bool=false, "
        "attidentity text='', attgenerated text='', attisdropped bool=false, attislocal bool=true, "
        "attinhcount int4=0, attcollation int8=0, attacl text[], attoptions text[], attfdwoptions text[], "
        "attmissingval text"
    ),
    "pg_type": (
        "oid int8, typname text, typnamespace int8=11, typowner int8=10, typlen int2, typbyval bool, "
        "typtype text='b', typcategory text, typispreferred bool=false, typisdefined bool=true, typdelim text=',', "
        "typrelid int8=0, typsubscript int8=0, typelem int8=0, typarray int8=0, typinput text, typoutput text, "
        "typreceive text, typsend text, typmodin text, typmodout text, typanalyze text, typalign text, "
        "typstorage text, typnotnull bool=false, typbasetype int8=0, typtypmod int4=-1, typndims int4=0, "
        "typcollation int8=0, typdefaultbin text, typdefault text, typacl text[]"
    ),
    "pg_index": (
        "indexrelid int8, indrelid int8, indnatts int2, indnkeyatts int2, indisunique bool=true, "
        "indnullsnotdistinct bool=false, indisprimary bool=true, indisexclusion bool=false, "
        "indimmediate bool=true, indisclustered bool=false, indisvalid bool=true, indcheckxmin bool=false, "
        "indisready bool=true, indislive bool=true, indisreplident bool=false, indkey int2[], "
        "indcollation int8[], indclass int8[], indoption int2[], indexprs text, indpred text"
    ),
    "pg_constraint": (
        "oid int8, conname text, connamespace int8=2200, contype text, condeferrable bool=false, "
        "condeferred bool=false, convalidated bool=true, conrelid int8, contypid int8=0, conindid int8=0, "
        "conparentid int8=0, confrelid int8=0, confupdtype text=' ', confdeltype text=' ', "
        "confmatchtype text=' ', conislocal bool=true, coninhcount int4=0, connoinherit bool=true, "
        "conkey int2[], confkey int2[], conpfeqop int8[], conppeqop int8[], conffeqop int8[], "
        "confdelsetcols int2[], conexclop int8[], conbin text"
    ),
    "pg_am": "oid int8, amname text, amhandler text, amtype text",
    "pg_description": "objoid int8, classoid int8, objsubid int4, description text",
    "pg_shdescription": "objoid int8, classoid int8, description text",
    "pg_inherits": "inhrelid int8, inhparent int8, inhseqno int4, inhdetachpending bool",
    "pg_database": (
        "oid int8, datname text, datdba int8=10, encoding int4=6, datlocprovider text='c', "
        "datistemplate bool=false, datallowconn bool=true, datconnlimit int4=-1, datfrozenxid int8=0, "
        "datminmxid int8=1, dattablespace int8=1663, datcollate text='C.UTF-8', datctype text='C.UTF-8', "
        "daticulocale text, datcollversion text, datacl text[]"
    ),
    "pg_roles": (
        "oid int8, rolname text, rolsuper bool=true, rolinherit bool=true, rolcreaterole bool=true, "
        "rolcreatedb bool=true, rolcanlogin bool=true, rolreplication bool=true, rolconnlimit int4=-1, "
        "rolpassword text='********', rolvaliduntil timestamptz, rolbypassrls bool=true, rolconfig text[]"
    ),
    "pg_user": (
        "usename text, usesysid int8=10, usecreatedb bool=true, usesuper bool=true, userepl bool=true, "
        "usebypassrls bool=true, passwd text='********', valuntil timestamptz, useconfig text[]"
    ),
    "pg_auth_members": "oid int8, roleid int8, member int8, grantor int8, admin_option bool",
    "pg_settings": (
        "name text, setting text, unit text, category text='Client Connection Defaults', short_desc text='', "
        "extra_desc text, context text='user', vartype text='string', source text='default', min_val text, "
        "max_val text, enumvals text[], boot_val text, reset_val text, sourcefile text, sourceline int4, "
        "pending_restart bool=false"
    ),
    "pg_proc": (
        "oid int8, proname text, pronamespace int8, proowner int8, prolang int8, procost float4, "
        "prorows float4, provariadic int8, prosupport text, prokind text, prosecdef bool, proleakproof bool, "
        "proisstrict bool, proretset bool, provolatile text, proparallel text, pronargs int2, "
        "pronargdefaults int2, prorettype int8, proargtypes int8[], proallargtypes int8[], proargmodes text[], "
        "proargnames text[], proargdefaults text, protrftypes int8[], prosrc text, probin text, "
        "prosqlbody text, proconfig text[], proacl text[]"
    ),
    "pg_attrdef": "oid int8, adrelid int8, adnum int2, adbin text",
    "pg_collation": (
        "oid int8, collname text, collnamespace int8=11, collowner int8=10, collprovider text='c', "
        "collisdeterministic bool=true, collencoding int4=-1, collcollate text, collctype text, "
        "colliculocale text, collversion text"
    ),
    "pg_policy": (
        "oid int8, polname text, polrelid int8, polcmd text, polpermissive bool, polroles int8[], "
        "polqual text, polwithcheck text"
    ),
    "pg_statistic_ext": (
        "oid int8, stxrelid int8, stxname text, stxnamespace int8, stxowner int8, stxstattarget int4, "
        "stxkeys int2[], stxkind text[], stxexprs text"
    ),
    "pg_publication": (
        "oid int8, pubname text, pubowner int8, puballtables bool, pubinsert bool, pubupdate bool, "
        "pubdelete bool, pubtruncate bool, pubviaroot bool"
    ),
    "pg_publication_rel": "oid int8, prpubid int8, prrelid int8, prqual text, prattrs int2[]",
    "pg_publication_namespace": "oid int8, pnpubid int8, pnnspid int8",
    "pg_rewrite": (
        "oid int8, rulename text, ev_class int8, ev_type text, ev_enabled text, is_instead bool, "
        "ev_qual text, ev_action text"
    ),
    "pg_trigger": (
        "oid int8, tgrelid int8, tgparentid int8, tgname text, tgfoid int8, tgtype int2, tgenabled text, "
        "tgisinternal bool, tgconstrrelid int8, tgconstrindid int8, tgconstraint int8, tgdeferrable bool, "
        "tginitdeferred bool, tgnargs int2, tgattr int2[], tgargs text, tgqual text, tgoldtable text, "
        "tgnewtable text"
    ),
    "pg_sequence": (
        "seqrelid int8, seqtypid int8, seqstart int8, seqincrement int8, seqmax int8, seqmin int8, "
        "seqcache int8, seqcycle bool"
    ),
    "pg_opclass": (
        "oid int8, opcmethod int8, opcname text, opcnamespace int8, opcowner int8, opcfamily int8, "
        "opcintype int8, opcdefault bool, opckeytype int8"
    ),
    "pg_enum": "oid int8, enumtypid int8, enumsortorder float4, enumlabel text",
    "pg_range": "rngtypid int8, rngsubtype int8, rngmultitypid int8, rngcollation int8",
    "pg_depend": (
        "classid int8, objid int8, objsubid int4, refclassid int8, refobjid int8, refobjsubid int4, deptype text"
    ),
    "pg_extension": (
        "oid int8, extname text, extowner int8, extnamespace int8, extrelocatable bool, extversion text, "
        "extconfig int8[], extcondition text[]"
    ),
    "pg_foreign_table": "ftrelid int8, ftserver int8, ftoptions text[]",
    "pg_partitioned_table": "partrelid int8, partstrat text, partnatts int2, partdefid int8, partattrs int2[]",
    "pg_event_trigger": "oid int8, evtname text, evtevent text, evtowner int8, evtfoid int8, evtenabled text",
    "pg_tablespace": "oid int8, spcname text, spcowner int8=10, spcacl text[], spcoptions text[]",
    "pg_tables": (
        "schemaname text='public', tablename text, tableowner text, tablespace text, hasindexes bool, "
        "hasrules bool=false, hastriggers bool=false, rowsecurity bool=false"
    ),
    "pg_views": "schemaname text, viewname text, viewowner text, definition text",
    "pg_matviews": (
        "schemaname text='public', matviewname text, matviewowner text, tablespace text, "
        "hasindexes bool=false, ispopulated bool=true, definition text"
    ),
    "pg_indexes": "schemaname text='public', tablename text, indexname text, tablespace text, indexdef text",
    "pg_stat_activity": (
        "datid int8, datname text, pid int4, usesysid int8, usename text, application_name text, "
        "client_addr text, state text, query text"
    ),
}

_INFORMATION_SCHEMA = {
    "schemata": (
        "catalog_name text, schema_name text, schema_owner text, default_character_set_catalog text, "
        "default_character_set_schema text, default_character_set_name text, sql_path text"
    ),
    "tables": (
        "table_catalog text, table_schema text='public', table_name text, table_type text, "
        "self_referencing_column_name text, reference_generation text, user_defined_type_catalog text, "
        "user_defined_type_schema text, user_defined_type_name text, is_insertable_into text='YES', "
        "is_typed text='NO', commit_action text"
    ),
    "columns": (
        "table_catalog text, table_schema text='public', table_name text, column_name text, "
        "ordinal_position int4, column_default text, is_nullable text, data_type text, "
        "character_maximum_length int4, character_octet_length int4, numeric_precision int4, "
        "numeric_precision_radix int4, numeric_scale int4, datetime_precision int4, interval_type text, "
        "interval_precision int4, character_set_catalog text, character_set_schema text, "
        "character_set_name text, collation_catalog text, collation_schema text, collation_name text, "
        "domain_catalog text, domain_schema text, domain_name text, udt_catalog text, "
        "udt_schema text='pg_catalog', udt_name text, scope_catalog text, scope_schema text, scope_name text, "
        "maximum_cardinality int4, dtd_identifier text, is_self_referencing text='NO', is_identity text='NO', "
        "identity_generation text, identity_start text, identity_increment text, identity_maximum text, "
        "identity_minimum text, identity_cycle text='NO', is_generated text='NEVER', generation_expression text, "
        "is_updatable text='YES'"
    ),
    "views": (
        "table_catalog text, table_schema text, table_name text, view_definition text, check_option text, "
        "is_updatable text, is_insertable_into text, is_trigger_updatable text, is_trigger_deletable text, "
        "is_trigger_insertable_into text"
    ),
    "table_constraints": (
        "constraint_catalog text, constraint_schema text='public', constraint_name text, table_catalog text, "
        "table_schema text='public', table_name text, constraint_type text, is_deferrable text='NO', "
        "initially_deferred text='NO', enforced text='YES', nulls_distinct text"
    ),
    "key_column_usage": (
        "constraint_catalog text, constraint_schema text='public', constraint_name text, table_catalog text, "
        "table_schema text='public', table_name text, column_name text, ordinal_position int4, "
        "position_in_unique_constraint int4"
    ),
    "referential_constraints": (
        "constraint_catalog text, constraint_schema text, constraint_name text, "
        "unique_constraint_catalog text, unique_constraint_schema text, unique_constraint_name text, "
        "match_option text, update_rule text, delete_rule text"
    ),
    "routines": "specific_catalog text, specific_schema text, specific_name text, routine_name text",
    "sequences": "sequence_catalog text, sequence_schema text, sequence_name text, data_type text",
}

LAYOUTS: dict[tuple[str, str], _Layout] = {
    **{("pg_catalog", name): _Layout.parse(spec) for name, spec in _PG.items()},
    **{("information_schema", name): _Layout.parse(spec) for name, spec in _INFORMATION_SCHEMA.items()},
}
TABLES = frozenset(LAYOUTS)
# Catalogs that always have no rows here: a query whose every branch joins one is empty.
EMPTY_TABLES = frozenset(
    {
        "pg_description", "pg_shdescription", "pg_inherits", "pg_auth_members", "pg_proc", "pg_attrdef",
        "pg_policy", "pg_statistic_ext", "pg_publication", "pg_publication_rel", "pg_publication_namespace",
        "pg_rewrite", "pg_trigger", "pg_sequence", "pg_opclass", "pg_enum", "pg_range", "pg_depend",
        "pg_extension", "pg_foreign_table", "pg_partitioned_table", "pg_event_trigger", "pg_views",
        "views", "referential_constraints", "routines", "sequences",
    }
)  # fmt: skip


def table_name(schema: str, name: str) -> str:
    """The DuckDB name of an emulated catalog table."""
    return f"tg_{schema}_{name}"


# ---- facts derived from the tidegate catalog ----------------------------------------


@dataclass(frozen=True)
class CatalogFacts:
    """Everything the emulation shows, taken from one session at one moment."""

    user: str
    database: str
    server_version: str
    settings: tuple[tuple[str, str], ...]
    relations: tuple[Relation, ...]

    def fingerprint(self) -> tuple[Any, ...]:
        return (
            self.user,
            self.database,
            self.server_version,
            self.settings,
            tuple(
                (
                    r.id,
                    r.name,
                    r.kind,
                    tuple(r.columns),
                    tuple(r.pk),
                    r.user_pk,
                    r.definition,
                )
                for r in self.relations
            ),
        )


def type_info(sql_type: SqlType) -> _TypeInfo:
    return TYPES[sql_type.pg_oid]


def _has_index(relation: Relation) -> bool:
    return (
        relation.kind == RelationKind.TABLE
        and relation.user_pk
        and bool(relation.pk)
        and all(not relation.columns[i].hidden for i in relation.pk)
    )


def _attnums(relation: Relation) -> dict[int, int]:
    """Position in ``columns`` → attnum (1-based, visible columns only)."""
    numbers: dict[int, int] = {}
    for index, column in enumerate(relation.columns):
        if not column.hidden:
            numbers[index] = len(numbers) + 1
    return numbers


def _not_null(relation: Relation, index: int) -> bool:
    return not relation.columns[index].nullable or (_has_index(relation) and index in relation.pk)


def view_definition(relation: Relation) -> str:
    """pg_get_viewdef's text: the query, one leading space, ending with ';'."""
    text = relation.definition.strip().rstrip(";").strip()
    upper = text.upper()
    if upper.startswith("CREATE"):
        position = upper.find(" AS ")
        if position >= 0:
            text = text[position + 4 :].strip()
    return f" {text};"


def _rows(facts: CatalogFacts) -> dict[tuple[str, str], list[dict[str, Any]]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in LAYOUTS}

    def add(schema: str, table: str, /, **values: Any) -> None:
        rows[(schema, table)].append(values)

    user, database = facts.user, facts.database
    for oid, name in ((NAMESPACE_PG_CATALOG, "pg_catalog"), (NAMESPACE_PUBLIC, "public"),
                      (NAMESPACE_INFORMATION_SCHEMA, "information_schema")):  # fmt: skip
        add("pg_catalog", "pg_namespace", oid=oid, nspname=name)
        add("information_schema", "schemata", catalog_name=database, schema_name=name, schema_owner=user)
    for t in TYPES.values():
        add("pg_catalog", "pg_type", oid=t.oid, typname=t.typname, typlen=t.typlen,
            typbyval=t.typlen in (1, 2, 4, 8), typcategory=t.category, typalign=t.align, typstorage=t.storage,
            typarray=t.array_oid, typelem=ARRAY_ELEMENT.get(t.oid, 0) if t.category == "A" else 0,
            typcollation=DEFAULT_COLLATION if t.collatable else 0, typinput=f"{t.typname}in",
            typoutput=f"{t.typname}out")  # fmt: skip
    add("pg_catalog", "pg_am", oid=HEAP_AM, amname="heap", amhandler="heap_tableam_handler", amtype="t")
    add("pg_catalog", "pg_am", oid=BTREE_AM, amname="btree", amhandler="bthandler", amtype="i")
    add("pg_catalog", "pg_database", oid=DATABASE_OID, datname=database)
    add("pg_catalog", "pg_roles", oid=USER_OID, rolname=user)
    add("pg_catalog", "pg_user", usename=user)
    add("pg_catalog", "pg_collation", oid=DEFAULT_COLLATION, collname="default", collprovider="d")
    add("pg_catalog", "pg_collation", oid=950, collname="C", collcollate="C", collctype="C")
    add("pg_catalog", "pg_tablespace", oid=1663, spcname="pg_default")
    add("pg_catalog", "pg_tablespace", oid=1664, spcname="pg_global")
    for name, value in facts.settings:
        add("pg_catalog", "pg_settings", name=name, setting=value, boot_val=value, reset_val=value)
    for relation in facts.relations:
        _relation_rows(relation, facts, add)
    return rows


def _relation_rows(relation: Relation, facts: CatalogFacts, add: Any) -> None:
    is_table = relation.kind == RelationKind.TABLE
    numbers = _attnums(relation)
    has_index = _has_index(relation)
    add("pg_catalog", "pg_class", oid=relation.id, relname=relation.name, relkind=relation.kind.pg_relkind,
        relam=HEAP_AM, relnatts=len(numbers), relhasindex=has_index)  # fmt: skip
    for index, number in numbers.items():
        column = relation.columns[index]
        info = type_info(column.type)
        not_null = _not_null(relation, index)
        add("pg_catalog", "pg_attribute", attrelid=relation.id, attname=column.name, atttypid=info.oid,
            attlen=info.typlen, attnum=number, atttypmod=column.type.pg_typmod,
            attbyval=info.typlen in (1, 2, 4, 8), attalign=info.align, attstorage=info.storage,
            attnotnull=not_null, attcollation=DEFAULT_COLLATION if info.collatable else 0)  # fmt: skip
        if is_table:
            add("information_schema", "columns", table_catalog=facts.database, table_name=relation.name,
                column_name=column.name, ordinal_position=number, is_nullable="NO" if not_null else "YES",
                udt_catalog=facts.database, udt_name=info.typname, dtd_identifier=str(number),
                **_information_schema_type(column.type, info))  # fmt: skip
    if is_table:
        add("information_schema", "tables", table_catalog=facts.database, table_name=relation.name,
            table_type="BASE TABLE")  # fmt: skip
        add("pg_catalog", "pg_tables", tablename=relation.name, tableowner=facts.user, hasindexes=has_index)
    else:
        add("pg_catalog", "pg_matviews", matviewname=relation.name, matviewowner=facts.user,
            definition=view_definition(relation))  # fmt: skip
    if not has_index:
        return
    index_oid, constraint_oid = INDEX_OID_BASE + relation.id, CONSTRAINT_OID_BASE + relation.id
    index_name = f"{relation.name}_pkey"
    keys = [numbers[i] for i in relation.pk]
    key_names = ", ".join(relation.columns[i].name for i in relation.pk)
    add("pg_catalog", "pg_class", oid=index_oid, relname=index_name, relkind="i", relam=BTREE_AM,
        relnatts=len(keys))  # fmt: skip
    for position, i in enumerate(relation.pk, start=1):
        column = relation.columns[i]
        info = type_info(column.type)
        add("pg_catalog", "pg_attribute", attrelid=index_oid, attname=column.name, atttypid=info.oid,
            attlen=info.typlen, attnum=position, atttypmod=column.type.pg_typmod,
            attbyval=info.typlen in (1, 2, 4, 8), attalign=info.align, attstorage=info.storage,
            attcollation=DEFAULT_COLLATION if info.collatable else 0)  # fmt: skip
    add("pg_catalog", "pg_index", indexrelid=index_oid, indrelid=relation.id, indnatts=len(keys),
        indnkeyatts=len(keys), indkey=keys, indcollation=[0] * len(keys), indclass=[0] * len(keys),
        indoption=[0] * len(keys))  # fmt: skip
    add("pg_catalog", "pg_constraint", oid=constraint_oid, conname=index_name, contype="p",
        conrelid=relation.id, conindid=index_oid, conkey=keys)  # fmt: skip
    definition = f"CREATE UNIQUE INDEX {index_name} ON public.{relation.name} USING btree ({key_names})"
    add("pg_catalog", "pg_indexes", tablename=relation.name, indexname=index_name, indexdef=definition)
    add("information_schema", "table_constraints", constraint_catalog=facts.database,
        constraint_name=index_name, table_catalog=facts.database, table_name=relation.name,
        constraint_type="PRIMARY KEY")  # fmt: skip
    for position, i in enumerate(relation.pk, start=1):
        add("information_schema", "key_column_usage", constraint_catalog=facts.database,
            constraint_name=index_name, table_catalog=facts.database, table_name=relation.name,
            column_name=relation.columns[i].name, ordinal_position=position)  # fmt: skip


def _information_schema_type(sql_type: SqlType, info: _TypeInfo) -> dict[str, Any]:
    values: dict[str, Any] = {"data_type": info.udt_kind or info.format_name}  # an array is "ARRAY"
    if sql_type.kind == "character varying" and sql_type.length is not None:
        values["character_maximum_length"] = sql_type.length
        values["character_octet_length"] = sql_type.length * 4
    elif sql_type.kind in ("character varying", "text"):
        values["character_octet_length"] = 1073741824
    elif sql_type.kind in ("smallint", "integer", "bigint"):
        values.update(numeric_precision=info.typlen * 8, numeric_precision_radix=2, numeric_scale=0)
    elif sql_type.kind in ("real", "double precision"):
        values.update(numeric_precision=24 if info.typlen == 4 else 53, numeric_precision_radix=2)
    elif sql_type.kind == "numeric":
        values.update(numeric_precision=sql_type.precision, numeric_precision_radix=10, numeric_scale=sql_type.scale)
    elif info.category == "D":
        values["datetime_precision"] = 0 if sql_type.kind == "date" else 6
    return values


# ---- macros: PostgreSQL functions ---------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _macros(facts: CatalogFacts) -> list[str]:
    user, database = _quote(facts.user), _quote(facts.database)
    cls, nsp = table_name("pg_catalog", "pg_class"), table_name("pg_catalog", "pg_namespace")
    settings = table_name("pg_catalog", "pg_settings")
    constant: dict[str, tuple[Any, ...]] = {
        "pg_table_is_visible": ("true", 1),
        "pg_type_is_visible": ("true", 1),
        "pg_function_is_visible": ("true", 1),
        "pg_collation_is_visible": ("true", 1),
        "pg_get_userbyid": (user, 1),
        "pg_encoding_to_char": ("'UTF8'", 1),
        "pg_relation_is_publishable": ("false", 1),
        "pg_get_statisticsobjdef_columns": ("NULL::VARCHAR", 1),
        "pg_get_partkeydef": ("NULL::VARCHAR", 1),
        "pg_get_triggerdef": ("NULL::VARCHAR", 1, 2),
        "pg_get_ruledef": ("NULL::VARCHAR", 1, 2),
        "pg_get_expr": ("NULL::VARCHAR", 2, 3),
        "pg_get_serial_sequence": ("NULL::VARCHAR", 2),
        "pg_get_function_identity_arguments": ("NULL::VARCHAR", 1),
        "pg_get_function_result": ("NULL::VARCHAR", 1),
        "pg_get_functiondef": ("NULL::VARCHAR", 1),
        "col_description": ("NULL::VARCHAR", 2),
        "obj_description": ("NULL::VARCHAR", 1, 2),
        "shobj_description": ("NULL::VARCHAR", 2),
        "has_table_privilege": ("true", 1, 2, 3),
        "has_schema_privilege": ("true", 1, 2, 3),
        "has_database_privilege": ("true", 1, 2, 3),
        "has_column_privilege": ("true", 2, 3, 4),
        "has_any_column_privilege": ("true", 1, 2, 3),
        "has_function_privilege": ("true", 1, 2, 3),
        "has_sequence_privilege": ("true", 1, 2, 3),
        "pg_has_role": ("true", 1, 2, 3),
        "pg_is_in_recovery": ("false", 0),
        "pg_backend_pid": ("0", 0),
        "pg_postmaster_start_time": ("current_timestamp", 0),
        "pg_total_relation_size": ("0::BIGINT", 1),
        "pg_relation_size": ("0::BIGINT", 1, 2),
        "pg_table_size": ("0::BIGINT", 1),
        "pg_indexes_size": ("0::BIGINT", 1),
        "inet_server_addr": ("NULL::VARCHAR", 0),
        "inet_server_port": ("NULL::INTEGER", 0),
        "current_setting": (f"(SELECT s.setting FROM {settings} s WHERE lower(s.name) = lower(a))", 1, 2),
        "txid_current": ("1::BIGINT", 0),
        "pg_current_xact_id": ("1::BIGINT", 0),
    }
    args = ["a", "b", "c", "d"]
    statements = []
    for name, (body, *arities) in constant.items():
        overloads = ", ".join(f"({', '.join(args[: int(n)])}) AS {body}" for n in arities)
        statements.append(f"CREATE MACRO tg_{name}{overloads}")
    format_type = (
        "CASE WHEN a IS NULL THEN NULL "
        "WHEN a = 1700 AND b >= 4 THEN 'numeric(' || ((b - 4) // 65536) || ',' || ((b - 4) % 65536) || ')' "
        "WHEN a = 1043 AND b >= 4 THEN 'character varying(' || (b - 4) || ')' "
        "WHEN a = 1231 AND b >= 4 THEN 'numeric(' || ((b - 4) // 65536) || ',' || ((b - 4) % 65536) || ')[]' "
        "WHEN a = 1015 AND b >= 4 THEN 'character varying(' || (b - 4) || ')[]' "
        "WHEN a = 1042 AND b >= 4 THEN 'character(' || (b - 4) || ')' "
        "ELSE coalesce((SELECT f.format_name FROM tg_format_names f WHERE f.oid = a), '???') END"
    )
    statements += [
        f"CREATE MACRO tg_format_type(a, b) AS {format_type}",
        "CREATE MACRO tg_pg_get_indexdef(a) AS (SELECT d.def FROM tg_index_defs d WHERE d.oid = a AND d.col = 0),"
        " (a, b, c) AS (SELECT d.def FROM tg_index_defs d WHERE d.oid = a AND d.col = b)",
        "CREATE MACRO tg_pg_get_constraintdef(a) AS (SELECT d.def FROM tg_constraint_defs d WHERE d.oid = a),"
        " (a, b) AS (SELECT d.def FROM tg_constraint_defs d WHERE d.oid = a)",
        "CREATE MACRO tg_pg_get_viewdef(a) AS "
        "(SELECT d.def FROM tg_view_defs d WHERE d.oid = a OR d.name = a::VARCHAR),"
        " (a, b) AS (SELECT d.def FROM tg_view_defs d WHERE d.oid = a OR d.name = a::VARCHAR)",
        f"CREATE MACRO tg_regclass_name(a) AS coalesce((SELECT c.relname FROM {cls} c WHERE c.oid = a), a::VARCHAR)",
        "CREATE MACRO tg_regtype_name(a) AS "
        "coalesce((SELECT f.format_name FROM tg_format_names f WHERE f.oid = a), a::VARCHAR)",
        "CREATE MACRO tg_regnamespace_name(a) AS "
        f"coalesce((SELECT n.nspname FROM {nsp} n WHERE n.oid = a), a::VARCHAR)",
        "CREATE MACRO tg_to_regtype(a) AS (SELECT min(f.oid) FROM tg_format_names f "
        "WHERE f.format_name = lower(a) OR f.typname = lower(a))",
        f"CREATE MACRO tg_to_regclass(a) AS (SELECT min(c.oid) FROM {cls} c WHERE c.relname = a)",
        f"CREATE MACRO tg_current_database() AS {database}",
        "CREATE MACRO tg_array_upper(a, b) AS CASE WHEN len(a) = 0 THEN NULL ELSE len(a) END",
        "CREATE MACRO tg_array_lower(a, b) AS CASE WHEN len(a) = 0 THEN NULL ELSE 1 END",
        "CREATE MACRO tg_quote_ident(a) AS CASE WHEN regexp_full_match(a, '[a-z_][a-z0-9_$]*') THEN a "
        "ELSE '\"' || replace(a, '\"', '\"\"') || '\"' END",
        "CREATE MACRO tg_pg_size_pretty(a) AS a::VARCHAR || ' bytes'",
    ]
    return statements


def _definition_tables(facts: CatalogFacts) -> dict[str, pa.Table]:
    formats = pa.table(
        {
            "oid": pa.array([t.oid for t in TYPES.values()], pa.int64()),
            "typname": [t.typname for t in TYPES.values()],
            "format_name": [t.format_name for t in TYPES.values()],
        }
    )
    index_rows: list[tuple[int, int, str]] = []
    constraint_rows: list[tuple[int, str]] = []
    view_rows: list[tuple[int, str, str]] = []
    for relation in facts.relations:
        if relation.kind == RelationKind.MATERIALIZED_VIEW:
            view_rows.append((relation.id, relation.name, view_definition(relation)))
        if not _has_index(relation):
            continue
        names = [relation.columns[i].name for i in relation.pk]
        index_name = f"{relation.name}_pkey"
        index_oid = INDEX_OID_BASE + relation.id
        index_rows.append(
            (
                index_oid,
                0,
                f"CREATE UNIQUE INDEX {index_name} ON public.{relation.name} USING btree ({', '.join(names)})",
            )
        )
        index_rows += [(index_oid, position, name) for position, name in enumerate(names, start=1)]
        constraint_rows.append((CONSTRAINT_OID_BASE + relation.id, f"PRIMARY KEY ({', '.join(names)})"))
    return {
        "tg_format_names": formats,
        "tg_index_defs": pa.table(
            {
                "oid": pa.array([r[0] for r in index_rows], pa.int64()),
                "col": pa.array([r[1] for r in index_rows], pa.int64()),
                "def": pa.array([r[2] for r in index_rows], pa.string()),
            }
        ),
        "tg_constraint_defs": pa.table(
            {
                "oid": pa.array([r[0] for r in constraint_rows], pa.int64()),
                "def": pa.array([r[1] for r in constraint_rows], pa.string()),
            }
        ),
        "tg_view_defs": pa.table(
            {
                "oid": pa.array([r[0] for r in view_rows], pa.int64()),
                "name": pa.array([r[1] for r in view_rows], pa.string()),
                "def": pa.array([r[2] for r in view_rows], pa.string()),
            }
        ),
    }


def build_catalog_connection(facts: CatalogFacts) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB holding the emulated catalogs of ``facts``."""
    connection = duckdb.connect(":memory:")
    for (schema, name), rows in _rows(facts).items():
        connection.register(f"{table_name(schema, name)}_arrow", LAYOUTS[(schema, name)].table(rows))
        # A real table (not a view over Arrow) so that macros and joins see one stable object.
        connection.execute(f"CREATE TABLE {table_name(schema, name)} AS SELECT * FROM {table_name(schema, name)}_arrow")
        connection.unregister(f"{table_name(schema, name)}_arrow")
    for name, table in _definition_tables(facts).items():
        connection.register(f"{name}_arrow", table)
        connection.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
        connection.unregister(f"{name}_arrow")
    for statement in _macros(facts):
        connection.execute(statement)
    return connection
