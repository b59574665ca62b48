"""Shutdown on signals: :func:`finalize_on_signals`."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import trio

from ._dispatcher import Dispatcher
from ._policy import check_seconds


async def finalize_on_signals(
    dispatcher: Dispatcher,
    grace_period: float | None = None,
    *,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Finalize ``dispatcher`` when the process gets SIGTERM or SIGINT.

    The first signal begins :meth:`~Dispatcher.finalize` with
    ``grace_period``: intake stops, accepted jobs drain, and what is still
    running when the grace period ends is cancelled. A second signal
    cancels what is left at once (a grace period of 0), as an impatient
    operator means it to. Run it next to the dispatcher, before the work::

        async with bulkhead.open_dispatcher(pools) as d, trio.open_nursery() as n:
            await n.start(bulkhead.finalize_on_signals, d, 30)
            ...  # dispatch until DispatcherClosed

    It returns once the dispatcher is finalized (by a signal or otherwise),
    so the nursery around it can close. Failures are not raised here: the
    owner's :meth:`~Dispatcher.finalize` (or leaving ``open_dispatcher``)
    raises them as usual. While it runs, the signals are trio's
    (:func:`trio.open_signal_receiver`): SIGINT no longer raises
    KeyboardInterrupt. ``nursery.start`` returns once the signals are
    caught. Only the main thread can catch signals.

    Raises:
      TypeError, ValueError: for a bad ``grace_period`` or ``signals``.
      RuntimeError: if the dispatcher is not running, or outside the main
        thread.
    """
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(
            f"finalize_on_signals() takes a bulkhead.Dispatcher, got {dispatcher!r}"
        )
    grace_period = check_seconds(grace_period, "grace_period")
    signals = tuple(signals)
    if not signals or not all(isinstance(s, int) for s in signals):
        raise TypeError(
            f"signals must be signal numbers such as signal.SIGTERM, got {signals!r}"
        )
    lifetime = dispatcher._lifetime
    if lifetime.state == "new":
        raise RuntimeError(
            "finalize_on_signals() needs a running dispatcher: start it first"
        )
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async with trio.open_nursery() as nursery:

            async def stop_when_torn_down() -> None:
                await lifetime.torn_down.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_when_torn_down)
            grace = grace_period
            async for _ in received:
                lifetime.begin_teardown(grace)
                grace = 0
