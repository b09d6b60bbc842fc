"""Python's cyclic garbage collector, tuned for a worker's heap.  *shell*

A worker holds millions of long-lived objects: the open windows, each detector key's model
and alerts, the Faust and Kafka client machinery. Python's collector, with its default
thresholds (a young collection every 700 new container objects, an older one every 10 of
those), keeps rescanning them while the hot path allocates and frees the decoded reports
and pairs messages; measured in a worker under load (py-spy, fleet workload), a quarter of
the time it held the interpreter went to ``gc_collect_main``, most of it triggered inside
the pairs decoder. Nearly everything the pipeline allocates is freed by reference counting
(no cycles), so collecting cycles less often costs little memory.

:func:`tune` raises the young generation's threshold and :func:`settle` moves what exists
now (imports, the app; after a restore, the restored state) out of the collector's sight
(``gc.freeze``): those objects live as long as the process or the partition's assignment,
and freed ones are still freed by reference counting.

>>> import gc
>>> old = gc.get_threshold()
>>> tune(100_000); gc.get_threshold()[0]
100000
>>> tune(0); gc.get_threshold() == (100_000, old[1], old[2])    # 0 leaves the thresholds as they are
True
>>> gc.set_threshold(*old)
"""

from __future__ import annotations

import gc

__all__ = ["tune", "settle"]


def tune(young: int) -> None:
    """A young collection after ``young`` new container objects (0: leave Python's thresholds)."""
    if young > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young, older, oldest)


def settle() -> None:
    """Collect once, then keep every object that exists now out of later collections' scans."""
    gc.collect()
    gc.freeze()
