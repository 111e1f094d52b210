"""The Nexmark queries tidegate runs as views equal DuckDB's batch answer over the same events.

``SUPPORTED`` lists the queries that pass; add a query by appending it (with a hand-written
DuckDB form only where the two dialects spell something differently). See README.md.
"""

from __future__ import annotations

import dataclasses
import decimal
from decimal import Decimal
from pathlib import Path

import pytest

from tidegate.connectors.nexmark import NexmarkConfig

from .harness import QUERIES_DIR, WATERMARK_DELAY, Answer, NexmarkQuery, check_query, reference_answer

# PostgreSQL's TO_CHAR patterns, EXTRACT and regexp_match written with DuckDB's own functions,
# so that the reference does not share tidegate's translation of them.
Q10_DUCKDB = """
SELECT auction, bidder, price, date_time, extra,
       strftime(date_time, '%Y-%m-%d') AS dt,
       strftime(date_time, '%H:%M') AS hm
FROM bid
"""
Q14_DUCKDB = """
SELECT auction, bidder, 0.908 * price AS price,
       CASE WHEN hour(date_time) >= 8 AND hour(date_time) <= 18 THEN 'dayTime'
            WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime'
            ELSE 'otherTime' END AS bid_time_type,
       date_time, extra,
       CAST(length(extra) - length(replace(extra, 'c', '')) AS INTEGER) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000
"""
Q21_DUCKDB = """
SELECT auction, bidder, price, channel,
       CASE WHEN lower(channel) = 'apple' THEN '0'
            WHEN lower(channel) = 'google' THEN '1'
            WHEN lower(channel) = 'facebook' THEN '2'
            WHEN lower(channel) = 'baidu' THEN '3'
            WHEN regexp_matches(url, '(&|^)channel_id=([^&]*)')
                THEN regexp_extract(url, '(&|^)channel_id=([^&]*)', 2)
       END AS channel_id
FROM bid
WHERE regexp_matches(url, '(&|^)channel_id=([^&]*)') OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')
"""


# Windows: TUMBLE and HOP spelled with DuckDB's own arithmetic (epoch-aligned buckets).
def _bucket(column: str, slide_s: int, back: str = "0") -> str:
    us = slide_s * 1_000_000
    return f"make_timestamp(CAST(floor(epoch_us({column}) / {us}) * {us} - ({back}) * {us} AS BIGINT))"


Q5_DUCKDB = f"""
WITH hop AS (
    SELECT b.auction, {_bucket("b.date_time", 2, "k")} AS window_start
    FROM bid b, (SELECT unnest(range(5)) AS k) ks
), windows AS (
    SELECT auction, window_start, window_start + INTERVAL 10 SECOND AS window_end FROM hop
)
SELECT AuctionBids.auction, AuctionBids.num
FROM (SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
      FROM windows GROUP BY auction, window_start, window_end) AS AuctionBids
JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
      FROM (SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
            FROM windows GROUP BY auction, window_start, window_end) AS CountBids
      GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
  ON AuctionBids.starttime = MaxBids.starttime
 AND AuctionBids.endtime = MaxBids.endtime
 AND AuctionBids.num >= MaxBids.maxn
"""
Q7_DUCKDB = f"""
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid B
JOIN (SELECT MAX(price) AS maxprice, window_start + INTERVAL 10 SECOND AS date_time
      FROM (SELECT price, {_bucket("date_time", 10)} AS window_start FROM bid) t
      GROUP BY window_start) B1 ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL 10 SECOND AND B1.date_time
"""
Q8_DUCKDB = f"""
SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, window_start AS starttime, window_start + INTERVAL 10 SECOND AS endtime
      FROM (SELECT id, name, {_bucket("date_time", 10)} AS window_start FROM person) t
      GROUP BY id, name, window_start) P
JOIN (SELECT seller, window_start AS starttime, window_start + INTERVAL 10 SECOND AS endtime
      FROM (SELECT seller, {_bucket("date_time", 10)} AS window_start FROM auction) t
      GROUP BY seller, window_start) A
  ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime
"""
# Top-N: tidegate breaks ties in row_number() by the input's key (the event number, _row_id).
Q9_DUCKDB = """
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, extra,
       auction, bidder, price, bid_date_time, bid_extra
FROM (
    SELECT A.id, A.item_name, A.description, A.initial_bid, A.reserve, A.date_time, A.expires,
           A.seller, A.category, A.extra,
           B.auction, B.bidder, B.price, B.date_time AS bid_date_time, B.extra AS bid_extra,
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC, B._row_id) AS rownum
    FROM auction A JOIN bid B ON A.id = B.auction
    WHERE B.date_time BETWEEN A.date_time AND A.expires
) tmp
WHERE rownum <= 1
"""
Q18_DUCKDB = """
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, _row_id) AS rank_number
      FROM bid) t
WHERE rank_number <= 1
"""
Q19_DUCKDB = """
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, _row_id) AS rank_number FROM bid) t
WHERE rank_number <= 10
"""
# q4's average of bigints is numeric; DuckDB's AVG is double, so the reference divides exactly.
Q4_DUCKDB = """
SELECT Q.category, CAST(SUM(Q.final) AS HUGEINT) AS total, COUNT(Q.final) AS n
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction A JOIN bid B ON A.id = B.auction
    WHERE B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category
"""


def _exact_average(answer: Answer) -> Answer:
    """(category, total, n) as (category, avg): numeric with tidegate's scale of 10, rounded half up
    as PostgreSQL rounds numerics."""
    quantum = Decimal(1).scaleb(-10)
    context = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)
    rows = [(c, context.divide(Decimal(t), Decimal(n)).quantize(quantum, context=context)) for c, t, n in answer.rows]
    return Answer(["category", "avg"], ["bigint", "numeric"], rows)


def _strftime(name: str) -> str:
    """The query file with TO_CHAR spelled as DuckDB's strftime (independent of tidegate's translation)."""
    text = (QUERIES_DIR / f"{name}.sql").read_text()
    text = text.replace("TO_CHAR(date_time, 'YYYY-MM-DD')", "strftime(date_time, '%Y-%m-%d')")
    return text.replace("TO_CHAR(date_time, 'HH24:MI')", "strftime(date_time, '%H:%M')")


# q17's AVG(price) as an exact sum and count, divided by _exact_averages.
Q17_DUCKDB = _strftime("q17").replace("AVG(price)", "CAST(SUM(price) AS HUGEINT) || '/' || COUNT(price)")


def _exact_averages(answer: Answer) -> Answer:
    """Columns named avg_* hold 'total/count' text: each becomes the numeric average."""
    quantum = Decimal(1).scaleb(-10)
    context = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)
    positions = [i for i, name in enumerate(answer.names) if name.startswith("avg")]

    def average(text: str) -> Decimal:
        total, count = text.split("/")
        return context.divide(Decimal(total), Decimal(count)).quantize(quantum, context=context)

    rows = [tuple(average(v) if i in positions else v for i, v in enumerate(row)) for row in answer.rows]
    kinds = ["numeric" if i in positions else k for i, k in enumerate(answer.kinds)]
    return Answer(answer.names, kinds, rows)


# 200 events per second of event time: 20,000 events span 100 s, ten 10-second windows.
DENSE_CONFIG = NexmarkConfig(first_event_rate=200, num_event_generators=1)
SIDE_INPUT = (
    "CREATE TABLE side_input (key BIGINT PRIMARY KEY, value VARCHAR)",
    "INSERT INTO side_input SELECT i, CAST(i AS VARCHAR) FROM generate_series(0, 9999) AS s(i)",
)

SUPPORTED = [
    NexmarkQuery("q0"),
    NexmarkQuery("q1"),
    NexmarkQuery("q2"),
    NexmarkQuery("q10", duckdb=Q10_DUCKDB),
    NexmarkQuery("q14", duckdb=Q14_DUCKDB),
    NexmarkQuery("q21", duckdb=Q21_DUCKDB),
    NexmarkQuery("q22"),
    NexmarkQuery("q3"),
    NexmarkQuery("q4", duckdb=Q4_DUCKDB, finish=_exact_average),
    NexmarkQuery("q5", duckdb=Q5_DUCKDB, config=DENSE_CONFIG),
    NexmarkQuery("q7", duckdb=Q7_DUCKDB, config=DENSE_CONFIG),
    NexmarkQuery("q8", duckdb=Q8_DUCKDB, config=DENSE_CONFIG),
    NexmarkQuery("q9", duckdb=Q9_DUCKDB, row_ids=True),
    NexmarkQuery("q13", setup=SIDE_INPUT),
    NexmarkQuery("q15", duckdb=_strftime("q15")),
    NexmarkQuery("q16", duckdb=_strftime("q16")),
    NexmarkQuery("q17", duckdb=Q17_DUCKDB, finish=_exact_averages),
    NexmarkQuery("q18", duckdb=Q18_DUCKDB, row_ids=True),
    NexmarkQuery("q19", duckdb=Q19_DUCKDB, row_ids=True),
    NexmarkQuery("q20"),
]


@pytest.mark.parametrize("query", SUPPORTED, ids=[q.name for q in SUPPORTED])
def test_view_equals_the_batch_answer(query: NexmarkQuery, tmp_path: Path) -> None:
    check_query(query, tmp_path / "db")


# ---- watermarks (docs/design/20261127_watermarks.md) -----------------------------------------------
# Sources declared with schema.sql's WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND. After
# the last event the watermark is max(date_time) - 4 s of each source: an EMIT ON WINDOW CLOSE view
# holds exactly the windows ending at or before it.
def _windowed(table: str, columns: str, slide_s: int, size_s: int, closed: bool) -> str:
    """``table``'s rows with each window holding them (DuckDB), only the closed windows if ``closed``."""
    copies = size_s // slide_s
    start = _bucket("r.date_time", slide_s, "k")
    delay = WATERMARK_DELAY.removeprefix("INTERVAL ")
    where = f"WHERE window_end <= (SELECT max(date_time) FROM {table}) - INTERVAL {delay}" if closed else ""
    return f"""(SELECT * FROM (
        SELECT {columns}, {start} AS window_start, {start} + INTERVAL {size_s} SECOND AS window_end
        FROM {table} r, (SELECT unnest(range({copies})) AS k) ks) w {where})"""


Q5_EOWC = """
SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
GROUP BY auction, window_start, window_end
EMIT ON WINDOW CLOSE
"""
Q7_EOWC = """
SELECT window_start, window_end, MAX(price) AS maxprice
FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
GROUP BY window_start, window_end
EMIT ON WINDOW CLOSE
"""
Q8_EOWC = """
SELECT id, name, window_start AS starttime
FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
GROUP BY id, name, window_start, window_end
EMIT ON WINDOW CLOSE
"""


def _eowc_references(closed: bool) -> dict[str, str]:
    """The DuckDB answers of the EMIT ON WINDOW CLOSE variants: over closed windows, or over all."""
    return {
        "q5_eowc": f"""SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
            FROM {_windowed("bid", "r.auction", 2, 10, closed)} GROUP BY auction, window_start, window_end""",
        "q7_eowc": f"""SELECT window_start, window_end, MAX(price) AS maxprice
            FROM {_windowed("bid", "r.price", 10, 10, closed)} GROUP BY window_start, window_end""",
        "q8_eowc": f"""SELECT id, name, window_start AS starttime
            FROM {_windowed("person", "r.id, r.name", 10, 10, closed)} GROUP BY id, name, window_start, window_end""",
    }


CLOSED_WINDOWS, ALL_WINDOWS = _eowc_references(closed=True), _eowc_references(closed=False)

WATERMARKED = [
    # Emit on window close: only the windows the final watermark closed.
    NexmarkQuery("q5_eowc", CLOSED_WINDOWS["q5_eowc"], DENSE_CONFIG, watermarks=True, text=Q5_EOWC),
    NexmarkQuery("q7_eowc", CLOSED_WINDOWS["q7_eowc"], DENSE_CONFIG, watermarks=True, text=Q7_EOWC),
    NexmarkQuery("q8_eowc", CLOSED_WINDOWS["q8_eowc"], DENSE_CONFIG, watermarks=True, text=Q8_EOWC),
    # The queries as they are: their windowed aggregations forget closed windows (state cleanup), and the
    # views still equal the whole answer.
    NexmarkQuery("q5", duckdb=Q5_DUCKDB, config=DENSE_CONFIG, watermarks=True),
    NexmarkQuery("q7", duckdb=Q7_DUCKDB, config=DENSE_CONFIG, watermarks=True),
    NexmarkQuery("q8", duckdb=Q8_DUCKDB, config=DENSE_CONFIG, watermarks=True),
]


@pytest.mark.parametrize("query", WATERMARKED, ids=[f"{q.name}-watermarked" for q in WATERMARKED])
def test_view_over_watermarked_sources_equals_the_batch_answer(query: NexmarkQuery, tmp_path: Path) -> None:
    answer = check_query(query, tmp_path / "db")
    if query.name in ALL_WINDOWS:
        # The final watermark (4 s before the last event) leaves the last windows open and out of the view.
        every_window = reference_answer(dataclasses.replace(query, duckdb=ALL_WINDOWS[query.name]))
        assert len(answer.rows) < len(every_window.rows)
