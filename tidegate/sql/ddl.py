"""Binding of DDL: CREATE TABLE, CREATE SOURCE, CREATE MATERIALIZED VIEW and DROP become catalog changes."""

from __future__ import annotations

from sqlglot import exp

from tidegate.common.sqltext import position_of
from tidegate.common.types import BIGINT, parse_type_name
from tidegate.connectors.nexmark_options import parse_nexmark_options, source_columns
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.errors import (
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
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind
from tidegate.sql.dialect import CreateSource, DropSource
from tidegate.sql.planner import plan_materialized_view


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
    for item in schema.expressions:
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
    )


def bind_create_source(create: CreateSource, relation_id: int, sql: str) -> Relation:
    """A nexmark source: its columns are fixed by the table type; a declared list must name them."""
    options = dict(create.options)
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
    columns = [ColumnDef(name, sql_type) for name, sql_type in fixed]
    # The event number: unique and the same on every replay, so it keys the rows of views.
    columns.append(ColumnDef(ROW_ID_COLUMN, BIGINT, False, hidden=True))
    return Relation(
        id=relation_id,
        name=create.name,
        kind=RelationKind.SOURCE,
        columns=columns,
        pk=[len(columns) - 1],
        definition=sql,
        options=options,
    )


def bind_create_materialized_view(create: exp.Create, catalog: Catalog, relation_id: int, sql: str) -> Relation:
    name = create.this.name
    select = create.args.get("expression")
    if select is None:
        raise SqlError("CREATE MATERIALIZED VIEW needs AS SELECT …")
    view = plan_materialized_view(select, catalog)
    return Relation(
        id=relation_id,
        name=name,
        kind=RelationKind.MATERIALIZED_VIEW,
        columns=view.columns,
        pk=view.pk,
        definition=select.sql("postgres", pretty=True),
        dependencies=view.dependencies,
        plan=view.plan,
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


def _drop_targets(
    catalog: Catalog, names: list[tuple[str, int | None]], expected: RelationKind, if_exists: bool, cascade: bool
) -> list[Relation]:
    ordered: list[Relation] = []
    what = {RelationKind.TABLE: "table", RelationKind.SOURCE: "source"}.get(expected, "materialized view")
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
                    hint=f"materialized view {dependent.name} depends on {relation.kind.value} "
                    f"{relation.name}. Use DROP ... CASCADE to drop the dependent objects too.",
                )
            if all(r.id != dependent.id for r in ordered):
                ordered.append(dependent)
    return ordered


def _drop_word(kind: RelationKind) -> str:
    return {RelationKind.TABLE: "TABLE", RelationKind.SOURCE: "SOURCE"}.get(kind, "MATERIALIZED VIEW")


def _dependents_first(catalog: Catalog, relation: Relation) -> list[Relation]:
    out: list[Relation] = []
    for dependent in catalog.dependents(relation.id):
        for item in _dependents_first(catalog, dependent):
            if all(r.id != item.id for r in out):
                out.append(item)
    out.append(relation)
    return out
