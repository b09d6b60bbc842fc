"""pipeline.alerts.dedup: repeats of (alert_id, seq) dropped, memory bounded."""

from __future__ import annotations

import pytest

from pipeline.alerts.dedup import Dedup
from tests.support.events import valid_event as ev


# --- dedup --------------------------------------------------------------------------------------
def test_dedup_drops_repeats_of_alert_and_seq_only():
    d = Dedup()
    a0, a1 = ev(seq=0), ev(event="updated", seq=1)
    b0 = ev(alert_id="0123456789abcdef", seq=0)
    assert [d.is_duplicate(e) for e in (a0, a1, b0)] == [False, False, False]
    replay = dict(a1, emitted_at=a1["emitted_at"] + 100)  # a replayed copy differs in emitted_at only
    assert d.is_duplicate(replay) is True
    assert d.is_duplicate(a0) is True
    assert d.dropped == 2 and len(d) == 3


def test_dedup_memory_is_bounded_lru():
    d = Dedup(maxlen=1000)
    events = [ev(alert_id=f"{i:016x}", seq=i % 3) for i in range(1500)]
    assert not any(d.is_duplicate(e) for e in events)
    assert len(d) == 1000
    assert d.is_duplicate(events[-1]) and d.is_duplicate(events[500])  # the last 1000 are remembered
    assert not d.is_duplicate(events[0])  # the oldest were forgotten: it passes again
    assert len(d) == 1000
    with pytest.raises(ValueError):
        Dedup(maxlen=0)
