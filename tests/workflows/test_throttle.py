"""min_interval: one firing per workflow and machine within the interval."""

from __future__ import annotations

from agent.workflows.throttle import Throttle


def test_zero_interval_never_throttles() -> None:
    t = Throttle()
    assert all(t.allow("wf", "m1", 0.0, 100.0) for _ in range(5))


def test_interval_is_per_workflow_and_machine() -> None:
    t = Throttle()
    assert t.allow("wf", "m1", 60.0, 1000.0)
    assert not t.allow("wf", "m1", 60.0, 1030.0)
    assert t.allow("wf", "m2", 60.0, 1030.0)
    assert t.allow("other", "m1", 60.0, 1030.0)
    assert t.allow("wf", "m1", 60.0, 1060.0)
    # The throttled attempt at 1030 did not restart the window.
    assert not t.allow("wf", "m1", 60.0, 1100.0)


def test_clock_stepping_back_does_not_mute_the_workflow() -> None:
    t = Throttle()
    assert t.allow("wf", "m1", 60.0, 5000.0)
    assert t.allow("wf", "m1", 60.0, 1000.0)


def test_keep_only_forgets_removed_workflows() -> None:
    t = Throttle()
    t.allow("a", "m1", 60.0, 0.0)
    t.allow("b", "m1", 60.0, 0.0)
    t.keep_only(["a"])
    assert not t.allow("a", "m1", 60.0, 1.0)
    assert t.allow("b", "m1", 60.0, 1.0)
