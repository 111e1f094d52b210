"""Helpers shared by the benchmarks in ``bench/``: memory, ports, worker processes, machine facts, output.

Nothing here touches tidegate; benchmarks import tidegate themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# ---- memory ------------------------------------------------------------------
def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int | None = None) -> float | None:
    """RSS high-water mark (VmHWM) of ``pid`` (default: this process), in MiB.

    For this process it falls back to ``getrusage`` (``ru_maxrss`` is KiB on
    Linux) where /proc is missing.
    """
    kib = _status_kib(pid if pid is not None else "self", "VmHWM")
    if kib is None and pid is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return None if kib is None else kib / 1024


def rss_mib(pid: int | None = None) -> float | None:
    """Current RSS (VmRSS) of ``pid`` (default: this process), in MiB."""
    kib = _status_kib(pid if pid is not None else "self", "VmRSS")
    return None if kib is None else kib / 1024


# ---- processes ------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cpu_seconds() -> float:
    """This process's CPU time (user and system, all threads), in seconds."""
    t = os.times()
    return t.user + t.system


# A worker is the benchmark script run again as ``script --worker SPEC`` (SPEC a JSON object whose
# "kind" names the worker function): a fresh process per measurement, so no run inherits the memory,
# caches or threads of another. It prints its result as one line, after the script's result marker.
def run_worker(
    script: str | Path, result_marker: str, spec: dict[str, Any], profile_to: Path | None = None
) -> dict[str, Any]:
    """Runs one worker of ``script`` (under ``py-spy record --threads``, written to ``profile_to``, if
    given) and returns its result."""
    command = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)]
    if profile_to is not None:
        command = ["py-spy", "record", "--threads", "-r", "100", "-f", "raw", "-o", str(profile_to), "--", *command]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR)
    for line in proc.stdout.splitlines():
        if line.startswith(result_marker):
            result: dict[str, Any] = json.loads(line[len(result_marker) :])
            return result
    raise RuntimeError(f"worker {spec['kind']} failed with status {proc.returncode}: {proc.stdout[-2000:]}")


def serve_worker(
    spec_json: str, workers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]], result_marker: str
) -> None:
    """The worker side of ``run_worker``: runs the worker ``spec_json`` names and prints its result."""
    spec = json.loads(spec_json)
    result = workers[spec["kind"]](spec)
    print(result_marker + json.dumps(result, default=str), flush=True)


def profile_dir(profile: bool) -> Path | None:
    """Where ``--profile`` writes py-spy's output (created); None without ``--profile``."""
    if not profile:
        return None
    if shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy on PATH")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


# ---- facts about the run ----------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine_info() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no", "--", "tidegate")
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_mib": _meminfo_mib("MemTotal"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {m: _version(m) for m in ("pyarrow", "numpy", "duckdb", "psycopg", "tidegate")},
        "git_commit": _git("rev-parse", "HEAD"),
        "tidegate_dirty": bool(status) if status is not None else None,
    }


def _meminfo_mib(field: str) -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---- output -------------------------------------------------------------------
def timestamp_slug(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")


def ms_text(value: float | None) -> str:
    """Milliseconds for a report line: "-" when there is no figure."""
    return "-" if value is None else f"{value:,.0f}"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``bench/results/<name>-<timestamp>.json``; returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{timestamp_slug()}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def shout(headline: str, details: Sequence[str]) -> None:
    """A banner no one can miss, for a failed run or a wrong answer (on the terminal too when the
    output is redirected)."""
    bar = "!" * 78
    text = "\n".join([bar, f"!!! {headline}", *(f"!!!   {d}" for d in details), bar])
    print(text, flush=True)
    if not sys.stdout.isatty():  # redirected: say it on the terminal too
        print(text, file=sys.stderr, flush=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4g}"
    return str(value)
