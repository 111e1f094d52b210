"""Benchmark: the article's ``revenue_by_category`` view, loaded two ways.

    python bench/revenue.py [--rows N] [--path a|b|both] [--repeat K]

Schema and view (from the article)::

    CREATE TABLE orders (order_id INT, product_category VARCHAR, amount DECIMAL, order_time TIMESTAMP);
    CREATE MATERIALIZED VIEW revenue_by_category AS
      SELECT product_category, COUNT(*) AS order_count, SUM(amount) AS total_revenue
      FROM orders GROUP BY product_category;

Data: N orders (default 5,000,000) in chunks of 64Ki rows, generated with numpy
and pyarrow, deterministic from ``--seed`` (chunk i uses the generator seeded
with ``[seed, i]``). ``order_id`` = 1..N, ``product_category`` uniform over
``--categories`` names (default 1,000), ``amount`` uniform 0.01..999.99 with 2
decimals, ``order_time`` strictly increasing (1 ms apart plus < 1 ms jitter).

Paths, each timed from the first row handed over until ``FLUSH`` returns (so the
view has absorbed every row), with the default barrier interval of 1000 ms:

(a) ``COPY orders FROM STDIN`` (text format) over pgwire with psycopg 3, into a
    real ``python -m tidegate.cli start`` server subprocess. The text is
    generated into memory before the clock starts (its generation time is
    reported separately). Peak RSS is the server's VmHWM.
(b) The embedded API: ``tidegate.connect(dir, fsync=True)`` and the table's
    writer (``writer.apply([Chunk.inserts(batch)])``, one call per 64Ki-row
    batch), then ``FLUSH``. Runs in a fresh worker process (``--inline`` runs it
    in this one) so its VmHWM is the engine's plus the pre-generated batches,
    not polluted by the other path's data or by DuckDB.

Reference: DuckDB runs the same GROUP BY in batch over the same Arrow data
(only the query is timed; best of 3). "vs DuckDB" = tidegate rows/s divided by
DuckDB rows/s. Every path's final view is checked row by row against DuckDB's
answer; a wrong answer is reported loudly and makes the exit status 2.

This is a benchmark, not a test: nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import shout

CREATE_TABLE = "CREATE TABLE orders (order_id INT, product_category VARCHAR, amount DECIMAL, order_time TIMESTAMP)"
CREATE_VIEW = (
    "CREATE MATERIALIZED VIEW revenue_by_category AS SELECT product_category, COUNT(*) AS order_count, "
    "SUM(amount) AS total_revenue FROM orders GROUP BY product_category"
)
SELECT_VIEW = "SELECT product_category, order_count, total_revenue FROM revenue_by_category"
REFERENCE_QUERY = (
    "SELECT product_category, COUNT(*) AS order_count, SUM(amount) AS total_revenue "
    "FROM orders GROUP BY product_category"
)

CHUNK_ROWS = 65536
TARGETS = {"a": 500_000, "b": 2_000_000}  # rows/s: the project's targets for this workload
PATH_LABELS = {"a": "(a) COPY over pgwire", "b": "(b) embedded writer", "duckdb": "DuckDB batch (reference)"}
BASE_TIME_US = 1_775_001_600_000_000  # 2026-04-01 00:00:00 UTC, in µs
STEP_US = 1000  # one order per millisecond, plus jitter below STEP_US: strictly increasing

USER_SCHEMA = pa.schema(
    [
        ("order_id", pa.int32()),
        ("product_category", pa.string()),
        ("amount", pa.decimal128(38, 10)),  # tidegate's storage type for DECIMAL
        ("order_time", pa.timestamp("us")),
    ]
)
RESULT_MARKER = "@@REVENUE_RESULT@@ "


# ---- data ---------------------------------------------------------------------------
def category_names(categories: int) -> pa.Array:
    return pa.array([f"category_{i:04d}" for i in range(categories)], pa.string())


def _decimal128(unscaled: np.ndarray, precision: int, scale: int) -> pa.Array:
    """A decimal128 array from int64 unscaled values (two's complement, little-endian limbs)."""
    limbs = np.empty((len(unscaled), 2), dtype=np.int64)
    limbs[:, 0] = unscaled
    limbs[:, 1] = unscaled >> 63  # sign extension
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(unscaled), [None, pa.py_buffer(limbs)])


def make_batch(index: int, start: int, count: int, seed: int, names: pa.Array) -> pa.RecordBatch:
    """Rows ``start .. start+count-1`` (0-based), chunk ``index``; vectorized."""
    rng = np.random.default_rng([seed, index])
    category = rng.integers(0, len(names), count, dtype=np.int32)
    cents = rng.integers(1, 100_000, count, dtype=np.int64)  # 0.01 .. 999.99
    jitter = rng.integers(0, STEP_US, count, dtype=np.int64)
    row = np.arange(start, start + count, dtype=np.int64)
    return pa.RecordBatch.from_arrays(
        [
            pa.array((row + 1).astype(np.int32)),
            names.take(pa.array(category)),
            _decimal128(cents * 10**8, 38, 10),  # scale 10: cents * 10^8
            pa.array(BASE_TIME_US + row * STEP_US + jitter, pa.timestamp("us")),
        ],
        schema=USER_SCHEMA,
    )


def generate(rows: int, categories: int, seed: int) -> list[pa.RecordBatch]:
    if rows > 2**31 - 1:
        raise SystemExit("--rows must fit order_id INT (< 2^31)")
    names = category_names(categories)
    return [
        make_batch(i, start, min(CHUNK_ROWS, rows - start), seed, names)
        for i, start in enumerate(range(0, rows, CHUNK_ROWS))
    ]


def to_copy_text(batch: pa.RecordBatch) -> bytes:
    """One batch as COPY text format: tab-separated, no header, amount with 2 decimals.

    Safe without escaping: the generated values hold no tab, newline or backslash.
    """
    text_batch = pa.RecordBatch.from_arrays(
        [
            batch.column(0),
            batch.column(1),
            pc.cast(batch.column(2), pa.decimal128(12, 2)),  # exact: the values have 2 decimals
            batch.column(3),  # written as "2026-04-01 00:00:00.123456"
        ],
        names=USER_SCHEMA.names,
    )
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(
        text_batch,
        sink,
        pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", batch_size=CHUNK_ROWS),
    )
    return sink.getvalue().to_pybytes()


# ---- the reference ---------------------------------------------------------------------
Answer = dict[str, tuple[int, Decimal]]


def duckdb_reference(batches: list[pa.RecordBatch], repeats: int = 3) -> dict[str, Any]:
    import duckdb

    table = pa.Table.from_batches(batches, schema=USER_SCHEMA)
    con = duckdb.connect()
    con.register("orders", table)
    timings = []
    rows: list[tuple[Any, ...]] = []
    for _ in range(repeats):
        start = time.perf_counter()
        rows = con.execute(REFERENCE_QUERY).fetchall()
        timings.append(time.perf_counter() - start)
    threads = con.execute("SELECT current_setting('threads')").fetchone()
    con.close()
    best = min(timings)
    return {
        "seconds": best,
        "seconds_all": timings,
        "rows_per_s": table.num_rows / best,
        "threads": threads[0] if threads else None,
        "answer": _answer(rows),
    }


def _answer(rows: list[tuple[Any, ...]]) -> Answer:
    return {str(c): (int(n), Decimal(str(s))) for c, n, s in rows}


def compare(got: Answer, expected: Answer) -> dict[str, Any]:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    problems = (
        [f"missing group {k!r}" for k in missing[:5]]
        + [f"unexpected group {k!r}: {got[k]}" for k in extra[:5]]
        + [
            f"{k!r}: got {got[k][0]} orders / {got[k][1]}, expected {expected[k][0]} / {expected[k][1]}"
            for k in wrong[:5]
        ]
    )
    return {
        "correct": not (missing or extra or wrong),
        "groups": len(got),
        "groups_expected": len(expected),
        "orders_total": sum(n for n, _ in got.values()),
        "revenue_total": str(sum((s for _, s in got.values()), Decimal(0))),
        "missing_groups": len(missing),
        "extra_groups": len(extra),
        "wrong_groups": len(wrong),
        "examples": problems,
    }


# ---- path (a): COPY over pgwire ------------------------------------------------------------
def _wait_for_banner(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tidegate server exited with status {proc.returncode} before serving")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if "serving" in line:
                return line.strip()
    raise RuntimeError(f"tidegate server did not print its banner within {timeout_s:.0f}s")


def _stop_server(proc: subprocess.Popen[str]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def run_copy(text_blocks: list[bytes], rows: int, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    with tempfile.TemporaryDirectory(prefix="tidegate-bench-a-") as data_dir:
        port = _common.free_port()
        err_path = Path(data_dir) / "server.stderr"
        with open(err_path, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "tidegate.cli", "start",
                    "--data-dir", str(Path(data_dir) / "db"), "--listen", f"127.0.0.1:{port}",
                ],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=_common.REPO_DIR,
            )  # fmt: skip
        try:
            _wait_for_banner(proc, 60)
            with psycopg.connect(
                host="127.0.0.1", port=port, user="root", dbname="dev", autocommit=True, connect_timeout=30
            ) as conn:
                if args.barrier_interval_ms != 1000:
                    conn.execute(f"SET barrier_interval_ms = {int(args.barrier_interval_ms)}")
                interval = conn.execute("SHOW barrier_interval_ms").fetchone()
                conn.execute(CREATE_TABLE)
                conn.execute(CREATE_VIEW)
                rss_before = _common.rss_mib(proc.pid)
                with conn.cursor() as cur:
                    start = time.perf_counter()
                    with cur.copy("COPY orders FROM STDIN") as copy:
                        for block in text_blocks:
                            copy.write(block)
                    copied = time.perf_counter()
                    copy_status = cur.statusmessage
                    cur.execute("FLUSH")
                    end = time.perf_counter()
                peak = _common.peak_rss_mib(proc.pid)
                read_start = time.perf_counter()
                view = conn.execute(SELECT_VIEW).fetchall()
                read_seconds = time.perf_counter() - read_start
        except BaseException:
            _stop_server(proc)
            sys.stderr.write(err_path.read_text(encoding="utf-8", errors="replace")[-4000:])
            raise
        status = _stop_server(proc)
        stderr_tail = err_path.read_text(encoding="utf-8", errors="replace")[-2000:]
    return {
        "rows": rows,
        "seconds": end - start,
        "copy_seconds": copied - start,
        "flush_seconds": end - copied,
        "copy_status": copy_status,
        "view_read_seconds": read_seconds,
        "peak_rss_mib": peak,
        "rss_before_load_mib": rss_before,
        "barrier_interval_ms": int(interval[0]) if interval else None,
        "server_exit_status": status,
        "server_stderr_tail": stderr_tail,
        "answer": _answer(view),
    }


# ---- path (b): the embedded writer -----------------------------------------------------------
def run_embedded(rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the process that measures its own VmHWM (a worker, or this one with --inline)."""
    import tidegate
    from tidegate.common.chunk import Chunk
    from tidegate.meta.streaming import storage_schema

    start = time.perf_counter()
    batches = generate(rows, args.categories, args.seed)
    generate_seconds = time.perf_counter() - start
    profiler = None
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-b-") as data_dir:
        db = tidegate.connect(Path(data_dir) / "db", fsync=True, state_store_url=args.state_store)
        try:
            if args.barrier_interval_ms != 1000:
                db.execute(f"SET barrier_interval_ms = {int(args.barrier_interval_ms)}")
            interval = db.execute("SHOW barrier_interval_ms")
            db.execute(CREATE_TABLE)
            db.execute(CREATE_VIEW)
            database = db.database
            relation = database.catalog.get("orders")
            assert relation is not None, "CREATE TABLE orders did not register the table"
            writer = database.writer(relation)
            schema = storage_schema(relation)
            rss_before = _common.rss_mib()
            if args.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.001)
                profiler.start()
            start = time.perf_counter()
            for batch in batches:
                row_ids = writer.allocate_row_ids(batch.num_rows)
                columns = [row_ids if name == "_row_id" else batch.column(name) for name in schema.names]
                writer.apply([Chunk.inserts(pa.RecordBatch.from_arrays(columns, schema=schema))])
            applied = time.perf_counter()
            db.execute("FLUSH")
            end = time.perf_counter()
            if profiler is not None:
                profiler.stop()
            peak = _common.peak_rss_mib()
            read_start = time.perf_counter()
            view = db.execute(SELECT_VIEW)
            read_seconds = time.perf_counter() - read_start
        finally:
            db.close()
    result: dict[str, Any] = {
        "rows": rows,
        "seconds": end - start,
        "apply_seconds": applied - start,
        "flush_seconds": end - applied,
        "generate_seconds": generate_seconds,
        "view_read_seconds": read_seconds,
        "peak_rss_mib": peak,
        "rss_before_load_mib": rss_before,
        "barrier_interval_ms": int(interval[0][0]) if interval else None,
        "answer": _answer(view),
    }
    if profiler is not None:
        stem = _common.RESULTS_DIR / f"revenue-profile-b-{_common.timestamp_slug()}"
        _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        Path(f"{stem}.txt").write_text(profiler.output_text(unicode=True, show_all=False), encoding="utf-8")
        Path(f"{stem}.html").write_text(profiler.output_html(), encoding="utf-8")
        result["profile"] = f"{stem}.txt"
    return result


def run_embedded_worker(rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """Path (b) in a fresh interpreter, so its peak RSS is its own."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "b",
        "--rows", str(rows), "--categories", str(args.categories), "--seed", str(args.seed),
        "--barrier-interval-ms", str(args.barrier_interval_ms),
        *(["--state-store", args.state_store] if args.state_store else []),
    ]  # fmt: skip
    if args.profile:
        command.append("--profile")
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=_common.REPO_DIR)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return _decode_answer(json.loads(line[len(RESULT_MARKER) :]))
    raise RuntimeError(f"path (b) worker failed with status {proc.returncode}: {proc.stdout[-2000:]}")


def _encode_answer(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    out["answer"] = {k: [n, str(s)] for k, (n, s) in result["answer"].items()}
    return out


def _decode_answer(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    out["answer"] = {k: (int(n), Decimal(s)) for k, (n, s) in result["answer"].items()}
    return out


# ---- driver ---------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="orders to load (default 5,000,000)")
    parser.add_argument("--categories", type=int, default=1000, help="distinct product categories (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="data generator seed (default 42)")
    parser.add_argument("--path", choices=["a", "b", "both"], default="both", help="load path(s) to run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path (default 1)")
    parser.add_argument("--barrier-interval-ms", type=int, default=1000, help="barrier interval (default 1000)")
    parser.add_argument("--inline", action="store_true", help="run path (b) in this process, not a worker")
    parser.add_argument(
        "--profile", action="store_true", help="pyinstrument path (b)'s load+FLUSH (main thread) into bench/results/"
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/revenue-*.json")
    parser.add_argument(
        "--state-store",
        default=None,
        help="path (b)'s state store: 'fs' (DATA_DIR/objects, the database's default) or 'none' (no "
        "checkpoints: state in memory, the figures of the streaming core)",
    )
    parser.add_argument("--worker", choices=["b"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.categories < 1 or args.repeat < 1:
        parser.error("--rows, --categories and --repeat must be positive")
    return args


def _error_result(rows: int, error: BaseException) -> dict[str, Any]:
    traceback.print_exception(error)
    return {"rows": rows, "error": f"{type(error).__name__}: {error}"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "b":
        result = run_embedded(args.rows, args)
        print(RESULT_MARKER + json.dumps(_encode_answer(result)), flush=True)
        return 0

    paths = ["a", "b"] if args.path == "both" else [args.path]
    rows = args.rows
    print(f"revenue_by_category: {rows:,} orders, {args.categories:,} categories, seed {args.seed}, "
          f"paths {'+'.join(paths)}, {args.repeat} run(s) each", flush=True)  # fmt: skip

    start = time.perf_counter()
    batches = generate(rows, args.categories, args.seed)
    generate_seconds = time.perf_counter() - start
    print(f"generated Arrow batches in {generate_seconds:.2f}s ({rows / generate_seconds:,.0f} rows/s)", flush=True)

    reference = duckdb_reference(batches)
    expected: Answer = reference["answer"]
    print(f"DuckDB batch GROUP BY: {reference['seconds']:.4f}s best of {len(reference['seconds_all'])} "
          f"({reference['rows_per_s']:,.0f} rows/s, {reference['threads']} threads)", flush=True)  # fmt: skip

    text_blocks: list[bytes] = []
    text_seconds = None
    if "a" in paths:
        start = time.perf_counter()
        text_blocks = [to_copy_text(b) for b in batches]
        text_seconds = time.perf_counter() - start
        text_bytes = sum(len(b) for b in text_blocks)
        print(f"generated COPY text in {text_seconds:.2f}s ({rows / text_seconds:,.0f} rows/s, "
              f"{text_bytes / 2**20:,.0f} MiB) - not timed in path (a)", flush=True)  # fmt: skip
    del batches  # path (b) regenerates them in its own process

    runs: list[dict[str, Any]] = []
    for path in paths:
        for run in range(1, args.repeat + 1):
            print(f"running {PATH_LABELS[path]}, run {run}/{args.repeat} ...", flush=True)
            load_before = os.getloadavg()[0]
            try:
                if path == "a":
                    result = run_copy(text_blocks, rows, args)
                elif args.inline:
                    result = run_embedded(rows, args)
                else:
                    result = run_embedded_worker(rows, args)
            except Exception as error:  # a benchmark run that dies is a result too
                result = _error_result(rows, error)
            # Other processes on the machine skew the figures: keep the 1-minute load average beside them.
            result.update(
                path=path,
                run=run,
                target_rows_per_s=TARGETS[path],
                loadavg_1m_before=load_before,
                loadavg_1m_after=os.getloadavg()[0],
            )
            if "error" not in result:
                result["rows_per_s"] = rows / result["seconds"]
                result["ratio_vs_duckdb"] = result["rows_per_s"] / reference["rows_per_s"]
                result["check"] = compare(result.pop("answer"), expected)
                # A fast wrong answer does not meet anything.
                result["target_met"] = result["rows_per_s"] >= TARGETS[path] and result["check"]["correct"]
                if not result["check"]["correct"]:
                    shout(f"{PATH_LABELS[path]} run {run}: WRONG ANSWER", result["check"]["examples"])
                breakdown = (
                    f"COPY {result['copy_seconds']:.2f}s + FLUSH {result['flush_seconds']:.2f}s"
                    if path == "a"
                    else f"apply {result['apply_seconds']:.2f}s + FLUSH {result['flush_seconds']:.2f}s"
                )
                print(f"  {result['seconds']:.2f}s ({breakdown}), {result['rows_per_s']:,.0f} rows/s, "
                      f"peak RSS {result['peak_rss_mib']:,.0f} MiB (RSS before load "
                      f"{result['rss_before_load_mib']:,.0f} MiB), view read {result['view_read_seconds']:.3f}s, "
                      f"load avg {load_before:.2f}->{result['loadavg_1m_after']:.2f} on {os.cpu_count()} CPUs, "
                      f"answer {'correct' if result['check']['correct'] else 'WRONG'}", flush=True)  # fmt: skip
            else:
                shout(f"{PATH_LABELS[path]} run {run}: FAILED", [result["error"]])
            runs.append(result)

    print()
    print(report_table(runs, reference, rows))
    print()
    print(targets_summary(runs))

    payload = {
        "benchmark": "revenue_by_category",
        "config": {
            "rows": rows,
            "categories": args.categories,
            "seed": args.seed,
            "chunk_rows": CHUNK_ROWS,
            "barrier_interval_ms": args.barrier_interval_ms,
            "state_store": args.state_store,
            "paths": paths,
            "repeat": args.repeat,
            "fsync": True,
            "path_b_process": "inline" if args.inline else "worker",
            "data_dir_parent": tempfile.gettempdir(),
        },
        "sql": {"table": CREATE_TABLE, "view": CREATE_VIEW},
        "machine": _common.machine_info(),
        "generation": {"arrow_seconds": generate_seconds, "copy_text_seconds": text_seconds},
        "duckdb": {k: v for k, v in reference.items() if k != "answer"},
        "targets_rows_per_s": TARGETS,
        "runs": runs,
        "all_correct": all(r.get("check", {}).get("correct", False) for r in runs),
    }
    if not args.no_json:
        print(f"\nresults: {_common.write_results('revenue', payload)}")
    if not payload["all_correct"]:
        shout("at least one run FAILED or gave a WRONG ANSWER - do not trust its figures", [])
        return 2
    return 0


def report_table(runs: list[dict[str, Any]], reference: dict[str, Any], rows: int) -> str:
    headers = [
        "path",
        "run",
        "rows",
        "seconds",
        "rows/s",
        "peak RSS MiB",
        "vs DuckDB",
        "target rows/s",
        "met",
        "answer",
    ]
    table: list[list[Any]] = []
    for r in runs:
        if "error" in r:
            table.append([PATH_LABELS[r["path"]], r["run"], rows, None, None, None, None,
                          r["target_rows_per_s"], False, "FAILED"])  # fmt: skip
            continue
        table.append([
            PATH_LABELS[r["path"]], r["run"], rows, r["seconds"], r["rows_per_s"], r["peak_rss_mib"],
            f"{r['ratio_vs_duckdb']:.4f} (1/{1 / r['ratio_vs_duckdb']:,.0f})", r["target_rows_per_s"],
            r["target_met"], "correct" if r["check"]["correct"] else "WRONG",
        ])  # fmt: skip
    table.append([PATH_LABELS["duckdb"], "best/3", rows, reference["seconds"], reference["rows_per_s"],
                  None, "1", None, None, "reference"])  # fmt: skip
    return _common.format_table(headers, table)


def targets_summary(runs: list[dict[str, Any]]) -> str:
    lines = []
    for path in ("a", "b"):
        mine = [r for r in runs if r["path"] == path]
        if not mine:
            continue
        measured = ", ".join(f"{r['rows_per_s']:,.0f}" if "error" not in r else "failed" for r in mine)
        met = all(r.get("target_met", False) for r in mine)
        wrong = any(not r.get("check", {}).get("correct", False) for r in mine)
        verdict = "MET" if met else "NOT MET" + (" (a run failed or answered wrong)" if wrong else "")
        lines.append(f"target {PATH_LABELS[path]}: >= {TARGETS[path]:,} rows/s; measured {measured} rows/s: {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
