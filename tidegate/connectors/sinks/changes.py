"""The changes a sink delivers, reduced to what a target applies.

Place in the data flow: every ``SinkTarget.deliver``/``write`` receives a changes table
(``OP_FIELD`` then the output columns, in change order). An upsert target needs, per key, only the
last change: an insert or update-insert upserts the row, a delete or update-delete deletes the key.
``last_change_per_key`` finds those rows without per-row Python (a group-by on the key taking the
greatest row index), and keeps them in change order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Op
from tidegate.connectors.sink_target import OP_FIELD

_ROW_INDEX = "__tidegate_row"


def data_columns(changes: pa.Table) -> pa.Table:
    """The output columns, without ``OP_FIELD``."""
    assert changes.column_names[0] == OP_FIELD, changes.column_names
    return changes.drop_columns([OP_FIELD])


def last_change_per_key(changes: pa.Table, key_names: list[str]) -> pa.Table:
    """The last row of ``changes`` for every distinct key, in their original order."""
    assert key_names, "an upsert needs a key"
    if changes.num_rows <= 1:
        return changes
    keyed = changes.select(key_names).append_column(_ROW_INDEX, pa.array(np.arange(changes.num_rows)))
    last = keyed.group_by(key_names, use_threads=False).aggregate([(_ROW_INDEX, "max")])
    if last.num_rows == changes.num_rows:
        return changes
    rows = np.sort(last[f"{_ROW_INDEX}_max"].to_numpy())
    return changes.take(pa.array(rows))


def is_delete(changes: pa.Table) -> pa.ChunkedArray:
    """True for the rows whose change removes its key (DELETE, UPDATE_DELETE)."""
    ops = changes[OP_FIELD]
    return pc.or_(pc.equal(ops, int(Op.DELETE)), pc.equal(ops, int(Op.UPDATE_DELETE)))


def has_deletes(changes: pa.Table) -> bool:
    return bool(changes.num_rows) and bool(pc.any(is_delete(changes)).as_py())
