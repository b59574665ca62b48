"""``serve()``: the service over HTTP until a signal, apart from the command
line (as hypercorn keeps ``serve()`` apart from its ``__main__``).

Start-up order, so that nothing runs before this process is sure to own its
resources: bind the port (a busy one fails here), open the journal (a second
process on the same SQLite file fails here), then feed the pools and serve.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._config import ServiceConfig
from ._http import create_app
from ._registry import JobRegistry
from ._service import Service

log = logging.getLogger("bulkhead.service")

ABANDON_MARGIN = 2.0
"""Seconds past the grace period before jobs that ignore cancellation are
abandoned and the process exits."""
EXIT_ABANDONED = 1
"""The exit status of a shutdown that abandoned jobs."""


class PortUnavailable(OSError):
    """The address or port to listen on cannot be bound."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Raises:
      PortUnavailable: naming the address and the cause.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    return sock


async def serve(
    config: ServiceConfig,
    registry: JobRegistry,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``registry`` until SIGTERM or SIGINT, then drain and return.

    ``nursery.start(serve, ...)`` returns the URLs it listens on. The grace
    period is a hard limit: if jobs still run past it (they ignore
    cancellation), they are logged and left in the journal for the next
    start, and the process exits with status 1.

    Raises:
      PortUnavailable: if the port cannot be bound.
      JournalUnavailable: if the journal cannot be opened, or another
        process owns it.
    """
    service = Service(config, registry)
    app = create_app(service)
    listener = bind(config.host, config.port)
    try:
        await service.open()
    except BaseException:
        listener.close()
        raise
    http = HypercornConfig()
    http.bind = [f"fd://{listener.detach()}"]
    http.accesslog = None
    http.errorlog = logging.getLogger("hypercorn.error")
    http.graceful_timeout = 5.0
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(service.run)
            binds: list[str] = await nursery.start(
                partial(
                    hypercorn_serve,
                    app,  # type: ignore[arg-type]  # FastAPI is an ASGI app
                    http,
                    shutdown_trigger=service.stopped.wait,
                )
            )
            log.info(
                "listening on %s",
                " ".join(binds),
                extra={
                    "event": "listening",
                    "urls": binds,
                    "config": config.loggable(),
                    "job_types": [t.name for t in registry],
                },
            )
            task_status.started(binds)
            async for signum in signals:
                log.info(
                    "%s: shutting down",
                    signal.Signals(signum).name,
                    extra={"event": "signal", "signal": signal.Signals(signum).name},
                )
                service.stop()
                break
            # A signal still pending when the receiver closes is delivered
            # again, to the default handler: a second SIGTERM during the drain
            # would end the process with -SIGTERM, a second SIGINT with a
            # KeyboardInterrupt, after a clean drain. Take them here.
            async with trio.open_nursery() as draining:
                draining.start_soon(_repeated, signals)
                with trio.move_on_after(config.grace_period + ABANDON_MARGIN):
                    await service.stopped.wait()
                draining.cancel_scope.cancel()
            if not service.stopped.is_set():
                await _abandon(service)


async def _repeated(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.info(
            "%s: already shutting down",
            signal.Signals(signum).name,
            extra={"event": "signal", "signal": signal.Signals(signum).name},
        )


async def _abandon(service: Service) -> None:
    # The dispatcher cannot finish while a job ignores cancellation, and
    # nothing in trio can end such a task: write what is finished, then end
    # the process. The abandoned jobs stay running in the journal, which
    # queues them again at the next start.
    service.abandon()
    with trio.move_on_after(10):
        await service.journal_closed.wait()
    logging.shutdown()
    os._exit(EXIT_ABANDONED)
