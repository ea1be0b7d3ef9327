from watcher.core.quiescence import Quiescence


def test_min_rearms_but_never_past_max() -> None:
    q = Quiescence(wait_min=1.0, wait_max=3.0)
    q.tick(now=0.0)
    assert q.remaining(now=0.0) == 1.0
    q.tick(now=0.9)
    assert abs(q.remaining(now=0.9) - 1.0) < 1e-9
    q.tick(now=2.5)
    assert q.remaining(now=2.5) == 0.5  # capped by the max deadline at 3.0
    assert q.remaining(now=4.0) == 0.0
    q.reset()
    q.tick(now=10.0)
    assert q.remaining(now=10.0) == 1.0


def test_max_below_min_is_raised_to_min() -> None:
    q = Quiescence(wait_min=2.0, wait_max=1.0)
    q.tick(now=0.0)
    assert q.remaining(now=0.0) == 2.0
