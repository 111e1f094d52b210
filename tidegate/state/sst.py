"""SSTs: the immutable, sorted, checksummed files that hold state in object storage.

Place in the data flow (DESIGN §6): on a checkpoint the sealed deltas of the
epochs not yet uploaded are written here by :func:`build_sst` (an L0 SST),
uploaded, and listed in a committed version; compaction writes its merged,
already sorted runs with :func:`encode_sst` (L1 SSTs). The durable store opens
every live SST with :class:`SstReader` — footer, block index and bloom filter
stay in memory — and reads single blocks on demand through its block cache.

Layout of one SST object (integers little-endian)::

    block 0 … block N-1   Arrow IPC streams (zstd), at most block_rows_max rows each,
                          columns __key binary, __epoch uint64, __op int8, then the table's
    index                 Arrow IPC stream, one row per block: first key, last key, offset,
                          length, row count, crc32 of the block bytes, min and max epoch;
                          its schema metadata carries the SST's identity and the table schema
    bloom                 hash count, bit count, bits (~1% false positives over distinct keys)
    footer (56 bytes)     index offset/length, bloom offset/length, index crc32, bloom crc32,
                          format version, crc32 of the footer itself, magic

Invariants:

* Rows are sorted by (key asc, epoch desc): the newest version of a key comes
  first. Within one epoch only a key's last write is kept (a read at epoch
  granularity cannot see the earlier ones).
* Every byte of the object is under a checksum that is written with it and
  verified before use: blocks by the index, index and bloom by the footer, the
  footer by itself. Any mismatch, a short object, a bad magic or version raises
  :class:`SstCorrupted` naming the SST; wrong data is never returned.
* A reader fetches only what it needs: the footer and the index when opened,
  the bloom filter on the first point lookup, and then single blocks.
"""

from __future__ import annotations

import bisect
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Op
from tidegate.common.keys import KEY_TYPE, encode_keys
from tidegate.errors import InternalError

__all__ = [
    "DELETING_OPS",
    "EPOCH_COLUMN",
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "KEY_COLUMN",
    "MAGIC",
    "OP_COLUMN",
    "BloomFilter",
    "BuiltSst",
    "SstCorrupted",
    "SstInfo",
    "SstReader",
    "block_schema",
    "build_sst",
    "build_sst_from_deltas",
    "checksum",
    "encode_sst",
    "key_hashes",
    "merge_sst_rows",
    "sorted_versions",
    "stable_key_order",
]

KEY_COLUMN = "__key"
EPOCH_COLUMN = "__epoch"
OP_COLUMN = "__op"  # the same name as tidegate.state.store.OP_COLUMN: deltas arrive with it

MAGIC = b"TGSST\x00\r\n"  # the CR LF catches text-mode mangling, as PNG's magic does
FORMAT_VERSION = 1
_FOOTER_BODY = struct.Struct("<QQQQIII")  # index off/len, bloom off/len, index crc, bloom crc, version
_FOOTER_CRC = struct.Struct("<I")
FOOTER_SIZE = _FOOTER_BODY.size + _FOOTER_CRC.size + len(MAGIC)
_BLOOM_HEADER = struct.Struct("<IIQ")  # hash count, reserved, bit count

BLOOM_BITS_PER_KEY = 10  # with 7 hashes: 0.82% false positives in theory
BLOOM_HASH_COUNT = 7
BLOCK_COMPRESSION = "zstd"
_SST_METADATA_KEY = b"tidegate.sst"
_SCHEMA_METADATA_KEY = b"tidegate.table_schema"
DELETING_OPS = (int(Op.DELETE), int(Op.UPDATE_DELETE))  # a version with one of these is a tombstone
_U64_MAX = (1 << 64) - 1

_INDEX_SCHEMA = pa.schema(
    [
        ("first_key", KEY_TYPE),
        ("last_key", KEY_TYPE),
        ("offset", pa.uint64()),
        ("length", pa.uint64()),
        ("row_count", pa.uint64()),
        ("checksum", pa.uint32()),
        ("min_epoch", pa.uint64()),
        ("max_epoch", pa.uint64()),
    ]
)


class SstCorrupted(InternalError):
    """An SST whose bytes fail a check: checksum, length, magic or version. The message names the SST."""


@dataclass(frozen=True)
class SstInfo:
    object_id: str
    table_id: int
    min_epoch: int
    max_epoch: int
    row_count: int
    size_bytes: int
    first_key: bytes
    last_key: bytes


def checksum(data: bytes | memoryview) -> int:
    """The checksum of every checksummed region: CRC-32 (zlib's, ~1 GB/s)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def block_schema(schema: pa.Schema) -> pa.Schema:
    """The columns of a block and of :meth:`SstReader.scan`: key, epoch, op, then the table's."""
    return pa.schema([(KEY_COLUMN, KEY_TYPE), (EPOCH_COLUMN, pa.uint64()), (OP_COLUMN, pa.int8()), *schema])


# ---- writing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltSst:
    """An encoded SST: its bytes, its identity, and its blocks as Arrow tables (for write-through caching)."""

    data: bytes
    info: SstInfo
    blocks: list[pa.Table]


def build_sst(
    object_id: str,
    table_id: int,
    schema: pa.Schema,
    pk: list[int],
    deltas: list[tuple[int, pa.Table]],
    *,
    block_rows_max: int = 16384,
) -> tuple[bytes, SstInfo]:
    """One SST holding ``deltas`` ((epoch, ``__op`` + table columns), oldest first) of one state table."""
    built = build_sst_from_deltas(object_id, table_id, schema, pk, deltas, block_rows_max=block_rows_max)
    return built.data, built.info


def build_sst_from_deltas(
    object_id: str,
    table_id: int,
    schema: pa.Schema,
    pk: list[int],
    deltas: list[tuple[int, pa.Table]],
    *,
    block_rows_max: int = 16384,
) -> BuiltSst:
    """Like :func:`build_sst`, keeping the decoded blocks."""
    rows = sorted_versions(schema, pk, deltas)
    epochs = [epoch for epoch, _ in deltas]
    min_epoch, max_epoch = (min(epochs), max(epochs)) if epochs else (0, 0)
    return encode_sst(
        object_id, table_id, schema, pk, rows, min_epoch=min_epoch, max_epoch=max_epoch, block_rows_max=block_rows_max
    )


def encode_sst(
    object_id: str,
    table_id: int,
    schema: pa.Schema,
    pk: list[int],
    rows: pa.Table,
    *,
    min_epoch: int | None = None,
    max_epoch: int | None = None,
    block_rows_max: int = 16384,
) -> BuiltSst:
    """One SST of ``rows``: block columns (:func:`block_schema`), already sorted (key asc, epoch desc).

    Compaction writes its merged runs with this; the epoch range defaults to the rows'.
    """
    assert block_rows_max > 0, block_rows_max
    if not rows.schema.equals(block_schema(schema)):
        raise InternalError(f"SST rows have columns {rows.schema.names}, expected {block_schema(schema).names}")
    if rows.num_rows and (min_epoch is None or max_epoch is None):
        all_epochs = rows.column(EPOCH_COLUMN)
        min_epoch = pc.min(all_epochs).as_py() if min_epoch is None else min_epoch
        max_epoch = pc.max(all_epochs).as_py() if max_epoch is None else max_epoch
    min_epoch = 0 if min_epoch is None else min_epoch
    max_epoch = 0 if max_epoch is None else max_epoch

    parts: list[bytes] = []
    blocks: list[pa.Table] = []
    first_keys: list[bytes] = []
    last_keys: list[bytes] = []
    index: dict[str, list[int]] = {name: [] for name in _INDEX_SCHEMA.names[2:]}
    offset = 0
    options = pa.ipc.IpcWriteOptions(compression=BLOCK_COMPRESSION)
    for start in range(0, rows.num_rows, block_rows_max):
        block = rows.slice(start, block_rows_max)
        data = _ipc_bytes(block, options)
        keys = block.column(KEY_COLUMN)
        block_epochs = block.column(EPOCH_COLUMN)
        first_keys.append(keys[0].as_py())
        last_keys.append(keys[-1].as_py())
        index["offset"].append(offset)
        index["length"].append(len(data))
        index["row_count"].append(block.num_rows)
        index["checksum"].append(checksum(data))
        index["min_epoch"].append(pc.min(block_epochs).as_py())
        index["max_epoch"].append(pc.max(block_epochs).as_py())
        parts.append(data)
        blocks.append(block)
        offset += len(data)

    first_key = first_keys[0] if first_keys else b""
    last_key = last_keys[-1] if last_keys else b""
    meta = {
        "object_id": object_id,
        "table_id": table_id,
        "pk": list(pk),
        "min_epoch": min_epoch,
        "max_epoch": max_epoch,
        "row_count": rows.num_rows,
        "block_rows_max": block_rows_max,
        "compression": BLOCK_COMPRESSION,
    }
    index_schema = _INDEX_SCHEMA.with_metadata(
        {_SST_METADATA_KEY: json.dumps(meta).encode(), _SCHEMA_METADATA_KEY: schema.serialize().to_pybytes()}
    )
    index_table = pa.table({"first_key": first_keys, "last_key": last_keys, **index}, schema=index_schema)
    index_bytes = _ipc_bytes(index_table, pa.ipc.IpcWriteOptions())
    distinct = _distinct_sorted(rows.column(KEY_COLUMN))
    bloom_bytes = _build_bloom(distinct)

    index_offset = offset
    bloom_offset = index_offset + len(index_bytes)
    body = _FOOTER_BODY.pack(
        index_offset,
        len(index_bytes),
        bloom_offset,
        len(bloom_bytes),
        checksum(index_bytes),
        checksum(bloom_bytes),
        FORMAT_VERSION,
    )
    footer = body + _FOOTER_CRC.pack(checksum(body + MAGIC)) + MAGIC
    data = b"".join([*parts, index_bytes, bloom_bytes, footer])
    info = SstInfo(object_id, table_id, min_epoch, max_epoch, rows.num_rows, len(data), first_key, last_key)
    return BuiltSst(data, info, blocks)


def sorted_versions(schema: pa.Schema, pk: list[int], deltas: list[tuple[int, pa.Table]]) -> pa.Table:
    """All rows of ``deltas`` as block columns, sorted (key asc, epoch desc), one row per (key, epoch)."""
    target = block_schema(schema)
    # Oldest first; a stable sort keeps the writers' order for deltas of one epoch.
    ordered = sorted(deltas, key=lambda d: d[0])
    pieces = []
    for epoch, delta in ordered:
        if not 0 <= epoch <= _U64_MAX:
            raise InternalError(f"state table epoch {epoch} is not a uint64")
        if delta.schema.names[:1] != [OP_COLUMN] or delta.schema.names[1:] != schema.names:
            raise InternalError(f"delta columns {delta.schema.names} do not match {[OP_COLUMN, *schema.names]}")
        if not delta.num_rows:
            continue
        body = delta.select(schema.names).cast(schema)
        epochs = pa.array(np.full(delta.num_rows, epoch, np.uint64))
        ops = delta.column(OP_COLUMN).cast(pa.int8())
        keys = encode_keys(body, pk)
        if keys.type != KEY_TYPE:
            raise InternalError(f"state table keys of {len(keys)} rows need more than 2 GiB")
        pieces.append(pa.Table.from_arrays([keys, epochs, ops, *body.columns], schema=target))
    if not pieces:
        return target.empty_table()
    rows = pa.concat_tables(pieces).combine_chunks()
    if _strictly_increasing(rows.column(KEY_COLUMN)):
        # Each key written once, in key order (a table's fresh row ids): already sorted.
        return rows
    # Newest write first, then a stable sort by key: (key asc, epoch desc, sequence desc).
    order = stable_key_order(rows.column(KEY_COLUMN), newest_first=True)
    sorted_keys = rows.column(KEY_COLUMN).take(order)
    sorted_epochs = rows.column(EPOCH_COLUMN).to_numpy()[order]
    first_of_epoch = _group_starts(sorted_keys)
    first_of_epoch[1:] |= sorted_epochs[1:] != sorted_epochs[:-1]
    return rows.take(order[first_of_epoch])


def _strictly_increasing(keys: pa.Array | pa.ChunkedArray) -> bool:
    """Whether fixed-width keys are in strictly increasing byte order as they stand."""
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if len(array) < 2:
        return True
    matrix = _fixed_width_matrix(array)
    if matrix is None:
        return False
    before, after = matrix[:-1], matrix[1:]
    differs = before != after
    first = differs.argmax(axis=1)
    rows = np.arange(len(first))
    return bool(differs.any(axis=1).all() and (after[rows, first] > before[rows, first]).all())


def _ipc_bytes(table: pa.Table, options: pa.ipc.IpcWriteOptions) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# ---- sorting binary keys ---------------------------------------------------------------------------
def stable_key_order(keys: pa.Array | pa.ChunkedArray, *, newest_first: bool = False) -> np.ndarray:
    """Indices of a stable ascending sort of binary keys (bytewise, unsigned).

    Equal keys keep their order, or the reverse of it with ``newest_first``.
    Keys of one width (every key made only of fixed-width columns) sort with
    numpy, as big-endian 64-bit words from the least significant up, skipping
    bytes that are equal in every key; others fall back to Arrow's stable sort.
    """
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    n = len(array)
    reverse = np.arange(n - 1, -1, -1, dtype=np.int64)
    if n < 2:
        return reverse if newest_first else np.arange(n, dtype=np.int64)
    matrix = _fixed_width_matrix(array)
    if matrix is None:
        if newest_first:
            return reverse[np.asarray(pc.array_sort_indices(array.take(reverse)).to_numpy(), np.int64)]
        return np.asarray(pc.array_sort_indices(array).to_numpy(), np.int64)
    if newest_first:
        return reverse[_matrix_order(matrix[::-1])]
    return _matrix_order(matrix)


def _matrix_order(matrix: np.ndarray) -> np.ndarray:
    """Stable sort of the rows of a uint8 matrix, bytewise."""
    n = len(matrix)
    varying = np.flatnonzero((matrix != matrix[0]).any(axis=0))
    if not len(varying):
        return np.arange(n, dtype=np.int64)
    word_count = (len(varying) + 7) // 8
    padded = np.zeros((n, word_count * 8), np.uint8)
    padded[:, : len(varying)] = matrix[:, varying]
    words = padded.view(">u8").astype(np.uint64)
    order = np.argsort(words[:, word_count - 1], kind="stable")
    for w in range(word_count - 2, -1, -1):
        order = order[np.argsort(words[order, w], kind="stable")]
    return order.astype(np.int64)


def _fixed_width_matrix(array: pa.Array) -> np.ndarray | None:
    """The keys as a (n, width) uint8 matrix when every key has the same width, else None."""
    if not (pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)) or array.null_count:
        return None
    dtype = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype, array.offset + len(array) + 1)[array.offset :]
    width = int(offsets[1] - offsets[0])
    if width == 0 or not np.all(np.diff(offsets) == width):
        return None
    data = np.frombuffer(array.buffers()[2], np.uint8, int(offsets[-1]))[int(offsets[0]) :]
    return data.reshape(len(array), width)


def _group_starts(sorted_keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where a sorted key differs from the one before it."""
    n = len(sorted_keys)
    starts = np.ones(n, bool)
    if n > 1:
        array = sorted_keys.combine_chunks() if isinstance(sorted_keys, pa.ChunkedArray) else sorted_keys
        matrix = _fixed_width_matrix(array)
        if matrix is not None:
            starts[1:] = (matrix[1:] != matrix[:-1]).any(axis=1)
        else:
            same = pc.equal(array.slice(1), array.slice(0, n - 1))
            starts[1:] = ~np.asarray(same.to_numpy(zero_copy_only=False), bool)
    return starts


def _distinct_sorted(sorted_keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    array = sorted_keys.combine_chunks() if isinstance(sorted_keys, pa.ChunkedArray) else sorted_keys
    if not len(array):
        return array
    return array.filter(pa.array(_group_starts(array)))


# ---- bloom filter ----------------------------------------------------------------------------------
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)
_S8 = np.uint64(8)
_S32 = np.uint64(32)
# fmix64 of every (position, byte) cell for the first positions: keys are mostly short.
_TABLE_POSITIONS = 64


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: every input bit affects every output bit."""
    x = x ^ (x >> _S33)
    x = x * _M1
    x = x ^ (x >> _S33)
    x = x * _M2
    return x ^ (x >> _S33)


_TABLE = _fmix64(np.arange(_TABLE_POSITIONS * 256, dtype=np.uint64) ^ _SEED)


_MASK64 = (1 << 64) - 1


def key_hashes(keys: pa.Array) -> np.ndarray:
    """A 64-bit hash per key, part of the format (it must never change for a format version).

    The key's bytes, zero-padded to whole 64-bit little-endian words, are folded word by
    word through MurmurHash3's finalizer, and the key length is mixed in last. Keys are
    hashed in groups of equal length, so each group is one (rows x words) matrix and no
    per-row Python runs.
    """
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.uint64)
    dtype = np.int64 if pa.types.is_large_binary(keys.type) else np.int32
    offsets = np.frombuffer(keys.buffers()[1], dtype, keys.offset + n + 1)[keys.offset :].astype(np.int64)
    data_buffer = keys.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    out = np.empty(n, np.uint64)
    distinct_lengths = [lengths[0]] if lengths.min() == lengths.max() else np.unique(lengths)
    for length in distinct_lengths:
        rows = np.flatnonzero(lengths == length)
        width = int(-(-int(length) // 8) * 8)
        matrix = np.zeros((len(rows), max(width, 8)), np.uint8)
        if length and len(rows) == n:
            # Every key has this length: the data buffer already is the (rows x length) matrix.
            matrix[:, : int(length)] = data[offsets[0] : offsets[-1]].reshape(n, int(length))
        elif length:
            columns = offsets[rows][:, None] + np.arange(int(length))[None, :]
            matrix[:, : int(length)] = data[columns]
        words = matrix.view("<u8")
        h = np.full(len(rows), _SEED, np.uint64)
        for j in range(words.shape[1]):
            h = _fmix64(h ^ words[:, j] ^ np.uint64(((j + 1) * int(_M1)) & _MASK64))
        out[rows] = _fmix64(h ^ np.uint64((int(length) * int(_M2)) & _MASK64))
    return out


def _bloom_positions(hashes: np.ndarray, bit_count: int, hash_count: int) -> np.ndarray:
    """(n, hash_count) bit positions by double hashing (Kirsch & Mitzenmacher).

    Each 64-bit probe maps onto [0, bit_count) by its top 32 bits times
    bit_count, shifted down (Lemire's multiply-shift: no division).
    """
    assert 0 < bit_count < 1 << 32, bit_count
    h1 = hashes
    h2 = _fmix64(hashes ^ _SEED) | np.uint64(1)
    steps = np.arange(hash_count, dtype=np.uint64)
    probes = h1[:, None] + steps[None, :] * h2[:, None]
    return ((probes >> _S32) * np.uint64(bit_count)) >> _S32


def _build_bloom(distinct_keys: pa.Array) -> bytes:
    bit_count = max(64, -(-len(distinct_keys) * BLOOM_BITS_PER_KEY // 64) * 64)
    bits = np.zeros(bit_count, bool)
    if len(distinct_keys):
        # The same positions as _bloom_positions, one probe at a time: no (n x k) temporaries.
        h1 = key_hashes(distinct_keys)
        h2 = _fmix64(h1 ^ _SEED) | np.uint64(1)
        probe = h1.copy()
        scale = np.uint64(bit_count)
        for _ in range(BLOOM_HASH_COUNT):
            bits[((probe >> _S32) * scale) >> _S32] = True
            probe += h2
    header = _BLOOM_HEADER.pack(BLOOM_HASH_COUNT, 0, bit_count)
    return header + np.packbits(bits, bitorder="little").tobytes()


@dataclass(frozen=True)
class BloomFilter:
    hash_count: int
    bit_count: int
    bits: np.ndarray  # uint8, little bit order

    def may_contain(self, keys: pa.Array) -> np.ndarray:
        """False where a key is certainly absent, per key (vectorized)."""
        return self.may_contain_hashes(key_hashes(keys))

    def may_contain_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """:meth:`may_contain` for keys already hashed with :func:`key_hashes` (hash once, probe many SSTs)."""
        if not len(hashes):
            return np.zeros(0, bool)
        positions = _bloom_positions(hashes, self.bit_count, self.hash_count)
        present = (self.bits[positions >> np.uint64(3)] >> (positions & np.uint64(7)).astype(np.uint8)) & 1
        return np.asarray(present.all(axis=1), bool)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)


# ---- reading -------------------------------------------------------------------------------------
RangeReader = Callable[[int, int], bytes]


class SstReader:
    """Reads one SST from its bytes or through a ranged reader ``(start, length) -> bytes``.

    Opening reads and verifies the footer and the block index (two ranged
    reads); blocks and the bloom filter are read when first needed.
    """

    def __init__(self, data: bytes | bytearray | memoryview | RangeReader, size: int | None = None, name: str = ""):
        self.name = name
        if isinstance(data, bytes | bytearray | memoryview):
            view = memoryview(data)
            self._fetch: RangeReader = lambda start, length: view[start : start + length]  # type: ignore[assignment,return-value]
            self.size_bytes = len(view) if size is None else size
        else:
            if size is None:
                raise ValueError("an SstReader over a ranged reader needs the object's size")
            self._fetch = data
            self.size_bytes = size
        self._bloom: BloomFilter | None = None
        self._read_footer()
        self._read_index()

    # ---- identity ----
    @property
    def info(self) -> SstInfo:
        return SstInfo(
            self.object_id,
            self.table_id,
            self.min_epoch,
            self.max_epoch,
            self.row_count,
            self.size_bytes,
            self.first_key,
            self.last_key,
        )

    @property
    def block_count(self) -> int:
        return len(self._offsets)

    @property
    def block_min_epochs(self) -> np.ndarray:
        """The smallest epoch in each block (uint64, one per block)."""
        return self._min_epochs

    @property
    def block_max_epochs(self) -> np.ndarray:
        """The largest epoch in each block (uint64, one per block)."""
        return self._max_epochs

    @property
    def block_row_counts(self) -> np.ndarray:
        return self._row_counts

    @property
    def metadata_nbytes(self) -> int:
        """What this reader keeps in memory: the block index and, once read, the bloom filter."""
        index = self.block_first_keys.nbytes + self.block_last_keys.nbytes + 48 * self.block_count
        return index + (self._bloom.nbytes if self._bloom is not None else 0)

    def rebind(self, fetch: RangeReader) -> None:
        """Read blocks through ``fetch`` from now on (the same object, elsewhere: the bytes just uploaded
        served the footer, index and bloom filter; later blocks come from object storage)."""
        self._fetch = fetch

    @property
    def first_key(self) -> bytes:
        return self._first_keys[0] if self._first_keys else b""

    @property
    def last_key(self) -> bytes:
        return self._last_keys[-1] if self._last_keys else b""

    # ---- reads ----
    def scan(self, max_epoch: int | None = None) -> pa.Table:
        """Every stored row with epoch <= ``max_epoch``, in key order (newest version of a key first)."""
        limit = _U64_MAX if max_epoch is None else max_epoch
        blocks = [self.read_block(i) for i in range(self.block_count) if self._min_epochs[i] <= limit]
        if not blocks:
            return self.block_schema.empty_table()
        rows = pa.concat_tables(blocks)
        if limit >= self.max_epoch:
            return rows
        return rows.filter(pc.less_equal(rows.column(EPOCH_COLUMN), pa.scalar(limit, pa.uint64())))

    def get(self, key: bytes, max_epoch: int) -> tuple[int, pa.Table] | None:
        """The newest version of ``key`` with epoch <= ``max_epoch``: (op, one row), or None."""
        if not self.may_contain(key):
            return None
        target = pa.scalar(key, KEY_TYPE)
        limit_epoch = min(max_epoch, _U64_MAX)
        limit = pa.scalar(limit_epoch, pa.uint64())
        # A key's versions may continue from one block into the next.
        i = bisect.bisect_left(self._last_keys, key)
        while i < self.block_count and self._first_keys[i] <= key:
            if self._min_epochs[i] <= limit_epoch:
                block = self.read_block(i)
                match = pc.and_(
                    pc.equal(block.column(KEY_COLUMN), target), pc.less_equal(block.column(EPOCH_COLUMN), limit)
                )
                row = pc.index(match, True).as_py()
                if row >= 0:
                    op = block.column(OP_COLUMN)[row].as_py()
                    return op, block.slice(row, 1).select(self.schema.names)
            i += 1
        return None

    def may_contain(self, key: bytes) -> bool:
        """False only if ``key`` is certainly absent (bloom filter: no false negatives)."""
        if self.row_count == 0 or not self.first_key <= key <= self.last_key:
            return False
        return bool(self.bloom.may_contain(pa.array([key], KEY_TYPE))[0])

    def read_block(self, i: int) -> pa.Table:
        """Block ``i``, verified against the index (checksum, row count, key range)."""
        offset, length = int(self._offsets[i]), int(self._lengths[i])
        data = self._read(offset, length, f"block {i}")
        actual = checksum(data)
        if actual != self._checksums[i]:
            raise self._corrupted(
                f"block {i} (bytes {offset}..{offset + length}) checksum mismatch: "
                f"expected {self._checksums[i]:#010x}, actual {actual:#010x}"
            )
        try:
            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except (pa.ArrowException, OSError, ValueError) as e:
            raise self._corrupted(f"block {i} does not decode: {e}") from e
        if not table.schema.equals(self.block_schema):
            raise self._corrupted(f"block {i} has columns {table.schema.names}, expected {self.block_schema.names}")
        if table.num_rows != self._row_counts[i]:
            raise self._corrupted(f"block {i} has {table.num_rows} rows, the index says {self._row_counts[i]}")
        keys = table.column(KEY_COLUMN)
        if keys[0].as_py() != self._first_keys[i] or keys[-1].as_py() != self._last_keys[i]:
            raise self._corrupted(f"block {i} key range differs from the index")
        return table

    @property
    def bloom(self) -> BloomFilter:
        if self._bloom is None:
            data = self._read(self._bloom_offset, self._bloom_length, "bloom filter")
            actual = checksum(data)
            if actual != self._bloom_checksum:
                raise self._corrupted(
                    f"bloom filter checksum mismatch: expected {self._bloom_checksum:#010x}, actual {actual:#010x}"
                )
            if len(data) < _BLOOM_HEADER.size:
                raise self._corrupted("bloom filter shorter than its header")
            hash_count, _, bit_count = _BLOOM_HEADER.unpack_from(data)
            bits = np.frombuffer(data, np.uint8, offset=_BLOOM_HEADER.size)
            if not 0 < hash_count <= 64 or bit_count <= 0 or len(bits) * 8 < bit_count:
                raise self._corrupted(f"bloom filter header is invalid ({hash_count} hashes, {bit_count} bits)")
            self._bloom = BloomFilter(hash_count, bit_count, bits)
        return self._bloom

    # ---- opening ----
    def _read(self, start: int, length: int, what: str) -> bytes:
        if start < 0 or start + length > self.size_bytes:
            raise self._corrupted(
                f"{what} at bytes {start}..{start + length} lies outside the object ({self.size_bytes} bytes)"
            )
        data = self._fetch(start, length)
        if len(data) != length:
            short = ": truncated object" if len(data) < length else ""
            raise self._corrupted(f"{what}: read {len(data)} bytes of {length} at offset {start}{short}")
        return data

    def _corrupted(self, what: str) -> SstCorrupted:
        return SstCorrupted(f"SST {self.name or '<unnamed>'} is corrupted: {what}")

    def _read_footer(self) -> None:
        if self.size_bytes < FOOTER_SIZE:
            raise self._corrupted(
                f"{self.size_bytes} bytes is shorter than the {FOOTER_SIZE}-byte footer: truncated object"
            )
        footer = bytes(self._read(self.size_bytes - FOOTER_SIZE, FOOTER_SIZE, "footer"))
        magic = footer[-len(MAGIC) :]
        if magic != MAGIC:
            raise self._corrupted(f"bad magic {magic!r}, expected {MAGIC!r}: not an SST, or truncated")
        body = footer[: _FOOTER_BODY.size]
        (stored,) = _FOOTER_CRC.unpack_from(footer, _FOOTER_BODY.size)
        actual = checksum(body + MAGIC)
        if stored != actual:
            raise self._corrupted(f"footer checksum mismatch: expected {stored:#010x}, actual {actual:#010x}")
        (
            self._index_offset,
            self._index_length,
            self._bloom_offset,
            self._bloom_length,
            self._index_checksum,
            self._bloom_checksum,
            version,
        ) = _FOOTER_BODY.unpack(body)
        if version != FORMAT_VERSION:
            raise self._corrupted(f"format version {version}, this reader knows version {FORMAT_VERSION}")
        tail = self.size_bytes - FOOTER_SIZE
        if (
            self._index_offset + self._index_length != self._bloom_offset
            or self._bloom_offset + self._bloom_length != tail
        ):
            raise self._corrupted(
                f"footer sections (index {self._index_offset}+{self._index_length}, bloom "
                f"{self._bloom_offset}+{self._bloom_length}) do not end at the footer ({tail})"
            )

    def _read_index(self) -> None:
        data = self._read(self._index_offset, self._index_length, "index")
        actual = checksum(data)
        if actual != self._index_checksum:
            raise self._corrupted(
                f"index checksum mismatch: expected {self._index_checksum:#010x}, actual {actual:#010x}"
            )
        try:
            index = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
            metadata = index.schema.metadata or {}
            meta = json.loads(metadata[_SST_METADATA_KEY])
            self.schema: pa.Schema = pa.ipc.read_schema(pa.py_buffer(metadata[_SCHEMA_METADATA_KEY]))
            self.object_id: str = str(meta["object_id"])
            self.table_id: int = int(meta["table_id"])
            self.pk: list[int] = [int(i) for i in meta["pk"]]
            self.min_epoch: int = int(meta["min_epoch"])
            self.max_epoch: int = int(meta["max_epoch"])
            self.row_count: int = int(meta["row_count"])
        except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as e:
            raise self._corrupted(f"index does not decode: {e}") from e
        if not index.schema.remove_metadata().equals(_INDEX_SCHEMA):
            raise self._corrupted(f"index has columns {index.schema.names}")
        self.block_schema = block_schema(self.schema)
        self._first_keys: list[bytes] = index.column("first_key").to_pylist()
        self._last_keys: list[bytes] = index.column("last_key").to_pylist()
        self._offsets = index.column("offset").to_numpy()
        self._lengths = index.column("length").to_numpy()
        self._row_counts = index.column("row_count").to_numpy()
        self._checksums = index.column("checksum").to_numpy()
        self._min_epochs = index.column("min_epoch").to_numpy()
        self._max_epochs = index.column("max_epoch").to_numpy()
        self.block_first_keys: pa.Array = index.column("first_key").combine_chunks()
        self.block_last_keys: pa.Array = index.column("last_key").combine_chunks()
        ends = self._offsets + self._lengths
        starts_ok = len(self._offsets) == 0 or (self._offsets[0] == 0 and np.array_equal(self._offsets[1:], ends[:-1]))
        end = int(ends[-1]) if len(ends) else 0
        if not starts_ok or end != self._index_offset or int(self._row_counts.sum()) != self.row_count:
            raise self._corrupted("the block index does not tile the data region or disagrees on the row count")


# ---- merging ---------------------------------------------------------------------------------------
def merge_sst_rows(tables: list[pa.Table], max_epoch: int) -> pa.Table:
    """The live rows, as of ``max_epoch``, of one state table from the scans of its SSTs.

    ``tables`` are :meth:`SstReader.scan` results in any order. Per key the newest
    version with epoch <= ``max_epoch`` wins; a key whose newest op deletes
    (DELETE or UPDATE_DELETE) is absent. The result has just the table's columns,
    in key order. Versions of one key in one epoch are expected in one SST only;
    if two SSTs both hold one, the one in the earlier table of the list wins.
    """
    assert tables, "merge_sst_rows needs at least the scan schema of one SST"
    rows = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0].combine_chunks()
    columns = [name for name in rows.schema.names if name not in (KEY_COLUMN, EPOCH_COLUMN, OP_COLUMN)]
    epochs = rows.column(EPOCH_COLUMN).to_numpy()
    visible = np.flatnonzero(epochs <= np.uint64(min(max_epoch, _U64_MAX)))
    # Epoch descending (stable, ~epoch flips the order), then a stable sort by key.
    order = visible[np.argsort(~epochs[visible], kind="stable")]
    keys = rows.column(KEY_COLUMN).take(order)
    by_key = stable_key_order(keys)
    order = order[by_key]
    newest = _group_starts(keys.take(by_key))
    ops = rows.column(OP_COLUMN).to_numpy()[order]
    live = newest & ~np.isin(ops, DELETING_OPS)
    return rows.select(columns).take(order[live])
