"""Filter: keeps the rows whose condition is true (not false, not NULL).

An update pair whose halves fall on different sides of the condition becomes a
lone delete (the old row passed) or a lone insert (the new row passes), so the
output still alternates inserts and deletes per key (DESIGN §11). Watermarks
pass unchanged: dropping rows never brings back a later one below them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.stream.evaluator import Evaluator
from tidegate.stream.messages import Message
from tidegate.stream.operator import Operator


class Filter(Operator):
    name = "filter"

    def __init__(self, input: Operator, condition: str) -> None:
        self.input = input
        self.condition = condition
        self.schema = input.schema
        self._evaluator = Evaluator()

    async def execute(self) -> AsyncIterator[Message]:
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                out = self.apply(message)
                if out is not None:
                    yield out
            else:
                yield message

    def apply(self, chunk: Chunk) -> Chunk | None:
        if len(chunk) == 0:
            return None
        result = self._evaluator.select(chunk.data, f"coalesce(({self.condition}), false)")
        mask = result.column(0).to_numpy(zero_copy_only=False).astype(bool)
        if mask.all():
            return chunk
        if not mask.any():
            return None
        ops = chunk.ops.to_numpy(zero_copy_only=False).copy()
        fix_split_updates(ops, mask)
        keep = pa.array(mask)
        return Chunk(pa.array(ops[mask], pa.int8()), chunk.data.filter(keep))


def fix_split_updates(ops: np.ndarray, mask: np.ndarray) -> None:
    """Rewrite ops in place where a mask keeps one half of an update pair only."""
    # A pair is never split across chunks; a trailing UPDATE_DELETE would be a producer bug.
    deletes = np.flatnonzero(ops == Op.UPDATE_DELETE)
    assert deletes.size == 0 or deletes[-1] + 1 < len(ops), "update pair split across chunks"
    if deletes.size == 0:
        return
    inserts = deletes + 1
    kept_old, kept_new = mask[deletes], mask[inserts]
    ops[deletes[kept_old & ~kept_new]] = Op.DELETE
    ops[inserts[kept_new & ~kept_old]] = Op.INSERT
