"""Binding of the DDL that connects tidegate to external systems (DESIGN §7).

- ``CREATE SOURCE s (cols…) WITH (connector = 'kafka' | 'file', …) FORMAT PLAIN ENCODE JSON | CSV``:
  a source relation with the declared columns and a hidden ``_row_id`` (the record's position,
  the same on every replay); every job reading it runs the connector with its own offsets.
- ``CREATE TABLE t (cols…) WITH (connector = …) FORMAT … ENCODE …``: a table whose rows come from
  the connector, not from INSERT: its job reads the connector and materializes what it reads.
- ``CREATE SINK s FROM relation | AS query WITH (connector = …, type = …) [FORMAT … ENCODE …]``: a
  job whose output goes to an external system (``tidegate.connectors.sinks``).

Mistakes fail the statement with a message saying what to write: a missing FORMAT, an unknown
option, an unreachable broker, a missing PostgreSQL table, an upsert sink without a key, an
append-only sink over a query that updates or deletes.
"""

from __future__ import annotations

from sqlglot import exp

from tidegate.common.guarantee import parse_delivery_guarantee
from tidegate.connectors.sink_target import SinkSpec
from tidegate.errors import (
    FeatureNotSupported,
    InvalidParameterValue,
    UndefinedRelation,
)
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind
from tidegate.meta.sink_delivery import sink_spec
from tidegate.sql.ddl import declared_source_columns, source_relation
from tidegate.sql.dialect import (
    APPEND_ONLY,
    CreateSink,
    CreateSource,
    FormatEncode,
    emits_on_window_close,
    format_encode_of,
    parse_sql,
)
from tidegate.sql.plan_from import source_plan
from tidegate.sql.planner import plan_materialized_view

READER_CONNECTORS = ("kafka", "file")
SINK_TYPES = ("append-only", "upsert")
GUARANTEE_OPTION = "delivery_guarantee"


def job_guarantee(options: dict[str, str], default: str) -> str:
    """The guarantee a new job runs with: its ``delivery_guarantee`` option, else the system's."""
    return parse_delivery_guarantee(options.pop(GUARANTEE_OPTION, default)).value


def bind_reader_source(create: CreateSource, relation_id: int, sql: str, options: dict[str, str]) -> Relation:
    """A Kafka or file source: the declared columns, checked options, and a hidden ``_row_id``."""
    declared = declared_source_columns(create, options["connector"])
    check_reader_options(options, [ColumnDef(name, sql_type) for name, sql_type in declared])
    return source_relation(create, relation_id, sql, options, declared)


def bind_connector_table(table: Relation, create: exp.Create, sql: str, default_guarantee: str) -> Relation:
    """A table fed by a connector: ``table`` (bound as a plain table) gets the connector's options,
    and a plan that reads them. Such a table only ever gets the connector's rows: it is append-only."""
    options = _with_options(create)
    fe = format_encode_of(create)
    if fe is not None:
        options.update({"format": fe.format, "encode": fe.encode, **dict(fe.options)})
    connector = options["connector"].strip().lower()
    if connector not in READER_CONNECTORS:
        raise FeatureNotSupported(f"a table can be fed by connector 'kafka' or 'file', not '{connector}'")
    options["connector"] = connector
    if table.user_pk:
        raise FeatureNotSupported(
            "a table fed by a connector cannot have a PRIMARY KEY yet: it keeps every record it reads",
            hint="Leave out PRIMARY KEY, and aggregate or deduplicate in a materialized view over the table.",
        )
    guarantee = job_guarantee(options, default_guarantee)
    declared = [c for c in table.columns if not c.hidden]
    check_reader_options(options, declared)
    table.options = options
    table.append_only = True
    table.guarantee = guarantee
    table.definition = sql
    table.plan = {"stream": source_plan(table)}
    return table


def _with_options(create: exp.Create) -> dict[str, str]:
    """A CREATE TABLE's or CREATE MATERIALIZED VIEW's ``WITH (key = 'value', …)``: keys lower-cased
    (dotted ones too: ``properties.bootstrap.server``), values as written."""
    properties = create.args.get("properties")
    options: dict[str, str] = {}
    for prop in properties.expressions if properties is not None else []:
        name = prop.this
        if type(prop) is not exp.Property or name is None:
            continue  # MATERIALIZED and the like: not options
        key = (name.sql() if isinstance(name, exp.Dot | exp.Column) else name.name).lower()
        if key == APPEND_ONLY.lower():
            continue  # the APPEND ONLY clause
        if key in options:
            raise InvalidParameterValue(f'option "{key}" specified more than once')
        value = prop.args.get("value")
        if isinstance(value, exp.Literal | exp.Var | exp.Identifier):
            options[key] = value.name
        elif value is not None:
            options[key] = value.sql()
    return options


def view_guarantee(create: exp.Create, default: str) -> str:
    """A materialized view's guarantee: ``WITH (delivery_guarantee = …)``, else the system's."""
    options = _with_options(create)
    unknown = sorted(set(options) - {GUARANTEE_OPTION})
    if unknown:
        raise InvalidParameterValue(
            f'option "{unknown[0]}" is not an option of a materialized view (its only option is {GUARANTEE_OPTION})'
        )
    return job_guarantee(options, default)


def table_connector(create: exp.Create) -> str | None:
    """The connector a CREATE TABLE's WITH options name, if any."""
    return _with_options(create).get("connector")


def check_reader_options(options: dict[str, str], columns: list[ColumnDef]) -> None:
    """The connector's options, the format, and that the connector can be reached (fails the statement)."""
    connector = options["connector"]
    if options.get("format", "").upper() != "PLAIN" or options.get("encode", "").upper() not in ("JSON", "CSV"):
        raise InvalidParameterValue(
            f"a {connector} source needs FORMAT PLAIN ENCODE JSON or FORMAT PLAIN ENCODE CSV after its WITH (…)"
        )
    options["encode"] = options["encode"].upper()
    options["format"] = "PLAIN"
    from tidegate.connectors.record_decode import RecordDecoder

    RecordDecoder(options["encode"], [c.name for c in columns], [c.type for c in columns], options)
    if connector == "kafka":
        from tidegate.connectors.kafka_options import check_kafka_source, parse_kafka_source_options

        check_kafka_source(parse_kafka_source_options(options))
    else:
        from tidegate.connectors.file_options import check_file_source, parse_file_source_options

        check_file_source(parse_file_source_options(options))


# ---- sinks ---------------------------------------------------------------------------------------


def bind_create_sink(
    create: CreateSink, catalog: Catalog, relation_id: int, sql: str, default_guarantee: str
) -> tuple[Relation, SinkSpec]:
    """The sink's relation (its plan, columns and normalized options) and the spec its target gets."""
    options = dict(create.options)
    if "connector" not in options:
        raise InvalidParameterValue("a sink needs the option connector: 'postgres', 'kafka', 'file' or 'blackhole'")
    options["connector"] = options["connector"].strip().lower()
    guarantee = job_guarantee(options, default_guarantee)
    fe = create.format_encode
    sink_type = _sink_type(options, fe)
    if create.from_name is not None:
        upstream = catalog.get(create.from_name)
        if upstream is None:
            raise UndefinedRelation(f'relation "{create.from_name}" does not exist')
        select = exp.select("*").from_(exp.to_table(create.from_name, quoted=True))
    else:
        assert create.query is not None
        parsed = parse_sql(create.query)
        if not isinstance(parsed, exp.Query):
            raise InvalidParameterValue("CREATE SINK … AS needs a query: AS SELECT …")
        select = parsed  # type: ignore[assignment]
    view = plan_materialized_view(select, catalog, emit_on_window_close=emits_on_window_close(select))
    visible = [c for c in view.columns if not c.hidden]
    key = _sink_key(options, view.columns, view.pk, visible)
    if fe is not None:
        options.update({"format": fe.format, "encode": fe.encode, **dict(fe.options)})
    options["type"] = sink_type
    options["primary_key"] = ",".join(visible[i].name for i in key)
    relation = Relation(
        id=relation_id,
        name=create.name,
        kind=RelationKind.SINK,
        columns=view.columns,
        pk=view.pk,
        definition=sql,
        dependencies=view.dependencies,
        plan=view.plan,
        options=options,
        append_only=view.append_only,
        guarantee=guarantee,
    )
    spec = sink_spec(relation)
    from tidegate.connectors.sinks import check_sink_options

    if sink_type == "upsert" and not key:
        raise InvalidParameterValue(
            "an upsert sink needs a primary key, and its query's key is not among its output columns",
            hint="Name the key columns: WITH (…, primary_key = 'col1, col2').",
        )
    # The connector's own options before the query's shape: a misspelt one is the first thing to fix.
    check_sink_options(spec)
    force_append_only = options.get("force_append_only", "false").strip().lower() == "true"
    if sink_type == "append-only" and not view.append_only and not force_append_only:
        raise InvalidParameterValue(
            "the sink's query can update or delete rows, which an append-only sink cannot deliver",
            hint="Use type = 'upsert' with a primary key, or force_append_only = 'true' to deliver inserts only.",
        )
    return relation, spec


def _sink_type(options: dict[str, str], fe: FormatEncode | None) -> str:
    default = "upsert" if fe is not None and fe.format == "UPSERT" else "append-only"
    sink_type = options.get("type", default).strip().lower().replace("_", "-")
    if sink_type not in SINK_TYPES:
        raise InvalidParameterValue(f"type = '{options['type']}' is not a sink type: use 'append-only' or 'upsert'")
    if fe is not None and fe.format == "UPSERT" and sink_type != "upsert":
        raise InvalidParameterValue("FORMAT UPSERT needs type = 'upsert'")
    return sink_type


def _sink_key(options: dict[str, str], columns: list[ColumnDef], pk: list[int], visible: list[ColumnDef]) -> list[int]:
    """Indices into ``visible`` of the sink's key: the ``primary_key`` option, else the query's key
    when every column of it is visible (a GROUP BY's keys, a table's PRIMARY KEY)."""
    names = [c.name for c in visible]
    given = options.get("primary_key")
    if given:
        key = []
        for name in (part.strip() for part in given.split(",")):
            folded = name[1:-1] if name.startswith('"') else name.lower()
            if folded not in names:
                raise InvalidParameterValue(
                    f'primary_key names "{name}", which is not a column of the sink\'s output ({", ".join(names)})'
                )
            key.append(names.index(folded))
        return key
    derived: list[int] = []
    for index in pk:
        column = columns[index]
        if column.hidden or column.name not in names:
            derived = []
            break
        derived.append(names.index(column.name))
    return derived
