"""``tidegate verify``: the delivery guarantees checked on a live pipeline (DESIGN §9).

A sequence-per-key workload goes into Kafka; tidegate reads it through a view into three sinks
(Kafka, PostgreSQL, files); the engine process is killed with SIGKILL at random moments and
restarted; then every output is audited against what the workload wrote: records lost,
duplicated and out of order, per delivery guarantee.

- ``services``: the Kafka broker and PostgreSQL server the pipeline uses (given, or started);
- ``engine``: the ``tidegate start`` process that gets killed and restarted;
- ``workload``: the producer of ``{"key": k, "seq": n}`` records;
- ``audit``: reading each output back and counting;
- ``command``: one run per guarantee and the table of results.
"""
