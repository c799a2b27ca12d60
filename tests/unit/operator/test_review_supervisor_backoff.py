"""REVIEW (attacker's review of issue 9 point 14): the restart backoff of an app restarted forever.

Since the change, a runtime that answered a probe is restarted however often
it ends, so ``crashes`` (crashes in a row, reset only after ``stable_after``
seconds of running) grows without bound for an app that answers and then
dies within a minute: a broken app, or one an attacker crashes again and
again. ``backoff`` computed ``restart_backoff * 2 ** (crashes - 1)``, which
raises ``OverflowError`` once ``crashes`` passes 1025 (about nine hours of
restarts 30 s apart). That error escaped ``_step_once`` (it only catches
``Error`` and ``OSError``) and ended the supervisor's TaskGroup: one app's
crash loop stopped the supervision of every app. (Fixed with this test: the
exponent is capped.)
"""

from __future__ import annotations

import pytest

from confide.operator._supervisor import SupervisorOptions


@pytest.mark.parametrize("crashes", [1, 2, 7, 1025, 1026, 100_000])
def test_the_backoff_is_capped_however_many_crashes_in_a_row(crashes: int) -> None:
    options = SupervisorOptions()
    expected = min(options.restart_backoff * 2 ** min(crashes - 1, 64), options.max_backoff)
    assert options.backoff(crashes) == expected
    assert 0 < options.backoff(crashes) <= options.max_backoff
