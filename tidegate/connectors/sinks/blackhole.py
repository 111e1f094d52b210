"""The blackhole sink target: accepts every change and keeps none.

For benchmarks and tests of the sink path up to the target. ``last_delivered_epoch`` is the last
epoch delivered in this process (0 after a restart), so a restart redelivers what the log store
still holds — which is then discarded again.
"""

from __future__ import annotations

import pyarrow as pa

from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.connectors.sinks.options import check_known_options, check_sink_type

CONNECTOR = "blackhole"


def check_blackhole_options(spec: SinkSpec) -> None:
    check_known_options(spec, CONNECTOR, ())
    check_sink_type(spec)


class BlackholeSinkTarget(SinkTarget):
    def __init__(self, spec: SinkSpec) -> None:
        check_blackhole_options(spec)
        super().__init__(spec)
        self._delivered_epoch = 0
        self.delivered_rows = 0  # what it was given, for tests and benchmarks

    def open(self) -> None:
        pass

    def last_delivered_epoch(self) -> int:
        return self._delivered_epoch

    def deliver(self, epoch: int, changes: pa.Table) -> None:
        if epoch > self._delivered_epoch:
            self._delivered_epoch = epoch
            self.delivered_rows += changes.num_rows

    def write(self, changes: pa.Table) -> None:
        self.delivered_rows += changes.num_rows
