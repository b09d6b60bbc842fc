"""Fencing: a worker that was put out of the Faust group must not write what its lost partitions hold.

A worker paused longer than the session timeout (a stop signal, a long GC or VM pause), or one
whose batch ran past the rebalance timeout while the group waited for it, is put out of the group
and its partitions go to another worker, which restores their state from the state topic. The
paused worker does not know yet: when it resumes, it finishes its batch and writes that batch's
state. Those writes can land *after* the new owner restored, and the state topic keeps the last
write of each key: a later restore then mixes the new owner's keys with the old one's, and the
replay skips what the newer keys said was applied. Windows land short (Tansu has no transactions,
so the broker cannot fence the writes itself). A window it closes after resuming would also
land after, and over, the new owner's.

So the aggregate agent asks the group coordinator, once per batch and before sending anything the
batch caused, whether this worker is still a member of the generation it read the batch under
(:func:`still_member`: a heartbeat, one round trip). If the broker says it is not, the batch is
dropped, never acked (:func:`unack`): its offsets are never committed, and whoever owns the
partitions now reads them again. A rebalance that is waiting for this worker still counts as
membership: the group cannot move on before the batch ends or the rebalance timeout passes, and
the state the batch writes is what the next owner restores.

This check comes before the batch sends anything; a pause that falls after it, while the batch's
state writes are on their way, is covered by the owner markers (``runtime.restore``): a restore
ignores writes from a worker that is not the partition's latest owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["Fenced", "generation", "still_member", "unack"]

log = logging.getLogger("flowmon.agents")

#: aiokafka's generation id of a consumer that is not (or no longer) in a group.
NO_GENERATION = -1


class Fenced(Exception):
    """This worker is no longer in the group: the batch must be dropped."""


def _consumer_thread(app: Any) -> Any | None:
    """Faust's aiokafka consumer thread, or None (another transport, or not started)."""
    return getattr(getattr(app, "consumer", None), "_thread", None)


def _coordinator(app: Any) -> Any | None:
    thread = _consumer_thread(app)
    consumer = getattr(thread, "_consumer", None)
    return getattr(consumer, "_coordinator", None)


def generation(app: Any) -> int | None:
    """The Faust consumer's group generation now (``None``: no aiokafka consumer to ask)."""
    c = _coordinator(app)
    return None if c is None else c.generation


async def still_member(app: Any, gen: int | None, timeout: float = 10.0) -> bool:
    """Is this worker still a member of group generation ``gen``? Asked of the broker (a heartbeat).

    False only when it is known not to be: the generation changed or was reset (the broker said
    the member or the generation is unknown). True when the broker says it is a member, or that
    the group is rebalancing and waiting for it, and also when the broker cannot be asked (then
    nothing can be written anyway, and the writes retry), or does not answer within ``timeout``.
    """
    thread = _consumer_thread(app)
    if gen is None or thread is None:
        return True
    if gen == NO_GENERATION:  # read while out of the group (it had noticed already)
        return False

    async def ask() -> bool:
        c = thread._ensure_consumer()._coordinator
        if c.generation != gen:
            return False
        try:
            await c._do_heartbeat()  # resets the generation when the broker no longer knows this member
        except Exception as exc:  # noqa: BLE001 - the coordinator routine deals with it; not a verdict
            log.debug("membership heartbeat failed: %s", exc)
            return True
        return c.generation == gen

    try:
        return await asyncio.wait_for(thread.call_thread(ask), timeout)
    except asyncio.TimeoutError:
        log.warning("could not ask the group coordinator within %.0f s whether this worker is still in the group; "
                    "writing the batch", timeout)
        return True


def unack(app: Any, events: Iterable[Any]) -> None:
    """Take ``events`` out of Faust's acknowledgements: their offsets are never committed (the
    stream's own ack afterwards does nothing), and the consumer no longer waits for them."""
    consumer = getattr(app, "consumer", None)
    waiting = getattr(consumer, "_unacked_messages", None)
    for event in events:
        event.message.acked = True
        if waiting is not None:
            waiting.discard(event.message)
