"""How late the worker's event loop answers: the measure of a stall, a cause of rebalances.

Every agent, the consumers' heartbeats and commits, the timers and the sink share one event
loop. A stretch of Python work that does not give the loop a turn delays all of them; one
longer than the session timeout puts the worker out of its consumer group (the group
rebalances, and the worker's batch is dropped and read again: ``runtime.fence``).
:class:`LoopWatch` sleeps ``every_s`` again and again and measures how much later than asked
it woke: the lag of everything else on the loop. Each lag goes to the histogram
``flowmon_loop_lag_seconds``; a lag of ``warn_s`` or more is logged, once per stall.

>>> import asyncio, time
>>> from pipeline.runtime.metrics import Metrics
>>> m = Metrics()
>>> w = LoopWatch(m.loop_lag, every_s=0.01, warn_s=10)
>>> async def demo():
...     watch = asyncio.create_task(w.run())
...     await asyncio.sleep(0.05)
...     time.sleep(0.3)                 # a stretch of work that keeps the loop
...     await asyncio.sleep(0.05)
...     watch.cancel()
>>> asyncio.run(demo())
>>> 0.28 < w.worst < 1.0, m.value("flowmon_loop_lag_seconds_bucket", le="0.25") < m.value("flowmon_loop_lag_seconds_count")
(True, True)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["LoopWatch", "BUCKETS"]

log = logging.getLogger("flowmon.loop")

#: Histogram buckets (seconds): a healthy loop answers within milliseconds; the pacing of the agents
#: (``runtime.agents.context.Pacer``) allows about half a second; past the session timeout the worker is
#: out of the group.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class LoopWatch:
    """Measures the event loop's lag (see the module). ``histogram``: a prometheus ``Histogram``."""

    def __init__(self, histogram: Any, every_s: float = 0.1, warn_s: float = 5.0) -> None:
        self.histogram = histogram
        self.every_s = every_s
        self.warn_s = warn_s
        self.worst = 0.0  # the largest lag seen

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.every_s)
            self.observe(max(loop.time() - t0 - self.every_s, 0.0))

    def observe(self, lag: float) -> None:
        self.histogram.observe(lag)
        self.worst = max(self.worst, lag)
        if lag >= self.warn_s:
            log.warning("the event loop answered %.1f s late: a stretch of work kept it (consumer heartbeats and "
                        "commits waited as long; past the session timeout the worker leaves its group)", lag)
