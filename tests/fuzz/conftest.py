"""Hypothesis profiles for the fuzz harness, bounded so that CI spends about a minute here.

The corpus lives in the repository as code: every crash found is an explicit `@example` on
its property (replayed first, every run), and the mutation seeds are the valid documents
plus every hostile case (tests/integration/hostile/cases.py).

`ci` (CI=true): a fixed number of examples per property (see each test), no per-example
deadline (a shared 2-core machine is noisy), no example database (nothing written; a
failure prints its reproduction blob). `dev` (default): the same with Hypothesis's local
database (.hypothesis/, ignored by git); run longer with
`FUZZ_EXAMPLES=20000 uv run pytest tests/fuzz`, then pin what it finds as an @example.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", database=None, **_common)
settings.register_profile("dev", **_common)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def examples(n: int) -> int:
    """Examples for one property: `n` in CI, FUZZ_EXAMPLES (if set) for a longer local run."""
    return int(os.environ.get("FUZZ_EXAMPLES", n))
