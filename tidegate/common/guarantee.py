"""Delivery guarantees (DESIGN §5.8): what a crash may do to a record's effect on views and sinks.

- ``exactly_once`` (the default): aligned barriers, source offsets committed with the state,
  sinks delivering only committed epochs, each in one transaction that records its epoch;
- ``at_least_once``: unaligned barriers and sinks that write at once; a recovery replays from the
  last checkpoint, so what was written after it is written again (duplicates, never loss);
- ``at_most_once``: sources keep their read position across a recovery instead of rewinding to the
  checkpoint, so what was in flight is dropped (loss, never duplicates).

The last two exist so that users can see the difference; exactly_once is the one for production.
"""

from __future__ import annotations

from enum import StrEnum

from tidegate.errors import InvalidParameterValue


class DeliveryGuarantee(StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"

    @property
    def aligned(self) -> bool:
        """Whether operators with several inputs align barriers (only at_least_once reads on)."""
        return self is not DeliveryGuarantee.AT_LEAST_ONCE

    @property
    def rewinds(self) -> bool:
        """Whether sources rewind to the checkpoint's offsets on recovery (else: keep reading on)."""
        return self is not DeliveryGuarantee.AT_MOST_ONCE


def parse_delivery_guarantee(value: str) -> DeliveryGuarantee:
    text = value.strip().lower().replace("-", "_")
    for guarantee in DeliveryGuarantee:
        if text == guarantee.value:
            return guarantee
    choices = ", ".join(f"'{g.value}'" for g in DeliveryGuarantee)
    raise InvalidParameterValue(f'invalid value for parameter "delivery_guarantee": "{value}"; it is one of {choices}')
