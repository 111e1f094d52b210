"""Benchmark: Kafka -> the revenue view -> a PostgreSQL upsert sink, end to end.

    python bench/sinks.py [--records N] [--kafka HOST:PORT] [--postgres URL]
                          [--guarantees exactly_once,at_least_once] [--partitions 4] [--repeat 1]
                          [--kafka-properties fetch.queue.backoff.ms=10] [--profile]

Load (not timed): a fresh topic with ``--partitions`` partitions gets N order records (default
1,000,000), JSON ``{"order_id": i, "product_category": "category_07", "amount": 123.45,
"order_time": "2026-11-28 10:00:00.123"}``, from a confluent_kafka Producer (linger, large
batches), flushed. The expected answer (per category: count and exact Decimal sum) is computed
while producing.

Per guarantee, in a fresh worker process with a fresh data dir (checkpoints to
``DATA_DIR/objects`` on every barrier, one a second, fsync on) and a fresh PostgreSQL table
``revenue_<guarantee>_<random> (product_category VARCHAR PRIMARY KEY, order_count BIGINT,
total_revenue NUMERIC)``: ``SET delivery_guarantee``, ``CREATE SOURCE orders … (connector =
'kafka', scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON``. Then the clock starts:
``CREATE MATERIALIZED VIEW revenue AS SELECT product_category, COUNT(*), SUM(amount) … GROUP BY
product_category`` (its source starts reading the topic from its beginning on the barrier that
creates it), ``CREATE SINK … FROM revenue WITH (connector = 'postgres', type = 'upsert', …)``, and
the clock stops when the PostgreSQL table holds exactly the expected answer (polled). The whole
topic is in Kafka before the clock starts, so the figure is how fast tidegate turns a backlog of N
records into the final answer in PostgreSQL, not a producer's speed.

References, measured in the same run, each in a fresh worker:

(a) consume-only: a plain confluent_kafka Consumer (all partitions assigned, ``consume(10,000)``
    as the source does) reads the N records and decodes them with tidegate's own
    ``RecordDecoder``: the ceiling of the source on one core;
(b) blackhole: the same pipeline (exactly_once) with a ``blackhole`` sink; its clock stops when
    the sink has delivered the first checkpoint taken after the source read the last record.

Correctness, every run: the final PostgreSQL table must equal the expected answer exactly
(counts and sums), and under exactly_once ``tidegate_sink_progress`` must hold the sink's row at
an epoch of this run. A wrong answer is reported loudly and makes the exit status 2.

``--kafka-properties K=V,...`` hands librdkafka settings to the source (``properties.K``) and to the
consume-only reader alike; by default both run with the source's settings (librdkafka's defaults
but ``fetch.queue.backoff.ms = 10``). See bench/README.md for what that setting does to these figures.

This is a benchmark, not a test: nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import traceback
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import ms_text, shout
from nexmark import markdown_table, print_profile, summarize_profile

# The repository's own tidegate, whether or not (or wherever) it is installed.
sys.path.insert(1, str(_common.REPO_DIR))

RESULT_MARKER = "@@SINKS_RESULT@@ "
KAFKA_DEFAULT = "127.0.0.1:29092"  # scripts/start-kafka.sh
POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:54329/tidegate_test"  # scripts/start-postgres.sh
GUARANTEES = ("exactly_once", "at_least_once", "at_most_once")
COLUMNS = (("order_id", "BIGINT"), ("product_category", "VARCHAR"), ("amount", "DECIMAL"), ("order_time", "TIMESTAMP"))
CREATE_SOURCE = (
    "CREATE SOURCE orders (order_id BIGINT, product_category VARCHAR, amount DECIMAL, order_time TIMESTAMP) "
    "WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{kafka}', "
    "scan.startup.mode = 'earliest'{properties}) FORMAT PLAIN ENCODE JSON"
)
CREATE_VIEW = (
    "CREATE MATERIALIZED VIEW revenue AS SELECT product_category, COUNT(*) AS order_count, "
    "SUM(amount) AS total_revenue FROM orders GROUP BY product_category"
)
CREATE_PG_TABLE = (
    "CREATE TABLE {table} (product_category VARCHAR PRIMARY KEY, order_count BIGINT, total_revenue NUMERIC)"
)
PRODUCE_BLOCK_RECORDS = 100_000  # records generated (numpy) and produced per step of the load
CONSUME_BATCH_RECORDS = 10_000  # the Kafka source's max.records.per.chunk default
CONSUME_TIMEOUT_S = 0.1  # the source's POLL_TIMEOUT_S
SLOW_READ_S = 30.0  # tidegate_checkpoints keeps the last 100 checkpoints (one a second): read it more often
GRACE_S = 10.0  # after the sink delivered everything, how long the table may take to show it (never, if wrong)

Answer = dict[str, tuple[int, Decimal]]


# ---- load: the topic and the expected answer ---------------------------------------------------
def category_names(categories: int) -> list[str]:
    return [f"category_{i:02d}" for i in range(categories)]


def _payloads(start: int, count: int, categories: np.ndarray, cents: np.ndarray, names: list[str]) -> list[bytes]:
    """Records ``start .. start+count-1`` as JSON; ``amount`` is a JSON number with 2 decimals and
    ``order_time`` steps 1 ms per record (wrapping every hour)."""
    out = []
    for i, category, amount in zip(range(start, start + count), categories.tolist(), cents.tolist()):
        ms = i % 3_600_000
        out.append(
            (
                f'{{"order_id": {i}, "product_category": "{names[category]}", '
                f'"amount": {amount // 100}.{amount % 100:02d}, '
                f'"order_time": "2026-11-28 10:{ms // 60_000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"}}'
            ).encode()
        )
    return out


def load_topic(args: argparse.Namespace) -> dict[str, Any]:
    """Create the topic and produce the records; returns the topic, timings and the expected answer."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"tidegate_bench_sinks_{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": args.kafka})
    for future in admin.create_topics([NewTopic(topic, args.partitions, 1)], operation_timeout=30).values():
        future.result(60)
    producer = Producer(
        {
            "bootstrap.servers": args.kafka,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2 * PRODUCE_BLOCK_RECORDS,
            "compression.type": "none",
        }
    )
    names = category_names(args.categories)
    counts = np.zeros(args.categories, dtype=np.int64)
    cents_sums = np.zeros(args.categories, dtype=np.int64)
    payload_bytes = 0
    start = time.perf_counter()
    for block, offset in enumerate(range(0, args.records, PRODUCE_BLOCK_RECORDS)):
        count = min(PRODUCE_BLOCK_RECORDS, args.records - offset)
        rng = np.random.default_rng([args.seed, block])
        categories = rng.integers(0, args.categories, count, dtype=np.int64)
        cents = rng.integers(1, 100_000, count, dtype=np.int64)  # 0.01 .. 999.99
        counts += np.bincount(categories, minlength=args.categories)
        np.add.at(cents_sums, categories, cents)  # integers: exact
        for payload in _payloads(offset, count, categories, cents, names):
            payload_bytes += len(payload)
            while True:
                try:
                    producer.produce(topic, payload)
                    break
                except BufferError:  # the local queue is full: let librdkafka send
                    producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - start
    if remaining:
        raise SystemExit(f"{remaining} records were not delivered to {args.kafka} within 120 s")
    expected = {
        names[i]: (int(counts[i]), str(Decimal(int(cents_sums[i])).scaleb(-2)))
        for i in range(args.categories)
        if counts[i]
    }
    return {
        "topic": topic,
        "records": args.records,
        "partitions": args.partitions,
        "payload_bytes": payload_bytes,
        "produce_seconds": seconds,
        "expected": expected,
    }


def delete_topic(kafka: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(60)


def answer_of(rows: list[tuple[Any, ...]]) -> Answer:
    return {str(c): (int(n), Decimal(str(s))) for c, n, s in rows}


def expected_answer(expected: dict[str, Any]) -> Answer:
    return {c: (int(n), Decimal(s)) for c, (n, s) in expected.items()}


def compare(got: Answer, expected: Answer) -> dict[str, Any]:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    problems = (
        [f"missing group {k!r}" for k in missing[:5]]
        + [f"unexpected group {k!r}: {got[k]}" for k in extra[:5]]
        + [f"{k!r}: got {got[k][0]} / {got[k][1]}, expected {expected[k][0]} / {expected[k][1]}" for k in wrong[:5]]
    )
    return {
        "correct": not (missing or extra or wrong),
        "groups": len(got),
        "orders_total": sum(n for n, _ in got.values()),
        "revenue_total": str(sum((s for _, s in got.values()), Decimal(0))),
        "missing_groups": len(missing),
        "extra_groups": len(extra),
        "wrong_groups": len(wrong),
        "examples": problems,
    }


# ---- PostgreSQL: the target tables ----------------------------------------------------------------
def pg_create_table(url: str, table: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CREATE_PG_TABLE.format(table=table))


def pg_read_table(url: str, table: str) -> Answer:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return answer_of(conn.execute(f"SELECT product_category, order_count, total_revenue FROM {table}").fetchall())


def pg_progress_epoch(url: str, sink_name: str) -> int | None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('tidegate_sink_progress')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT epoch FROM tidegate_sink_progress WHERE sink_name = %s", (sink_name,)).fetchone()
    return None if row is None else int(row[0])


def pg_clean_up(url: str, table: str, sink_name: str) -> None:
    """Drop this run's table and its sink's progress row (the database is shared with tests)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        exists = conn.execute("SELECT to_regclass('tidegate_sink_progress')").fetchone()
        if exists is not None and exists[0] is not None:
            conn.execute("DELETE FROM tidegate_sink_progress WHERE sink_name = %s", (sink_name,))


# ---- worker: consume-only reference ---------------------------------------------------------------
def worker_consume(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the topic as the Kafka source's fetch thread does (all partitions assigned to one consumer,
    ``consume(10,000, 0.1 s)``, the same decoding), without anything downstream."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from tidegate.common.types import parse_type_name
    from tidegate.connectors.record_decode import RecordDecoder

    decoder = RecordDecoder("JSON", [n for n, _ in COLUMNS], [parse_type_name(t) for _, t in COLUMNS], {})
    consumer = Consumer(
        {
            "bootstrap.servers": spec["kafka"],
            "group.id": f"tidegate-bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            # The Kafka source's own default (kafka_source.py): the reference reads as the source does.
            "fetch.queue.backoff.ms": 10,
            **spec["kafka_properties"],
        }
    )
    try:
        metadata = consumer.list_topics(topic=spec["topic"], timeout=10)
        partitions = sorted(metadata.topics[spec["topic"]].partitions)
        cpu0, start = _common.cpu_seconds(), time.perf_counter()
        consumer.assign([TopicPartition(spec["topic"], p, OFFSET_BEGINNING) for p in partitions])
        records = rows = errors = batches = 0
        decode_seconds = 0.0
        deadline = start + spec["timeout_s"]
        while records < spec["records"]:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"read {records:,} of {spec['records']:,} records in {spec['timeout_s']:g}s")
            messages = consumer.consume(CONSUME_BATCH_RECORDS, CONSUME_TIMEOUT_S)
            partitions_read, offsets, payloads = [], [], []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"partition {message.partition()}: {error.str()}")
                partitions_read.append(message.partition())
                offsets.append(message.offset())
                payloads.append(message.value())
            if not payloads:
                continue
            # As the source's fetch thread does (it keeps them for the row ids and the offsets).
            np.asarray(partitions_read, dtype=np.int32), np.asarray(offsets, dtype=np.int64)
            decode_start = time.perf_counter()
            decoded = decoder.decode(payloads)
            decode_seconds += time.perf_counter() - decode_start
            records += len(payloads)
            rows += decoded.batch.num_rows
            errors += len(decoded.errors)
            batches += 1
        end, cpu1 = time.perf_counter(), _common.cpu_seconds()
    finally:
        consumer.close()
    return {
        "seconds": end - start,
        "cpu_seconds": cpu1 - cpu0,
        "decode_seconds": decode_seconds,
        "records_read": records,
        "rows_decoded": rows,
        "decode_errors": errors,
        "batches": batches,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---- worker: the pipeline -------------------------------------------------------------------------
def _checkpoints(db: Any, after_epoch: int, into: dict[int, dict[str, Any]]) -> None:
    result = db.execute_result("SELECT * FROM tidegate_checkpoints")
    names = [c.name for c in result.columns or []]
    for row in result.rows:
        record = dict(zip(names, row))
        if record["epoch"] > after_epoch:
            into[record["epoch"]] = record


def _failed_jobs(db: Any) -> list[tuple[Any, ...]]:
    return db.execute("SELECT name, error FROM tidegate_jobs WHERE status = 'failed'")


def _pg_totals_match(conn: Any, table: str, expected: Answer, count_total: int, revenue_total: Decimal) -> bool:
    """One cheap query first (count, sums); the whole table only once the totals are right."""
    row = conn.execute(f"SELECT count(*), sum(order_count), sum(total_revenue) FROM {table}").fetchone()
    if row is None or row[0] != len(expected) or row[1] != count_total or row[2] != revenue_total:
        return False
    rows = conn.execute(f"SELECT product_category, order_count, total_revenue FROM {table}").fetchall()
    return answer_of(rows) == expected


def _wait(db: Any, spec: dict[str, Any], pg: Any, start: float, epoch0: int) -> dict[str, Any]:
    """Poll until the target holds the answer: PostgreSQL's table equals it, or (blackhole) the sink
    delivered the first checkpoint taken after the source read the last record.

    Milestones: ``source_seconds`` when the source had read all N records (its offsets, read
    from the runtime without a batch query); ``settled_seconds`` when the checkpoint after that
    had committed and (exactly_once) been delivered. A barrier injected after the last record was
    read has ``prev`` >= the last epoch injected so far, and its checkpoint commits as that
    ``prev``: so the first checkpoint >= ``coordinator.last_injected`` read after the source
    reached N covers every record.
    """
    database = db.database
    runtime, coordinator = database.streaming.runtime, database.streaming.coordinator
    expected = expected_answer(spec["expected"])
    count_total = sum(n for n, _ in expected.values())
    revenue_total = sum((s for _, s in expected.values()), Decimal(0))
    exactly_once = spec["guarantee"] == "exactly_once"
    deadline = start + spec["timeout_s"]
    next_read = time.perf_counter() + SLOW_READ_S
    checkpoints: dict[int, dict[str, Any]] = {}
    source_at = settled_at = answer_at = None
    settle_epoch: int | None = None
    polls = 0
    while True:
        now = time.perf_counter()
        polls += 1
        if source_at is None and sum(p.next_offset or 0 for p in runtime.source_progress()) >= spec["records"]:
            source_at, settle_epoch = now, coordinator.last_injected
        if settle_epoch is not None and settled_at is None:
            statuses = runtime.sink_status()
            if exactly_once:
                settled = bool(statuses) and statuses[0].delivered_epoch >= settle_epoch
            else:
                settled = database.committed_epoch() >= settle_epoch
            if settled:
                settled_at = now
        if pg is not None:
            if _pg_totals_match(pg, spec["table"], expected, count_total, revenue_total):
                answer_at = time.perf_counter()
                break
        elif settled_at is not None:
            answer_at = settled_at
            break
        if settled_at is not None and now - settled_at > GRACE_S:
            break  # everything was delivered, and the table is still not right: WRONG
        if now >= next_read:
            next_read = now + SLOW_READ_S
            _checkpoints(db, epoch0, checkpoints)
            failed = _failed_jobs(db)
            if failed:
                raise RuntimeError(f"a streaming job failed: {failed}")
        if now > deadline:
            raise RuntimeError(
                f"no answer within {spec['timeout_s']:g}s (source read all: {source_at is not None}, "
                f"settled: {settled_at is not None})"
            )
        time.sleep(spec["poll_s"])

    def since(at: float | None) -> float | None:
        return None if at is None else at - start

    return {
        "answer_seen": answer_at is not None,
        "end": answer_at if answer_at is not None else time.perf_counter(),
        "source_seconds": since(source_at),
        "settled_seconds": since(settled_at),
        "settle_epoch": settle_epoch,
        "polls": polls,
        "checkpoints": checkpoints,
    }


def worker_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    import tidegate

    postgres = spec["sink"] == "postgres"
    if postgres:
        with_options = f"connector = 'postgres', url = '{spec['postgres']}', table = '{spec['table']}', type = 'upsert'"
    else:
        with_options = "connector = 'blackhole', type = 'upsert'"
    create_sink = f"CREATE SINK {spec['sink_name']} FROM revenue WITH ({with_options})"
    pg = psycopg.connect(spec["postgres"], autocommit=True) if postgres else None
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-sinks-") as tmp:
        db = tidegate.connect(Path(tmp) / "db", fsync=True, state_store_url="fs")
        try:
            db.execute(f"SET delivery_guarantee = '{spec['guarantee']}'")
            properties = "".join(f", properties.{k} = '{v}'" for k, v in spec["kafka_properties"].items())
            db.execute(CREATE_SOURCE.format(topic=spec["topic"], kafka=spec["kafka"], properties=properties))
            epoch0 = db.database.flush()
            cpu0, start = _common.cpu_seconds(), time.perf_counter()
            db.execute(CREATE_VIEW)
            view_created = time.perf_counter()
            db.execute(create_sink)
            sink_created = time.perf_counter()
            waited = _wait(db, spec, pg, start, epoch0)
            end, cpu1 = waited.pop("end"), _common.cpu_seconds()
            peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            checkpoints = waited.pop("checkpoints")
            _checkpoints(db, epoch0, checkpoints)
            sinks = db.execute_result("SELECT * FROM tidegate_sinks")
            sink_rows = [dict(zip([c.name for c in sinks.columns or []], row)) for row in sinks.rows]
            failed = _failed_jobs(db)
            if failed:
                raise RuntimeError(f"a streaming job failed: {failed}")
            view = answer_of(db.execute("SELECT product_category, order_count, total_revenue FROM revenue"))
        finally:
            db.close()
            if pg is not None:
                pg.close()
    return {
        "seconds": end - start,
        "create_view_seconds": view_created - start,
        "create_sink_seconds": sink_created - view_created,
        **waited,
        "cpu_seconds": cpu1 - cpu0,
        "peak_rss_mib": peak_rss_mib,
        "epoch_before": epoch0,
        "checkpoints": [checkpoints[e] for e in sorted(checkpoints)],
        "sinks": sink_rows,
        "view_answer": {k: [n, str(s)] for k, (n, s) in view.items()},
    }


WORKERS = {"consume": worker_consume, "pipeline": worker_pipeline}


def run_worker(spec: dict[str, Any], profile_to: Path | None = None) -> dict[str, Any]:
    return _common.run_worker(__file__, RESULT_MARKER, spec, profile_to)


# ---- the parent: one measurement at a time ---------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def consume_run(args: argparse.Namespace, load: dict[str, Any], run: int) -> dict[str, Any]:
    spec = {"kind": "consume", "kafka": args.kafka, "topic": load["topic"], "records": args.records,
            "timeout_s": args.timeout_s, "kafka_properties": args.kafka_properties}  # fmt: skip
    load_before = os.getloadavg()[0]
    try:
        result = run_worker(spec)
    except Exception as error:
        traceback.print_exception(error)
        result = {"error": f"{type(error).__name__}: {error}"}
    result.update(label="consume + decode (reference)", guarantee=None, sink=None, run=run,
                  loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])  # fmt: skip
    if "error" in result:
        shout(f"consume-only run {run}: FAILED", [result["error"]])
        return result
    result["records_per_s"] = args.records / result["seconds"]
    result["records_per_cpu_s"] = args.records / result["cpu_seconds"]
    ok = result["rows_decoded"] == args.records and result["decode_errors"] == 0
    result["check"] = "decoded" if ok else f"WRONG: {result['rows_decoded']:,} rows, {result['decode_errors']} errors"
    if not ok:
        shout(f"consume-only run {run}: {result['check']}", [])
    print(f"  consume-only: {result['seconds']:.2f}s ({result['decode_seconds']:.2f}s in RecordDecoder), "
          f"{result['records_per_s']:,.0f} records/s, CPU {result['cpu_seconds']:.2f}s, "
          f"{result['batches']} batches, load avg {load_before:.2f}->{result['loadavg_1m_after']:.2f}",
          flush=True)  # fmt: skip
    return result


def pipeline_run(
    args: argparse.Namespace,
    load: dict[str, Any],
    guarantee: str,
    sink: str,
    run: int,
    profile_to: Path | None,
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    table = f"revenue_{guarantee}_{suffix}"
    # The progress row is keyed by sink name in a database shared with tests: a name of our own.
    sink_name = f"revenue_{'pg' if sink == 'postgres' else sink}_{suffix}"
    label = f"Kafka -> view -> {'PostgreSQL' if sink == 'postgres' else 'blackhole'}"
    spec = {
        "kind": "pipeline", "guarantee": guarantee, "sink": sink, "sink_name": sink_name, "table": table,
        "kafka": args.kafka, "postgres": args.postgres, "topic": load["topic"], "records": args.records,
        "expected": load["expected"], "poll_s": args.poll_ms / 1000, "timeout_s": args.timeout_s,
        "kafka_properties": args.kafka_properties,
    }  # fmt: skip
    if sink == "postgres":
        pg_create_table(args.postgres, table)
    load_before = os.getloadavg()[0]
    try:
        result = run_worker(spec, profile_to)
    except Exception as error:
        traceback.print_exception(error)
        result = {"error": f"{type(error).__name__}: {error}"}
    result.update(label=label, guarantee=guarantee, sink=sink, run=run, table=table, sink_name=sink_name,
                  loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])  # fmt: skip
    if profile_to is not None:
        result["profile"] = str(profile_to)
        result["profiled"] = True  # py-spy slows the worker down: not a throughput figure
    expected = expected_answer(load["expected"])
    problems: list[str] = []
    if sink == "postgres":
        result["check"] = compare(pg_read_table(args.postgres, table), expected)
        progress = pg_progress_epoch(args.postgres, sink_name)
        result["progress_epoch"] = progress
        if guarantee == "exactly_once" and "error" not in result:
            delivered = result["sinks"][0]["delivered_epoch"] if result["sinks"] else None
            if progress is None or delivered is None or not result["epoch_before"] < progress <= delivered:
                problems.append(f"tidegate_sink_progress holds epoch {progress} for {sink_name}; expected one "
                                f"after {result['epoch_before']} and at most the delivered {delivered}")  # fmt: skip
        if not args.keep:
            pg_clean_up(args.postgres, table, sink_name)
    elif "error" not in result:
        result["check"] = compare(expected_answer(result["view_answer"]), expected)  # the view, at least
    if "error" in result:
        shout(f"{label} ({guarantee}) run {run}: FAILED", [result["error"]])
        result["answer"] = "FAILED"
        return result
    problems += result["check"]["examples"]
    if not result["answer_seen"]:
        problems.append(f"the target never showed the answer within {GRACE_S:g}s after everything was delivered")
    result["answer"] = "correct" if not problems else "WRONG"
    if problems:
        shout(f"{label} ({guarantee}) run {run}: WRONG answer", problems)
    result["records_per_s"] = args.records / result["seconds"]
    result["records_per_cpu_s"] = args.records / result["cpu_seconds"]
    durations = [c["duration_ms"] for c in result["checkpoints"]]
    result["checkpoint_ms_p50"] = _percentile(durations, 50)
    result["checkpoint_ms_p99"] = _percentile(durations, 99)
    result["checkpoint_ms_max"] = max(durations) if durations else None
    status = result["sinks"][0] if result["sinks"] else {}
    print(f"  {label} ({guarantee}): {result['seconds']:.2f}s (CREATE VIEW {result['create_view_seconds']:.2f}s, "
          f"CREATE SINK {result['create_sink_seconds']:.2f}s, source read all at "
          f"{_seconds_text(result['source_seconds'])}s, delivered at {_seconds_text(result['settled_seconds'])}s), "
          f"{result['records_per_s']:,.0f} records/s, CPU {result['cpu_seconds']:.2f}s, peak RSS "
          f"{result['peak_rss_mib']:,.0f} MiB, {len(durations)} checkpoints p50/p99 "
          f"{ms_text(result['checkpoint_ms_p50'])}/{ms_text(result['checkpoint_ms_p99'])} ms, sink delivered "
          f"{status.get('delivered_rows')} rows up to epoch {status.get('delivered_epoch')}, progress row epoch "
          f"{result.get('progress_epoch')}, {result['answer']}, load avg "
          f"{load_before:.2f}->{result['loadavg_1m_after']:.2f}", flush=True)  # fmt: skip
    return result


def _seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str | None:
    if value is None or value <= 0:
        return None
    return f"{value:.3f} (1/{1 / value:,.1f})" if value < 1 else f"{value:.2f}x"


def _by(runs: list[dict[str, Any]], run: int, sink: str | None, guarantee: str | None) -> dict[str, Any] | None:
    for r in runs:
        if r["run"] == run and r["sink"] == sink and r["guarantee"] == guarantee and "records_per_s" in r:
            return r
    return None


def report_table(runs: list[dict[str, Any]]) -> str:
    headers = ["pipeline", "guarantee", "run", "records/s", "vs consume-only", "vs blackhole", "records/CPU-s",
               "CPU s", "peak RSS MiB", "source read all s", "delivered s", "end s", "checkpoints",
               "ckpt p50 ms", "ckpt p99 ms", "sink rows", "answer"]  # fmt: skip
    rows: list[list[Any]] = []
    for r in runs:
        if "records_per_s" not in r:
            rows.append([r["label"], r["guarantee"] or "-", r["run"], *[None] * 13, "FAILED"])
            continue
        consume = _by(runs, r["run"], None, None)
        blackhole = _by(runs, r["run"], "blackhole", "exactly_once")
        if r["sink"] is None:
            rows.append([r["label"], "-", r["run"], r["records_per_s"], "1", None, r["records_per_cpu_s"],
                         r["cpu_seconds"], r["peak_rss_mib"], None, None, r["seconds"], None, None, None, None,
                         r["check"]])  # fmt: skip
            continue
        status = r["sinks"][0] if r["sinks"] else {}
        answer = f"{r['answer']} (profiled)" if r.get("profiled") else r["answer"]
        rows.append([
            r["label"], r["guarantee"], r["run"], r["records_per_s"],
            _ratio(r["records_per_s"] / consume["records_per_s"] if consume else None),
            _ratio(r["records_per_s"] / blackhole["records_per_s"]) if blackhole and r["sink"] != "blackhole" else None,
            r["records_per_cpu_s"], r["cpu_seconds"], r["peak_rss_mib"], r["source_seconds"], r["settled_seconds"],
            r["seconds"], len(r["checkpoints"]), r["checkpoint_ms_p50"], r["checkpoint_ms_p99"],
            status.get("delivered_rows"), answer,
        ])  # fmt: skip
    return markdown_table(headers, rows)


def ratio_lines(runs: list[dict[str, Any]], repeat: int) -> list[str]:
    lines = []
    for run in range(1, repeat + 1):
        exactly = _by(runs, run, "postgres", "exactly_once")
        least = _by(runs, run, "postgres", "at_least_once")
        if exactly and least:
            lines.append(f"- run {run}: PostgreSQL exactly_once / at_least_once = "
                         f"{exactly['records_per_s'] / least['records_per_s']:.3f} (records/s), "
                         f"{exactly['cpu_seconds'] / least['cpu_seconds']:.3f} (CPU s)")  # fmt: skip
    return lines


def table_note(args: argparse.Namespace, load: dict[str, Any]) -> str:
    lines = [
        f"**Kafka -> revenue view -> PostgreSQL upsert sink, {args.records:,} records** ({args.partitions} "
        f"partitions, {args.categories} categories, {load['payload_bytes'] / 2**20:,.0f} MiB of JSON), each "
        "pipeline in a fresh worker, checkpoints to `DATA_DIR/objects` every 1 s (fsync on).",
        "",
        "- records/s = N / (CREATE MATERIALIZED VIEW -> CREATE SINK -> the target holds the final answer); the "
        "topic is fully loaded before the clock starts. PostgreSQL: the table polled every "
        f"{args.poll_ms:g} ms equals the expected answer; blackhole: the sink delivered the first checkpoint "
        "after the source read the last record.",
        "- source read all s / delivered s: when the source had read N records, and when the checkpoint after "
        "that was committed and (exactly_once) delivered.",
        "- vs consume-only = records/s / (confluent_kafka consume + tidegate's RecordDecoder alone, one thread).",
        "- vs blackhole = records/s / the same pipeline into a blackhole sink (exactly_once): the cost of "
        "delivering to PostgreSQL.",
        "- records/CPU-s uses the worker's CPU (all threads, librdkafka's included), not PostgreSQL's or Kafka's.",
        "- librdkafka settings of the source and the consume-only reader: "
        + (
            ", ".join(f"`{k}={v}`" for k, v in args.kafka_properties.items())
            or "the source's (librdkafka's defaults but `fetch.queue.backoff.ms=10`)"
        )
        + ".",
    ]
    if args.records < 1_000_000:
        lines.append(f"- **Small N ({args.records:,})**: fixed costs (planning, job start, the first "
                     "checkpoint, ~1 s) weigh heavily; use such runs to see that everything works.")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records produced (1,000,000)")
    parser.add_argument("--kafka", default=KAFKA_DEFAULT, help=f"bootstrap server ({KAFKA_DEFAULT})")
    parser.add_argument("--postgres", default=POSTGRES_DEFAULT, help=f"target database URL ({POSTGRES_DEFAULT})")
    parser.add_argument("--guarantees", default="exactly_once,at_least_once", help="PostgreSQL sink runs (both)")
    parser.add_argument("--kafka-properties", default="", metavar="K=V,...",
                        help="librdkafka settings for the source (as properties.K) and the consume-only reader "
                        "(none: their defaults), e.g. fetch.queue.backoff.ms=10")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions (4)")
    parser.add_argument("--categories", type=int, default=50, help="distinct product_category values (50)")
    parser.add_argument("--seed", type=int, default=42, help="data generator seed (42)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every measurement (1)")
    parser.add_argument("--no-references", action="store_true", help="skip consume-only and blackhole")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="wait between two polls of the target (50)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="give up on a pipeline after S s (900)")
    parser.add_argument("--profile", action="store_true", help="py-spy --threads the exactly_once PostgreSQL run 1")
    parser.add_argument("--keep", action="store_true", help="keep the topic, the tables and the progress rows")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/sinks-*.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    text, args.kafka_properties = args.kafka_properties, {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or "'" in item:
            parser.error(f"--kafka-properties: {item!r} is not KEY=VALUE")
        args.kafka_properties[key.strip()] = value.strip()
    args.guarantee_list = [g.strip() for g in args.guarantees.split(",") if g.strip()]
    unknown = [g for g in args.guarantee_list if g not in GUARANTEES]
    if unknown:
        parser.error(f"unknown guarantee {unknown[0]}; choose from {', '.join(GUARANTEES)}")
    if args.records < 1 or args.repeat < 1 or args.partitions < 1 or not 1 <= args.categories <= 100:
        parser.error("--records, --repeat and --partitions must be positive, --categories 1..100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        _common.serve_worker(args.worker, WORKERS, RESULT_MARKER)
        return 0

    print(f"sinks: {args.records:,} records, {args.partitions} partitions, guarantees {args.guarantees}, "
          f"{args.repeat} run(s), {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    profile_dir = _common.profile_dir(args.profile)
    started = time.perf_counter()
    load = load_topic(args)
    print(f"load: {args.records:,} records ({load['payload_bytes'] / 2**20:,.1f} MiB) into {load['topic']} in "
          f"{load['produce_seconds']:.2f}s (not timed)", flush=True)  # fmt: skip
    runs: list[dict[str, Any]] = []
    try:
        for run in range(1, args.repeat + 1):
            if not args.no_references:
                print(f"consume-only, run {run}/{args.repeat} ...", flush=True)
                runs.append(consume_run(args, load, run))
                print(f"blackhole (exactly_once), run {run}/{args.repeat} ...", flush=True)
                runs.append(pipeline_run(args, load, "exactly_once", "blackhole", run, None))
            for guarantee in args.guarantee_list:
                print(f"PostgreSQL ({guarantee}), run {run}/{args.repeat} ...", flush=True)
                profile_to = None
                if profile_dir is not None and run == 1 and guarantee == "exactly_once":
                    profile_to = profile_dir / f"sinks-profile-{guarantee}-{_common.timestamp_slug()}.txt"
                runs.append(pipeline_run(args, load, guarantee, "postgres", run, profile_to))
    finally:
        if not args.keep:
            delete_topic(args.kafka, load["topic"])

    print()
    table = "\n".join([table_note(args, load), "", report_table(runs), "", *ratio_lines(runs, args.repeat)])
    print(table)
    profiles = {}
    for r in runs:
        if r.get("profile") and Path(r["profile"]).exists():
            profiles[r["guarantee"]] = summarize_profile(Path(r["profile"]))
            print_profile(profiles[r["guarantee"]], f"PostgreSQL sink, {r['guarantee']}")
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.0f}s, load avg now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    bad = [f"{r['label']} ({r['guarantee']}) run {r['run']}: {r.get('error') or r['answer']}" for r in runs
           if r["sink"] is not None and r.get("answer") != "correct"]  # fmt: skip
    bad += [f"consume-only run {r['run']}: {r.get('error') or r['check']}" for r in runs
            if r["sink"] is None and r.get("check") != "decoded"]  # fmt: skip
    payload = {
        "benchmark": "sinks",
        "config": {k: v for k, v in vars(args).items() if k != "worker"}
        | {"state_store_url": "fs", "fsync": True, "barrier_interval_ms": 1000},
        "machine": _common.machine_info(),
        "load": {k: v for k, v in load.items() if k != "expected"},
        "expected": load["expected"],
        "runs": runs,
        "profiles": profiles,
        "table_markdown": table,
        "wall_seconds": elapsed,
        "all_correct": not bad,
    }
    if not args.no_json:
        print(f"results: {_common.write_results('sinks', payload)}")
    if bad:
        shout("a run FAILED or gave a WRONG answer - do not trust its figures", bad)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
