"""DatagenSource: generates a datagen source's rows inside the job of a view that reads it.

Every view reading a datagen source runs its own generator from row 0
(``GeneratorSource`` has the loop: barriers, offsets, rate limit, watermark). A row
is a pure function of the options and its number (``connectors/datagen.py``), which
it carries as the hidden ``_row_id`` column: a key that is unique and the same on
every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.connectors.datagen import DatagenOptions, generate_rows
from tidegate.state.state_table import StateTable
from tidegate.stream.operators.generator_source import GeneratorSource
from tidegate.stream.watermark import WatermarkGenerator


class DatagenSource(GeneratorSource):
    name = "datagen_source"

    def __init__(
        self,
        options: DatagenOptions,
        offsets: StateTable,
        schema: pa.Schema,
        actor_id: int,
        clock: Callable[[], float] | None = None,
        watermark: WatermarkGenerator | None = None,
    ) -> None:
        """``schema``: the declared columns (tidegate types) followed by the ``_row_id`` key column."""
        assert len(schema) == len(options.fields) + 1, (schema, options.fields)
        super().__init__(
            offsets,
            schema,
            actor_id,
            first_offset=0,
            end_offset=options.row_count,
            chunk_rows_max=options.chunk_rows_max,
            rows_per_second=options.rows_per_second,
            clock=clock,
            watermark=watermark,
        )
        self.options = options

    def generate(self, first: int, count: int) -> Chunk | None:
        columns = generate_rows(self.options, first, count)
        row_ids = pa.array(np.arange(first, first + count, dtype=np.int64))
        return Chunk.inserts(pa.RecordBatch.from_arrays([*columns, row_ids], schema=self.schema))
