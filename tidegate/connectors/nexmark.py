"""The Nexmark event generator: persons, auctions and bids as Arrow record batches.

Place in the data flow: the nexmark source (not in this module) asks for the
events of a range of event numbers and emits the batches; this module only
computes them. It follows the Nexmark generator spec (``nexmark/GENERATOR.md``):
§2 for the configuration, §3 for event numbers, ids and kinds, §4 for event
time, §5 for the random primitives, §6 for the id helpers, §7 for the
construction of each kind and §8 for the Flink quirks. Column names and types
are those of ``nexmark/schema.sql``. The default is the Flink generator's
behaviour: the stream starts at event number 1, event id = number + 1, so the
first event is auction 1001 (§8).

Invariants:

- An event is a pure function of ``(config, event number)``: generating
  ``[a, c)`` gives the same rows as generating ``[a, b)`` and then ``[b, c)``,
  which is what lets a source replay from a checkpointed offset.
- Rows of each kind come out in event order; event time never decreases.

Where we deviate from Flink, and why:

- Randomness is counter based, as §5 asks: draw ``j`` of event id ``e`` is
  ``splitmix64(key(seed, e) + (j + 1) * golden)``, and each field has its own
  draw number ("slot"), so fields are computed column by column in numpy. Flink's
  RNG is unseeded, so no run of it can be matched byte for byte anyway; the draw
  order of §7 is therefore not kept. Slot numbers are part of the data format.
- The 1 MiB letter pool that ``extra`` is sliced from (§5) and the channel table
  (§7) are built from ``seed``, not from a start-up RNG.
- ``base_time_ms`` is fixed (default 2015-07-15, the RW per-type base) instead of
  wall-clock ``now``, so that results are reproducible.
- Not implemented: out-of-order groups (``out_of_order_group_size`` must be 1),
  rate shapes other than constant, and the RW variants of §8 except the
  bidder offset, which ``flink_bidder_quirk`` switches.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Collection

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "AUCTION_SCHEMA",
    "BID_SCHEMA",
    "PERSON_SCHEMA",
    "EventKind",
    "NexmarkConfig",
    "event_kinds",
    "event_timestamp_ms",
    "generate_events",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bools = npt.NDArray[np.bool_]

US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
US_CITIES = ("Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent",
             "Cheyenne")  # fmt: skip
FIRST_NAMES = ("Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter")
LAST_NAMES = ("Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris")
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")

NUM_CATEGORIES = 5
PERSON_ID_LEAD = 10
AUCTION_ID_LEAD = 10
HOT_BLOCK_SIZE = 100  # the hot seller, auction or bidder is the first id of its block of 100
CHANNELS_NUMBER = 10_000
MIN_STRING_LENGTH = 3

# ``extra`` is a slice of one pool of random letters (§5). The pool is padded so
# that a slice of the largest possible size fits at any offset below 1 MiB.
_POOL_OFFSETS = 1 << 20
_AVERAGE_BYTE_SIZE_MAX = 1 << 19
_POOL_PAD_BYTES = _AVERAGE_BYTE_SIZE_MAX * 6 // 5 + 2

_INT32_MAX = (1 << 31) - 1
# Arrow's string view: 16 bytes, a length and either up to 12 bytes of the string or a 4-byte prefix,
# a buffer index and an offset (all int32, little-endian).
_VIEW_INLINE_BYTES = 12
_UINT64_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Separate random streams, so that event data, the letter pool and the channel table never share draws.
_DOMAIN_EVENTS, _DOMAIN_POOL, _DOMAIN_CHANNELS = 1, 2, 3

PERSON_SCHEMA = pa.schema(
    [("id", pa.int64()), ("name", pa.string()), ("email_address", pa.string()), ("credit_card", pa.string()),
     ("city", pa.string()), ("state", pa.string()), ("date_time", pa.timestamp("ms")), ("extra", pa.string())]
)  # fmt: skip
AUCTION_SCHEMA = pa.schema(
    [("id", pa.int64()), ("item_name", pa.string()), ("description", pa.string()), ("initial_bid", pa.int64()),
     ("reserve", pa.int64()), ("date_time", pa.timestamp("ms")), ("expires", pa.timestamp("ms")),
     ("seller", pa.int64()), ("category", pa.int64()), ("extra", pa.string())]
)  # fmt: skip
BID_SCHEMA = pa.schema(
    [("auction", pa.int64()), ("bidder", pa.int64()), ("price", pa.int64()), ("channel", pa.string()),
     ("url", pa.string()), ("date_time", pa.timestamp("ms")), ("extra", pa.string())]
)  # fmt: skip


class EventKind(enum.IntEnum):
    """The kind of an event, numbered like Flink's ``event_type`` column."""

    PERSON = 0
    AUCTION = 1
    BID = 2


@dataclasses.dataclass(frozen=True)
class NexmarkConfig:
    """The generator's settings (GENERATOR.md §2); the defaults are Flink's."""

    person_proportion: int = 1
    auction_proportion: int = 3
    bid_proportion: int = 46
    first_person_id: int = 1000
    first_auction_id: int = 1000
    first_category_id: int = 10
    num_active_people: int = 1000
    num_in_flight_auctions: int = 100
    hot_sellers_ratio: int = 4
    hot_auction_ratio: int = 2
    hot_bidders_ratio: int = 4
    hot_channels_ratio: int = 2
    avg_person_byte_size: int = 200
    avg_auction_byte_size: int = 500
    avg_bid_byte_size: int = 100
    # Events per second of event time, summed over all generators (§4).
    first_event_rate: int = 10_000
    # p of §3/§4: each generator's events are p times further apart in event time.
    num_event_generators: int = 1
    out_of_order_group_size: int = 1
    base_time_ms: int = 1_436_918_400_000  # 2015-07-15 00:00:00 UTC
    seed: int = 0
    # Event number of the first event of the stream; Flink's table source uses 1, RW 0.
    first_event_number: int = 1
    # Added to an event number to give its event id. Flink's generator g of p gets
    # 1 + g * (N // p) for N events in all; RW uses 0.
    first_event_id: int = 1
    # Flink adds first_person_id to bidders twice (§8); False adds it once, as RW does.
    flink_bidder_quirk: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "flink_bidder_quirk":
                if not isinstance(value, bool):
                    raise ValueError(f"NexmarkConfig.flink_bidder_quirk must be a bool, got {value!r}")
                continue
            low, high = _FIELD_BOUNDS.get(field.name, (0, _INT32_MAX))
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"NexmarkConfig.{field.name} must be an integer in [{low}, {high}], got {value!r}")
        if self.out_of_order_group_size != 1:
            raise ValueError("NexmarkConfig.out_of_order_group_size must be 1: out-of-order events are not implemented")

    @property
    def total_proportion(self) -> int:
        return self.person_proportion + self.auction_proportion + self.bid_proportion

    @property
    def inter_event_delay_us(self) -> float:
        # Same double arithmetic, in the same order, as Flink (§4).
        return 1_000_000 / self.first_event_rate * self.num_event_generators


_FIELD_BOUNDS: dict[str, tuple[int, int]] = {
    "person_proportion": (1, _INT32_MAX),
    "auction_proportion": (1, _INT32_MAX),
    "bid_proportion": (1, _INT32_MAX),
    "num_active_people": (1, _INT32_MAX),
    "num_in_flight_auctions": (1, _INT32_MAX),
    "hot_sellers_ratio": (1, _INT32_MAX),
    "hot_auction_ratio": (1, _INT32_MAX),
    "hot_bidders_ratio": (1, _INT32_MAX),
    "hot_channels_ratio": (1, _INT32_MAX),
    "avg_person_byte_size": (0, _AVERAGE_BYTE_SIZE_MAX),
    "avg_auction_byte_size": (0, _AVERAGE_BYTE_SIZE_MAX),
    "avg_bid_byte_size": (0, _AVERAGE_BYTE_SIZE_MAX),
    "first_event_rate": (1, _INT32_MAX),
    "num_event_generators": (1, _INT32_MAX),
    "base_time_ms": (0, 1 << 53),
    "seed": (0, _UINT64_MASK),
    "first_person_id": (0, 1 << 53),
    "first_auction_id": (0, 1 << 53),
    "first_category_id": (0, 1 << 53),
    "first_event_number": (0, 1 << 53),
    "first_event_id": (0, 1 << 53),
}


def event_kinds(config: NexmarkConfig, event_numbers: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """The ``EventKind`` of each event number (§3): by event id modulo the proportion total."""
    event_ids = np.asarray(event_numbers, dtype=np.int64) + config.first_event_id
    remainder = event_ids % config.total_proportion
    kinds = np.full(remainder.shape, EventKind.BID, dtype=np.int8)
    kinds[remainder < config.person_proportion + config.auction_proportion] = EventKind.AUCTION
    kinds[remainder < config.person_proportion] = EventKind.PERSON
    return kinds


def event_timestamp_ms(config: NexmarkConfig, event_numbers: npt.ArrayLike) -> I64:
    """Event time in ms since the epoch (§4): ``base + floor(floor(n * delay_us) / 1000)``."""
    delay_us = np.floor(np.asarray(event_numbers, dtype=np.float64) * config.inter_event_delay_us)
    return config.base_time_ms + delay_us.astype(np.int64) // 1000


# Each kind's name (a key of generate_events' result) with its kind and schema.
_KINDS = {
    "person": (EventKind.PERSON, PERSON_SCHEMA),
    "auction": (EventKind.AUCTION, AUCTION_SCHEMA),
    "bid": (EventKind.BID, BID_SCHEMA),
}


def generate_events(
    config: NexmarkConfig, first_event: int, count: int, kinds: Collection[str] | None = None
) -> dict[str, pa.RecordBatch]:
    """The events numbered ``[first_event, first_event + count)``, by kind, in event order.

    The keys are ``"person"``, ``"auction"`` and ``"bid"``, or only those of ``kinds``
    (a source reads one kind: building the others would be wasted work, an auction
    costing about ten bids); the batches have the schemas ``PERSON_SCHEMA``,
    ``AUCTION_SCHEMA`` and ``BID_SCHEMA``.
    """
    if kinds is None:
        kinds = tuple(_KINDS)
    unknown = [kind for kind in kinds if kind not in _KINDS]
    if unknown:
        raise ValueError(f"unknown event kinds {unknown}: the kinds are person, auction and bid")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if first_event < config.first_event_number:
        raise ValueError(f"first_event {first_event} is before the stream's first event {config.first_event_number}")
    # The last event number whose time is needed: auctions look ahead of their own event (§7).
    last_number = first_event + count + config.num_in_flight_auctions * config.total_proportion
    if last_number + config.first_event_id > 1 << 53 or last_number * config.inter_event_delay_us > 1 << 62:
        raise ValueError("event numbers, ids or event times (in us) beyond 2**53 are not supported")
    event_numbers = np.arange(first_event, first_event + count, dtype=np.int64)
    event_kind = event_kinds(config, event_numbers)
    batches = {}
    for name in _KINDS:
        if name not in kinds:
            continue
        kind, schema = _KINDS[name]
        numbers = event_numbers[event_kind == kind]
        if numbers.size == 0:
            batches[name] = pa.RecordBatch.from_pylist([], schema=schema)
        else:
            batches[name] = pa.RecordBatch.from_arrays(_COLUMNS[kind](config, numbers), schema=schema)
    return batches


# ---- id helpers (§6), base 0, vectorized over event ids ----


def _last_person_id(config: NexmarkConfig, event_ids: I64) -> I64:
    epoch, offset = np.divmod(event_ids, config.total_proportion)
    return epoch * config.person_proportion + np.minimum(offset, config.person_proportion - 1)


def _next_person_id(config: NexmarkConfig, event_ids: I64, draws: _Draws, slot: int) -> I64:
    num_people = _last_person_id(config, event_ids) + 1
    active = np.minimum(num_people, config.num_active_people)
    return num_people - active + draws.below(slot, active + PERSON_ID_LEAD)


def _last_auction_id(config: NexmarkConfig, event_ids: I64) -> I64:
    p, a = config.person_proportion, config.auction_proportion
    epoch, offset = np.divmod(event_ids, config.total_proportion)
    # Before this epoch's auctions: the last auction of the previous epoch (-1 in epoch 0, harmless).
    in_epoch = np.where(offset < p, -1, np.where(offset >= p + a, a - 1, offset - p))
    return epoch * a + in_epoch


def _next_auction_id(config: NexmarkConfig, event_ids: I64, draws: _Draws, slot: int) -> I64:
    newest = _last_auction_id(config, event_ids)
    oldest = np.maximum(newest - config.num_in_flight_auctions, 0)
    return oldest + draws.below(slot, newest - oldest + 1 + AUCTION_ID_LEAD)


# ---- random primitives (§5) ----


def _mix64(z: U64) -> U64:
    """SplitMix64's finalizer, in place on ``z``."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def _mix64_int(z: int) -> int:
    z &= _UINT64_MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _UINT64_MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _UINT64_MASK
    return z ^ (z >> 31)


class _Draws:
    """Independent random words per (row, slot): row ``i`` has the stream keyed by ``counters[i]``."""

    def __init__(self, seed: int, domain: int, counters: I64) -> None:
        self.seed = seed
        stream_key = np.uint64(_mix64_int(_mix64_int(seed) + domain * _GOLDEN))
        self._keys = _mix64(counters.astype(np.uint64) * np.uint64(_GOLDEN) + stream_key)

    def words(self, slot: int, width: int | None = None) -> U64:
        """Draw ``slot`` of each row, or draws ``slot .. slot+width-1`` as a (rows, width) matrix."""
        if width is None:
            return _mix64(self._keys + np.uint64(((slot + 1) * _GOLDEN) & _UINT64_MASK))
        steps = (np.arange(slot + 1, slot + 1 + width, dtype=np.uint64)) * np.uint64(_GOLDEN)
        return _mix64(self._keys[:, None] + steps[None, :])

    def below(self, slot: int, bound: int | I64, width: int | None = None) -> I64:
        """``r(bound)``: uniform integers in ``[0, bound)``; ``bound`` >= 1."""
        words = self.words(slot, width)
        bounds = np.asarray(bound, dtype=np.uint64)
        if int(bounds.max(initial=0)) < 1 << 32:
            # Lemire's multiply-shift on the high 32 bits; the bias is below bound / 2**32.
            return (((words >> np.uint64(32)) * bounds) >> np.uint64(32)).astype(np.int64)
        return (words % bounds).astype(np.int64)

    def unit(self, slot: int) -> npt.NDArray[np.float64]:
        """Uniform doubles in [0, 1) with 53 random bits, like Java's ``nextDouble``."""
        return (self.words(slot) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _java_round(values: npt.NDArray[np.float64]) -> I64:
    return np.floor(values + 0.5).astype(np.int64)


def _next_price(draws: _Draws, slot: int) -> I64:
    return _java_round(10.0 ** (draws.unit(slot) * 6.0) * 100.0)


def _next_strings(draws: _Draws, slot: int, max_length: int, special: str = " ") -> tuple[U8, Bools]:
    """``next_string(max_length, special)`` per row, as a character matrix and the mask of kept characters.

    Uses ``max_length`` slots: one for the length, one per character. Each character
    is one draw of ``r(13 * 26)``: below 26 (probability 1/13) gives ``special``,
    otherwise the value modulo 26 is a uniform letter.
    """
    width = max_length - 1
    lengths = MIN_STRING_LENGTH + draws.below(slot, max_length - MIN_STRING_LENGTH)
    codes = draws.below(slot + 1, 13 * 26, width)
    is_special = codes < 26
    chars = np.where(is_special, ord(special), ord("a") + codes % 26).astype(np.uint8)
    column = np.arange(width)
    keep = column < lengths[:, None]
    if special == " ":  # Java's trim(): strip spaces at both ends.
        solid = keep & ~is_special
        any_solid = solid.any(axis=1)
        start = np.where(any_solid, solid.argmax(axis=1), 0)
        end = np.where(any_solid, width - solid[:, ::-1].argmax(axis=1), 0)
        keep = (column >= start[:, None]) & (column < end[:, None])
    return chars, keep


def _constant_chars(rows: int, text: str) -> tuple[U8, Bools]:
    chars = np.frombuffer(text.encode(), dtype=np.uint8)
    return np.broadcast_to(chars, (rows, chars.size)), np.ones((rows, chars.size), dtype=np.bool_)


def _join_strings(pieces: list[tuple[U8, Bools]]) -> tuple[pa.StringArray, I64]:
    """One string per row, the kept characters of each piece left to right, and the strings' lengths."""
    chars = np.hstack([piece for piece, _ in pieces])
    keep = np.hstack([mask for _, mask in pieces])
    lengths = keep.sum(axis=1)
    return _string_array(chars[keep], lengths), lengths


def _string_array(data: U8, lengths: I64) -> pa.StringArray:
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _INT32_MAX:
        raise ValueError("a string column would exceed 2 GiB; generate fewer events per call")
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(data))]
    return pa.Array.from_buffers(pa.string(), lengths.size, buffers)


@functools.lru_cache(maxsize=4)
def _letter_pool(seed: int) -> U8:
    """Random letters a-z; 16 bits of a draw per letter, so the bias is below 26 / 2**16."""
    words = _Draws(seed, _DOMAIN_POOL, np.arange((_POOL_OFFSETS + _POOL_PAD_BYTES + 3) // 4, dtype=np.int64)).words(0)
    # Shifts rather than a uint16 view, so that the pool does not depend on the machine's byte order.
    chunks = (words[:, None] >> np.arange(0, 64, 16, dtype=np.uint64)) & np.uint64(0xFFFF)
    return (ord("a") + ((chunks * np.uint64(26)) >> np.uint64(16))).astype(np.uint8).ravel()


@functools.lru_cache(maxsize=4)
def _letter_pool_buffer(seed: int) -> pa.Buffer:
    return pa.py_buffer(_letter_pool(seed))


def _next_extras(draws: _Draws, slot: int, current_size: I64, average: int) -> pa.StringArray:
    """``next_extra(current_size, average)`` per row (§5), sliced from the seed's letter pool.

    Uses two slots: the size and the offset into the pool.
    """
    desired = np.maximum(average - current_size, 0)
    delta = _java_round(desired * 0.2)
    sizes = desired - delta + draws.below(slot, np.maximum(2 * delta, 1))
    offsets = draws.below(slot + 1, _POOL_OFFSETS)
    if int(sizes.sum()) > _INT32_MAX:
        raise ValueError("a string column would exceed 2 GiB; generate fewer events per call")
    # Arrow's string views point into the pool, and Arrow's cast copies each slice once: a third of
    # the time of gathering a (rows, longest) character matrix and masking it in numpy.
    pool = _letter_pool(draws.seed)
    # A long string's view: its length, its first 4 bytes, buffer 0 and its offset in the pool.
    views = np.empty((sizes.size, 4), dtype="<i4")
    views[:, 0] = sizes
    prefixes = np.lib.stride_tricks.sliding_window_view(pool, 4)[offsets]
    views[:, 1] = prefixes.view("<i4")[:, 0]
    views[:, 2] = 0
    views[:, 3] = offsets
    short = np.flatnonzero(sizes <= _VIEW_INLINE_BYTES)
    if short.size:  # a short string lies in its view, after the length, zero padded
        head = np.lib.stride_tricks.sliding_window_view(pool, _VIEW_INLINE_BYTES)[offsets[short]]
        kept = np.arange(_VIEW_INLINE_BYTES) < sizes[short, None]
        views.view(np.uint8)[short, 4:] = np.where(kept, head, 0)
    buffers = [None, pa.py_buffer(views), _letter_pool_buffer(draws.seed)]
    return pa.Array.from_buffers(pa.string_view(), sizes.size, buffers).cast(pa.string())


def _bit_reverse32_java_abs(values: I64) -> I64:
    """``Math.abs(Integer.reverse(v))`` in Java: INT32_MIN stays negative (§7)."""
    shifts = np.arange(32, dtype=np.int64)
    reversed_bits = (((values[:, None] >> shifts) & 1) << (31 - shifts)).sum(axis=1)
    signed = np.where(reversed_bits >= 1 << 31, reversed_bits - (1 << 32), reversed_bits)
    return np.where(signed == -(1 << 31), signed, np.abs(signed))


@functools.lru_cache(maxsize=4)
def _channel_table(seed: int) -> tuple[pa.StringArray, pa.StringArray]:
    """Channel names and urls (§7): CHANNELS_NUMBER cold entries, then one per hot channel.

    Slots per entry: 0 decides whether the url has a channel_id; 1.., 6.. and 11..
    are the three url path parts (``next_string(5, '_')``, five slots each).
    """
    count = CHANNELS_NUMBER + len(HOT_CHANNELS)
    draws = _Draws(seed, _DOMAIN_CHANNELS, np.arange(count, dtype=np.int64))
    slash = _constant_chars(count, "/")
    base_urls, _ = _join_strings(
        [_constant_chars(count, "https://www.nexmark.com/"), _next_strings(draws, 1, 5, "_"), slash,
         _next_strings(draws, 6, 5, "_"), slash, _next_strings(draws, 11, 5, "_"),
         _constant_chars(count, "/item.htm?query=1")]
    )  # fmt: skip
    cold = np.arange(CHANNELS_NUMBER, dtype=np.int64)
    channel_ids = pa.array(_bit_reverse32_java_abs(cold)).cast(pa.string())
    cold_urls = pc.if_else(
        pa.array(draws.below(0, 10)[:CHANNELS_NUMBER] > 0),
        pc.binary_join_element_wise(base_urls[:CHANNELS_NUMBER], "&channel_id=", channel_ids, ""),
        base_urls[:CHANNELS_NUMBER],
    )
    cold_channels = pc.binary_join_element_wise("channel-", pa.array(cold).cast(pa.string()), "")
    channels = pa.concat_arrays([cold_channels, pa.array(HOT_CHANNELS)])
    urls = pa.concat_arrays([cold_urls, base_urls[CHANNELS_NUMBER:]])
    return channels, urls


_NAMES = pa.array([f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES])
_NAME_LENGTHS = np.array([len(name) for name in _NAMES.to_pylist()], dtype=np.int64)
_CITIES, _CITY_LENGTHS = pa.array(US_CITIES), np.array([len(city) for city in US_CITIES], dtype=np.int64)
_STATES, _STATE_LENGTHS = pa.array(US_STATES), np.array([len(state) for state in US_STATES], dtype=np.int64)
_CREDIT_CARD_LENGTH = 19


def _credit_cards(groups: I64) -> pa.StringArray:
    """``dddd dddd dddd dddd`` from a (rows, 4) matrix of integers in [0, 10000)."""
    rows = groups.shape[0]
    chars = np.full((rows, 4, 5), ord(" "), dtype=np.uint8)
    chars[:, :, :4] = groups[:, :, None] // np.array([1000, 100, 10, 1]) % 10 + ord("0")
    data = chars.reshape(rows, 20)[:, :_CREDIT_CARD_LENGTH]
    return _string_array(data.ravel(), np.full(rows, _CREDIT_CARD_LENGTH, dtype=np.int64))


def _timestamps(values: I64) -> pa.Array:
    return pa.array(values, type=pa.timestamp("ms"))


def _persons(config: NexmarkConfig, numbers: I64) -> list[pa.Array]:
    """Person columns (§7). Slots: 0-1 name, 2-5 card, 6 city, 7 state, 8-9 extra, 16-22 and 32-36 email."""
    event_ids = numbers + config.first_event_id
    draws = _Draws(config.seed, _DOMAIN_EVENTS, event_ids)
    rows = numbers.size
    name_index = draws.below(0, len(FIRST_NAMES)) * len(LAST_NAMES) + draws.below(1, len(LAST_NAMES))
    emails, email_lengths = _join_strings(
        [_next_strings(draws, 16, 7), _constant_chars(rows, "@"), _next_strings(draws, 32, 5),
         _constant_chars(rows, ".com")]
    )  # fmt: skip
    credit_cards = _credit_cards(draws.below(2, 10_000, width=4))
    city_index, state_index = draws.below(6, len(US_CITIES)), draws.below(7, len(US_STATES))
    current_size = (
        8 + _NAME_LENGTHS[name_index] + email_lengths + _CREDIT_CARD_LENGTH
        + _CITY_LENGTHS[city_index] + _STATE_LENGTHS[state_index]
    )  # fmt: skip
    return [
        pa.array(_last_person_id(config, event_ids) + config.first_person_id),
        _NAMES.take(name_index),
        emails,
        credit_cards,
        _CITIES.take(city_index),
        _STATES.take(state_index),
        _timestamps(event_timestamp_ms(config, numbers)),
        _next_extras(draws, 8, current_size, config.avg_person_byte_size),
    ]


def _auctions(config: NexmarkConfig, numbers: I64) -> list[pa.Array]:
    """Auction columns (§7). Slots: 0-1 seller, 2 category, 3 initial bid, 4 length, 5 reserve,
    6-7 extra, 16-35 item name, 48-147 description."""
    event_ids = numbers + config.first_event_id
    draws = _Draws(config.seed, _DOMAIN_EVENTS, event_ids)
    hot_seller = draws.below(0, config.hot_sellers_ratio) > 0
    hot_seller_id = _last_person_id(config, event_ids) // HOT_BLOCK_SIZE * HOT_BLOCK_SIZE
    seller = np.where(hot_seller, hot_seller_id, _next_person_id(config, event_ids, draws, 1))
    initial_bid = _next_price(draws, 3)
    timestamps = event_timestamp_ms(config, numbers)
    # Auctions last on average as long as it takes to generate num_in_flight_auctions more auctions.
    events_ahead = config.num_in_flight_auctions * config.total_proportion // config.auction_proportion
    horizon_ms = event_timestamp_ms(config, numbers + events_ahead) - timestamps
    expires = timestamps + 1 + draws.below(4, np.maximum(2 * horizon_ms, 1))
    item_chars, item_keep = _next_strings(draws, 16, 20)
    description_chars, description_keep = _next_strings(draws, 48, 100)
    current_size = 8 + item_keep.sum(axis=1) + description_keep.sum(axis=1) + 40
    return [
        pa.array(_last_auction_id(config, event_ids) + config.first_auction_id),
        _join_strings([(item_chars, item_keep)])[0],
        _join_strings([(description_chars, description_keep)])[0],
        pa.array(initial_bid),
        pa.array(initial_bid + _next_price(draws, 5)),
        _timestamps(timestamps),
        _timestamps(expires),
        pa.array(seller + config.first_person_id),
        pa.array(config.first_category_id + draws.below(2, NUM_CATEGORIES)),
        _next_extras(draws, 6, current_size, config.avg_auction_byte_size),
    ]


def _bids(config: NexmarkConfig, numbers: I64) -> list[pa.Array]:
    """Bid columns (§7). Slots: 0-1 auction, 2-3 bidder, 4 price, 5-6 channel, 8-9 extra."""
    event_ids = numbers + config.first_event_id
    draws = _Draws(config.seed, _DOMAIN_EVENTS, event_ids)
    hot_auction = draws.below(0, config.hot_auction_ratio) > 0
    hot_auction_id = _last_auction_id(config, event_ids) // HOT_BLOCK_SIZE * HOT_BLOCK_SIZE
    auction = np.where(hot_auction, hot_auction_id, _next_auction_id(config, event_ids, draws, 1))
    hot_bidder = draws.below(2, config.hot_bidders_ratio) > 0
    # "+ 1" so that the hot bidder is not the hot seller.
    hot_bidder_id = _last_person_id(config, event_ids) // HOT_BLOCK_SIZE * HOT_BLOCK_SIZE + 1
    bidder = np.where(hot_bidder, hot_bidder_id, _next_person_id(config, event_ids, draws, 3))
    bidder_offset = config.first_person_id * (2 if config.flink_bidder_quirk else 1)
    hot_channel = draws.below(5, config.hot_channels_ratio) > 0
    channel_index = np.where(
        hot_channel,
        CHANNELS_NUMBER + draws.below(6, len(HOT_CHANNELS)),
        draws.below(6, CHANNELS_NUMBER),
    )
    channels, urls = _channel_table(config.seed)
    return [
        pa.array(auction + config.first_auction_id),
        pa.array(bidder + bidder_offset),
        pa.array(_next_price(draws, 4)),
        channels.take(channel_index),
        urls.take(channel_index),
        _timestamps(event_timestamp_ms(config, numbers)),
        _next_extras(draws, 8, np.full(numbers.size, 32, dtype=np.int64), config.avg_bid_byte_size),
    ]


_COLUMNS: dict[EventKind, Callable[[NexmarkConfig, I64], list[pa.Array]]] = {
    EventKind.PERSON: _persons,
    EventKind.AUCTION: _auctions,
    EventKind.BID: _bids,
}
