"""A sqllogictest runner that plays ``.slt`` files through tidegate's real pgwire server.

The format is the one sqllogictest-rs (RisingWave) and DuckDB use::

    # a comment
    statement ok
    CREATE TABLE t (x INT)

    statement error 42P01
    SELECT * FROM missing

    query IT rowsort
    SELECT x, name FROM t
    ----
    1 one
    2 NULL

Records
    ``statement ok`` · ``statement count N`` · ``statement error [regex]`` (the regex is
    searched in the error message, or matches the whole SQLSTATE; an optional ``----``
    block after the SQL is a regex for the message too) · ``query <types> [nosort|rowsort|
    valuesort] [label]`` with expected rows after ``----`` · ``query error [regex]`` ·
    ``halt`` · ``sleep 100ms|2s`` · ``include <glob>`` · ``control sortmode <mode>`` ·
    ``connection <name>`` before a record (run it on another session, opened on first use) ·
    ``skipif <engine>`` / ``onlyif <engine>`` before a record (this engine is ``tidegate``).
    ``hash-threshold`` lines are accepted and ignored.

Results
    Values are PostgreSQL's text output (the runner asks for text results and keeps the
    server's bytes as they are): booleans ``t``/``f``, numerics as the server prints them.
    A row is its values joined by single spaces; NULL is ``NULL`` and the empty string
    ``(empty)``. Lines compare after whitespace runs collapse to one space. ``rowsort``
    sorts actual and expected lines, ``valuesort`` puts every value on its own line and
    sorts them. The type string is checked for its column count only (``I`` integer, ``R``
    float or numeric, ``T`` anything else, as ``--complete`` writes them).

Command line::

    python -m tests.slt.runner tests/slt                      # every file, own temporary server
    python -m tests.slt.runner tests/slt/basic/article.slt:40 --port 4566
    python -m tests.slt.runner FILE --complete                # rewrite expected results

``FILE:LINE`` runs the file's records up to the one containing LINE as setup (their
failures are only printed) and reports that record; ``--only`` runs that record alone.
Without ``--port`` the runner starts a server of its own on a temporary data directory.
Every failure is reported as ``path/to/file.slt:LINE: what went wrong``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Loader

ENGINE_NAMES = {"tidegate"}
DEFAULT_CONNECTION = "default"
SORT_MODES = {"nosort", "rowsort", "valuesort"}
INTEGER_OIDS = {20, 21, 23, 26}
FLOAT_OIDS = {700, 701, 1700}


class SltParseError(Exception):
    """The ``.slt`` file is malformed; the message starts with ``file:line``."""


# ---- records ---------------------------------------------------------------------------


@dataclass
class Record:
    kind: str  # "statement", "query", "halt", "sleep", "control"
    path: Path
    line: int  # 1-based line of the record's header
    end_line: int  # 1-based last line of the record (inclusive)
    sql: str = ""
    sql_lines: list[str] = field(default_factory=list)
    expect_error: bool = False
    error_pattern: str | None = None
    expected_count: int | None = None
    types: str = ""
    sort_mode: str | None = None  # None: the file's default (nosort unless `control sortmode`)
    label: str | None = None
    expected: list[str] | None = None  # the lines after ----, None when there is no ---- block
    sleep_seconds: float = 0.0
    skip: bool = False
    connection: str = DEFAULT_CONNECTION  # `connection NAME` before the record picks another session

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def covers(self, line: int) -> bool:
        return self.line <= line <= self.end_line


def parse_file(path: Path, *, _seen: frozenset[Path] = frozenset()) -> list[Record]:
    """Parse ``path`` (following ``include``) into records, in order."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        raise SltParseError(f"{path}: include cycle")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records: list[Record] = []
    skip = False
    connection = DEFAULT_CONNECTION
    index = 0

    def error(at: int, message: str) -> SltParseError:
        return SltParseError(f"{path}:{at + 1}: {message}")

    def block(start: int, stop_at_dashes: bool) -> tuple[list[str], int]:
        """Lines from ``start`` up to a blank line (or ``----``); returns them and the next index."""
        taken: list[str] = []
        at = start
        while at < len(lines) and lines[at].strip() != "":
            if stop_at_dashes and lines[at].strip() == "----":
                break
            taken.append(lines[at])
            at += 1
        return taken, at

    while index < len(lines):
        raw = lines[index]
        text = raw.strip()
        if text == "" or text.startswith("#"):
            index += 1
            continue
        words = text.split()
        head = words[0]
        if head in ("skipif", "onlyif"):
            if len(words) < 2:
                raise error(index, f"{head} needs an engine name")
            matches = words[1] in ENGINE_NAMES
            skip = skip or (matches if head == "skipif" else not matches)
            index += 1
            continue
        if head == "connection":
            if len(words) != 2:
                raise error(index, "connection needs a name")
            connection = words[1]
            index += 1
            continue
        if head == "hash-threshold":
            index += 1
            continue
        if head == "halt":
            records.append(Record("halt", path, index + 1, index + 1, skip=skip))
            skip = False
            index += 1
            continue
        if head == "include":
            if len(words) != 2:
                raise error(index, "include needs one path or glob")
            pattern = str(path.parent / words[1])
            matched = sorted(glob.glob(pattern, recursive=True))
            if not matched:
                raise error(index, f"include {words[1]!r} matches no file")
            if not skip:
                for included in matched:
                    records.extend(parse_file(Path(included), _seen=_seen | {resolved}))
            skip = False
            index += 1
            continue
        if head == "sleep":
            if len(words) != 2:
                raise error(index, "sleep needs a duration like 100ms or 2s")
            seconds = _duration(words[1], error(index, ""))
            records.append(Record("sleep", path, index + 1, index + 1, sleep_seconds=seconds, skip=skip))
            skip = False
            index += 1
            continue
        if head == "control":
            if len(words) != 3 or words[1] != "sortmode" or words[2] not in SORT_MODES:
                raise error(index, "only `control sortmode nosort|rowsort|valuesort` is supported")
            records.append(Record("control", path, index + 1, index + 1, sort_mode=words[2], skip=skip))
            skip = False
            index += 1
            continue
        if head == "statement":
            record = Record("statement", path, index + 1, index + 1, skip=skip)
            if len(words) < 2 or words[1] not in ("ok", "error", "count"):
                raise error(index, "expected `statement ok`, `statement error [regex]` or `statement count N`")
            if words[1] == "error":
                record.expect_error = True
                rest = text.split(None, 2)
                record.error_pattern = rest[2].strip() if len(rest) > 2 else None
            elif words[1] == "count":
                if len(words) != 3 or not words[2].isdigit():
                    raise error(index, "statement count needs a number")
                record.expected_count = int(words[2])
            elif len(words) > 2:
                raise error(index, "unexpected words after `statement ok`")
            record.sql_lines, index = block(index + 1, stop_at_dashes=True)
            if index < len(lines) and lines[index].strip() == "----":
                if not record.expect_error:
                    raise error(index, "only `statement error` may have a ---- block")
                message_lines, index = block(index + 1, stop_at_dashes=False)
                record.error_pattern = "\n".join(message_lines).strip() or record.error_pattern
        elif head == "query":
            record = Record("query", path, index + 1, index + 1, skip=skip)
            if len(words) >= 2 and words[1] == "error":
                record.expect_error = True
                rest = text.split(None, 2)
                record.error_pattern = rest[2].strip() if len(rest) > 2 else None
            else:
                if len(words) < 2:
                    raise error(index, "query needs a type string, e.g. `query IT rowsort`")
                record.types = words[1]
                if not re.fullmatch(r"[ITRB?]+", record.types):
                    raise error(index, f"bad column types {record.types!r}; use I, T, R (or ?)")
                if len(words) >= 3:
                    if words[2] not in SORT_MODES:
                        raise error(index, f"unknown sort mode {words[2]!r}")
                    record.sort_mode = words[2]
                if len(words) >= 4:
                    record.label = words[3]
            record.sql_lines, index = block(index + 1, stop_at_dashes=True)
            if index < len(lines) and lines[index].strip() == "----":
                expected, index = block(index + 1, stop_at_dashes=False)
                if record.expect_error:
                    record.error_pattern = "\n".join(expected).strip() or record.error_pattern
                else:
                    record.expected = expected
        else:
            raise error(index, f"unknown record type {head!r}")
        if not record.sql_lines:
            raise error(record.line - 1, f"{head} record without SQL")
        record.sql = "\n".join(record.sql_lines)
        record.connection = connection
        connection = DEFAULT_CONNECTION
        record.end_line = index  # index is the blank line after the record (0-based) == last line (1-based)
        records.append(record)
        skip = False
    return records


def _duration(text: str, error: SltParseError) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    if not match:
        raise SltParseError(f"{error.args[0]}bad duration {text!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.slt`` files named by ``paths`` (directories are searched recursively)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.slt")))
        else:
            found.append(path)
    return found


# ---- rendering results -----------------------------------------------------------------


class _RawText(Loader):
    """Keep the server's text output as it is: the runner compares what psql would show."""

    def load(self, data: Any) -> str:
        return bytes(data).decode("utf-8")


def connect(host: str, port: int, *, user: str = "root", dbname: str = "dev") -> psycopg.Connection[Any]:
    conn = psycopg.connect(host=host, port=port, user=user, dbname=dbname, autocommit=True, connect_timeout=10)
    for info in psycopg.adapters.types:
        conn.adapters.register_loader(info.oid, _RawText)
        if info.array_oid:
            conn.adapters.register_loader(info.array_oid, _RawText)
    return conn


def render_value(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else str(value)
    return "(empty)" if text == "" else text


def normalize(line: str) -> str:
    return " ".join(line.split())


def result_lines(rows: Sequence[Sequence[Any]], sort_mode: str) -> list[str]:
    """The expected-output lines for ``rows`` under ``sort_mode``."""
    if sort_mode == "valuesort":
        return sorted(render_value(v) for row in rows for v in row)
    lines = [" ".join(render_value(v) for v in row) for row in rows]
    return sorted(lines) if sort_mode == "rowsort" else lines


def comparable(lines: Sequence[str], sort_mode: str) -> list[str]:
    normalized = [normalize(line) for line in lines]
    if sort_mode == "valuesort":
        return sorted(value for line in normalized for value in line.split(" ") if value)
    return sorted(normalized) if sort_mode == "rowsort" else normalized


def type_char(oid: int) -> str:
    if oid in INTEGER_OIDS:
        return "I"
    if oid in FLOAT_OIDS:
        return "R"
    return "T"


# ---- running ---------------------------------------------------------------------------


@dataclass
class Failure:
    record: Record
    message: str
    setup: bool = False  # a record run only to reach the selected one

    def __str__(self) -> str:
        note = " (setup)" if self.setup else ""
        return f"{self.record.where}{note}: {self.message}"


@dataclass
class Completion:
    """The rewritten header and result block of one query record (for ``--complete``)."""

    record: Record
    types: str
    lines: list[str]


class Runner:
    """Runs records on one connection per name (``default`` unless a record says
    ``connection NAME``); a failed statement does not end the session."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        complete: bool = False,
        verbose: bool = False,
        user: str = "root",
        dbname: str = "dev",
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.dbname = dbname
        self.complete = complete
        self.verbose = verbose
        self.connections: dict[str, psycopg.Connection[Any]] = {}
        self.completions: list[Completion] = []

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The default connection."""
        return self.session(DEFAULT_CONNECTION)

    def session(self, name: str) -> psycopg.Connection[Any]:
        """The connection called ``name``, opened on first use and again after it broke."""
        conn = self.connections.get(name)
        if conn is None or conn.closed or conn.broken:
            conn = self.connections[name] = connect(self.host, self.port, user=self.user, dbname=self.dbname)
        return conn

    def close(self) -> None:
        for conn in self.connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        self.connections.clear()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(
        self,
        records: Sequence[Record],
        *,
        target_line: int | None = None,
        target_path: Path | None = None,
        only: bool = False,
    ) -> list[Failure]:
        """Run ``records`` in order; with ``target_line`` (of ``target_path``, by default the first
        record's file), stop after the record that covers it."""
        failures: list[Failure] = []
        sort_mode = "nosort"
        target = None
        if target_line is not None:
            path = target_path or (records[0].path if records else None)
            target = next((r for r in records if r.path == path and r.covers(target_line)), None)
            if target is None:
                raise SltParseError(f"{path}:{target_line}: no record at this line")
            if only:
                records = [target]
        for record in records:
            if record.skip:
                continue
            if record.kind == "halt":
                break
            if record.kind == "control":
                sort_mode = record.sort_mode or sort_mode
                continue
            if record.kind == "sleep":
                time.sleep(record.sleep_seconds)
                continue
            if self.verbose:
                print(f"{record.where}: {record.sql.splitlines()[0]}", file=sys.stderr)
            message = self.run_record(record, record.sort_mode or sort_mode)
            if message is not None:
                failures.append(Failure(record, message, setup=target is not None and record is not target))
            if record is target:
                break
        return failures

    def run_record(self, record: Record, sort_mode: str) -> str | None:
        """Run one statement or query record; the failure message, or None when it passed."""
        try:
            with self.session(record.connection).cursor() as cursor:
                cursor.execute(record.sql.encode("utf-8"))
                description = cursor.description
                rows = cursor.fetchall() if description is not None else []
                rowcount = cursor.rowcount
        except psycopg.Error as error:
            return self._check_error(record, error)
        if record.expect_error:
            return f"expected an error{_pattern_note(record.error_pattern)}, but the statement succeeded"
        if record.kind == "statement":
            if record.expected_count is not None and rowcount != record.expected_count:
                return f"expected {record.expected_count} affected rows, got {rowcount}"
            return None
        if description is None:
            return "query returned no result set (use `statement ok` for statements without rows)"
        actual = result_lines(rows, sort_mode)
        types = record.types
        problems: list[str] = []
        if len(types) != len(description):
            problems.append(f"expected {len(types)} columns (query {types}), got {len(description)}")
            types = "".join(type_char(column.type_code) for column in description)
        expected = record.expected or []
        if comparable(expected, sort_mode) != comparable(actual, sort_mode):
            problems.append(_diff(expected, actual))
        if self.complete and (problems or record.expected is None):
            self.completions.append(Completion(record, types, actual))
            return None
        return "; ".join(problems) if problems else None

    @staticmethod
    def _check_error(record: Record, error: psycopg.Error) -> str | None:
        sqlstate = error.sqlstate or ""
        message = error.diag.message_primary or str(error).strip()
        shown = f"{sqlstate or 'no SQLSTATE'}: {message}"
        if not record.expect_error:
            return f"unexpected error {shown}"
        pattern = record.error_pattern
        if pattern is None:
            return None
        try:
            regex = re.compile(pattern, re.DOTALL)
        except re.error as bad:
            return f"bad error regex {pattern!r}: {bad}"
        if regex.search(message) or regex.fullmatch(sqlstate) or regex.search(f"{sqlstate}: {message}"):
            return None
        return f"error {shown} does not match {pattern!r}"


def _pattern_note(pattern: str | None) -> str:
    return f" matching {pattern!r}" if pattern else ""


def _diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    shown_expected = "\n".join(f"    {line}" for line in expected) or "    (no rows)"
    shown_actual = "\n".join(f"    {line}" for line in actual) or "    (no rows)"
    return f"result mismatch\n  expected:\n{shown_expected}\n  actual:\n{shown_actual}"


# ---- --complete ------------------------------------------------------------------------


def apply_completions(completions: Sequence[Completion]) -> list[Path]:
    """Rewrite the files of ``completions`` in place with the actual results; the files changed."""
    by_path: dict[Path, list[Completion]] = {}
    for completion in completions:
        by_path.setdefault(completion.record.path, []).append(completion)
    for path, items in by_path.items():
        lines = path.read_text(encoding="utf-8").split("\n")
        for completion in sorted(items, key=lambda c: c.record.line, reverse=True):
            record = completion.record
            header = ["query", completion.types]
            if record.sort_mode or record.label:
                header.append(record.sort_mode or "nosort")
            if record.label:
                header.append(record.label)
            block = [" ".join(header), *record.sql_lines, "----", *completion.lines]
            lines[record.line - 1 : record.end_line] = block
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list(by_path)


# ---- a server process --------------------------------------------------------------------

_BANNER = re.compile(r"serving .* on (?P<host>[^\s:]+):(?P<port>\d+)")


class ServerProcess:
    """``python -m tidegate.cli start`` on ``data_dir`` in a child process.

    With port 0 the server picks a free port and the banner it prints tells which. The
    child's output is kept (``output()``) for diagnosing a failed start or a crash.
    """

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._banner: queue.Queue[tuple[str, int] | None] = queue.Queue()

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tidegate.cli",
            "start",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{self.host}:{self.port}",
        ]
        repository = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repository), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=repository
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        try:
            address = self._banner.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"tidegate did not start within {timeout_s}s:\n{self.output()}") from None
        if address is None:
            self.stop()
            raise RuntimeError(f"tidegate exited before listening:\n{self.output()}")
        self.host, self.port = address
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        announced = False
        for line in self.process.stdout:
            self._lines.append(line)
            match = _BANNER.search(line)
            if match and not announced:
                announced = True
                self._banner.put((match.group("host"), int(match.group("port"))))
        if not announced:
            self._banner.put(None)

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user=root dbname=dev"

    def output(self) -> str:
        return "".join(self._lines[-200:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- isolation between files on one server ----------------------------------------------------


def relation_names(conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
    """(tables, materialized views) that exist now."""
    with conn.cursor() as cursor:
        cursor.execute(b"SHOW TABLES")
        tables = {row[0] for row in cursor.fetchall()}
        cursor.execute(b"SHOW MATERIALIZED VIEWS")
        views = {row[0] for row in cursor.fetchall()}
    return tables, views


def drop_new_relations(conn: psycopg.Connection[Any], before: tuple[set[str], set[str]]) -> None:
    """Drop what was created since ``before`` was taken, so the next file starts from the same catalog."""
    tables, views = relation_names(conn)
    with conn.cursor() as cursor:
        for name in sorted(views - before[1]):
            cursor.execute(f'DROP MATERIALIZED VIEW IF EXISTS "{name}" CASCADE'.encode())
        for name in sorted(tables - before[0]):
            cursor.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE'.encode())


def run_file(
    path: Path,
    host: str,
    port: int,
    *,
    complete: bool = False,
    target_line: int | None = None,
    only: bool = False,
    verbose: bool = False,
    isolate: bool = True,
) -> list[Failure]:
    """Run one file on its own connection; with ``isolate``, drop what it created afterwards."""
    records = parse_file(path)
    with Runner(host, port, complete=complete, verbose=verbose) as runner:
        before = relation_names(runner.conn) if isolate else None
        try:
            failures = runner.run(records, target_line=target_line, target_path=Path(path), only=only)
        finally:
            if before is not None:
                with contextlib.suppress(psycopg.Error):
                    drop_new_relations(runner.conn, before)
        if complete and runner.completions:
            for changed in apply_completions(runner.completions):
                print(f"rewrote {changed}", file=sys.stderr)
    return failures


# ---- command line ---------------------------------------------------------------------------


def _split_target(text: str) -> tuple[Path, int | None]:
    match = re.fullmatch(r"(.+\.slt):(\d+)", text)
    if match:
        return Path(match.group(1)), int(match.group(2))
    return Path(text), None


@contextlib.contextmanager
def _server(host: str, port: int | None) -> Iterator[tuple[str, int]]:
    if port is not None:
        yield host, port
        return
    with tempfile.TemporaryDirectory(prefix="tidegate-slt-") as data_dir, ServerProcess(Path(data_dir)) as server:
        print(f"started tidegate on {server.host}:{server.port}", file=sys.stderr)
        yield server.host, server.port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.slt.runner", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="+", help="FILE, FILE:LINE or DIRECTORY")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="a running server; without it a temporary one is started")
    parser.add_argument("--complete", action="store_true", help="rewrite the expected results of query records")
    parser.add_argument("--only", action="store_true", help="with FILE:LINE, run that record alone")
    parser.add_argument("--no-isolate", action="store_true", help="keep the relations a file created")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each record as it runs")
    args = parser.parse_args(argv)
    jobs: list[tuple[Path, int | None]] = []
    for target in args.targets:
        path, line = _split_target(target)
        jobs.extend((found, line if found == path else None) for found in discover([path]))
    failed = 0
    with _server(args.host, args.port) as (host, port):
        for path, line in jobs:
            try:
                failures = run_file(
                    path,
                    host,
                    port,
                    complete=args.complete,
                    target_line=line,
                    only=args.only,
                    verbose=args.verbose,
                    isolate=not args.no_isolate,
                )
            except (SltParseError, OSError) as error:
                print(f"{path}: {error}" if isinstance(error, OSError) else error)
                failed += 1
                continue
            for failure in failures:
                print(failure)
            real = [f for f in failures if not f.setup]
            failed += bool(real)
            print(f"{'FAIL' if real else 'ok  '} {path}", file=sys.stderr)
    print(f"{len(jobs) - failed} of {len(jobs)} files passed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
