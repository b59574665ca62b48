"""A pool's feeder: claims its due jobs from the journal and hands them over.

Two tasks per pool share ``prefetch`` slots (the pool's ``:PREFETCH`` in
``BULKHEAD_POOLS``, at least one): the claimer takes as many due jobs as
there are free slots, in one journal call, and waits for the next due time
(or a submission) when there are none; the starter gives each to the pool
with its blocking ``dispatch`` and frees its slot once a worker took it, so a
busy pool stops the claims. The claimer works ahead of the starter, so a
worker never waits for a journal round trip while jobs are due. Memory holds
at most ``prefetch`` claimed jobs per pool beside the running ones.

When the feeder is cancelled (the shutdown), every job it claimed and did not
start goes back to the queue (:meth:`Journal.release`), never counted as a
run: a run is counted when a worker takes the job (:meth:`Journal.started`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import final

import attrs
import trio

from ._journal import Journal, JournalUnavailable, Release
from ._running import Running

log = logging.getLogger("bulkhead.service")

RETRY_CLAIM = 0.5
"""Seconds a feeder waits before claiming again after the journal failed."""


@final
@attrs.define(eq=False)
class Feeder:
    """Feeds pool ``priority`` from ``journal`` (see the module docstring).

    ``start`` hands one job to the pool; ``live`` is the service's map of
    the jobs in memory, where the feeder puts each job it claims.
    """

    journal: Journal
    priority: int
    prefetch: int
    start: Callable[[Running], Awaitable[None]]
    live: MutableMapping[int, Running]

    async def run(self) -> None:
        """Claim and start until cancelled."""
        # A slot per claimed job until a worker took it: at most ``prefetch``
        # claimed jobs wait in memory, the one being handed over included.
        slots = trio.Semaphore(max(self.prefetch, 1))
        send, receive = trio.open_memory_channel[Running](max(self.prefetch, 1))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._claim, send, slots)
                nursery.start_soon(self._start, receive, slots)
        finally:
            while True:
                try:
                    self._release(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    async def _claim(
        self, send: trio.MemorySendChannel[Running], slots: trio.Semaphore
    ) -> None:
        async with send:
            while True:
                room = await self._room(send, slots)
                try:
                    # Shielded: a claim written but never received would leave
                    # its jobs running in the journal, in nobody's hands.
                    with trio.CancelScope(shield=True):
                        claim = await self.journal.claim(self.priority, room)
                except JournalUnavailable as exc:
                    log.warning(
                        "pool %s: cannot claim jobs: %s",
                        self.priority,
                        exc,
                        extra={"event": "claim_failed", "priority": self.priority},
                    )
                    claim = None
                for _ in range(room - (len(claim.jobs) if claim else 0)):
                    slots.release()
                if claim is None:
                    await trio.sleep(RETRY_CLAIM)
                elif not claim.jobs:
                    await self.journal.wait_for_jobs(self.priority, claim.next_run_at)
                for claimed in claim.jobs if claim else ():
                    running = self.live[claimed.id] = Running(claimed)
                    send.send_nowait(running)  # a slot each: never full

    async def _room(
        self, send: trio.MemorySendChannel[Running], slots: trio.Semaphore
    ) -> int:
        """Take free slots to claim into: at least half of them, or fewer
        once no claimed job is left to start. A claim of one job per free
        slot would cost a journal round trip per job; half the prefetch
        still waiting covers the next claim's round trip."""
        await slots.acquire()
        room = 1
        enough = max(1, self.prefetch // 2)
        while True:
            while True:
                try:
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    break
                room += 1
            if room >= enough or not send.statistics().current_buffer_used:
                return room
            await slots.acquire()
            room += 1

    async def _start(
        self, receive: trio.MemoryReceiveChannel[Running], slots: trio.Semaphore
    ) -> None:
        async for running in receive:
            try:
                await self.start(running)
            except BaseException:
                # Cancelled, or DispatcherClosed: dispatch is atomic, so the
                # job did not start.
                if running.job is None and running.claimed.id in self.live:
                    self._release(running)
                raise
            slots.release()

    def _release(self, running: Running) -> None:
        claimed = running.claimed
        del self.live[claimed.id]
        self.journal.release(Release(claimed.id, claimed.lease))
