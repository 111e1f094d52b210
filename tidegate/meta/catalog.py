"""The catalog: every relation a user declared, with its columns and its plan.

The catalog is owned by meta. The frontend reads it to bind SQL, the pgwire
layer reads it to answer ``pg_catalog`` queries, and the meta store persists it
(one row per relation) so a restart rebuilds every streaming job from it.

Invariants: relation names are unique (case-folded as PostgreSQL folds unquoted
identifiers); ``dependencies`` names only relations that exist; a relation is
dropped only after every relation depending on it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tidegate.common.types import SqlType, parse_type_name, type_text


class RelationKind(StrEnum):
    TABLE = "table"
    MATERIALIZED_VIEW = "materialized view"
    # No storage and no job: every view reading it runs the connector itself.
    SOURCE = "source"
    # No storage readable by SELECT: a job whose output goes to an external system (its options).
    SINK = "sink"

    @property
    def pg_relkind(self) -> str:
        # A source is shown as PostgreSQL shows a foreign table; sinks are not listed in pg_class.
        assert self is not RelationKind.SINK, "sinks have no pg_class row"
        return {"table": "r", "materialized view": "m", "source": "f"}[self.value]


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: SqlType
    nullable: bool = True
    # Hidden columns (a table's ``_row_id``, a view's stream key) are stored but
    # not shown by ``SELECT *`` or ``\d``.
    hidden: bool = False


@dataclass(frozen=True)
class WatermarkDef:
    """``WATERMARK FOR column AS column - INTERVAL delay`` of a table or source."""

    column: str
    delay_us: int


@dataclass
class Relation:
    id: int
    name: str
    kind: RelationKind
    columns: list[ColumnDef]
    # Indices into ``columns`` of the key that identifies a row in storage.
    pk: list[int]
    # True when the user declared PRIMARY KEY (a table) rather than tidegate choosing a key.
    user_pk: bool = False
    definition: str = ""
    dependencies: list[int] = field(default_factory=list)
    # The stream plan, serialized by ``tidegate.sql.plan``; empty for tables.
    plan: dict[str, Any] = field(default_factory=dict)
    # The WITH options of a source, a sink or a table fed by a connector (connector = 'kafka', …;
    # FORMAT and ENCODE as the keys format and encode); empty otherwise.
    options: dict[str, str] = field(default_factory=dict)
    # The declared watermark of a table or source (docs/design/20261127_watermarks.md).
    watermark: WatermarkDef | None = None
    # A table that only ever gets inserts: APPEND ONLY, or implied by a WATERMARK.
    append_only: bool = False
    # A job's delivery guarantee (tidegate.common.guarantee), fixed when it was created.
    guarantee: str = "exactly_once"

    @property
    def has_job(self) -> bool:
        """Whether the relation runs a streaming job (every kind but a source)."""
        return self.kind is not RelationKind.SOURCE

    @property
    def visible_columns(self) -> list[ColumnDef]:
        return [c for c in self.columns if not c.hidden]

    def column_index(self, name: str) -> int | None:
        for i, column in enumerate(self.columns):
            if column.name == name:
                return i
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "columns": [
                {"name": c.name, "type": _type_to_text(c.type), "nullable": c.nullable, "hidden": c.hidden}
                for c in self.columns
            ],
            "pk": self.pk,
            "user_pk": self.user_pk,
            "definition": self.definition,
            "dependencies": self.dependencies,
            "plan": self.plan,
            "options": self.options,
            "watermark": None
            if self.watermark is None
            else {"column": self.watermark.column, "delay_us": self.watermark.delay_us},
            "append_only": self.append_only,
            "guarantee": self.guarantee,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Relation:
        return Relation(
            id=data["id"],
            name=data["name"],
            kind=RelationKind(data["kind"]),
            columns=[
                ColumnDef(c["name"], parse_type_name(c["type"]), c["nullable"], c["hidden"]) for c in data["columns"]
            ],
            pk=list(data["pk"]),
            user_pk=data["user_pk"],
            definition=data["definition"],
            dependencies=list(data["dependencies"]),
            plan=data["plan"],
            options=dict(data.get("options") or {}),  # absent before sources existed
            # Both absent before watermarks existed.
            watermark=None if not data.get("watermark") else WatermarkDef(**data["watermark"]),
            append_only=bool(data.get("append_only", False)),
            guarantee=data.get("guarantee", "exactly_once"),  # absent before delivery guarantees existed
        )


def _type_to_text(t: SqlType) -> str:
    return type_text(t)  # what parse_type_name reads back, arrays included (integer[])


class Catalog:
    """The in-memory catalog. Thread-safe: sessions read it while DDL changes it."""

    def __init__(self, relations: Iterable[Relation] = ()) -> None:
        self._lock = threading.RLock()
        self._by_name: dict[str, Relation] = {}
        self._by_id: dict[int, Relation] = {}
        for relation in relations:
            self._put(relation)

    def _put(self, relation: Relation) -> None:
        self._by_name[relation.name] = relation
        self._by_id[relation.id] = relation

    def add(self, relation: Relation) -> None:
        with self._lock:
            assert relation.name not in self._by_name, relation.name
            self._put(relation)

    def remove(self, relation_id: int) -> None:
        with self._lock:
            relation = self._by_id.pop(relation_id)
            del self._by_name[relation.name]

    def get(self, name: str) -> Relation | None:
        with self._lock:
            return self._by_name.get(name)

    def by_id(self, relation_id: int) -> Relation:
        with self._lock:
            return self._by_id[relation_id]

    def get_by_id(self, relation_id: int) -> Relation | None:
        with self._lock:
            return self._by_id.get(relation_id)

    def relations(self) -> list[Relation]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda r: r.id)

    def dependents(self, relation_id: int) -> list[Relation]:
        """Relations reading ``relation_id`` directly."""
        with self._lock:
            return [r for r in self._by_id.values() if relation_id in r.dependencies]

    def next_id(self) -> int:
        with self._lock:
            return max(self._by_id, default=1000) + 1
