"""Sinks and file sources through SQL, against a real PostgreSQL server and real files.

A file source feeds views; CREATE SINK delivers them to PostgreSQL (append-only and upsert with
deletes), to files and to the blackhole; each test checks the target holds exactly what the view
implies after every step, and that mistakes fail CREATE SINK with a message saying what to fix.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tidegate
from tidegate.errors import (
    ConnectionFailure,
    FeatureNotSupported,
    InvalidParameterValue,
    TidegateError,
    WrongObjectType,
)

WAIT_S = 60.0


@pytest.fixture
def db(tmp_data_dir: Path) -> Iterator[Any]:
    database = tidegate.connect(tmp_data_dir)
    yield database
    database.close()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def pg_rows(pg: psycopg.Connection, table: str, columns: str = "k, total") -> list[tuple[Any, ...]]:
    return sorted(pg.execute(f"SELECT {columns} FROM {table}").fetchall())


def test_upsert_sink_follows_a_view_through_updates_and_deletes(
    db: Any, pg: psycopg.Connection, postgres_url: str, tmp_path: Path
) -> None:
    table = unique("totals")
    pg.execute(f"CREATE TABLE {table} (k INT PRIMARY KEY, total BIGINT)")
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    append_lines(source_dir / "a.jsonl", [{"k": 1, "v": 10}, {"k": 2, "v": 20}, {"k": 1, "v": 5}])
    db.execute(
        f"CREATE SOURCE s (k INT, v BIGINT) WITH (connector = 'file', path = '{source_dir}', "
        "poll.interval.ms = '50') FORMAT PLAIN ENCODE JSON"
    )
    # A group disappears from the view once it has three rows: the sink must delete it.
    db.execute(
        "CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v)::bigint AS total FROM s GROUP BY k HAVING count(*) < 3"
    )
    db.execute(
        f"CREATE SINK totals_pg FROM totals "
        f"WITH (connector = 'postgres', url = '{postgres_url}', table = '{table}', type = 'upsert')"
    )
    wait_until(lambda: pg_rows(pg, table) == [(1, 15), (2, 20)], "the first totals")
    append_lines(source_dir / "a.jsonl", [{"k": 2, "v": 1}, {"k": 3, "v": 7}, {"k": 1, "v": 100}])
    wait_until(lambda: pg_rows(pg, table) == [(2, 21), (3, 7)], "k=1 deleted, k=2 updated, k=3 inserted")
    assert sorted(db.execute("SELECT k, total FROM totals")) == [(2, 21), (3, 7)]
    progress = pg.execute("SELECT epoch FROM tidegate_sink_progress WHERE sink_name = 'totals_pg'").fetchall()
    assert progress and progress[0][0] > 0
    status = db.execute("SELECT sink_name, connector, sink_type, delivery_guarantee, last_error FROM tidegate_sinks")
    assert status == [("totals_pg", "postgres", "upsert", "exactly_once", None)]


def test_append_only_sink_delivers_each_row_once_across_restarts(
    tmp_data_dir: Path, pg: psycopg.Connection, postgres_url: str, tmp_path: Path
) -> None:
    table = unique("events")
    pg.execute(f"CREATE TABLE {table} (k INT, v BIGINT, arrival BIGSERIAL)")
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    append_lines(source_dir / "a.jsonl", [{"k": i, "v": i * 10} for i in range(100)])
    with tidegate.connect(tmp_data_dir) as db:
        db.execute(
            f"CREATE SOURCE s (k INT, v BIGINT) "
            f"WITH (connector = 'file', path = '{source_dir}') FORMAT PLAIN ENCODE JSON"
        )
        db.execute(
            f"CREATE SINK events AS SELECT k, v FROM s WHERE k % 2 = 0 "
            f"WITH (connector = 'postgres', url = '{postgres_url}', table = '{table}')"
        )
        wait_until(lambda: len(pg_rows(pg, table, "k, v")) == 50, "the first 50 rows")
    append_lines(source_dir / "b.jsonl", [{"k": i, "v": i * 10} for i in range(100, 200)])
    with tidegate.connect(tmp_data_dir) as db:
        expected = sorted((i, i * 10) for i in range(0, 200, 2))
        wait_until(lambda: pg_rows(pg, table, "k, v") == expected, "all 100 even rows, once each")
        time.sleep(1.5)  # a few more checkpoints: still once each
        db.execute("FLUSH")
    assert pg_rows(pg, table, "k, v") == expected


def test_file_and_blackhole_sinks(db: Any, tmp_path: Path) -> None:
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    (source_dir / "a.csv").write_text("k,v\n1,10\n2,20\n")
    db.execute(
        f"CREATE SOURCE s (k INT, v BIGINT) WITH (connector = 'file', path = '{source_dir}', csv.header = 'true') "
        "FORMAT PLAIN ENCODE CSV"
    )
    out = tmp_path / "out"
    db.execute(f"CREATE SINK to_files FROM s WITH (connector = 'file', path = '{out}') FORMAT PLAIN ENCODE JSON")
    db.execute(
        "CREATE SINK nowhere AS SELECT k, count(*) AS n FROM s GROUP BY k "
        "WITH (connector = 'blackhole', type = 'upsert')"
    )

    def delivered() -> list[dict[str, Any]]:
        return [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.read_text().splitlines()]

    wait_until(lambda: delivered() == [{"k": 1, "v": 10}, {"k": 2, "v": 20}], "the file sink's rows")
    assert not list(out.glob("*.tmp")), "only published files"
    wait_until(
        lambda: all(r[1] for r in db.execute("SELECT sink_name, delivered_rows FROM tidegate_sinks")), "deliveries"
    )
    assert sorted(r[0] for r in db.execute("SELECT sink_name FROM tidegate_sinks")) == ["nowhere", "to_files"]
    assert sorted(r[0] for r in db.execute("SHOW SINKS")) == ["nowhere", "to_files"]
    db.execute("DROP SINK nowhere")
    assert [r[0] for r in db.execute("SHOW SINKS")] == ["to_files"]


def test_malformed_records_are_counted_and_kept(db: Any, tmp_path: Path) -> None:
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    (source_dir / "a.jsonl").write_text('{"k": 1}\nnot json\n{"k": "x"}\n{"k": 2}\n')
    db.execute(f"CREATE SOURCE s (k INT) WITH (connector = 'file', path = '{source_dir}') FORMAT PLAIN ENCODE JSON")
    db.execute("CREATE MATERIALIZED VIEW ks AS SELECT k FROM s")
    wait_until(lambda: sorted(db.execute("SELECT k FROM ks")) == [(1,), (2,)], "the two good records")
    errors = wait_until(
        lambda: db.execute("SELECT job_name, source_name, location, payload FROM tidegate_source_errors"), "errors"
    )
    assert sorted(errors) == [("ks", "s", "a.jsonl byte 18", '{"k": "x"}'), ("ks", "s", "a.jsonl byte 9", "not json")]


def test_table_fed_by_a_connector_refuses_writes(db: Any, tmp_path: Path) -> None:
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    (source_dir / "a.csv").write_text("1,one\n2,two\n")
    db.execute(
        f"CREATE TABLE t (id INT, name VARCHAR) "
        f"WITH (connector = 'file', path = '{source_dir}') FORMAT PLAIN ENCODE CSV"
    )
    wait_until(lambda: sorted(db.execute("SELECT id, name FROM t")) == [(1, "one"), (2, "two")], "the table's rows")
    with pytest.raises(FeatureNotSupported, match="fed by connector 'file'"):
        db.execute("INSERT INTO t VALUES (3, 'three')")
    with pytest.raises(FeatureNotSupported, match="PRIMARY KEY"):
        db.execute(
            f"CREATE TABLE t2 (id INT PRIMARY KEY) "
            f"WITH (connector = 'file', path = '{source_dir}') FORMAT PLAIN ENCODE CSV"
        )


def test_sink_mistakes_fail_create_sink(db: Any, pg: psycopg.Connection, postgres_url: str, tmp_path: Path) -> None:
    db.execute("CREATE TABLE t (k INT, v INT)")
    db.execute("CREATE MATERIALIZED VIEW agg AS SELECT k, sum(v) AS total FROM t GROUP BY k")
    with pytest.raises(InvalidParameterValue, match="can update or delete rows"):
        db.execute("CREATE SINK a FROM agg WITH (connector = 'blackhole')")
    with pytest.raises(InvalidParameterValue, match="needs a primary key"):
        db.execute("CREATE SINK a FROM t WITH (connector = 'blackhole', type = 'upsert')")
    with pytest.raises(InvalidParameterValue, match="connector"):
        db.execute("CREATE SINK a FROM t WITH (type = 'upsert')")
    with pytest.raises(TidegateError, match="does not exist"):
        db.execute(
            f"CREATE SINK a FROM agg "
            f"WITH (connector = 'postgres', url = '{postgres_url}', table = 'no_such_table', type = 'upsert')"
        )
    table = unique("nokey")
    pg.execute(f"CREATE TABLE {table} (k INT, total NUMERIC)")
    with pytest.raises(TidegateError, match="no primary key or unique constraint"):
        db.execute(
            f"CREATE SINK a FROM agg "
            f"WITH (connector = 'postgres', url = '{postgres_url}', table = '{table}', type = 'upsert')"
        )
    assert db.execute("SHOW SINKS") == []
    db.execute(
        f"CREATE SINK a FROM agg "
        f"WITH (connector = 'file', path = '{tmp_path / 'o'}', force_append_only = 'true') FORMAT PLAIN ENCODE CSV"
    )
    with pytest.raises(WrongObjectType, match="is a sink"):
        db.execute("SELECT * FROM a")
    with pytest.raises(WrongObjectType, match="is a sink"):
        db.execute("CREATE MATERIALIZED VIEW v2 AS SELECT * FROM a")


def test_delivery_guarantee_setting(db: Any) -> None:
    assert db.execute("SHOW delivery_guarantee") == [("exactly_once",)]
    with pytest.raises(InvalidParameterValue, match="exactly_once"):
        db.execute("SET delivery_guarantee = 'twice'")
    db.execute("SET delivery_guarantee = 'at_least_once'")
    db.execute("CREATE TABLE t (k INT) APPEND ONLY")
    db.execute("CREATE SINK s1 FROM t WITH (connector = 'blackhole')")
    db.execute("CREATE SINK s2 FROM t WITH (connector = 'blackhole', delivery_guarantee = 'at_most_once')")
    db.execute("CREATE MATERIALIZED VIEW v WITH (delivery_guarantee = 'exactly_once') AS SELECT k FROM t")
    rows = sorted(db.execute("SELECT sink_name, delivery_guarantee FROM tidegate_sinks"))
    assert rows == [("s1", "at_least_once"), ("s2", "at_most_once")]
    with pytest.raises(InvalidParameterValue, match="delivery_guarantee"):
        db.execute("CREATE MATERIALIZED VIEW v3 WITH (retention = '1') AS SELECT k FROM t")


def test_kafka_table_to_kafka_upsert_sink(db: Any, kafka_bootstrap: str) -> None:
    from kafka_helpers import consume_all, create_topic, produce, unique_topic

    topic = unique_topic("orders")
    output = unique_topic("revenue")
    create_topic(kafka_bootstrap, topic, partitions=3)
    orders = [json.dumps({"id": i, "cat": f"c{i % 3}", "amount": 1.5}) for i in range(10)]
    produce(kafka_bootstrap, topic, [*orders, "{bad"])
    db.execute(
        f"CREATE TABLE orders (id INT, cat VARCHAR, amount DECIMAL) WITH (connector = 'kafka', topic = '{topic}', "
        f"properties.bootstrap.server = '{kafka_bootstrap}', scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON"
    )
    db.execute("CREATE MATERIALIZED VIEW rev AS SELECT cat, count(*) AS n FROM orders GROUP BY cat")
    db.execute(
        f"CREATE SINK rev_out FROM rev WITH (connector = 'kafka', topic = '{output}', "
        f"properties.bootstrap.server = '{kafka_bootstrap}') FORMAT UPSERT ENCODE JSON"
    )
    wait_until(lambda: db.execute("SELECT count(*) FROM orders") == [(10,)], "the ten good orders")
    errors = wait_until(lambda: db.execute("SELECT source_name, payload FROM tidegate_source_errors"), "the bad one")
    assert errors == [("orders", "{bad")]

    def latest() -> dict[bytes, Any]:
        values: dict[bytes, Any] = {}
        for _, _, key, value in consume_all(kafka_bootstrap, output, read_committed=True):
            assert key is not None
            values[key] = None if value is None else json.loads(value)
        return values

    expected = {
        b'{"cat":"c0"}': {"cat": "c0", "n": 4},
        b'{"cat":"c1"}': {"cat": "c1", "n": 3},
        b'{"cat":"c2"}': {"cat": "c2", "n": 3},
    }
    wait_until(lambda: latest() == expected, "one upsert per category")
    with pytest.raises(FeatureNotSupported, match="fed by connector 'kafka'"):
        db.execute("DELETE FROM orders")


def test_sink_option_mistakes_come_first_and_unreachable_targets_say_so(db: Any) -> None:
    db.execute("CREATE TABLE events (id INT PRIMARY KEY, kind VARCHAR)")
    with pytest.raises(InvalidParameterValue, match='"foo"'):
        db.execute("CREATE SINK s FROM events WITH (connector = 'blackhole', foo = '1')")
    with pytest.raises(TidegateError, match="nowhere"):
        db.execute("CREATE SINK s FROM events WITH (connector = 'nowhere')")
    with pytest.raises(ConnectionFailure, match="cannot connect"):
        db.execute(
            "CREATE SINK s FROM events WITH (connector = 'postgres', url = 'postgresql://nobody@127.0.0.1:1/x', "
            "table = 't', type = 'upsert')"
        )
    assert db.execute("SHOW SINKS") == []


def test_a_sink_query_may_emit_on_window_close(db: Any) -> None:
    db.execute("CREATE TABLE clicks (t TIMESTAMP, WATERMARK FOR t AS t - INTERVAL '1' SECOND) APPEND ONLY")
    db.execute(
        "CREATE SINK per_minute AS SELECT window_start, count(*) AS n FROM TUMBLE(clicks, t, INTERVAL '1' MINUTE) "
        "GROUP BY window_start EMIT ON WINDOW CLOSE WITH (connector = 'blackhole')"
    )
    assert db.execute("SHOW SINKS") == [("per_minute",)]
