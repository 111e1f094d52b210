"""What the simulation asserts: the oracle, and the invariants of durable state.

Each check returns the problems it found (empty: none), so the harness can name
the seed and the step around them.
"""

from __future__ import annotations

import json

from sim.scenario import Scenario, arrow_rows, describe_difference, expected_views, table_rows
from sim.world import SST_PREFIX, VERSION_KEY, referenced_objects
from tidegate.meta.catalog import Catalog
from tidegate.meta.database import Database
from tidegate.meta.meta_store import MemoryMetaStore
from tidegate.state.object_store import MemoryObjectStore
from tidegate.stream.builder import STATE_TABLE_SHIFT


def oracle_problems(db: Database, scenario: Scenario, epoch: int) -> list[str]:
    """Tables hold exactly the acknowledged rows (committed, and as their writers see them); views equal DuckDB."""
    problems = []
    for table in scenario.tables:
        assert table.relation is not None
        expected = table_rows(table)
        committed = arrow_rows(db.snapshot(table.relation, epoch))
        if committed != expected:
            problems.append(f"table {table.name} at epoch {epoch}: {describe_difference(expected, committed)}")
        latest = arrow_rows(db.writers[table.relation.id].latest())
        if latest != expected:
            problems.append(f"the writer of {table.name} lost track: {describe_difference(expected, latest)}")
    views = [v for v in scenario.views if v.relation is not None]
    expected_by_view = expected_views(scenario.tables, views)
    for view in views:
        assert view.relation is not None
        names = [c.name for c in view.relation.visible_columns]
        actual = arrow_rows(db.snapshot(view.relation, epoch), names)
        if actual != expected_by_view[view.name]:
            difference = describe_difference(expected_by_view[view.name], actual)
            problems.append(f"view {view.name} at epoch {epoch} ({view.query}): {difference}")
    return problems


def referenced_ssts_missing(objects: MemoryObjectStore, meta: MemoryMetaStore) -> list[str]:
    """SSTs the committed version lists that the object store does not have (lost data)."""
    referenced = referenced_objects(meta.get(VERSION_KEY))
    if referenced is None:
        return []
    return sorted(referenced - set(objects.list(SST_PREFIX)))


def orphan_state_tables(meta: MemoryMetaStore, catalog: Catalog) -> list[int]:
    """State tables the committed version keeps whose relation is not in the catalog (state kept for nothing)."""
    text = meta.get(VERSION_KEY)
    if text is None:
        return []
    try:
        table_ids = {int(sst["table_id"]) for sst in json.loads(text)["ssts"]}
    except (ValueError, KeyError, TypeError):
        return []
    relations = {r.id for r in catalog.relations()}
    return sorted(t for t in table_ids if t >> STATE_TABLE_SHIFT not in relations)


def unreferenced_ssts(objects: MemoryObjectStore, meta: MemoryMetaStore) -> list[str]:
    """SSTs that no committed version lists (garbage, which recovery must have collected)."""
    referenced = referenced_objects(meta.get(VERSION_KEY))
    if referenced is None:
        return []
    return sorted(set(objects.list(SST_PREFIX)) - referenced)
