"""The file sink target: one file per delivered epoch in a directory, published by an atomic rename.

Place in the data flow (DESIGN §7): ``deliver(epoch, changes)`` writes the rows to
``path/.part-<epoch>.<ext>.tmp``, fsyncs it, renames it to ``path/part-<epoch:020d>.<ext>`` and
fsyncs the directory. The rename is the transaction: the file's existence *is* the record that the
epoch was delivered, so ``last_delivered_epoch`` is the greatest epoch among the part names (the
zero-padded names also sort in epoch order). A crash before the rename leaves a ``.tmp`` file, which
``open`` removes; the epoch is then delivered again from the log store.

An epoch with no rows publishes no file; the epoch is remembered in memory only. After a crash
nothing is lost by forgetting it: the log store holds nothing for it either.

``write`` (at_least_once, at_most_once) appends each call's rows to a new
``path/part-unchecked-<n>.<ext>``, not atomically; ``n`` continues after a restart.

File sinks are append-only. FORMAT PLAIN ENCODE CSV (header line, PostgreSQL text values), JSON
(JSON lines) or PARQUET; option ``path`` (the directory, created if missing).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tidegate.common.types import SqlType
from tidegate.connectors.row_encode import pg_text_column, table_to_csv, table_to_json_lines
from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.connectors.sinks.changes import data_columns, has_deletes
from tidegate.connectors.sinks.options import check_format, check_known_options, check_sink_type, required_option
from tidegate.errors import FeatureNotSupported, InternalError, InvalidParameterValue

CONNECTOR = "file"
_FORMATS = {"PLAIN": ("CSV", "JSON", "PARQUET")}
_EXTENSIONS = {"CSV": "csv", "JSON": "jsonl", "PARQUET": "parquet"}
_EPOCH_DIGITS = 20  # 2**64 has 20 digits: every epoch pads to the same width


def check_file_options(spec: SinkSpec) -> None:
    check_known_options(spec, CONNECTOR, ("path",))
    check_sink_type(spec)
    if spec.sink_type != "append-only":
        raise FeatureNotSupported(
            "a file sink is append-only: it cannot delete or update rows it has written",
            hint="Create the sink with type = 'append-only' (its query must then produce inserts only).",
        )
    check_format(spec, CONNECTOR, _FORMATS)
    required_option(spec, CONNECTOR, "path")


class FileSinkTarget(SinkTarget):
    def __init__(self, spec: SinkSpec) -> None:
        check_file_options(spec)
        super().__init__(spec)
        assert spec.encode is not None
        self._encode = spec.encode
        self._extension = _EXTENSIONS[spec.encode]
        self._directory = Path(spec.options["path"].strip())
        self._part_name = re.compile(rf"part-(\d{{{_EPOCH_DIGITS}}})\.{re.escape(self._extension)}")
        self._unchecked_name = re.compile(rf"part-unchecked-(\d+)\.{re.escape(self._extension)}")
        self._delivered_epoch = 0
        self._unchecked_next = 0

    def open(self) -> None:
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            names = os.listdir(self._directory)
            for name in names:
                if name.startswith(".part-") and name.endswith(".tmp"):
                    (self._directory / name).unlink()  # a delivery a crash interrupted before its rename
            probe = self._directory / ".tidegate-write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise InvalidParameterValue(
                f"the file sink cannot use the directory {self._directory}: {e.strerror or e}",
                hint="Option path must name a directory this server can create and write.",
            ) from e
        epochs = [int(m.group(1)) for m in map(self._part_name.fullmatch, names) if m]
        self._delivered_epoch = max([self._delivered_epoch, *epochs])
        counters = [int(m.group(1)) for m in map(self._unchecked_name.fullmatch, names) if m]
        self._unchecked_next = max([self._unchecked_next, *(n + 1 for n in counters)])

    def last_delivered_epoch(self) -> int:
        return self._delivered_epoch

    def deliver(self, epoch: int, changes: pa.Table) -> None:
        if epoch <= self._delivered_epoch:
            return  # delivered already: a replay
        if changes.num_rows:
            final = self._directory / f"part-{epoch:0{_EPOCH_DIGITS}d}.{self._extension}"
            temporary = self._directory / f".part-{epoch}.{self._extension}.tmp"
            try:
                self._write_file(temporary, changes)
                os.replace(temporary, final)
                _fsync_directory(self._directory)
            except OSError as e:
                raise InternalError(f"the file sink could not publish {final}: {e.strerror or e}") from e
        self._delivered_epoch = epoch

    def write(self, changes: pa.Table) -> None:
        if not changes.num_rows:
            return
        path = self._directory / f"part-unchecked-{self._unchecked_next}.{self._extension}"
        self._unchecked_next += 1
        try:
            self._write_file(path, changes)
        except OSError as e:
            raise InternalError(f"the file sink could not write {path}: {e.strerror or e}") from e

    def _write_file(self, path: Path, changes: pa.Table) -> None:
        assert not has_deletes(changes), "an append-only sink received a delete"
        rows = data_columns(changes)
        with open(path, "wb") as file:
            if self._encode == "PARQUET":
                pq.write_table(_parquet_ready(rows, self.spec.column_types), file)
            elif self._encode == "CSV":
                file.write(table_to_csv(rows, self.spec.column_types))
            else:
                file.write(table_to_json_lines(rows, self.spec.column_types))
            file.flush()
            os.fsync(file.fileno())


def _parquet_ready(rows: pa.Table, types: list[SqlType]) -> pa.Table:
    """Parquet has no month-day-nano interval: those columns are written as their PostgreSQL text."""
    for index, sql_type in enumerate(types):
        if sql_type.kind == "interval" or (sql_type.element is not None and sql_type.element.kind == "interval"):
            name = rows.column_names[index]
            rows = rows.set_column(index, name, pg_text_column(rows.column(index), sql_type))
    return rows


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
