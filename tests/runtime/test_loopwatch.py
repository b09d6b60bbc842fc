"""The event loop's lag: measured on a real loop, warned about once it nears the session timeout."""

from __future__ import annotations

import asyncio
import logging
import time

from pipeline.runtime.loopwatch import LoopWatch
from pipeline.runtime.metrics import Metrics


def test_a_stretch_that_keeps_the_loop_is_measured_and_warned_about(caplog):
    m = Metrics()
    w = LoopWatch(m.loop_lag, every_s=0.02, warn_s=0.25)

    async def run() -> None:
        task = asyncio.create_task(w.run())
        await asyncio.sleep(0.1)
        assert w.worst < 0.25  # an idle loop answers at once
        time.sleep(0.4)  # Python work that gives the loop no turn
        await asyncio.sleep(0.1)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="flowmon.loop"):
        asyncio.run(run())
    assert 0.35 < w.worst < 1.0
    assert m.value("flowmon_loop_lag_seconds_bucket", le="0.25") == m.value("flowmon_loop_lag_seconds_count") - 1
    assert [r.getMessage()[:24] for r in caplog.records] == ["the event loop answered "]  # once, for the stall
