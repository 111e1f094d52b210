"""Unit tests of the Nexmark generator against GENERATOR.md: the §10 self-check
numbers, the §3/§4/§6/§7 rules restated independently here, the schema of
schema.sql, determinism and replay from any offset."""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tidegate.connectors.nexmark import (
    AUCTION_SCHEMA,
    BID_SCHEMA,
    PERSON_SCHEMA,
    EventKind,
    NexmarkConfig,
    event_kinds,
    event_timestamp_ms,
    generate_events,
)

SPEC_SAMPLE_EVENTS = 200_000  # §10: 200,000 events, TPS 10K, p = 1
BASE_TIME_MS = 1_436_918_400_000
RW_NUMBERED_CONFIG = NexmarkConfig(first_event_number=0, first_event_id=0)  # the first event is person 1000

# §2 word lists, spelled out again so that a typo in the module shows up here.
STATES = {"AZ", "CA", "ID", "OR", "WA", "WY"}
CITIES = {"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent",
          "Cheyenne"}  # fmt: skip
FIRST_NAMES = {"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"}
LAST_NAMES = {"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"}
HOT_CHANNELS = {"Google", "Facebook", "Baidu", "Apple"}


@pytest.fixture(scope="module")
def spec_sample() -> dict[str, pa.RecordBatch]:
    return generate_events(NexmarkConfig(), 1, SPEC_SAMPLE_EVENTS)


def ints(batch: pa.RecordBatch, column: str) -> np.ndarray:
    return batch.column(column).cast(pa.int64()).to_numpy()


def lengths(batch: pa.RecordBatch, column: str) -> np.ndarray:
    return np.array([len(value) for value in batch.column(column).to_pylist()])


def numbers_of_kind(config: NexmarkConfig, first_event: int, count: int, kind: EventKind) -> np.ndarray:
    numbers = np.arange(first_event, first_event + count)
    return numbers[event_kinds(config, numbers) == kind]


def table(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches)


# ---- §2 configuration ----


def test_defaults_are_the_spec_constants() -> None:
    config = NexmarkConfig()
    expected = {
        "person_proportion": 1, "auction_proportion": 3, "bid_proportion": 46, "first_person_id": 1000,
        "first_auction_id": 1000, "first_category_id": 10, "num_active_people": 1000, "num_in_flight_auctions": 100,
        "hot_sellers_ratio": 4, "hot_auction_ratio": 2, "hot_bidders_ratio": 4, "hot_channels_ratio": 2,
        "avg_person_byte_size": 200, "avg_auction_byte_size": 500, "avg_bid_byte_size": 100,
        "first_event_rate": 10_000, "num_event_generators": 1, "out_of_order_group_size": 1,
        "first_event_number": 1, "first_event_id": 1, "flink_bidder_quirk": True,
    }  # fmt: skip
    assert {name: getattr(config, name) for name in expected} == expected
    assert config.total_proportion == 50
    assert config.inter_event_delay_us == 100.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("person_proportion", 0),
        ("auction_proportion", -1),
        ("bid_proportion", 1.5),
        ("num_active_people", 0),
        ("num_in_flight_auctions", 0),
        ("hot_sellers_ratio", 0),
        ("hot_auction_ratio", 0),
        ("hot_bidders_ratio", 0),
        ("hot_channels_ratio", 0),
        ("avg_bid_byte_size", -1),
        ("avg_auction_byte_size", 1 << 30),
        ("first_event_rate", 0),
        ("num_event_generators", 0),
        ("seed", -1),
        ("seed", 1 << 64),
        ("first_event_id", -1),
        ("first_event_number", True),
        ("base_time_ms", "2015-07-15"),
        ("flink_bidder_quirk", 1),
    ],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"NexmarkConfig.{field} must be"):
        NexmarkConfig(**{field: value})


def test_out_of_order_groups_are_refused_as_not_implemented() -> None:
    with pytest.raises(ValueError, match="out_of_order_group_size must be 1"):
        NexmarkConfig(out_of_order_group_size=2)


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="count must be >= 0"):
        generate_events(NexmarkConfig(), 1, -1)
    with pytest.raises(ValueError, match="before the stream's first event 1"):
        generate_events(NexmarkConfig(), 0, 10)


# ---- schema.sql ----


def test_batches_have_the_columns_and_types_of_schema_sql(spec_sample: dict[str, pa.RecordBatch]) -> None:
    # Column lists of schema.sql with BIGINT -> int64, VARCHAR -> string, TIMESTAMP(3) -> timestamp[ms].
    sql = {
        "person": [("id", "BIGINT"), ("name", "VARCHAR"), ("email_address", "VARCHAR"), ("credit_card", "VARCHAR"),
                   ("city", "VARCHAR"), ("state", "VARCHAR"), ("date_time", "TIMESTAMP(3)"), ("extra", "VARCHAR")],
        "auction": [("id", "BIGINT"), ("item_name", "VARCHAR"), ("description", "VARCHAR"), ("initial_bid", "BIGINT"),
                    ("reserve", "BIGINT"), ("date_time", "TIMESTAMP(3)"), ("expires", "TIMESTAMP(3)"),
                    ("seller", "BIGINT"), ("category", "BIGINT"), ("extra", "VARCHAR")],
        "bid": [("auction", "BIGINT"), ("bidder", "BIGINT"), ("price", "BIGINT"), ("channel", "VARCHAR"),
                ("url", "VARCHAR"), ("date_time", "TIMESTAMP(3)"), ("extra", "VARCHAR")],
    }  # fmt: skip
    arrow = {"BIGINT": pa.int64(), "VARCHAR": pa.string(), "TIMESTAMP(3)": pa.timestamp("ms")}
    module_schemas = {"person": PERSON_SCHEMA, "auction": AUCTION_SCHEMA, "bid": BID_SCHEMA}
    empty = generate_events(NexmarkConfig(), 1, 0)
    assert set(spec_sample) == set(empty) == set(sql)
    for kind, columns in sql.items():
        expected = pa.schema([(name, arrow[sql_type]) for name, sql_type in columns])
        assert spec_sample[kind].schema == expected
        assert module_schemas[kind] == expected
        assert empty[kind].schema == expected
        assert empty[kind].num_rows == 0
        assert spec_sample[kind].num_rows > 0
        assert all(spec_sample[kind].column(name).null_count == 0 for name, _ in columns)


# ---- §3 numbering and kinds ----


def test_kinds_follow_the_proportion_cycle_of_event_ids() -> None:
    rw = RW_NUMBERED_CONFIG
    cycle = [EventKind.PERSON] + [EventKind.AUCTION] * 3 + [EventKind.BID] * 46
    assert event_kinds(rw, np.arange(101)).tolist() == cycle * 2 + [EventKind.PERSON]
    # Flink: event number n has id n + 1, so the cycle starts one event earlier.
    assert event_kinds(NexmarkConfig(), np.arange(1, 101)).tolist() == cycle[2:] + cycle + cycle[:2]
    custom = dataclasses.replace(RW_NUMBERED_CONFIG, person_proportion=2, auction_proportion=1, bid_proportion=1)
    assert event_kinds(custom, np.arange(8)).tolist() == [0, 0, 1, 2] * 2


def test_flink_stream_starts_with_auction_1001_and_never_makes_1000() -> None:
    # §8: with p = 1 the first event has id 2 (an auction); ids 0 and 1 never occur.
    batches = generate_events(NexmarkConfig(), 1, 100)
    first_auction = batches["auction"].slice(0, 1).to_pylist()[0]
    assert first_auction["id"] == 1001
    assert first_auction["date_time"].timestamp() * 1000 == BASE_TIME_MS
    assert ints(batches["person"], "id")[0] == 1001
    assert 1000 not in ints(batches["auction"], "id")
    rw = generate_events(RW_NUMBERED_CONFIG, 0, 100)
    assert ints(rw["person"], "id")[0] == 1000
    assert ints(rw["auction"], "id")[0] == 1000


def test_counts_follow_the_proportions(spec_sample: dict[str, pa.RecordBatch]) -> None:
    n = SPEC_SAMPLE_EVENTS
    # §10: N/50, 3N/50, 46N/50, give or take one per block boundary.
    assert abs(spec_sample["person"].num_rows - n // 50) <= 2
    assert abs(spec_sample["auction"].num_rows - 3 * n // 50) <= 2
    assert abs(spec_sample["bid"].num_rows - 46 * n // 50) <= 2
    assert sum(batch.num_rows for batch in spec_sample.values()) == n
    rw = generate_events(RW_NUMBERED_CONFIG, 0, 5000)
    assert [rw[kind].num_rows for kind in ("person", "auction", "bid")] == [100, 300, 4600]


def test_person_and_auction_ids_are_consecutive(spec_sample: dict[str, pa.RecordBatch]) -> None:
    for kind in ("person", "auction"):
        ids = ints(spec_sample[kind], "id")
        assert ids[0] == 1001  # Flink numbering, §8
        assert (np.diff(ids) == 1).all()
    rw = generate_events(RW_NUMBERED_CONFIG, 0, 10_000)
    for kind in ("person", "auction"):
        ids = ints(rw[kind], "id")
        assert ids.tolist() == list(range(1000, 1000 + ids.size))  # §10: consecutive from 1000


def test_generators_share_the_timeline_but_not_the_ids() -> None:
    # §3: generator g of p starts its ids at 1 + g * (N // p); all use the same event numbers.
    split_0 = generate_events(NexmarkConfig(num_event_generators=2), 1, 1000)
    split_1 = generate_events(NexmarkConfig(num_event_generators=2, first_event_id=1 + 500_000), 1, 1000)
    times_0 = np.sort(np.concatenate([ints(batch, "date_time") for batch in split_0.values()]))
    times_1 = np.sort(np.concatenate([ints(batch, "date_time") for batch in split_1.values()]))
    assert (times_0 == times_1).all()
    assert not set(ints(split_0["person"], "id")) & set(ints(split_1["person"], "id"))


# ---- §4 event time ----


def test_event_time_is_base_plus_floored_delay() -> None:
    config = NexmarkConfig()  # 100 us between events
    assert (event_timestamp_ms(config, np.array([0, 9, 10, 12_345])) - BASE_TIME_MS).tolist() == [0, 0, 1, 1234]
    # 1/3 s between events: Flink floors (666, 1666) where RW would round (667, 1667).
    slow = NexmarkConfig(first_event_rate=3)
    assert (event_timestamp_ms(slow, np.array([1, 2, 5])) - BASE_TIME_MS).tolist() == [333, 666, 1666]
    # p generators each space their events p / TPS apart, so N events in all still span N / TPS s.
    four = NexmarkConfig(num_event_generators=4)
    assert (event_timestamp_ms(four, np.array([5, 25_000])) - BASE_TIME_MS).tolist() == [2, 10_000]
    assert event_timestamp_ms(NexmarkConfig(base_time_ms=7), np.array([10]))[0] == 8


def test_date_time_columns_are_the_event_times(spec_sample: dict[str, pa.RecordBatch]) -> None:
    config = NexmarkConfig()
    for kind, name in [(EventKind.PERSON, "person"), (EventKind.AUCTION, "auction"), (EventKind.BID, "bid")]:
        numbers = numbers_of_kind(config, 1, SPEC_SAMPLE_EVENTS, kind)
        times = ints(spec_sample[name], "date_time")
        assert (times == event_timestamp_ms(config, numbers)).all()
        assert (np.diff(times) >= 0).all()


def test_event_time_span_is_events_over_rate(spec_sample: dict[str, pa.RecordBatch]) -> None:
    times = np.concatenate([ints(batch, "date_time") for batch in spec_sample.values()])
    assert (times.max() - times.min()) / 1000 == pytest.approx(20.0, abs=0.01)  # §10


# ---- §6 ids and §7 hot keys ----


def last_person_id(e: int, p: int = 1, t: int = 50) -> int:
    epoch, offset = divmod(e, t)
    return epoch * p + min(offset, p - 1)


def last_auction_id(e: int, p: int = 1, a: int = 3, t: int = 50) -> int:
    epoch, offset = divmod(e, t)
    if offset < p:
        return epoch * a - 1
    return epoch * a + (a - 1 if offset >= p + a else offset - p)


def test_referenced_ids_are_hot_or_in_the_active_window() -> None:
    # Small windows, so that they are full for most of the sample and their bounds are exercised.
    config = NexmarkConfig(num_active_people=50, num_in_flight_auctions=20, flink_bidder_quirk=False)
    first, count = 1, 30_000
    batches = generate_events(config, first, count)
    future_auctions = 0
    bid_ids = numbers_of_kind(config, first, count, EventKind.BID) + config.first_event_id
    bids = batches["bid"]
    for e, auction, bidder in zip(bid_ids, ints(bids, "auction") - 1000, ints(bids, "bidder") - 1000):
        newest = last_auction_id(int(e))
        oldest = max(newest - 20, 0)
        assert auction == newest // 100 * 100 or oldest <= auction <= newest + 10
        future_auctions += auction > newest
        num_people = last_person_id(int(e)) + 1
        active = min(num_people, 50)
        assert bidder == (num_people - 1) // 100 * 100 + 1 or num_people - active <= bidder < num_people + 10
    assert future_auctions > 0  # AUCTION_ID_LEAD: some bids are for auctions not made yet
    auction_ids = numbers_of_kind(config, first, count, EventKind.AUCTION) + config.first_event_id
    future_sellers = 0
    for e, seller in zip(auction_ids, ints(batches["auction"], "seller") - 1000):
        num_people = last_person_id(int(e)) + 1
        active = min(num_people, 50)
        assert seller == (num_people - 1) // 100 * 100 or num_people - active <= seller < num_people + 10
        future_sellers += seller >= num_people
    assert future_sellers > 0  # PERSON_ID_LEAD: some sellers are people not made yet
    assert set(ints(batches["auction"], "category")) == {10, 11, 12, 13, 14}


def test_hot_key_shares_match_the_self_check(spec_sample: dict[str, pa.RecordBatch]) -> None:
    bids, auctions = spec_sample["bid"], spec_sample["auction"]
    # §10: 0.505, 0.753, 0.754 and 0.502 measured on this sample size.
    assert np.mean((ints(bids, "auction") - 1000) % 100 == 0) == pytest.approx(0.505, abs=0.01)
    assert np.mean((ints(bids, "bidder") - 2000) % 100 == 1) == pytest.approx(0.753, abs=0.01)
    assert np.mean((ints(auctions, "seller") - 1000) % 100 == 0) == pytest.approx(0.754, abs=0.015)
    channels = bids.column("channel").to_pylist()
    assert np.mean([channel in HOT_CHANNELS for channel in channels]) == pytest.approx(0.502, abs=0.01)


def test_hot_ratios_are_settings() -> None:
    config = NexmarkConfig(hot_auction_ratio=1, hot_bidders_ratio=10, hot_sellers_ratio=1, hot_channels_ratio=1)
    batches = generate_events(config, 1, 100_000)
    bids = batches["bid"]
    # Ratio 1 never picks the hot key; a random pick lands on a hot-looking id 1 time in 100.
    assert np.mean((ints(bids, "auction") - 1000) % 100 == 0) < 0.03
    assert np.mean((ints(batches["auction"], "seller") - 1000) % 100 == 0) < 0.05
    assert np.mean((ints(bids, "bidder") - 2000) % 100 == 1) == pytest.approx(0.9, abs=0.01)
    assert not HOT_CHANNELS & set(bids.column("channel").to_pylist())


def test_flink_bidder_quirk_adds_the_first_person_id_twice() -> None:
    flink = generate_events(NexmarkConfig(), 1, 20_000)["bid"]
    once = generate_events(NexmarkConfig(flink_bidder_quirk=False), 1, 20_000)["bid"]
    assert (ints(flink, "bidder") == ints(once, "bidder") + 1000).all()
    assert ints(flink, "bidder").min() >= 2000
    assert ints(once, "bidder")[0] in range(1000, 1011)  # hot bidder 1001 or one of the first 10 people


# ---- §5 prices and sizes ----


def test_prices_are_log_uniform_cents(spec_sample: dict[str, pa.RecordBatch]) -> None:
    prices = ints(spec_sample["bid"], "price")
    assert np.median(prices) == pytest.approx(100_000, rel=0.06)  # §10: 99,118
    assert 100 <= prices.min() <= 110
    assert 90_000_000 < prices.max() < 100_000_000  # §10: 99,994,491
    # Log-uniform: each decade of [1e2, 1e8) holds a sixth of the prices.
    decades = np.bincount(np.floor(np.log10(prices)).astype(int) - 2, minlength=6)
    assert decades / prices.size == pytest.approx([1 / 6] * 6, abs=0.01)
    initial = ints(spec_sample["auction"], "initial_bid")
    assert initial.min() >= 100 and initial.max() < 100_000_000
    assert (ints(spec_sample["auction"], "reserve") >= initial + 100).all()


def test_extra_pads_rows_to_the_average_size(spec_sample: dict[str, pa.RecordBatch]) -> None:
    bid_extra = lengths(spec_sample["bid"], "extra")
    # d = 100 - 32 = 68, delta = 14: sizes 54 + r(28), mean 67.5 (§10).
    assert bid_extra.min() == 54 and bid_extra.max() == 81
    assert bid_extra.mean() == pytest.approx(67.5, abs=0.2)
    assert (32 + bid_extra).mean() == pytest.approx(100, abs=1)
    person, auction = spec_sample["person"], spec_sample["auction"]
    person_columns = ("name", "email_address", "credit_card", "city", "state", "extra")
    person_row = 8 + np.sum([lengths(person, column) for column in person_columns], axis=0)
    auction_row = 8 + lengths(auction, "item_name") + lengths(auction, "description") + 40 + lengths(auction, "extra")
    assert person_row.mean() == pytest.approx(199.9, abs=1.5)  # §10
    assert auction_row.mean() == pytest.approx(499.8, abs=3)  # §10
    assert all(re.fullmatch("[a-z]*", extra) for extra in spec_sample["bid"].column("extra").to_pylist()[:5000])


def test_extra_size_follows_the_setting() -> None:
    bigger = lengths(generate_events(NexmarkConfig(avg_bid_byte_size=200), 1, 20_000)["bid"], "extra")
    assert bigger.min() == 134 and bigger.max() == 201  # d = 168, delta = 34
    assert bigger.mean() == pytest.approx(167.5, abs=1)
    for average in (32, 10):  # nothing to pad when the fixed fields already reach the average
        assert set(lengths(generate_events(NexmarkConfig(avg_bid_byte_size=average), 1, 1000)["bid"], "extra")) == {0}


def test_extras_of_one_event_start_alike_whatever_their_size() -> None:
    # The size and the offset into the letter pool are separate draws: an event's extra under a
    # smaller average is a prefix of its extra under a larger one. Sizes up to 12 are held inside
    # Arrow's string views, longer ones point into the pool; both must be the pool's letters.
    long = generate_events(NexmarkConfig(avg_bid_byte_size=1000), 1, 3000)["bid"].column("extra").to_pylist()
    seen: set[int] = set()
    for average in (32, 33, 35, 40, 44, 46, 100):  # d = 0, 1, 3, 8, 12, 14, 68
        extras = generate_events(NexmarkConfig(avg_bid_byte_size=average), 1, 3000)["bid"].column("extra")
        for extra, longer in zip(extras.to_pylist(), long):
            assert longer.startswith(extra) and re.fullmatch("[a-z]*", extra), (average, extra)
            seen.add(len(extra))
    assert {0, 1, 2, 3, 6, 9, 12, 13, 16, 54, 81} <= seen


def test_a_source_can_ask_for_its_kind_only() -> None:
    config = NexmarkConfig()
    every = generate_events(config, 7, 5000)
    for kind in ("person", "auction", "bid"):
        only = generate_events(config, 7, 5000, kinds=[kind])
        assert list(only) == [kind] and only[kind].equals(every[kind])
    assert list(generate_events(config, 7, 5000, kinds=["bid", "person"])) == ["person", "bid"]
    with pytest.raises(ValueError, match="unknown event kinds"):
        generate_events(config, 7, 10, kinds=["bids"])


def test_auctions_last_up_to_twice_the_time_of_the_in_flight_window(spec_sample: dict[str, pa.RecordBatch]) -> None:
    config = NexmarkConfig()
    numbers = numbers_of_kind(config, 1, SPEC_SAMPLE_EVENTS, EventKind.AUCTION)
    auctions = spec_sample["auction"]
    length_ms = ints(auctions, "expires") - ints(auctions, "date_time")
    horizon_ms = event_timestamp_ms(config, numbers + 100 * 50 // 3) - event_timestamp_ms(config, numbers)
    assert (length_ms >= 1).all() and (length_ms <= 2 * horizon_ms).all()
    assert length_ms.mean() == pytest.approx(166, abs=3)  # §10: mean 166 ms, max 332 ms
    assert 320 <= length_ms.max() <= 332


# ---- §7 string formats ----


def test_person_strings(spec_sample: dict[str, pa.RecordBatch]) -> None:
    person = spec_sample["person"]
    assert all(re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", card) for card in person.column("credit_card").to_pylist())
    emails = person.column("email_address").to_pylist()
    for email in emails:
        # next_string(7) "@" next_string(5) ".com": up to 6 and 4 characters, trimmed, spaces only inside.
        match = re.fullmatch(r"([a-z ]{0,6})@([a-z ]{0,4})\.com", email)
        assert match, email
        assert all(part == part.strip() for part in match.groups()), email
    assert any(" " in email for email in emails)
    names = [name.split(" ") for name in person.column("name").to_pylist()]
    assert {(first, last) for first, last in names} == {(f, last) for f in FIRST_NAMES for last in LAST_NAMES}
    assert set(person.column("city").to_pylist()) == CITIES
    assert set(person.column("state").to_pylist()) == STATES


def test_auction_strings(spec_sample: dict[str, pa.RecordBatch]) -> None:
    auction = spec_sample["auction"]
    for column, longest in (("item_name", 19), ("description", 99)):
        values = auction.column(column).to_pylist()
        assert all(re.fullmatch(r"[a-z ]*", value) and value == value.strip() for value in values)
        assert max(len(value) for value in values) == longest
        # Before trimming a string has 3..max-1 characters, each a space with probability 1/13;
        # trimming takes off about 1/12 of a space at each end.
        untrimmed = (3 + longest) / 2
        assert np.mean([len(value) for value in values]) == pytest.approx(untrimmed - 1 / 6, abs=0.5)
        space_share = (untrimmed / 13 - 1 / 6) / (untrimmed - 1 / 6)
        spaces = sum(value.count(" ") for value in values)
        assert spaces / sum(map(len, values)) == pytest.approx(space_share, abs=0.005)
    assert_uniform_letters("".join(auction.column("description").to_pylist()))
    assert_uniform_letters("".join(auction.column("extra").to_pylist()))


def assert_uniform_letters(text: str) -> None:
    counts = np.bincount(np.frombuffer(text.replace(" ", "").encode(), dtype=np.uint8) - ord("a"))
    assert counts.size == 26
    assert counts / counts.sum() == pytest.approx([1 / 26] * 26, abs=0.002)


def java_abs_bit_reverse32(j: int) -> int:
    reversed_bits = int(format(j, "032b")[::-1], 2)
    signed = reversed_bits - (1 << 32) if reversed_bits >= 1 << 31 else reversed_bits
    return signed if signed == -(1 << 31) else abs(signed)


def test_bid_channels_and_urls(spec_sample: dict[str, pa.RecordBatch]) -> None:
    bids = spec_sample["bid"]
    channels, urls = bids.column("channel").to_pylist(), bids.column("url").to_pylist()
    url_pattern = re.compile(r"https://www\.nexmark\.com/([a-z_]{3,4})/([a-z_]{3,4})/([a-z_]{3,4})/item\.htm\?query=1"
                             r"(?:&channel_id=(-?\d+))?")  # fmt: skip
    url_of_channel: dict[str, str] = {}
    with_id = neither = 0
    for channel, url in zip(channels, urls):
        match = url_pattern.fullmatch(url)
        assert match, url
        assert url_of_channel.setdefault(channel, url) == url  # one url per channel, made once
        channel_id = match.group(4)
        if channel in HOT_CHANNELS:
            assert channel_id is None
            continue
        j = int(channel.removeprefix("channel-"))
        assert channel == f"channel-{j}" and 0 <= j < 10_000
        if channel_id is None:
            neither += 1
        else:
            with_id += 1
            assert int(channel_id) == java_abs_bit_reverse32(j)
    # §7, what q21 sees: ~45% carry a channel_id url and ~5% are dropped.
    assert with_id / len(urls) == pytest.approx(0.45, abs=0.01)
    assert neither / len(urls) == pytest.approx(0.05, abs=0.01)
    # j = 1 reverses to INT32_MIN, which Java's Math.abs keeps negative (our choice, as Flink).
    assert url_of_channel["channel-1"].endswith("&channel_id=-2147483648")
    # q22: split_part(url, '/', 4..6) are the three random parts, '_' with probability 1/13.
    parts = [part for url in url_of_channel.values() for part in url.split("/")[3:6]]
    assert np.mean([part.count("_") / len(part) for part in parts]) == pytest.approx(1 / 13, abs=0.01)


# ---- determinism and replay ----


def test_same_range_gives_the_same_batches_and_the_seed_changes_only_random_fields() -> None:
    first = generate_events(NexmarkConfig(), 1, 5000)
    again = generate_events(NexmarkConfig(), 1, 5000)
    other = generate_events(NexmarkConfig(seed=1), 1, 5000)
    for kind in first:
        assert first[kind].equals(again[kind])
        assert first[kind].column("date_time").equals(other[kind].column("date_time"))
        assert not first[kind].column("extra").equals(other[kind].column("extra"))
    for kind in ("person", "auction"):
        assert first[kind].column("id").equals(other[kind].column("id"))


def ipc_bytes(batches: dict[str, pa.RecordBatch]) -> bytes:
    sink = pa.BufferOutputStream()
    for kind in sorted(batches):
        with pa.ipc.new_stream(sink, batches[kind].schema) as writer:
            writer.write_batch(batches[kind])
    return bytes(sink.getvalue().to_pybytes())


def test_a_new_process_generates_the_same_bytes() -> None:
    # What a restarted source relies on: nothing depends on process state such as hash seeds or caches.
    script = (
        "import sys, pyarrow as pa\n"
        "from tidegate.connectors.nexmark import NexmarkConfig, generate_events\n"
        "batches = generate_events(NexmarkConfig(seed=7), 12_345, 3000)\n"
        "sink = pa.BufferOutputStream()\n"
        "for kind in sorted(batches):\n"
        "    with pa.ipc.new_stream(sink, batches[kind].schema) as writer:\n"
        "        writer.write_batch(batches[kind])\n"
        "sys.stdout.buffer.write(sink.getvalue().to_pybytes())\n"
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert child.stdout == ipc_bytes(generate_events(NexmarkConfig(seed=7), 12_345, 3000))


@pytest.mark.parametrize("config", [NexmarkConfig(), RW_NUMBERED_CONFIG], ids=["flink", "rw"])
def test_a_range_equals_its_pieces_wherever_it_is_cut(config: NexmarkConfig) -> None:
    first, end = 1, 3001
    whole = generate_events(config, first, end - first)
    # Cuts inside the first proportion cycle, at its ends, and deep inside later ones.
    cuts = [first, 2, 3, 4, 5, 26, 49, 50, 51, 52, 1234, 2999, 3000, end]
    pieces = [generate_events(config, a, b - a) for a, b in itertools.pairwise(cuts)]
    for kind in whole:
        assert table([piece[kind] for piece in pieces]).equals(table([whole[kind]]))
    single = generate_events(config, 1234, 1)
    kind = ["person", "auction", "bid"][event_kinds(config, np.array([1234]))[0]]
    assert single[kind].num_rows == 1
    assert any(single[kind].equals(whole[kind].slice(i, 1)) for i in range(whole[kind].num_rows))
