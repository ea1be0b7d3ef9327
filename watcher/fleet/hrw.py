"""Rendezvous (highest-random-weight) hashing: which members are in the first k % of a rollout.

Every member scores blake2b(model, rollout id, member) and the members ranked by score, the
highest first, enter the rollout in that order: step i admits the first
`cohort_size(percent_i, n)` of them. So every daemon computes its own place without asking
anyone, cohorts only grow from one step to the next (a prefix of one ranking), and a member
that joins or leaves moves at most one other across a step's boundary. The rollout id is a
fresh salt per rollout, so canary duty is spread over the fleet across rollouts.

Never Python's `hash()`: it is salted per process (PYTHONHASHSEED), so two daemons would
disagree about who goes first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence


def score(member: str, model: str, rollout_id: str) -> int:
    """The member's weight for this rollout: 64 bits of blake2b, the same in every process."""
    data = b"\x00".join(part.encode("utf-8") for part in (model, rollout_id, member))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def ranking(members: Iterable[str], model: str, rollout_id: str) -> list[str]:
    """Members in the order they enter the rollout (highest score first; ties by id)."""
    return sorted(set(members), key=lambda m: (-score(m, model, rollout_id), m))


def cohort_size(percent: float, n: int) -> int:
    """How many of `n` members step `percent` covers: rounded up, at least one (a step of
    5 % of 10 members is one member, not none)."""
    if n <= 0 or percent <= 0:
        return 0
    return min(n, max(1, math.ceil(percent * n / 100 - 1e-9)))


def cohort(members: Iterable[str], model: str, rollout_id: str, percent: float) -> list[str]:
    """The members step `percent` covers, in ranking order."""
    ranked = ranking(members, model, rollout_id)
    return ranked[:cohort_size(percent, len(ranked))]


def joins_at(member: str, members: Iterable[str], model: str, rollout_id: str,
             steps: Sequence[float]) -> int | None:
    """The index of the first step whose cohort holds `member` (None: not a member)."""
    ranked = ranking(members, model, rollout_id)
    if member not in ranked:
        return None
    place = ranked.index(member)
    for index, percent in enumerate(steps):
        if place < cohort_size(percent, len(ranked)):
            return index
    return None
