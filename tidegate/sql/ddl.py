"""Binding of DDL: CREATE TABLE, CREATE SOURCE, CREATE MATERIALIZED VIEW and DROP become catalog changes."""

from __future__ import annotations

from sqlglot import exp

from tidegate.common.epoch import Clock, WallClock
from tidegate.common.sqltext import position_of
from tidegate.common.types import BIGINT, SqlType, parse_type_name
from tidegate.connectors.datagen_options import parse_datagen_options, with_base_times
from tidegate.connectors.nexmark_options import parse_nexmark_options, source_columns
from tidegate.connectors.source_connectors import source_connector
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.errors import (
    DatatypeMismatch,
    DependentObjectsExist,
    DuplicateColumn,
    DuplicateObject,
    FeatureNotSupported,
    InvalidTableDefinition,
    SqlError,
    UndefinedColumn,
    UndefinedRelation,
    WrongObjectType,
)
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind, WatermarkDef
from tidegate.sql.dialect import APPEND_ONLY, CreateSource, DropSink, DropSource, emits_on_window_close
from tidegate.sql.plan_from import interval_micros
from tidegate.sql.planner import plan_materialized_view
from tidegate.sql.scope import ARRAY_KEY_REASON

TIMESTAMP_KINDS = ("timestamp without time zone", "timestamp with time zone")


def check_name_free(catalog: Catalog, name: str, node: exp.Expression) -> None:
    if catalog.get(name) is not None:
        raise DuplicateObject(f'relation "{name}" already exists', position=position_of(node))


def bind_create_table(create: exp.Create, catalog: Catalog, relation_id: int, sql: str) -> Relation:
    schema = create.this
    if not isinstance(schema, exp.Schema):
        raise FeatureNotSupported("CREATE TABLE needs a column list")
    name = schema.this.name
    columns: list[ColumnDef] = []
    pk_names: list[str] = []
    watermarks: list[exp.WatermarkColumnConstraint] = []
    for item in schema.expressions:
        if isinstance(item, exp.WatermarkColumnConstraint):
            watermarks.append(item)
            continue
        if isinstance(item, exp.PrimaryKey):
            if pk_names:
                raise InvalidTableDefinition(f'multiple primary keys for table "{name}" are not allowed')
            pk_names = [e.name for e in item.expressions]
            continue
        if not isinstance(item, exp.ColumnDef):
            raise FeatureNotSupported(f"table constraint {item.sql('postgres')} is not supported")
        column_name = item.name
        if any(c.name == column_name for c in columns):
            raise DuplicateColumn(f'column "{column_name}" specified more than once', position=position_of(item))
        if item.args.get("kind") is None:
            raise SqlError(f'column "{column_name}" needs a type', position=position_of(item))
        sql_type = parse_type_name(item.args["kind"].sql("postgres"))
        nullable = True
        for constraint in item.args.get("constraints") or []:
            kind = constraint.args.get("kind")
            if isinstance(kind, exp.PrimaryKeyColumnConstraint):
                if pk_names:
                    raise InvalidTableDefinition(f'multiple primary keys for table "{name}" are not allowed')
                pk_names = [column_name]
            elif isinstance(kind, exp.NotNullColumnConstraint):
                nullable = bool(kind.args.get("allow_null"))
            else:
                raise FeatureNotSupported(
                    f"column constraint {constraint.sql('postgres')} is not supported",
                    position=position_of(constraint),
                )
        columns.append(ColumnDef(column_name, sql_type, nullable))
    if not columns:
        raise SqlError("a table needs at least one column")
    names = [c.name for c in columns]
    for key in pk_names:
        if key not in names:
            raise UndefinedColumn(f'column "{key}" named in key does not exist')
        if columns[names.index(key)].type.is_array:
            raise FeatureNotSupported(f'primary key column "{key}" is an array: {ARRAY_KEY_REASON}')
    watermark = bind_watermark(watermarks, columns)
    properties = create.args.get("properties")
    declared_append_only = properties is not None and any(
        p.name.upper() == APPEND_ONLY for p in properties.expressions if isinstance(p, exp.Property)
    )
    # A watermark drops late rows, which only an insert can be: such a table is append-only (as RisingWave
    # requires APPEND ONLY for it), and an append-only table has no key an insert could collide with.
    append_only = declared_append_only or watermark is not None
    if append_only and pk_names:
        why = "APPEND ONLY" if declared_append_only else "a WATERMARK (it is append-only)"
        raise FeatureNotSupported(f'table "{name}" with {why} cannot have a primary key')
    if pk_names:
        columns = [ColumnDef(c.name, c.type, False, c.hidden) if c.name in pk_names else c for c in columns]
        pk = [names.index(k) for k in pk_names]
    else:
        columns.append(ColumnDef(ROW_ID_COLUMN, BIGINT, False, hidden=True))
        pk = [len(columns) - 1]
    return Relation(
        id=relation_id,
        name=name,
        kind=RelationKind.TABLE,
        columns=columns,
        pk=pk,
        user_pk=bool(pk_names),
        definition=sql,
        watermark=watermark,
        append_only=append_only,
    )


def bind_watermark(items: list[exp.WatermarkColumnConstraint], columns: list[ColumnDef]) -> WatermarkDef | None:
    """The one ``WATERMARK FOR col AS col [- INTERVAL '…']`` of a table or source, if it has one."""
    if not items:
        return None
    if len(items) > 1:
        raise FeatureNotSupported("a table or source has at most one WATERMARK", position=position_of(items[1]))
    item = items[0]
    target = item.this
    if not isinstance(target, exp.Column) or target.table:
        raise FeatureNotSupported("WATERMARK FOR needs a column of the relation", position=position_of(item))
    name = target.name
    column = next((c for c in columns if c.name == name and not c.hidden), None)
    if column is None:
        raise UndefinedColumn(f'column "{name}" named in WATERMARK does not exist', position=position_of(target))
    if column.type.kind not in TIMESTAMP_KINDS:
        raise DatatypeMismatch(
            f'the WATERMARK column "{name}" must be a timestamp, not {column.type}', position=position_of(target)
        )
    return WatermarkDef(name, _watermark_delay(item.expression, name))


def _watermark_delay(expression: exp.Expression | None, name: str) -> int:
    """The delay of ``col`` (0) or ``col - INTERVAL '…'`` in microseconds; other shapes are refused."""
    node = expression
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column) and node.name == name and not node.table:
        return 0
    if (
        isinstance(node, exp.Sub)
        and isinstance(node.this, exp.Column)
        and node.this.name == name
        and not node.this.table
        and isinstance(node.expression, exp.Interval | exp.Cast)
    ):
        return interval_micros(node.expression, "a watermark's delay", zero_allowed=True)
    shown = expression.sql("postgres") if expression is not None else "nothing"
    raise FeatureNotSupported(
        f"WATERMARK FOR {name} AS {shown} is not supported: write {name} or {name} - INTERVAL '…'",
        position=position_of(expression) if expression is not None else None,
    )


def bind_create_source(create: CreateSource, relation_id: int, sql: str, clock: Clock | None = None) -> Relation:
    """A nexmark source: its columns are fixed by the table type; a declared list must name them.
    A datagen source: its columns are the declared ones (``clock`` fixes the base time of random times)."""
    options = dict(create.options)
    if source_connector(options) == "datagen":
        return _bind_datagen_source(create, relation_id, sql, options, (clock or WallClock()).now_ms())
    parsed = parse_nexmark_options(options)
    fixed = source_columns(parsed)
    if create.columns is not None:
        declared = [name for name, _ in create.columns]
        expected = [name for name, _ in fixed]
        if declared != expected:
            raise InvalidTableDefinition(
                f"the columns of a nexmark {options['nexmark.table.type'].lower()} source are fixed: "
                f"({', '.join(expected)}), got ({', '.join(declared)})",
                hint="Leave out the column list to get them.",
            )
        for _, type_text in create.columns:
            parse_type_name(type_text)  # an unknown type is still an error
    return source_relation(create, relation_id, sql, options, fixed)


def _bind_datagen_source(
    create: CreateSource, relation_id: int, sql: str, options: dict[str, str], now_ms: int
) -> Relation:
    declared = declared_source_columns(create, "datagen")
    # Random times count back from the creation time, stored with the options: a replay, a restart
    # and every view over the source generate the same rows.
    options = with_base_times(options, declared, now_ms)
    parse_datagen_options(options, declared)
    return source_relation(create, relation_id, sql, options, declared)


def declared_source_columns(create: CreateSource, connector: str) -> list[tuple[str, SqlType]]:
    """The column list a datagen, Kafka or file source must declare: names once each, none taken
    by the hidden row number."""
    if not create.columns:
        raise InvalidTableDefinition(
            f"a {connector} source needs a column list: "
            f"CREATE SOURCE {create.name} (id BIGINT, …) WITH (connector = '{connector}', …)"
        )
    declared = [(name, parse_type_name(type_text)) for name, type_text in create.columns]
    seen: set[str] = set()
    for name, _ in declared:
        if name in seen or name == ROW_ID_COLUMN:
            raise DuplicateColumn(
                f'column "{name}" specified more than once'
                if name in seen
                else f'column name "{name}" is taken by the hidden row number of a source'
            )
        seen.add(name)
    return declared


def source_relation(
    create: CreateSource, relation_id: int, sql: str, options: dict[str, str], columns: list[tuple[str, SqlType]]
) -> Relation:
    """A source's relation: ``columns``, its bound watermark, and the hidden row number as its key
    (a nexmark event number, a datagen row number, a Kafka partition and offset, a file and byte
    offset): unique and the same on every replay, so it keys the rows of views."""
    column_defs = [ColumnDef(name, sql_type) for name, sql_type in columns]
    watermark = bind_watermark(list(create.watermarks), column_defs)
    column_defs.append(ColumnDef(ROW_ID_COLUMN, BIGINT, False, hidden=True))
    return Relation(
        id=relation_id,
        name=create.name,
        kind=RelationKind.SOURCE,
        columns=column_defs,
        pk=[len(column_defs) - 1],
        definition=sql,
        options=options,
        watermark=watermark,
    )


def bind_create_materialized_view(create: exp.Create, catalog: Catalog, relation_id: int, sql: str) -> Relation:
    name = create.this.name
    select = create.args.get("expression")
    if select is None:
        raise SqlError("CREATE MATERIALIZED VIEW needs AS SELECT …")
    emit_on_window_close = emits_on_window_close(create)
    view = plan_materialized_view(select, catalog, emit_on_window_close=emit_on_window_close)
    definition = select.sql("postgres", pretty=True)
    return Relation(
        id=relation_id,
        name=name,
        kind=RelationKind.MATERIALIZED_VIEW,
        columns=view.columns,
        pk=view.pk,
        definition=f"{definition}\nEMIT ON WINDOW CLOSE" if emit_on_window_close else definition,
        dependencies=view.dependencies,
        plan=view.plan,
        # Views over it may rely on it (append-only aggregates, top-N, sinks): it only ever inserts.
        append_only=view.append_only,
    )


def bind_drop(drop: exp.Drop, catalog: Catalog) -> list[Relation]:
    """The relations to drop, dependents before what they depend on; [] for IF EXISTS misses."""
    kind = (drop.args.get("kind") or "").upper()
    materialized = bool(drop.args.get("materialized")) or "MATERIALIZED" in drop.sql("postgres").upper()
    expected = RelationKind.MATERIALIZED_VIEW if (kind == "VIEW" and materialized) else None
    if kind == "TABLE":
        expected = RelationKind.TABLE
    if expected is None:
        raise FeatureNotSupported(f"DROP {kind} is not supported")
    cascade = bool(drop.args.get("cascade"))
    targets = drop.args.get("tables") or drop.expressions or [drop.this]
    names = [(target.name, position_of(target)) for target in targets]
    return _drop_targets(catalog, names, expected, bool(drop.args.get("exists")), cascade)


def bind_drop_source(drop: DropSource, catalog: Catalog) -> list[Relation]:
    """Like ``bind_drop``, for DROP SOURCE."""
    names: list[tuple[str, int | None]] = [(name, None) for name in drop.names]
    return _drop_targets(catalog, names, RelationKind.SOURCE, drop.if_exists, drop.cascade)


def bind_drop_sink(drop: DropSink, catalog: Catalog) -> list[Relation]:
    names: list[tuple[str, int | None]] = [(name, None) for name in drop.names]
    return _drop_targets(catalog, names, RelationKind.SINK, drop.if_exists, cascade=False)


def _drop_targets(
    catalog: Catalog, names: list[tuple[str, int | None]], expected: RelationKind, if_exists: bool, cascade: bool
) -> list[Relation]:
    ordered: list[Relation] = []
    what = {RelationKind.TABLE: "table", RelationKind.SOURCE: "source", RelationKind.SINK: "sink"}.get(
        expected, "materialized view"
    )
    for name, position in names:
        relation = catalog.get(name)
        if relation is None:
            if if_exists:
                continue
            raise UndefinedRelation(f'{what} "{name}" does not exist', position=position)
        if relation.kind is not expected:
            article = "an" if what[0] in "aeiou" else "a"
            raise WrongObjectType(
                f'"{relation.name}" is not {article} {what}', hint=f"Use DROP {_drop_word(relation.kind)} to remove it."
            )
        for dependent in _dependents_first(catalog, relation):
            if dependent.id != relation.id and not cascade and dependent not in ordered:
                raise DependentObjectsExist(
                    f"cannot drop {relation.kind.value} {relation.name} because other objects depend on it",
                    hint=f"{dependent.kind.value} {dependent.name} depends on {relation.kind.value} "
                    f"{relation.name}. Use DROP ... CASCADE to drop the dependent objects too.",
                )
            if all(r.id != dependent.id for r in ordered):
                ordered.append(dependent)
    return ordered


def _drop_word(kind: RelationKind) -> str:
    words = {RelationKind.TABLE: "TABLE", RelationKind.SOURCE: "SOURCE", RelationKind.SINK: "SINK"}
    return words.get(kind, "MATERIALIZED VIEW")


def _dependents_first(catalog: Catalog, relation: Relation) -> list[Relation]:
    out: list[Relation] = []
    for dependent in catalog.dependents(relation.id):
        for item in _dependents_first(catalog, dependent):
            if all(r.id != item.id for r in out):
                out.append(item)
    out.append(relation)
    return out
