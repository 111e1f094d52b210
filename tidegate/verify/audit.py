"""Reading every output of the verification pipeline back, and counting what went wrong.

Per output, against the records the workload got acknowledged:

- **lost**: expected records the output does not hold;
- **duplicated**: records the output holds more than once (each extra copy counts);
- **out of order**: records that arrived after a higher ``seq`` of the same key had arrived
  (first arrivals only, so a replayed duplicate is not counted twice); not counted for the view,
  whose rows have no order.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, TopicPartition

Record = tuple[int, int]


@dataclass(frozen=True)
class Audit:
    output: str
    expected: int
    received: int
    lost: int
    duplicated: int
    out_of_order: int | None  # None: the output has no order


def audit(output: str, expected: set[Record], received: list[Record], *, ordered: bool) -> Audit:
    counts = Counter(received)
    lost = len(expected - counts.keys())
    duplicated = sum(n - 1 for n in counts.values())
    out_of_order = None
    if ordered:
        out_of_order = 0
        highest: dict[int, int] = {}
        seen: set[Record] = set()
        for key, seq in received:
            if (key, seq) in seen:
                continue
            seen.add((key, seq))
            if seq < highest.get(key, -1):
                out_of_order += 1
            highest[key] = max(seq, highest.get(key, -1))
    return Audit(output, len(expected), len(received), lost, duplicated, out_of_order)


def audit_counts(output: str, expected: set[Record], counts: dict[int, int]) -> Audit:
    """An aggregate output (records per key): a key short of its records lost them, a key over
    its records holds duplicates."""
    wanted = Counter(key for key, _ in expected)
    lost = sum(max(0, n - counts.get(key, 0)) for key, n in wanted.items())
    duplicated = sum(max(0, n - wanted.get(key, 0)) for key, n in counts.items())
    return Audit(output, len(expected), sum(counts.values()), lost, duplicated, None)


def read_postgres_counts(url: str, table: str) -> dict[int, int]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(f'SELECT key, n FROM "{table}"').fetchall()
    return {int(k): int(n) for k, n in rows}


def _record(row: dict[str, object]) -> Record:
    return int(row["key"]), int(row["seq"])  # type: ignore[call-overload]


def read_kafka(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every committed record of the (one-partition) topic, in offset order, as read_committed sees it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-audit",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout_s)
        consumer.assign([TopicPartition(topic, 0, low)])
        records: list[Record] = []
        position = low
        while position < high:
            messages = consumer.consume(1000, 1.0)
            if not messages:
                position = consumer.position([TopicPartition(topic, 0)])[0].offset
                continue
            for message in messages:
                offset, value = message.offset(), message.value()
                if message.error() is not None or offset is None:
                    continue
                position = offset + 1
                if value is not None:
                    records.append(_record(json.loads(value)))
        return records
    finally:
        consumer.close()


def read_postgres(url: str, table: str) -> list[Record]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(f'SELECT key, seq FROM "{table}" ORDER BY arrival').fetchall()
    return [(int(k), int(s)) for k, s in rows]


def read_files(directory: Path) -> list[Record]:
    """Published files in epoch order, then files written without a checkpoint, in write order."""
    if not directory.exists():
        return []
    checked = sorted(p for p in directory.glob("part-*.jsonl") if "unchecked" not in p.name)
    unchecked = sorted(directory.glob("part-unchecked-*.jsonl"), key=lambda p: int(p.stem.rsplit("-", 1)[-1]))
    records: list[Record] = []
    for path in [*checked, *unchecked]:
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(_record(json.loads(line)))
    return records
