"""Pairs messages in order, each once: what the aggregate agent does with a message's offset.  *core*

The state of a pairs partition says up to which offset it holds the messages (``PartitionState.pairs_offset``,
``runtime.restore``); the next message to apply is the one right after. Faust does not guarantee it: when a
rebalance comes, it skips the events it had fetched under the previous group generation and acks them, and
counts on its seek to the committed offsets to deliver them again, but aiokafka only seeks to a committed
offset above 0, so a partition nobody had committed yet (a new deployment's first minute, when Faust's group
rebalances as its agents subscribe) goes on *after* them: they were lost (seen on Apache Kafka: a pairs
message of 1,089 partials never applied, windows short after a restart). A restart whose group offsets were
committed past what the state holds would lose the same way. So a message that comes after a gap is not
applied: the agent moves the partition back to the message after the state's (again each second until it
comes: Faust drops what comes below the last message it delivered) and drops what comes until that one does
(unacked: it comes again). When the topic no longer has that message
(retention deleted it), the gap is accepted and logged.

>>> g = Gaps()
>>> g.verdict(0, offset=5, stored=4), g.verdict(0, offset=3, stored=4)   # the next one; one the state holds
('apply', 'skip')
>>> g.verdict(0, offset=7, stored=4)                                    # 5 and 6 never came
'gap'
>>> g.rewinding(0, 5)                                                   # the agent moved the partition back
>>> g.verdict(0, offset=8, stored=4), g.verdict(0, offset=5, stored=4), g.verdict(0, offset=6, stored=5)
('drop', 'apply', 'apply')
"""

from __future__ import annotations

__all__ = ["Gaps", "APPLY", "SKIP", "GAP", "DROP"]

APPLY, SKIP, GAP, DROP = "apply", "skip", "gap", "drop"


class Gaps:
    """Per pairs partition: the offset it was moved back to, until that message comes."""

    def __init__(self) -> None:
        self.rewound: dict[int, int] = {}

    def verdict(self, partition: int, offset: int, stored: int) -> str:
        """What to do with the message at ``offset`` of ``partition``, whose state holds every message up to
        ``stored``: :data:`SKIP` (it holds it), :data:`APPLY`, :data:`GAP` (messages before it never came: move
        back, or accept it) or :data:`DROP` (the partition was moved back: this one comes again later)."""
        if offset <= stored:
            return SKIP
        want = self.rewound.get(partition)
        if want is not None:
            if offset != want:
                return DROP
            del self.rewound[partition]
            return APPLY
        return APPLY if offset == stored + 1 else GAP

    def rewinding(self, partition: int, offset: int) -> None:
        """``partition`` was moved back to ``offset``: drop what comes until it does."""
        self.rewound[partition] = offset

    def clear(self) -> None:
        """A rebalance: every partition starts again from its committed offset and restored state."""
        self.rewound.clear()
