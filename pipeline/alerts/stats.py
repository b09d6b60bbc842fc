"""What ``flowmon alerts`` saw: the counts its summary line reports.

Examples
--------
>>> print(AlertStats(shown=1, filtered=3, duplicates=2, malformed=0))
1 event shown (3 filtered out, 2 duplicates dropped, 0 malformed skipped)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AlertStats"]


@dataclass
class AlertStats:
    """What ``runtime.follow.run_alerts`` saw."""

    shown: int = 0  # passed the filters and were not duplicates
    filtered: int = 0  # valid events the filters dropped
    duplicates: int = 0  # repeats of a shown (alert_id, seq)
    malformed: int = 0  # skipped messages

    def __str__(self) -> str:
        return (f"{self.shown} event{'s' * (self.shown != 1)} shown ({self.filtered} filtered out, "
                f"{self.duplicates} duplicate{'s' * (self.duplicates != 1)} dropped, "
                f"{self.malformed} malformed skipped)")
