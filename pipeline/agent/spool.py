"""The agent's on-disk state: a bounded spool of reports not yet acknowledged by the broker, and
the counters already accounted (so a restart counts nothing twice).

Plain files in one directory (the agent's ``state_dir``):

* ``spool/<seq>.jsonl`` — one file per interval, one encoded message per line (orjson
  never writes a raw newline), written to a temporary name, fsynced, then renamed: a file
  is there whole or not at all. Files are sent in ``seq`` order and removed once the
  broker acknowledged every message in them.
* ``state.json`` — the agent's id, the next ``seq`` and the ledger's accounted counters,
  written the same way *after* the interval's spool file.

A crash between the two writes leaves a spool file whose ``seq`` the state does not
cover; on start it is deleted, unsent (:meth:`Spool.open` reports how many): the counters
it was computed from were not saved, so the next report counts the same changes again,
once. Only files below the saved ``next_seq`` are ever sent.

The spool is bounded (``max_bytes``): past the bound the *oldest* files are dropped, and
counted (``dropped_files``, ``dropped_messages``) — an outage longer than the bound loses
its oldest intervals, loudly, rather than filling the disk.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> sp = Spool.open(d, max_bytes=1 << 20)
>>> sp.next_seq, sp.pending()
(0, [])
>>> sp.commit([b'{"a":1}', b'{"b":2}'], ledger={"base": []})
0
>>> [(seq, msgs) for seq, msgs in sp.pending()]
[(0, [b'{"a":1}', b'{"b":2}'])]
>>> sp.remove(0); sp.pending()
[]
>>> Spool.open(d).next_seq        # the state survives a restart
1
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Spool"]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Spool:
    """Reports waiting for the broker, and the agent's saved state (see the module doc)."""

    def __init__(self, root: Path, max_bytes: int, state: dict[str, Any]) -> None:
        self.root = root
        self.dir = root / "spool"
        self.max_bytes = max_bytes
        self.agent_id: str = state["agent_id"]
        self.next_seq: int = int(state.get("next_seq", 0))
        self.ledger: dict[str, Any] | None = state.get("ledger")
        self.fresh = "ledger" not in state
        """True when no saved counters exist (a first start): the agent takes what it sees as a base."""
        self.dropped_files = 0
        self.dropped_messages = 0
        self.orphans = 0
        """Spool files found without saved counters at open (a crash between the two writes), deleted."""

    @classmethod
    def open(cls, root: str | Path, max_bytes: int = 64 << 20) -> Spool:
        """Open (or create) the state directory; raises ``OSError`` when it cannot be written."""
        root = Path(root)
        (root / "spool").mkdir(parents=True, exist_ok=True)
        path = root / "state.json"
        state: dict[str, Any]
        if path.exists():
            state = orjson.loads(path.read_bytes())
        else:
            state = {"agent_id": uuid.uuid4().hex[:12], "next_seq": 0}
            _write_atomic(path, orjson.dumps(state))
        sp = cls(root, max_bytes, state)
        for seq, p in sp._files():
            if seq >= sp.next_seq:
                p.unlink()
                sp.orphans += 1
        for p in sp.dir.glob(".*.tmp"):
            p.unlink()
        return sp

    def _files(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.glob("*.jsonl"):
            with contextlib.suppress(ValueError):
                out.append((int(p.stem), p))
        return sorted(out)

    def commit(self, messages: list[bytes], ledger: dict[str, Any]) -> int:
        """Spool one interval's messages (if any), then save ``ledger`` as the accounted counters; returns its seq."""
        seq = self.next_seq
        if messages:
            _write_atomic(self.dir / f"{seq:012d}.jsonl", b"\n".join(messages) + b"\n")
        self.next_seq = seq + 1
        self.ledger = ledger
        self.fresh = False
        _write_atomic(self.root / "state.json",
                      orjson.dumps({"agent_id": self.agent_id, "next_seq": self.next_seq, "ledger": ledger}))
        self._bound()
        return seq

    def _bound(self) -> None:
        files = self._files()
        total = sum(p.stat().st_size for _, p in files)
        while total > self.max_bytes and len(files) > 1:
            _, p = files.pop(0)
            total -= p.stat().st_size
            self.dropped_messages += p.read_bytes().count(b"\n")
            p.unlink()
            self.dropped_files += 1

    def pending(self) -> list[tuple[int, list[bytes]]]:
        """The spooled intervals, oldest first: (seq, messages)."""
        out = []
        for seq, p in self._files():
            if seq >= self.next_seq:
                continue
            with contextlib.suppress(FileNotFoundError):
                out.append((seq, [line for line in p.read_bytes().split(b"\n") if line]))
        return out

    def remove(self, seq: int) -> None:
        """The broker acknowledged every message of ``seq``."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{seq:012d}.jsonl").unlink()

    def size(self) -> tuple[int, int]:
        """(files, bytes) waiting."""
        files = self._files()
        return len(files), sum(p.stat().st_size for _, p in files)
