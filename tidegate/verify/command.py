"""One verification run per delivery guarantee, and the table of what each output got.

Per guarantee: a fresh data directory, fresh topics and a fresh PostgreSQL table; the pipeline

    Kafka topics a, b ──▶ view = a UNION ALL b ──▶ sinks: Kafka topic, PostgreSQL table, files
                                 └──▶ counts = records per key ──▶ upsert sink: PostgreSQL table

runs while the workload produces; the engine is killed with SIGKILL ``kills`` times at random
moments (seeded) and restarted each time; then the workload stops, the pipeline drains, and every
output — the view too — is audited. What each guarantee should show (DESIGN §5.8):

- exactly_once: nothing lost, nothing duplicated, nothing out of order, in every output;
- at_least_once: nothing lost; sinks duplicate what they wrote after the last checkpoint before
  each kill (the views do not: their state rolls back with their sources' offsets, and the upsert
  sink only ever writes the counts the view had);
- at_most_once: nothing duplicated; the view and the sinks lose what was read after the last
  checkpoint before each kill.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient, NewTopic

from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.errors import InternalError
from tidegate.verify.audit import (
    Audit,
    audit,
    audit_counts,
    read_files,
    read_kafka,
    read_postgres,
    read_postgres_counts,
)
from tidegate.verify.engine import Engine
from tidegate.verify.workload import SequenceWorkload

DRAIN_TIMEOUT_S = 180.0
COUNTS = "postgres upsert"  # the output of records per key, through an upsert sink


@dataclass(frozen=True)
class VerifySettings:
    kafka: str
    postgres: str
    kills: int = 5
    seed: int = 1
    keys: int = 16
    rate: int = 2000  # records per second
    kill_after_s: tuple[float, float] = (1.0, 4.0)  # each kill comes this long after the engine is back
    work_dir: Path | None = None
    # Failpoints for the engine (TIDEGATE_FAILPOINTS), e.g. kills between checkpoint and sink commit.
    failpoints: str = ""
    # Keep each run's topics, tables, data dir, output files and server log (default: dropped).
    keep: bool = False


@dataclass(frozen=True)
class GuaranteeResult:
    guarantee: DeliveryGuarantee
    audits: list[Audit]
    kills: int
    produced: int

    @property
    def holds(self) -> bool:
        """Whether every output shows what the guarantee promises."""
        if self.guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            return all(a.lost == 0 and a.duplicated == 0 and not a.out_of_order for a in self.audits)
        if self.guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
            return all(a.lost == 0 for a in self.audits)
        return all(a.duplicated == 0 for a in self.audits)


def run_guarantee(
    guarantee: DeliveryGuarantee, settings: VerifySettings, say: Callable[[str], None] = print
) -> GuaranteeResult:
    run = f"verify_{guarantee.value}_{secrets.token_hex(4)}"
    work = Path(tempfile.mkdtemp(prefix=f"{run}-", dir=settings.work_dir))
    topics, output_topic, table = (f"{run}_a", f"{run}_b"), f"{run}_out", run
    _create_topics(settings.kafka, {topics[0]: 2, topics[1]: 2, output_topic: 1})
    with psycopg.connect(settings.postgres, autocommit=True) as connection:
        connection.execute(f'CREATE TABLE "{table}" (key INT, seq BIGINT, arrival BIGSERIAL)')
        connection.execute(f'CREATE TABLE "{table}_counts" (key INT PRIMARY KEY, n BIGINT)')
    engine = Engine(work / "data", work / "tidegate.log")
    try:
        return _run(guarantee, settings, say, engine, run, work)
    finally:
        engine.kill()  # whatever happened, no server is left running
        if not settings.keep:
            _clean_up(settings, run, [*topics, output_topic], table)
            shutil.rmtree(work, ignore_errors=True)


def _run(
    guarantee: DeliveryGuarantee,
    settings: VerifySettings,
    say: Callable[[str], None],
    engine: Engine,
    run: str,
    work: Path,
) -> GuaranteeResult:
    """The pipeline's DDL, the workload with its kills, and the audit (``run_guarantee``'s body)."""
    topics, output_topic, table = (f"{run}_a", f"{run}_b"), f"{run}_out", run
    files = work / "files"
    engine.start()
    engine.execute(f"SET delivery_guarantee = '{guarantee.value}'")
    for name, topic in zip(("a", "b"), topics, strict=True):
        engine.execute(
            f"CREATE SOURCE {run}_{name} (key INT, seq BIGINT) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.server = '{settings.kafka}') FORMAT PLAIN ENCODE JSON"
        )
    view = f"{run}_view"
    engine.execute(
        f"CREATE MATERIALIZED VIEW {view} AS SELECT key, seq FROM {run}_a UNION ALL SELECT key, seq FROM {run}_b"
    )
    engine.execute(
        f"CREATE SINK {run}_kafka FROM {view} WITH (connector = 'kafka', topic = '{output_topic}', "
        f"properties.bootstrap.server = '{settings.kafka}') FORMAT PLAIN ENCODE JSON"
    )
    engine.execute(
        f"CREATE SINK {run}_pg FROM {view} WITH (connector = 'postgres', url = '{settings.postgres}', "
        f"table = '{table}')"
    )
    engine.execute(
        f"CREATE SINK {run}_files FROM {view} WITH (connector = 'file', path = '{files}') FORMAT PLAIN ENCODE JSON"
    )
    engine.execute(f"CREATE MATERIALIZED VIEW {run}_counts AS SELECT key, count(*) AS n FROM {view} GROUP BY key")
    engine.execute(
        f"CREATE SINK {run}_pg_upsert FROM {run}_counts WITH (connector = 'postgres', url = '{settings.postgres}', "
        f"table = '{table}_counts', type = 'upsert')"
    )
    workload = SequenceWorkload(settings.kafka, topics, settings.keys, settings.rate, settings.seed)
    chooser = random.Random(settings.seed)
    workload.start()
    # Failpoints from the first restart on: the pipeline's DDL above runs undisturbed.
    if settings.failpoints:
        engine.environment["TIDEGATE_FAILPOINTS"] = settings.failpoints
    try:
        for kill in range(settings.kills):
            time.sleep(chooser.uniform(*settings.kill_after_s))
            engine.kill()
            say(f"  {guarantee.value}: kill {kill + 1}/{settings.kills} (SIGKILL), restarting")
            _restart(engine)
        time.sleep(chooser.uniform(*settings.kill_after_s))
    finally:
        workload.stop()
    if not engine.running:
        _restart(engine)
    if engine.failpoint_kills:
        say(f"  {guarantee.value}: {engine.failpoint_kills} more kills by failpoints ({settings.failpoints})")
    say(f"  {guarantee.value}: {len(workload.acknowledged)} records produced; waiting for the outputs to settle")
    expected = set(workload.acknowledged)
    readers: dict[str, Callable[[], list[tuple[int, int]]]] = {
        "view": lambda: [(int(k), int(s)) for k, s in engine.execute(f"SELECT key, seq FROM {view}")],  # type: ignore[call-overload]
        "kafka": lambda: read_kafka(settings.kafka, output_topic),
        "postgres": lambda: read_postgres(settings.postgres, table),
        "files": lambda: read_files(files),
    }
    readers[COUNTS] = lambda: sorted(read_postgres_counts(settings.postgres, f"{table}_counts").items())
    received = _settle(engine, readers, expected)
    engine.stop()
    if settings.keep:
        say(f"  {guarantee.value}: kept in {work} (server log {engine.log_path.name}, output files files/)")
    counts = dict(received.pop(COUNTS))
    audits = [audit(name, expected, rows, ordered=name != "view") for name, rows in received.items()]
    audits.append(audit_counts(COUNTS, expected, counts))
    shutil.rmtree(work / "data", ignore_errors=True)
    return GuaranteeResult(guarantee, audits, engine.kills + engine.failpoint_kills, len(expected))


def _restart(engine: Engine) -> None:
    """Start again; a failpoint may kill it again during recovery, so retry a few times."""
    for _ in range(10):
        engine.kill()  # counts a failpoint's kill
        engine.start()
        if engine.running:
            return
    raise InternalError(f"tidegate kept dying during recovery; see {engine.log_path}")


def _settle(
    engine: Engine, readers: dict[str, Callable[[], list[tuple[int, int]]]], expected: set[tuple[int, int]]
) -> dict[str, list[tuple[int, int]]]:
    """Read every output until each holds every expected record (the counts output: every key's
    count) or the outputs stop changing for a while."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    wanted_counts = sorted(Counter(key for key, _ in expected).items())
    last: dict[str, list[tuple[int, int]]] = {}
    stable = 0
    while True:
        if not engine.running:
            _restart(engine)
        try:
            engine.execute("FLUSH")
            time.sleep(1.0)
            received = {name: read() for name, read in readers.items()}
        except psycopg.OperationalError:
            continue  # a failpoint killed it: restart and read again
        complete = all(
            sorted(rows) == wanted_counts if name == COUNTS else expected <= set(rows)
            for name, rows in received.items()
        )
        stable = stable + 1 if received == last else 0
        last = received
        if (complete and stable >= 1) or stable >= 4 or time.monotonic() > deadline:
            return received


def _clean_up(settings: VerifySettings, run: str, topics: list[str], table: str) -> None:
    """Drop what a run created in Kafka and PostgreSQL (the services are the user's)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    for future in admin.delete_topics(topics).values():
        # A topic that is already gone, or a broker that went away: nothing left to drop.
        with contextlib.suppress(Exception):
            future.result(30)
    with psycopg.connect(settings.postgres, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_counts"')
        connection.execute(
            "DELETE FROM tidegate_sink_progress WHERE sink_name IN (%s, %s)", (f"{run}_pg", f"{run}_pg_upsert")
        )


def _create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, count, 1) for name, count in partitions.items()])
    for future in futures.values():
        future.result(30)


def report(results: list[GuaranteeResult]) -> str:
    """The guarantees table: per guarantee and output, what was expected, received, lost and duplicated."""
    header = ("guarantee", "output", "expected", "received", "lost", "duplicated", "out of order", "holds")
    rows = [header]
    for result in results:
        for a in result.audits:
            order = "-" if a.out_of_order is None else str(a.out_of_order)
            rows.append(
                (
                    result.guarantee.value,
                    a.output,
                    str(a.expected),
                    str(a.received),
                    str(a.lost),
                    str(a.duplicated),
                    order,
                    "",
                )
            )
        verdict = "yes" if result.holds else "NO"
        rows[-len(result.audits)] = (*rows[-len(result.audits)][:-1], f"{verdict} ({result.kills} kills)")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.rjust(w) if 1 < i < 7 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


EXPECTATIONS = {
    DeliveryGuarantee.EXACTLY_ONCE: "exactly_once must show 0 lost, 0 duplicated and 0 out of order everywhere",
    DeliveryGuarantee.AT_LEAST_ONCE: "at_least_once must show 0 lost; sinks duplicate what they wrote after the "
    "last checkpoint before each kill",
    DeliveryGuarantee.AT_MOST_ONCE: "at_most_once must show 0 duplicated; what was read after the last checkpoint "
    "before each kill is lost",
}
