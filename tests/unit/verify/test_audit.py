"""The verifier's audit and its table: what counts as lost, duplicated and out of order, and the verdicts."""

from __future__ import annotations

from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.verify.audit import audit, audit_counts
from tidegate.verify.command import GuaranteeResult, report

EXPECTED = {(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)}


def test_a_perfect_output_has_nothing_to_report() -> None:
    result = audit("kafka", EXPECTED, [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)], ordered=True)
    assert (result.expected, result.received, result.lost, result.duplicated, result.out_of_order) == (5, 5, 0, 0, 0)


def test_lost_duplicated_and_out_of_order_are_counted_apart() -> None:
    # (1, 1) is missing; (2, 0) comes twice (the replay is not an order problem); (1, 0) after (1, 2) is.
    received = [(2, 0), (1, 2), (1, 0), (2, 1), (2, 0)]
    result = audit("postgres", EXPECTED, received, ordered=True)
    assert (result.lost, result.duplicated, result.out_of_order) == (1, 1, 1)
    assert audit("view", EXPECTED, received, ordered=False).out_of_order is None


def test_counts_per_key_short_of_or_over_their_records() -> None:
    assert audit_counts("upsert", EXPECTED, {1: 3, 2: 2}).lost == 0
    short = audit_counts("upsert", EXPECTED, {1: 1, 2: 2})
    over = audit_counts("upsert", EXPECTED, {1: 3, 2: 4})
    assert (short.lost, short.duplicated) == (2, 0)
    assert (over.lost, over.duplicated) == (0, 2)


def test_each_guarantee_holds_by_its_own_promise() -> None:
    lossy = audit("kafka", EXPECTED, [(1, 0), (2, 0)], ordered=True)
    doubled = audit("kafka", EXPECTED, [*sorted(EXPECTED), (1, 0)], ordered=True)
    exact = audit("kafka", EXPECTED, sorted(EXPECTED), ordered=True)
    assert GuaranteeResult(DeliveryGuarantee.EXACTLY_ONCE, [exact], 3, 5).holds
    assert not GuaranteeResult(DeliveryGuarantee.EXACTLY_ONCE, [doubled], 3, 5).holds
    assert GuaranteeResult(DeliveryGuarantee.AT_LEAST_ONCE, [doubled], 3, 5).holds
    assert not GuaranteeResult(DeliveryGuarantee.AT_LEAST_ONCE, [lossy], 3, 5).holds
    assert GuaranteeResult(DeliveryGuarantee.AT_MOST_ONCE, [lossy], 3, 5).holds
    assert not GuaranteeResult(DeliveryGuarantee.AT_MOST_ONCE, [doubled], 3, 5).holds


def test_the_table_has_a_row_per_output_and_a_verdict_per_guarantee() -> None:
    results = [
        GuaranteeResult(
            DeliveryGuarantee.EXACTLY_ONCE, [audit("view", EXPECTED, sorted(EXPECTED), ordered=False)], 5, 5
        ),
        GuaranteeResult(
            DeliveryGuarantee.AT_MOST_ONCE, [audit("kafka", EXPECTED, [(1, 0), (1, 0)], ordered=True)], 4, 5
        ),
    ]
    lines = report(results).splitlines()
    assert lines[0].split()[:4] == ["guarantee", "output", "expected", "received"]
    assert lines[2].split() == ["exactly_once", "view", "5", "5", "0", "0", "-", "yes", "(5", "kills)"]
    assert lines[3].split() == ["at_most_once", "kafka", "5", "2", "4", "1", "0", "NO", "(4", "kills)"]
