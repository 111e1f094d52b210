"""NexmarkSource: generates one kind of Nexmark event inside the job of a view that reads a source.

Every view reading a nexmark source runs its own generator (RisingWave's
non-shared sources, docs/design/20261127_nexmark_source.md); ``GeneratorSource``
has the loop: barriers, offsets, rate limit, watermark. The generator is a pure
function of (config, event number), so the only state is the offset: the number
of the next event to generate, starting at the config's first event number.

Each chunk covers a range of events and keeps the rows of this source's kind
(person, auction or bid) among them. Rows carry their event number as the
hidden ``_row_id`` column, a key that is unique and the same on every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.connectors.nexmark import event_kinds, generate_events
from tidegate.connectors.nexmark_options import NexmarkSourceOptions
from tidegate.state.state_table import StateTable
from tidegate.stream.operators.generator_source import GeneratorSource
from tidegate.stream.watermark import WatermarkGenerator

_KIND_NAMES = ("person", "auction", "bid")


class NexmarkSource(GeneratorSource):
    name = "nexmark_source"

    def __init__(
        self,
        options: NexmarkSourceOptions,
        offsets: StateTable,
        schema: pa.Schema,
        actor_id: int,
        clock: Callable[[], float] | None = None,
        watermark: WatermarkGenerator | None = None,
    ) -> None:
        """``schema``: the event columns (tidegate types) followed by the ``_row_id`` key column.
        ``clock``: seconds, for the rate limit; the event loop's clock by default.
        ``watermark``: the generator of the source's ``WATERMARK``, if it declares one."""
        first_event_number = options.config.first_event_number
        super().__init__(
            offsets,
            schema,
            actor_id,
            first_offset=first_event_number,
            end_offset=None if options.event_count is None else first_event_number + options.event_count,
            chunk_rows_max=options.chunk_events_max,
            rows_per_second=options.events_per_second,
            clock=clock,
            watermark=watermark,
        )
        self.options = options

    def generate(self, first: int, count: int) -> Chunk | None:
        """The rows of this source's kind among events ``[first, first + count)``."""
        kind = _KIND_NAMES[self.options.kind]
        batch = generate_events(self.options.config, first, count, kinds=[kind])[kind]
        if batch.num_rows == 0:
            return None
        numbers = np.arange(first, first + count, dtype=np.int64)
        row_ids = numbers[event_kinds(self.options.config, numbers) == self.options.kind]
        assert len(row_ids) == batch.num_rows, (len(row_ids), batch.num_rows)
        columns = [batch.column(i).cast(self.schema.field(i).type) for i in range(batch.num_columns)]
        return Chunk.inserts(pa.RecordBatch.from_arrays([*columns, pa.array(row_ids)], schema=self.schema))
