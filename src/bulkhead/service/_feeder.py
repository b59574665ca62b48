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

A claimed job is ``running`` in the journal from the claim's commit, but in
memory only once the claim's answer reached its feeder: :class:`ClaimsInFlight`
lets a ``DELETE`` that finds a job in between wait for it to land.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import final

import attrs
import trio

from ._journal import Claim, Journal, JournalUnavailable, Release
from ._running import Running

log = logging.getLogger("bulkhead.service")

RETRY_CLAIM = 0.5
"""Seconds a feeder waits before claiming again after the journal failed."""


@final
class ClaimsInFlight:
    """The feeders' claims from the journal's commit until their jobs are in
    ``live``: a job cancelled in between is running in the journal and in
    nobody's memory yet, on this instance, not on another one."""

    def __init__(self) -> None:
        self._flying: set[object] = set()
        self._lot = trio.lowlevel.ParkingLot()

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        """Around one claim and the putting of its jobs in ``live``."""
        claim = object()
        self._flying.add(claim)
        try:
            yield
        finally:
            self._flying.discard(claim)
            self._lot.unpark_all()

    async def landed(self) -> None:
        """Wait until every claim in flight now has put its jobs in ``live``."""
        await trio.lowlevel.checkpoint()
        earlier = set(self._flying)
        while earlier & self._flying:
            await self._lot.park()


@final
@attrs.define(eq=False)
class Feeder:
    """Feeds pool ``priority`` from ``journal`` (see the module docstring).

    ``start`` hands one job to the pool; ``live`` is the service's map of
    the jobs in memory, where the feeder puts each job it claims, within
    ``in_flight``'s :meth:`~ClaimsInFlight.claiming`.
    """

    journal: Journal
    priority: int
    prefetch: int
    start: Callable[[Running], Awaitable[None]]
    live: MutableMapping[int, Running]
    in_flight: ClaimsInFlight

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
                with self.in_flight.claiming():
                    claim = await self._claim_into(room, send)
                for _ in range(room - (len(claim.jobs) if claim else 0)):
                    slots.release()
                if claim is None:
                    await trio.sleep(RETRY_CLAIM)
                elif not claim.jobs:
                    await self.journal.wait_for_jobs(self.priority, claim.next_run_at)

    async def _claim_into(
        self, room: int, send: trio.MemorySendChannel[Running]
    ) -> Claim | None:
        """Claim up to ``room`` due jobs and put each in ``live`` and on
        ``send``; ``None`` if the journal failed (logged)."""
        try:
            # Shielded: a claim written but never received would leave its
            # jobs running in the journal, in nobody's hands.
            with trio.CancelScope(shield=True):
                claim = await self.journal.claim(self.priority, room)
        except JournalUnavailable as exc:
            log.warning(
                "pool %s: cannot claim jobs: %s",
                self.priority,
                exc,
                extra={"event": "claim_failed", "priority": self.priority},
            )
            return None
        for claimed in claim.jobs:
            running = self.live[claimed.id] = Running(claimed)
            send.send_nowait(running)  # a slot each: never full
        return claim

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
