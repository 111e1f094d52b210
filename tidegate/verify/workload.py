"""The verification workload: ``{"key": k, "seq": n}`` records, n = 0, 1, 2, … per key.

Keys are split over two input topics (even keys to one, odd to the other) and produced with the
key as the Kafka message key, so each key's records keep their order. The producer is idempotent
(no duplicate at the input), and only records the broker acknowledged are expected at the outputs.
"""

from __future__ import annotations

import json
import random
import threading
import time

from confluent_kafka import Producer


class SequenceWorkload:
    def __init__(self, bootstrap: str, topics: tuple[str, str], keys: int, rate: int, seed: int) -> None:
        self.topics = topics
        self.keys = keys
        self.rate = rate
        self.random = random.Random(seed)
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "acks": "all"}
        )
        self.next_seq = [0] * keys
        self.acknowledged: set[tuple[int, int]] = set()
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verify-workload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and wait until every record is acknowledged or failed."""
        self._stop.set()
        self._thread.join()
        self.producer.flush(60)

    def _delivered(self, error: object, message: object) -> None:
        if error is not None:
            self.failed += 1
            return
        record = json.loads(message.value())  # type: ignore[attr-defined]
        self.acknowledged.add((record["key"], record["seq"]))

    def _run(self) -> None:
        started = time.monotonic()
        produced = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while produced < due:
                key = self.random.randrange(self.keys)
                seq = self.next_seq[key]
                self.next_seq[key] += 1
                value = json.dumps({"key": key, "seq": seq}).encode()
                self.producer.produce(self.topics[key % 2], value, str(key).encode(), on_delivery=self._delivered)
                produced += 1
            self.producer.poll(0)
            time.sleep(0.005)
