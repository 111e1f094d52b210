"""The ``tidegate`` command.

tidegate playground                      a throwaway server on 127.0.0.1:4566
tidegate start --data-dir DIR [--listen HOST:PORT] [--state-store URL] [--meta-store URL]
               [--cache-budget SIZE] [--config FILE]
                                         the persistent server; SIGTERM stops it cleanly
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.config import ServerConfig, load_config, parse_size
from tidegate.errors import InvalidParameterValue
from tidegate.meta.database import Database
from tidegate.server.pgwire import PgServer
from tidegate.server.session import Session

DEFAULT_LISTEN = "127.0.0.1:4566"
log = logging.getLogger("tidegate")


def _parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen needs HOST:PORT, got {text!r}")
    return host, int(port)


async def _serve(database: Database, host: str, port: int, banner: str) -> None:
    server = PgServer(lambda user, dbname: Session(database, user, dbname), host=host, port=port)
    await server.start()
    print(banner.format(host=host, port=server.port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.ensure_future(server.serve_forever())
    await stop.wait()
    log.info("shutting down")
    await server.close()
    serving.cancel()


def _run(data_dir: Path, host: str, port: int, banner: str, options: dict[str, Any] | None = None) -> int:
    try:
        database = Database(data_dir, **(options or {}))
    except Exception as error:
        print(f"tidegate: cannot open data dir {data_dir}: {error}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(database, host, port, banner))
    except OSError as error:
        print(f"tidegate: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    finally:
        database.close()
    return 0


PLAYGROUND_BANNER = """\
tidegate playground is running (data in a temporary directory, gone when it stops).

  Connect:  psql -h {host} -p {port} -d dev -U root

Try:
  CREATE TABLE orders (order_id INT, product_category VARCHAR, amount DECIMAL, order_time TIMESTAMP);
  CREATE MATERIALIZED VIEW revenue_by_category AS
    SELECT product_category, COUNT(*) AS order_count, SUM(amount) AS total_revenue
    FROM orders GROUP BY product_category;
  INSERT INTO orders VALUES (1, 'Electronics', 299.99, '2026-04-01 10:00:00');
  SELECT * FROM revenue_by_category;

Press Ctrl-C to stop."""

START_BANNER = "tidegate is serving {data_dir} on {{host}}:{{port}} (psql -h {{host}} -p {{port}} -d dev -U root)"


def _verify(args: argparse.Namespace) -> int:
    from tidegate.verify import services
    from tidegate.verify.command import EXPECTATIONS, VerifySettings, report, run_guarantee

    try:
        settings = VerifySettings(
            kafka=services.kafka_bootstrap(args.kafka),
            postgres=services.postgres_url(args.postgres),
            kills=args.kills,
            seed=args.seed,
            keys=args.keys,
            rate=args.rate,
            work_dir=args.work_dir,
            failpoints=args.failpoints,
            keep=args.keep,
        )
    except InvalidParameterValue as error:
        print(f"tidegate verify: {error}", file=sys.stderr)
        return 2
    guarantees = list(DeliveryGuarantee) if args.guarantee == "all" else [DeliveryGuarantee(args.guarantee)]
    print(f"tidegate verify: {args.kills} kills per guarantee, seed {args.seed}, {args.rate} records/s")
    results = [run_guarantee(g, settings) for g in guarantees]
    print()
    print(report(results))
    print()
    for result in results:
        print(f"{'holds' if result.holds else 'DOES NOT HOLD'}: {EXPECTATIONS[result.guarantee]}")
    return 0 if all(r.holds for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidegate", description="A streaming SQL database.")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    commands = parser.add_subparsers(dest="command", required=True)
    playground = commands.add_parser("playground", help="run a throwaway server on 127.0.0.1:4566")
    playground.add_argument("--listen", type=_parse_listen, default=_parse_listen(DEFAULT_LISTEN))
    start = commands.add_parser("start", help="run the persistent server on a data directory")
    start.add_argument("--config", type=Path, metavar="FILE", help="a TOML configuration file (options override it)")
    start.add_argument("--data-dir", type=Path, help="where tables, logs and (by default) checkpoints live")
    start.add_argument("--listen", type=_parse_listen, help=f"HOST:PORT to serve pgwire on (default {DEFAULT_LISTEN})")
    start.add_argument(
        "--cache-budget",
        metavar="SIZE",
        help="memory for state caches, e.g. 512MiB: half for the block cache, half for operator caches "
        "(default: unbounded, everything stays in memory)",
    )
    start.add_argument(
        "--state-store",
        metavar="URL",
        help="where checkpoints go: 'fs' (DATA_DIR/objects, the default), fs:///dir, or "
        "s3://bucket/prefix?endpoint=... (credentials from --config or the environment); 'none' for no "
        "checkpoints (state in memory, table logs replayed at every start); kept for the data dir",
    )
    start.add_argument(
        "--meta-store",
        metavar="URL",
        help="where the catalog and checkpoint versions are kept; default SQLite in the data dir, or "
        "postgresql://USER@HOST:PORT/DATABASE?schema=NAME (schema default tidegate; password from the URL or "
        "PGPASSWORD); kept for the data dir",
    )
    verify = commands.add_parser(
        "verify", help="kill a live Kafka → view → sinks pipeline at random and audit every output, per guarantee"
    )
    verify.add_argument(
        "--guarantee",
        default="all",
        choices=["all", *(g.value for g in DeliveryGuarantee)],
        help="the delivery guarantee to check, or all three (default)",
    )
    verify.add_argument("--kills", type=int, default=5, help="SIGKILLs per guarantee (default 5)")
    verify.add_argument("--seed", type=int, default=1, help="seeds the workload and the kill times (default 1)")
    verify.add_argument("--rate", type=int, default=2000, help="records per second into Kafka (default 2000)")
    verify.add_argument("--keys", type=int, default=16, help="keys, each with its own sequence (default 16)")
    verify.add_argument("--kafka", metavar="HOST:PORT", help="a Kafka broker (default: start scripts/start-kafka.sh)")
    verify.add_argument(
        "--postgres", metavar="URL", help="a PostgreSQL server (default: start scripts/start-postgres.sh)"
    )
    verify.add_argument("--work-dir", type=Path, help="where data dirs, output files and logs go (default: /tmp)")
    verify.add_argument(
        "--keep",
        action="store_true",
        help="keep each run's Kafka topics, PostgreSQL tables, data dir, output files and server log",
    )
    verify.add_argument(
        "--failpoints",
        default="sink_before_delivery=0.02",
        help="extra crash points in the engine, name=probability,… (default: sink_before_delivery=0.02, "
        "a kill between a checkpoint's commit and its delivery to the sinks); '' for none",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "verify":
        return _verify(args)
    if args.command == "playground":
        host, port = args.listen
        with tempfile.TemporaryDirectory(prefix="tidegate-playground-") as playground_dir:
            return _run(Path(playground_dir), host, port, PLAYGROUND_BANNER)
    try:
        config = load_config(args.config) if args.config else ServerConfig()
        data_dir: Path | None = args.data_dir or config.data_dir
        if data_dir is None:
            raise InvalidParameterValue("give --data-dir (or data_dir in the --config file)")
        host, port = args.listen or _parse_listen(config.listen or DEFAULT_LISTEN)
        budget = parse_size(args.cache_budget) if args.cache_budget else config.cache_budget_bytes
    except (InvalidParameterValue, argparse.ArgumentTypeError) as error:
        print(f"tidegate: {error}", file=sys.stderr)
        return 2
    options = {
        "state_store_url": args.state_store or config.state_store_url,
        "meta_store_url": args.meta_store or config.meta_store_url,
        "cache_budget_bytes": budget,
    }
    data_dir = data_dir.resolve()
    return _run(data_dir, host, port, START_BANNER.format(data_dir=data_dir), options)


if __name__ == "__main__":
    sys.exit(main())
