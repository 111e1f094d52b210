"""HopWindow: ``TUMBLE``/``HOP`` — each row once per time window that holds it.

Place in the data flow: right above the scan of the relation the table
function names; aggregations and joins over windows read its output. Windows
are aligned to the Unix epoch: window ``[s, s + size)`` with ``s`` a multiple
of ``slide``, so a row at time ``t`` falls into the ``size / slide`` windows
starting at ``floor(t / slide) * slide - k * slide`` for ``k = 0 … n-1``.
TUMBLE is the case ``slide = size``: one window per row.

Each input chunk becomes ``n`` copies of itself with ``window_start`` and
``window_end`` appended, computed with numpy over the whole column. A row
whose time is NULL belongs to no window and is dropped (its retraction is
dropped alike). Updates leave as a delete and an insert: the two halves of an
update may belong to different windows, that is, to different stream keys.

Watermarks: every input column's go on unchanged. One on the time column also
bounds the windows of every later row: a row at ``t >= wm`` starts its first
window at ``floor(t / slide) * slide - (size - slide) >= floor(wm / slide) *
slide - (size - slide)``, which is the watermark of ``window_start`` (and that
plus ``size`` of ``window_end``). They are emitted when they grow, once per slide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.stream.messages import Message, Watermark
from tidegate.stream.operator import Operator


class HopWindow(Operator):
    name = "hop_window"

    def __init__(self, input: Operator, time_column: int, slide_us: int, size_us: int, schema: pa.Schema) -> None:
        assert size_us % slide_us == 0, (size_us, slide_us)
        self.input = input
        self.time_column = time_column
        self.schema = schema
        time_type = input.schema.field(time_column).type
        assert pa.types.is_timestamp(time_type), time_type
        self.time_type = time_type
        # Window bounds in the column's own unit, so no value is rescaled.
        self.slide, self.size = (_in_unit(us, time_type.unit) for us in (slide_us, size_us))
        self.copies = size_us // slide_us
        self._window_start_column = len(input.schema)
        self._window_start_watermark: int | None = None

    async def execute(self) -> AsyncIterator[Message]:
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                out = self._windows(message)
                if out is not None:
                    yield out
            elif isinstance(message, Watermark):
                yield message
                if message.column == self.time_column:
                    for derived in self._window_watermarks(message.value):
                        yield derived
            else:
                yield message

    def _window_watermarks(self, time_watermark: int) -> list[Watermark]:
        """The watermarks of ``window_start`` and ``window_end`` a time watermark implies, if they grew."""
        start = time_watermark // self.slide * self.slide - (self.size - self.slide)
        if self._window_start_watermark is not None and start <= self._window_start_watermark:
            return []
        self._window_start_watermark = start
        column = self._window_start_column
        return [Watermark(column, start), Watermark(column + 1, start + self.size)]

    def _windows(self, chunk: Chunk) -> Chunk | None:
        data, ops = chunk.data, chunk.ops
        times = data.column(self.time_column)
        if times.null_count:
            keep = pc.is_valid(times)
            data, ops = data.filter(keep), ops.filter(keep)
            times = data.column(self.time_column)
        if data.num_rows == 0:
            return None
        values = times.cast(pa.int64()).to_numpy(zero_copy_only=False)
        first = np.floor_divide(values, self.slide) * self.slide
        plain = ops.to_numpy(zero_copy_only=False).copy()
        plain[plain == Op.UPDATE_DELETE] = Op.DELETE
        plain[plain == Op.UPDATE_INSERT] = Op.INSERT
        plain_ops = pa.array(plain, pa.int8())
        batches, all_ops = [], []
        for k in range(self.copies):
            start = first - k * self.slide
            batches.append(
                pa.RecordBatch.from_arrays(
                    [
                        *data.columns,
                        pa.array(start, pa.int64()).cast(self.time_type),
                        pa.array(start + self.size, pa.int64()).cast(self.time_type),
                    ],
                    schema=self.schema,
                )
            )
            all_ops.append(plain_ops)
        if len(batches) == 1:
            return Chunk(plain_ops, batches[0])
        table = pa.Table.from_batches(batches).combine_chunks()
        return Chunk(pa.concat_arrays(all_ops), table.to_batches()[0])


def _in_unit(us: int, unit: str) -> int:
    if unit == "s":
        assert us % 1_000_000 == 0, "a window over a timestamp(0) column must be whole seconds"
        return us // 1_000_000
    if unit == "ms":
        assert us % 1000 == 0, "a window over a timestamp(3) column must be whole milliseconds"
        return us // 1000
    if unit == "ns":
        return us * 1000
    return us
