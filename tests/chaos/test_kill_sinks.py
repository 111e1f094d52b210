"""Chaos with sinks: Kafka → views → Kafka, PostgreSQL and file sinks, the server killed with SIGKILL.

The pipeline of ``tidegate verify`` (``tidegate.verify.command``) under exactly_once: a workload
writes a sequence per key into two Kafka topics while the server is killed at random moments and
by failpoints placed between a checkpoint's commit and its delivery to the sinks
(``sink_before_delivery``) and right after a delivery, before anything else is recorded
(``sink_after_delivery``). Afterwards the view, the Kafka topic (read_committed), the PostgreSQL
tables (append-only and upsert) and the files each hold every acknowledged record exactly once,
in order per key.

``TIDEGATE_CHAOS_SEED=N`` replays one run's choices; ``TIDEGATE_CHAOS_KILLS=K`` sets the number of kills.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.verify.command import VerifySettings, report, run_guarantee

KILLS = int(os.environ.get("TIDEGATE_CHAOS_KILLS", "4"))
SEED = int(os.environ.get("TIDEGATE_CHAOS_SEED", str(random.SystemRandom().randrange(1 << 30))))


def test_every_sink_holds_every_record_exactly_once_across_kills(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    settings = VerifySettings(
        kafka=kafka_bootstrap,
        postgres=postgres_url,
        kills=KILLS,
        seed=SEED,
        rate=1000,
        work_dir=tmp_path,
        failpoints="sink_before_delivery=0.08,sink_after_delivery=0.08",
    )
    result = run_guarantee(DeliveryGuarantee.EXACTLY_ONCE, settings, say=lambda line: None)
    table = report([result])
    assert result.kills >= KILLS, table
    assert result.produced > 0, table
    outputs = {a.output for a in result.audits}
    assert outputs == {"view", "kafka", "postgres", "files", "postgres upsert"}, table
    for output in result.audits:
        assert output.received == output.expected, f"seed {SEED}\n{table}"
        assert (output.lost, output.duplicated, output.out_of_order or 0) == (0, 0, 0), f"seed {SEED}\n{table}"
