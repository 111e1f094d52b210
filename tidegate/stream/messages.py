"""The messages that flow on every stream: chunks, barriers and watermarks.

A closed set (DESIGN §4). Barriers carry an ``EpochPair``: records between
barrier ``(x → e1)`` and barrier ``(e1 → e2)`` belong to epoch ``e1``, and an
operator seeing ``(e1 → e2)`` commits ``e1``. A barrier may carry a mutation
that changes the graph at exactly that point of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tidegate.common.chunk import Chunk
from tidegate.common.epoch import EpochPair


class BarrierKind(Enum):
    INITIAL = "initial"  # first barrier after start or recovery: no data precedes it
    BARRIER = "barrier"  # seals the epoch into the shared buffer only
    CHECKPOINT = "checkpoint"  # seals and commits the epoch


@dataclass(frozen=True)
class AddMutation:
    """New actors join at this barrier; ``outputs[a]`` lists channels actor ``a`` starts feeding."""

    outputs: dict[int, list[Any]] = field(default_factory=dict)
    added_actors: frozenset[int] = frozenset()


@dataclass(frozen=True)
class StopMutation:
    """These actors stop after this barrier; upstream dispatchers drop their outputs to them."""

    actors: frozenset[int]


Mutation = AddMutation | StopMutation


@dataclass(frozen=True)
class Barrier:
    epoch: EpochPair
    kind: BarrierKind = BarrierKind.CHECKPOINT
    mutation: Mutation | None = None

    def stops(self, actor_id: int) -> bool:
        return isinstance(self.mutation, StopMutation) and actor_id in self.mutation.actors

    def adds(self, actor_id: int) -> bool:
        return isinstance(self.mutation, AddMutation) and actor_id in self.mutation.added_actors

    @property
    def is_checkpoint(self) -> bool:
        return self.kind is not BarrierKind.BARRIER


@dataclass(frozen=True)
class Watermark:
    """No later row of the stream has ``column`` below ``value``: the integer Arrow stores for the
    column (a timestamp's count of its unit since 1970). See ``stream/watermark.py``."""

    column: int
    value: Any


Message = Chunk | Barrier | Watermark
