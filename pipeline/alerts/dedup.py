"""Drop an anomaly event already seen: delivery is at least once, so a replay repeats ``(alert_id, seq)``.

:class:`Dedup` remembers the last ``maxlen`` keys (LRU, 100 000 by default): a repeat older
than that passes again.

Examples
--------
>>> d = Dedup()
>>> ev = {"alert_id": "00c0ffee00c0ffee", "seq": 2, "emitted_at": 1700000431.5}
>>> d.is_duplicate(ev), d.is_duplicate(dict(ev, emitted_at=1.0)), d.dropped
(False, True, 1)
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["Dedup"]

_HEX16 = re.compile("[0-9a-f]{16}")


class Dedup:
    """Drops an event whose ``(alert_id, seq)`` was seen among the last ``maxlen`` distinct ones.

    An LRU: a repeat refreshes its key; beyond ``maxlen`` keys the least recently seen is
    forgotten (a repeat of it would pass again). A key is one int (the 64-bit hex id and the
    seq), so 100 000 keys take about 15 MB.

    >>> d = Dedup(maxlen=2)
    >>> a0, a1 = {"alert_id": "00c0ffee00c0ffee", "seq": 0}, {"alert_id": "00c0ffee00c0ffee", "seq": 1}
    >>> b0 = {"alert_id": "0" * 16, "seq": 0}
    >>> [d.is_duplicate(e) for e in (a0, a1, a0, b0, a0, a1)]   # a1 was the least recent when b0 came
    [False, False, True, False, True, False]
    >>> d.dropped, len(d)
    (2, 2)
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self.dropped = 0
        self._seen: OrderedDict[int | tuple[str, int], None] = OrderedDict()

    @staticmethod
    def key(event: Mapping[str, Any]) -> int | tuple[str, int]:
        """``(alert_id, seq)`` packed in an int when the id is 16 hex digits (always, on the wire).

        >>> Dedup.key({"alert_id": "0000000000000001", "seq": 2}), Dedup.key({"alert_id": "x", "seq": 2})
        (4294967298, ('x', 2))
        >>> Dedup.key({"alert_id": "+000000000000001", "seq": 2})   # int() would accept it: not packed
        ('+000000000000001', 2)
        """
        alert_id, seq = event["alert_id"], event["seq"]
        if 0 <= seq < 1 << 32 and _HEX16.fullmatch(alert_id):
            return int(alert_id, 16) << 32 | seq
        return (alert_id, seq)

    def is_duplicate(self, event: Mapping[str, Any]) -> bool:
        """True if this ``(alert_id, seq)`` was seen (counted in ``dropped``); else remember it."""
        key = self.key(event)
        if key in self._seen:
            self._seen.move_to_end(key)
            self.dropped += 1
            return True
        self._seen[key] = None
        if len(self._seen) > self.maxlen:
            self._seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._seen)
