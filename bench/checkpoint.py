"""Benchmark: what checkpoints to object storage cost, and what they buy.

    python bench/checkpoint.py [--repeat K] [--large] [--profile]

Four measurements, each in fresh worker processes, every one in both state
stores of a data dir where it makes sense: **memory** (the default: state in
memory, the table logs replayed at start-up) and **checkpoint**
(``state_store_url="fs"``: a checkpoint on every barrier to ``DATA_DIR/objects``).

1. *Overhead.* The same load, timed from the first row handed to the embedded
   writer until ``FLUSH`` returns, in both stores, on (a) the revenue view of
   ``bench/revenue.py`` (default 2,000,000 rows, 1,000 categories) and (b)
   ``CREATE MATERIALIZED VIEW g AS SELECT k, count(*), sum(v) FROM t GROUP BY k``
   with k uniform over 1,000,000 values (default 2,000,000 rows). Rows go in as
   64Ki-row chunks at a steady pace (chunk i is handed over at i/n of
   ``--pace-s-*``), so several barriers (one a second) fall inside the load.
   Reported: rows/s, checkpoint/memory ratio and overhead %, and the process's
   CPU seconds (all threads) over the same span — when both stores keep up
   with the pace, rows/s hides the cost and CPU seconds show it.
2. *Barrier latency.* p50/p99 of ``duration_ms`` and ``align_ms`` of the
   checkpoints committed during the load (``tidegate_checkpoints``).
3. *Recovery.* ~100 MB of state (the revenue table, ``--recovery-rows`` rows,
   plus its view; Arrow size reported) built in a worker that (clean) FLUSHes
   and closes, or (kill) is SIGKILLed mid-load; then a fresh process times
   ``tidegate.connect(dir)`` (which replays before returning) until the first
   ``FLUSH`` returns. ``--large`` uses ~1 GB (20,000,000 rows) instead.
4. *Bytes per checkpoint.* A checkpointed table of ``--update-table-rows``
   rows; each round ``UPDATE t SET v = v + 1 WHERE k % 100 = r`` (1 % of the
   rows) then ``FLUSH`` (one barrier per round, the timer is set to an hour).
   Reported: ``bytes_uploaded`` of the round's checkpoint vs the Arrow size of
   the changed rows, and everything written to the object store in the round
   (compaction included, which ``bytes_uploaded`` does not count).

This is a benchmark, not a test: it never asserts on timing. A wrong answer
(view totals, rows lost or doubled after a kill) is reported loudly and makes
the exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
import revenue
from _common import ms_text, shout

CHUNK_ROWS = revenue.CHUNK_ROWS
RESULT_MARKER = "@@CHECKPOINT_RESULT@@ "
PROGRESS_MARKER = "@@PROGRESS@@ "
TARGET_OVERHEAD_PCT = 5.0  # target: checkpoint overhead within 5 %
TARGET_RECOVERY_S = 2.0  # target: recovery of 100 MB of state within 2 s
STORES = {"memory": "none", "checkpoint": "fs"}
LARGE_RECOVERY_ROWS = 20_000_000  # ~1 GB of Arrow in the revenue table

GROUPS_TABLE = "CREATE TABLE t (k INT, v BIGINT)"
GROUPS_VIEW = "CREATE MATERIALIZED VIEW g AS SELECT k, count(*), sum(v) FROM t GROUP BY k"
UPDATE_TABLE = "CREATE TABLE t (k INT, v BIGINT)"
GROUPS_SCHEMA = pa.schema([("k", pa.int32()), ("v", pa.int64())])


# ---- data ---------------------------------------------------------------------------------
def group_batches(rows: int, groups: int, seed: int) -> list[pa.RecordBatch]:
    """``rows`` rows in 64Ki chunks: k uniform over ``groups`` values, v uniform 0..999."""
    out = []
    for i, start in enumerate(range(0, rows, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, rows - start)
        rng = np.random.default_rng([seed, 7, i])
        out.append(
            pa.RecordBatch.from_arrays(
                [pa.array(rng.integers(0, groups, count, dtype=np.int32)), pa.array(rng.integers(0, 1000, count))],
                schema=GROUPS_SCHEMA,
            )
        )
    return out


def workload_batches(spec: dict[str, Any]) -> list[pa.RecordBatch]:
    if spec["workload"] == "revenue":
        return revenue.generate(spec["rows"], spec["categories"], spec["seed"])
    return group_batches(spec["rows"], spec["groups"], spec["seed"])


def expected_totals(workload: str, batches: list[pa.RecordBatch]) -> list[str]:
    rows = sum(b.num_rows for b in batches)
    if workload == "revenue":
        total = sum((pc.sum(b.column("amount")).as_py() for b in batches), Decimal(0))
        return [str(rows), _norm(total)]
    return [str(rows), str(sum(int(pc.sum(b.column("v")).as_py()) for b in batches))]


TOTALS_SQL = {
    "revenue": "SELECT sum(order_count), sum(total_revenue) FROM revenue_by_category",
    "groups": 'SELECT sum("count"), sum("sum") FROM g',
}
DDL = {"revenue": [revenue.CREATE_TABLE, revenue.CREATE_VIEW], "groups": [GROUPS_TABLE, GROUPS_VIEW]}
TABLE = {"revenue": "orders", "groups": "t"}


def _norm(value: Any) -> str:
    return format(Decimal(str(value)).normalize(), "f") if value is not None else "NULL"


# ---- worker side (runs in a fresh process) --------------------------------------------------
def _open(data_dir: Path, store: str | None) -> Any:
    import tidegate

    return tidegate.connect(data_dir, fsync=True, state_store_url=store)


def _writer(db: Any, table: str) -> tuple[Any, pa.Schema]:
    from tidegate.meta.streaming import storage_schema

    relation = db.database.catalog.get(table)
    assert relation is not None, f"table {table} is missing"
    return db.database.writer(relation), storage_schema(relation)


def _apply(writer: Any, schema: pa.Schema, batch: pa.RecordBatch) -> None:
    from tidegate.common.chunk import Chunk

    writer.wait_for_room()  # the backpressure an INSERT statement gets
    row_ids = writer.allocate_row_ids(batch.num_rows)
    columns = [row_ids if name == "_row_id" else batch.column(name) for name in schema.names]
    writer.apply([Chunk.inserts(pa.RecordBatch.from_arrays(columns, schema=schema))])


def _checkpoints(db: Any, after_epoch: int) -> list[dict[str, Any]]:
    result = db.execute_result("SELECT * FROM tidegate_checkpoints ORDER BY epoch")
    names = [c.name for c in result.columns or []]
    return [dict(zip(names, row)) for row in result.rows if row[names.index("epoch")] > after_epoch]


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Overhead/latency: paced load of one workload into one store, timed until FLUSH returns."""
    start = time.perf_counter()
    batches = workload_batches(spec)
    generate_s = time.perf_counter() - start
    expected = expected_totals(spec["workload"], batches)
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-ckpt-") as tmp:
        data_dir = Path(tmp) / "db"
        db = _open(data_dir, spec["store"])
        try:
            for ddl in DDL[spec["workload"]]:
                db.execute(ddl)
            writer, schema = _writer(db, TABLE[spec["workload"]])
            epoch0 = db.database.flush()
            pace = spec["pace_s"] / len(batches)
            cpu0, start = _common.cpu_seconds(), time.perf_counter()
            late = 0.0
            for i, batch in enumerate(batches):
                due = start + i * pace
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                else:
                    late = max(late, now - due)
                _apply(writer, schema, batch)
            applied = time.perf_counter()
            db.execute("FLUSH")
            end, cpu1 = time.perf_counter(), _common.cpu_seconds()
            peak = _common.peak_rss_mib()
            checkpoints = _checkpoints(db, epoch0)
            got = [_norm(v) for v in db.execute(TOTALS_SQL[spec["workload"]])[0]]
            objects_bytes = _dir_bytes(data_dir / "objects")
            log_bytes = _dir_bytes(data_dir / "tables")
        finally:
            db.close()
    return {
        "rows": spec["rows"],
        "seconds": end - start,
        "apply_seconds": applied - start,
        "flush_seconds": end - applied,
        "cpu_seconds": cpu1 - cpu0,
        "max_late_s": late,
        "generate_seconds": generate_s,
        "peak_rss_mib": peak,
        "checkpoints": checkpoints,
        "objects_bytes": objects_bytes,
        "log_bytes": log_bytes,
        "totals": got,
        "totals_expected": expected,
        "correct": got == expected,
    }


def worker_build(spec: dict[str, Any]) -> dict[str, Any]:
    """Recovery: load the revenue table into ``data_dir``; FLUSH and close, or wait to be killed."""
    batches = revenue.generate(spec["rows"], spec["categories"], spec["seed"])
    db = _open(Path(spec["data_dir"]), spec["store"])
    for ddl in DDL["revenue"]:
        db.execute(ddl)
    writer, schema = _writer(db, "orders")
    pace = spec["pace_s"] / len(batches)
    start = time.perf_counter()
    done = 0
    for i, batch in enumerate(batches):
        due = start + i * pace
        if time.perf_counter() < due:
            time.sleep(due - time.perf_counter())
        _apply(writer, schema, batch)
        done += batch.num_rows
        if spec["kill"]:
            print(f"{PROGRESS_MARKER}{done} {len(_checkpoints(db, 0))}", flush=True)
    if spec["kill"]:
        time.sleep(3600)  # the parent kills us before this
    db.execute("FLUSH")
    relation = db.database.catalog.get("revenue_by_category")
    with db.database.store.pin_committed() as epoch:
        view_bytes = db.database.snapshot(relation, epoch).nbytes
    table_bytes = writer.latest().nbytes
    db.close()
    return {"rows": done, "table_arrow_bytes": table_bytes, "view_arrow_bytes": view_bytes}


def worker_recover(spec: dict[str, Any]) -> dict[str, Any]:
    """Recovery: time connect (replays before returning) until the first FLUSH returns."""
    start = time.perf_counter()
    import tidegate

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    db = tidegate.connect(Path(spec["data_dir"]), fsync=True)
    connected = time.perf_counter()
    db.execute("FLUSH")
    end = time.perf_counter()
    peak = _common.peak_rss_mib()
    table_rows = db.execute("SELECT count(*) FROM orders")[0][0]
    view_rows = db.execute("SELECT sum(order_count) FROM revenue_by_category")[0][0]
    db.close()
    return {
        "seconds": end - start,
        "connect_seconds": connected - start,
        "flush_seconds": end - connected,
        "import_seconds": import_s,
        "peak_rss_mib": peak,
        "table_rows": int(table_rows),
        "view_order_count": int(view_rows or 0),
    }


def worker_bytes(spec: dict[str, Any]) -> dict[str, Any]:
    """Bytes per checkpoint: update 1 % of a checkpointed table per barrier."""
    rows, rounds = spec["rows"], spec["rounds"]
    rng = np.random.default_rng([spec["seed"], 99])
    keys = np.arange(rows, dtype=np.int32)
    values = rng.integers(0, 1000, rows)
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-ckpt-bytes-") as tmp:
        data_dir = Path(tmp) / "db"
        objects = data_dir / "objects"
        db = _open(data_dir, "fs")
        try:
            db.execute("SET barrier_interval_ms = 3600000")  # one barrier per round: the FLUSH
            db.execute(UPDATE_TABLE)
            writer, schema = _writer(db, "t")
            for start in range(0, rows, CHUNK_ROWS):
                stop = min(rows, start + CHUNK_ROWS)
                batch = pa.RecordBatch.from_arrays(
                    [pa.array(keys[start:stop]), pa.array(values[start:stop])], schema=GROUPS_SCHEMA
                )
                _apply(writer, schema, batch)
            epoch = db.database.flush()
            db.database.flush()  # a second, empty checkpoint: the load's SSTs are all committed
            epoch = db.database.flush()
            state_arrow = writer.latest().nbytes
            seen = {p.name: p.stat().st_size for p in objects.rglob("*.sst")}
            initial_object_bytes = sum(seen.values())
            out = []
            for r in range(rounds):
                update_start = time.perf_counter()
                db.execute(f"UPDATE t SET v = v + 1 WHERE k % 100 = {r % 100}")
                update_s = time.perf_counter() - update_start
                latest = writer.latest()
                mask = latest.column("k").to_numpy() % 100 == r % 100
                changed = latest.filter(pa.array(mask))
                flush_start = time.perf_counter()
                new_epoch = db.database.flush()
                flush_s = time.perf_counter() - flush_start
                records = _checkpoints(db, epoch)
                epoch = new_epoch
                now = {p.name: p.stat().st_size for p in objects.rglob("*.sst")}
                written = {n: s for n, s in now.items() if n not in seen}
                seen = now
                uploaded = sum(c["bytes_uploaded"] for c in records)
                out.append(
                    {
                        "round": r,
                        "changed_rows": changed.num_rows,
                        "changed_arrow_bytes": changed.nbytes,
                        "bytes_uploaded": uploaded,
                        "sst_count": sum(c["sst_count"] for c in records),
                        "checkpoints": len(records),
                        "object_bytes_written": sum(written.values()),
                        "compaction_bytes": sum(s for n, s in written.items() if _is_compaction(n)),
                        "object_store_bytes": sum(now.values()),
                        "update_seconds": update_s,
                        "flush_seconds": flush_s,
                        "duration_ms": [c["duration_ms"] for c in records],
                    }
                )
        finally:
            db.close()
    return {
        "rows": rows,
        "state_arrow_bytes": state_arrow,
        "initial_object_bytes": initial_object_bytes,
        "rounds": out,
    }


def _is_compaction(name: str) -> bool:
    """Compaction outputs are ``<table>-<epoch>-c<12 hex>.sst``; checkpoint SSTs have no ``c``."""
    parts = name.removesuffix(".sst").split("-")
    return len(parts) == 3 and len(parts[2]) == 13 and parts[2].startswith("c")


WORKERS = {"load": worker_load, "build": worker_build, "recover": worker_recover, "bytes": worker_bytes}


# ---- parent side ------------------------------------------------------------------------------
def run_worker(spec: dict[str, Any], profile_to: Path | None = None) -> dict[str, Any]:
    return _common.run_worker(__file__, RESULT_MARKER, spec, profile_to)


def run_kill_build(spec: dict[str, Any], kill_fraction: float) -> dict[str, Any]:
    """Start a loading worker and SIGKILL it once ``kill_fraction`` of the rows are acknowledged."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=_common.REPO_DIR)
    assert proc.stdout is not None
    acknowledged, checkpoints = 0, 0
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS_MARKER):
                acknowledged, checkpoints = (int(x) for x in line[len(PROGRESS_MARKER) :].split())
                if acknowledged >= kill_fraction * spec["rows"]:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    if acknowledged == 0:
        raise RuntimeError(f"the loading worker died before acknowledging anything (status {proc.returncode})")
    # An apply may have returned between our last read and the kill: at most one more chunk.
    return {"acknowledged_rows": acknowledged, "checkpoints_before_kill": checkpoints, "status": proc.returncode}


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def overhead_phase(args: argparse.Namespace, profile_dir: Path | None) -> list[dict[str, Any]]:
    runs = []
    for workload in args.workloads:
        rows = args.revenue_rows if workload == "revenue" else args.groups_rows
        pace = args.pace_s_revenue if workload == "revenue" else args.pace_s_groups
        for run in range(1, args.repeat + 1):
            for store_name, store in STORES.items():
                spec = {
                    "kind": "load", "workload": workload, "store": store, "rows": rows, "pace_s": pace,
                    "seed": args.seed, "groups": args.groups, "categories": args.categories,
                }  # fmt: skip
                print(f"overhead: {workload}, {store_name} store, run {run}/{args.repeat} "
                      f"({rows:,} rows paced over {pace:g}s) ...", flush=True)  # fmt: skip
                load_before = os.getloadavg()[0]
                profile_to = None
                if profile_dir is not None and store_name == "checkpoint" and run == 1:
                    profile_to = profile_dir / f"checkpoint-profile-{workload}-{_common.timestamp_slug()}.txt"
                try:
                    result = run_worker(spec, profile_to)
                except Exception as error:
                    traceback.print_exception(error)
                    result = {"error": f"{type(error).__name__}: {error}"}
                result.update(workload=workload, store=store_name, run=run, pace_s=pace,
                              loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])  # fmt: skip
                if profile_to is not None:
                    result["profile"] = str(profile_to)
                    result["profiled"] = True  # py-spy slows it down: not a throughput figure
                if "error" not in result:
                    result["rows_per_s"] = rows / result["seconds"]
                    cps = result["checkpoints"]
                    result["checkpoints_during_load"] = len(cps)
                    for field in ("duration_ms", "align_ms", "sync_ms"):
                        values = [c[field] for c in cps]
                        result[f"{field}_p50"] = percentile(values, 50)
                        result[f"{field}_p99"] = percentile(values, 99)
                        result[f"{field}_max"] = max(values) if values else None
                    if not result["correct"]:
                        shout(f"{workload} {store_name} run {run}: WRONG view totals",
                               [f"got {result['totals']}, expected {result['totals_expected']}"])  # fmt: skip
                    print(f"  {result['seconds']:.2f}s (apply {result['apply_seconds']:.2f}s + FLUSH "
                          f"{result['flush_seconds']:.2f}s), {result['rows_per_s']:,.0f} rows/s, CPU "
                          f"{result['cpu_seconds']:.2f}s, {len(cps)} checkpoints, duration p50/p99 "
                          f"{ms_text(result['duration_ms_p50'])}/{ms_text(result['duration_ms_p99'])} ms, "
                          f"align p50/p99 {ms_text(result['align_ms_p50'])}/{ms_text(result['align_ms_p99'])} ms, "
                          f"uploaded "
                          f"{sum(c['bytes_uploaded'] for c in cps) / 2**20:,.1f} MiB, peak RSS "
                          f"{result['peak_rss_mib']:,.0f} MiB, load avg {load_before:.2f}->"
                          f"{result['loadavg_1m_after']:.2f}, totals "
                          f"{'correct' if result['correct'] else 'WRONG'}", flush=True)  # fmt: skip
                else:
                    shout(f"{workload} {store_name} run {run}: FAILED", [result["error"]])
                runs.append(result)
    return runs


def recovery_phase(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = LARGE_RECOVERY_ROWS if args.large else args.recovery_rows
    runs = []
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-ckpt-recovery-") as tmp:
        for store_name, store in STORES.items():
            for scenario in ("clean", "kill"):
                data_dir = Path(tmp) / f"{store_name}-{scenario}"
                spec = {
                    "kind": "build", "data_dir": str(data_dir), "store": store, "rows": rows,
                    "categories": args.categories, "seed": args.seed, "kill": scenario == "kill",
                    "pace_s": args.kill_pace_s if scenario == "kill" else 0.0,
                }  # fmt: skip
                print(f"recovery: {store_name} store, {scenario} stop, {rows:,} rows ...", flush=True)
                load_before = os.getloadavg()[0]
                result: dict[str, Any] = {"store": store_name, "scenario": scenario, "rows_loaded": rows}
                try:
                    if scenario == "clean":
                        result["build"] = run_worker(spec)
                    else:
                        result["build"] = run_kill_build(spec, args.kill_fraction)
                    result["log_bytes"] = _dir_bytes(data_dir / "tables")
                    result["objects_bytes"] = _dir_bytes(data_dir / "objects")
                    result.update(run_worker({"kind": "recover", "data_dir": str(data_dir)}))
                except Exception as error:
                    traceback.print_exception(error)
                    result["error"] = f"{type(error).__name__}: {error}"
                result.update(loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])
                if "error" not in result:
                    if scenario == "clean":
                        low = high = rows
                    else:
                        low = result["build"]["acknowledged_rows"]
                        high = min(rows, low + CHUNK_ROWS)  # one chunk may have been acknowledged unseen
                    ok = low <= result["table_rows"] <= high and result["view_order_count"] == result["table_rows"]
                    result["correct"] = ok
                    if not ok:
                        shout(f"recovery {store_name}/{scenario}: rows lost or doubled",
                               [f"table {result['table_rows']:,}, view {result['view_order_count']:,}, "
                                f"acknowledged {low:,}..{high:,}"])  # fmt: skip
                    build = result["build"]
                    if scenario == "kill":
                        extra = (
                            f", killed after {build['acknowledged_rows']:,} acknowledged rows and "
                            f"{build['checkpoints_before_kill']} checkpoints"
                        )
                    else:
                        extra = f", state {_mib(build['table_arrow_bytes'] + build['view_arrow_bytes'])} MiB Arrow"
                    print(f"  {result['seconds']:.2f}s (connect {result['connect_seconds']:.2f}s + FLUSH "
                          f"{result['flush_seconds']:.2f}s){extra}, log {_mib(result['log_bytes'])} MiB, objects "
                          f"{_mib(result['objects_bytes'])} MiB, recovered {result['table_rows']:,} rows "
                          f"({'correct' if ok else 'WRONG'}), peak RSS {result['peak_rss_mib']:,.0f} MiB, "
                          f"load avg {load_before:.2f}->{result['loadavg_1m_after']:.2f}", flush=True)  # fmt: skip
                else:
                    shout(f"recovery {store_name}/{scenario}: FAILED", [result["error"]])
                runs.append(result)
                shutil.rmtree(data_dir, ignore_errors=True)
    return runs


def bytes_phase(args: argparse.Namespace) -> dict[str, Any]:
    print(f"bytes per checkpoint: {args.update_table_rows:,}-row table, 1% updated per barrier, "
          f"{args.update_rounds} rounds ...", flush=True)  # fmt: skip
    load_before = os.getloadavg()[0]
    try:
        result = run_worker({"kind": "bytes", "rows": args.update_table_rows, "rounds": args.update_rounds,
                             "seed": args.seed})  # fmt: skip
    except Exception as error:
        traceback.print_exception(error)
        return {"error": f"{type(error).__name__}: {error}"}
    result.update(loadavg_1m_before=load_before, loadavg_1m_after=os.getloadavg()[0])
    rounds = result["rounds"]
    uploaded = [r["bytes_uploaded"] for r in rounds]
    changed = [r["changed_arrow_bytes"] for r in rounds]
    written = [r["object_bytes_written"] for r in rounds]
    result["median_bytes_uploaded"] = float(np.median(uploaded))
    result["median_changed_arrow_bytes"] = float(np.median(changed))
    result["ratio_uploaded_to_changed"] = sum(uploaded) / max(1, sum(changed))
    result["ratio_written_to_changed"] = sum(written) / max(1, sum(changed))
    result["ratio_uploaded_to_state"] = float(np.median(uploaded)) / max(1, result["state_arrow_bytes"])
    result["compaction_rounds"] = [r["round"] for r in rounds if r["compaction_bytes"]]
    for r in rounds:
        print(f"  round {r['round']:2d}: {r['changed_rows']:,} rows changed ({_kib(r['changed_arrow_bytes'])} KiB "
              f"Arrow), uploaded {_kib(r['bytes_uploaded'])} KiB in {r['sst_count']} SSTs "
              f"({r['bytes_uploaded'] / max(1, r['changed_arrow_bytes']):.2f}x), object store written "
              f"{_kib(r['object_bytes_written'])} KiB (compaction {_kib(r['compaction_bytes'])} KiB), "
              f"UPDATE {r['update_seconds']:.2f}s, FLUSH {r['flush_seconds']:.2f}s", flush=True)  # fmt: skip
    print(f"  table state {_mib(result['state_arrow_bytes'])} MiB Arrow; uploaded/changed "
          f"{result['ratio_uploaded_to_changed']:.2f}x, all object writes/changed "
          f"{result['ratio_written_to_changed']:.2f}x", flush=True)  # fmt: skip
    return result


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def _kib(value: float) -> str:
    return f"{value / 2**10:,.0f}"


# ---- the table --------------------------------------------------------------------------------
def report_table(overhead: list[dict[str, Any]], recovery: list[dict[str, Any]], nbytes: dict[str, Any]) -> str:
    headers = ["measure", "case", "run", "memory", "checkpoint", "ckpt/memory", "overhead %", "target", "met"]
    table: list[list[Any]] = []
    for workload in sorted({r["workload"] for r in overhead}, key=["revenue", "groups"].index):
        for run in sorted({r["run"] for r in overhead}):
            pair = {r["store"]: r for r in overhead if r["workload"] == workload and r["run"] == run}
            mem, ckpt = pair.get("memory", {}), pair.get("checkpoint", {})
            case = f"{workload} {mem.get('rows', ckpt.get('rows', 0)) / 1e6:g}M rows /{mem.get('pace_s', 0):g}s"
            ok = "error" not in mem and "error" not in ckpt and bool(mem) and bool(ckpt)
            profiled = ckpt.get("profiled", False)
            if ok:
                ratio = ckpt["rows_per_s"] / mem["rows_per_s"]
                overhead_pct = (1 / ratio - 1) * 100
                correct = mem["correct"] and ckpt["correct"]
                met: Any = "profiled" if profiled else (overhead_pct <= TARGET_OVERHEAD_PCT and correct)
                table.append(["rows/s", case, run, mem["rows_per_s"], ckpt["rows_per_s"], round(ratio, 3),
                              round(overhead_pct, 1), f"<= {TARGET_OVERHEAD_PCT:g} %",
                              met if correct else "WRONG"])  # fmt: skip
                cpu_ratio = ckpt["cpu_seconds"] / mem["cpu_seconds"]
                table.append(["CPU s (all threads)", case, run, mem["cpu_seconds"], ckpt["cpu_seconds"],
                              round(cpu_ratio, 3), round((cpu_ratio - 1) * 100, 1), None, None])  # fmt: skip
                table.append(["checkpoints in load", case, run, mem["checkpoints_during_load"],
                              ckpt["checkpoints_during_load"], None, None, None, None])  # fmt: skip
                for field in ("duration_ms", "align_ms"):
                    for q in ("p50", "p99"):
                        table.append([f"barrier {field} {q}", case, run, mem[f"{field}_{q}"],
                                      ckpt[f"{field}_{q}"], None, None, None, None])  # fmt: skip
            else:
                table.append(["rows/s", case, run, None, None, None, None, f"<= {TARGET_OVERHEAD_PCT:g} %",
                              "FAILED"])  # fmt: skip
    for scenario in ("clean", "kill") if recovery else ():
        pair = {r["store"]: r for r in recovery if r["scenario"] == scenario}
        mem, ckpt = pair.get("memory", {}), pair.get("checkpoint", {})
        size = mem.get("build", {}).get("table_arrow_bytes")
        clean = next((r for r in recovery if r["scenario"] == "clean" and "build" in r), None)
        if clean is not None:
            size = clean["build"]["table_arrow_bytes"] + clean["build"]["view_arrow_bytes"]
        case = f"{scenario} stop, {size / 2**20:,.0f} MiB state" if size else f"{scenario} stop"
        values = [r.get("seconds") if "error" not in r and r else None for r in (mem, ckpt)]
        correct = all(r.get("correct", False) for r in (mem, ckpt))
        met = (ckpt.get("seconds", 1e9) <= TARGET_RECOVERY_S and correct) if "error" not in ckpt else False
        table.append(["recovery s (connect+FLUSH)", case, 1, values[0], values[1],
                      round(values[1] / values[0], 3) if all(values) else None, None,
                      f"<= {TARGET_RECOVERY_S:g} s", met if correct else "WRONG"])  # fmt: skip
    if nbytes and "error" not in nbytes:
        case = f"{nbytes['rows'] / 1e6:g}M-row table, 1 %/barrier"
        table.append(["bytes uploaded/ckpt (median)", case, 1, None, nbytes["median_bytes_uploaded"], None, None,
                      None, None])  # fmt: skip
        table.append(["Arrow bytes changed/ckpt (median)", case, 1, None, nbytes["median_changed_arrow_bytes"],
                      None, None, None, None])  # fmt: skip
        table.append(["uploaded / changed", case, 1, None, round(nbytes["ratio_uploaded_to_changed"], 3), None,
                      None, "proportional", None])  # fmt: skip
        table.append(["all object writes / changed", case, 1, None, round(nbytes["ratio_written_to_changed"], 3),
                      None, None, "(incl. compaction)", None])  # fmt: skip
        table.append(["uploaded/ckpt / total state", case, 1, None, round(nbytes["ratio_uploaded_to_state"], 4),
                      None, None, "~0.01", None])  # fmt: skip
    elif nbytes:
        table.append(["bytes uploaded/ckpt", "-", 1, None, None, None, None, None, "FAILED"])
    return _common.format_table(headers, table)


# ---- py-spy summary ----------------------------------------------------------------------------
def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per file:function from py-spy's raw (collapsed) output."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        threads[thread] = threads.get(thread, 0) + count
        names = [_frame_name(f) for f in frames[1:] if f.strip()]
        if names:
            self_counts[names[-1]] = self_counts.get(names[-1], 0) + count
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count

    def ranked(counts: dict[str, int], only_tidegate: bool = False) -> list[tuple[str, int, float]]:
        items = [(k, v) for k, v in counts.items() if not only_tidegate or "tidegate/" in k]
        items.sort(key=lambda kv: -kv[1])
        return [(k, v, 100 * v / max(1, total)) for k, v in items[:top]]

    return {
        "samples": total,
        "threads": ranked(threads),
        "self": ranked(self_counts),
        "inclusive_tidegate": ranked(inclusive, only_tidegate=True),
    }


def _frame_name(frame: str) -> str:
    """'build_sst (tidegate/state/sst.py:140)' -> 'tidegate/state/sst.py:build_sst'."""
    function, _, where = frame.strip().partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    marker = file.find("tidegate/")
    if marker >= 0:
        file = file[marker:]
    elif "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    return f"{file}:{function}"


def print_profile(summary: dict[str, Any], label: str) -> None:
    print(f"\npy-spy ({label}, all threads, {summary['samples']:,} samples):")
    for title, key in (("threads", "threads"), ("self time", "self"), ("inclusive, tidegate/", "inclusive_tidegate")):
        print(f"  {title}:")
        for name, count, share in summary[key][:12]:
            print(f"    {share:5.1f}%  {count:6,}  {name}")


# ---- driver ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revenue-rows", type=int, default=2_000_000, help="rows of the revenue load (2,000,000)")
    parser.add_argument("--categories", type=int, default=1000, help="revenue categories (1,000)")
    parser.add_argument("--groups-rows", type=int, default=2_000_000, help="rows of the group-by load (2,000,000)")
    parser.add_argument("--groups", type=int, default=1_000_000, help="distinct k of the group-by load (1,000,000)")
    parser.add_argument("--pace-s-revenue", type=float, default=5.0, help="spread the revenue load over S s (5)")
    parser.add_argument("--pace-s-groups", type=float, default=20.0, help="spread the group-by load over S s (20)")
    parser.add_argument("--recovery-rows", type=int, default=2_000_000, help="revenue rows of the recovery state")
    parser.add_argument("--large", action="store_true", help=f"recovery with {LARGE_RECOVERY_ROWS:,} rows (~1 GB)")
    parser.add_argument("--kill-fraction", type=float, default=0.75, help="SIGKILL once this share is acknowledged")
    parser.add_argument("--kill-pace-s", type=float, default=4.0, help="spread the load to be killed over S s (4)")
    parser.add_argument("--update-table-rows", type=int, default=1_000_000, help="rows of the updated table (1M)")
    parser.add_argument("--update-rounds", type=int, default=12, help="1 %% updates, one checkpoint each (12)")
    parser.add_argument("--seed", type=int, default=42, help="data generator seed (42)")
    parser.add_argument("--repeat", type=int, default=1, help="overhead runs per workload and store (1)")
    parser.add_argument(
        "--only", choices=["overhead", "recovery", "bytes"], action="append", help="run only these parts (repeatable)"
    )
    parser.add_argument("--workload", choices=["revenue", "groups"], action="append", help="overhead workloads")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy --threads the checkpoint-mode loads (run 1; slows them)"
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/checkpoint-*.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = args.workload or ["revenue", "groups"]
    args.parts = args.only or ["overhead", "recovery", "bytes"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        _common.serve_worker(args.worker, WORKERS, RESULT_MARKER)
        return 0

    print(f"checkpoint overhead/latency/recovery/bytes: parts {'+'.join(args.parts)}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    profile_dir = _common.profile_dir(args.profile)
    started = time.perf_counter()
    overhead = overhead_phase(args, profile_dir) if "overhead" in args.parts else []
    recovery = recovery_phase(args) if "recovery" in args.parts else []
    nbytes = bytes_phase(args) if "bytes" in args.parts else {}

    print()
    print(report_table(overhead, recovery, nbytes))
    profiles = {}
    for r in overhead:
        if r.get("profile") and Path(r["profile"]).exists():
            profiles[r["workload"]] = summarize_profile(Path(r["profile"]))
            print_profile(profiles[r["workload"]], f"{r['workload']}, checkpoint store")
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.0f}s, load avg now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    correct = (
        all(r.get("correct", False) for r in overhead)
        and all(r.get("correct", False) for r in recovery)
        and "error" not in nbytes
    )
    payload = {
        "benchmark": "checkpoint",
        "config": {k: v for k, v in vars(args).items() if k != "worker"} | {"chunk_rows": CHUNK_ROWS, "fsync": True},
        "targets": {"overhead_pct_max": TARGET_OVERHEAD_PCT, "recovery_s_max": TARGET_RECOVERY_S},
        "machine": _common.machine_info(),
        "overhead": overhead,
        "recovery": recovery,
        "bytes_per_checkpoint": nbytes,
        "profiles": profiles,
        "wall_seconds": elapsed,
        "all_correct": correct,
    }
    if not args.no_json:
        print(f"results: {_common.write_results('checkpoint', payload)}")
    if not correct:
        shout("a run FAILED or gave a WRONG ANSWER - do not trust its figures", [])
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
