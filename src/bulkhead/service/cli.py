"""``bulkhead serve MODULE:REGISTRY``: run a job service from the command line.

Also ``python -m bulkhead serve``. Every option has a ``BULKHEAD_*``
environment variable; a flag wins over its variable. Exit status: 0 after a
clean shutdown (SIGTERM or SIGINT), 2 for bad configuration or a registry
that cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._app import create_app
from ._config import DEFAULT_POOLS, ConfigError, ServiceConfig
from ._logging import configure_logging
from ._registry import JobRegistry
from ._service import Service

log = logging.getLogger("bulkhead.service")

_OPTIONS = {
    "host": "address to listen on [BULKHEAD_HOST, default 127.0.0.1]",
    "port": "TCP port, 0 for any free one [BULKHEAD_PORT, default 8080]",
    "token": "bearer token, required off loopback; prefer the variable, "
    "which ps does not show [BULKHEAD_TOKEN]",
    "pools": f"pools as PRIORITY=WORKERS[:QUEUE],... [BULKHEAD_POOLS, default "
    f"{DEFAULT_POOLS}, queue 100]",
    "job-timeout": "seconds per attempt, 0 for none [BULKHEAD_JOB_TIMEOUT]",
    "retry-attempts": "attempts per job [BULKHEAD_RETRY_ATTEMPTS, default 1]",
    "grace-period": "seconds a shutdown lets jobs finish [BULKHEAD_GRACE_PERIOD, "
    "default 30]",
    "log-level": "DEBUG, INFO, WARNING or ERROR [BULKHEAD_LOG_LEVEL, default INFO]",
    "journal": "SQLite journal file, :memory: for none [BULKHEAD_JOURNAL, "
    "default bulkhead-journal.sqlite3]",
    "keep-results": "most finished jobs kept [BULKHEAD_KEEP_RESULTS, default 10000]",
    "keep-results-for": "seconds finished jobs are kept "
    "[BULKHEAD_KEEP_RESULTS_FOR, default 3600]",
    "max-body": "largest request body in bytes [BULKHEAD_MAX_BODY, default 65536]",
    "max-wait": "seconds a submission waits for room before 429 "
    "[BULKHEAD_MAX_WAIT, default 0.1]",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkhead", description="bulkhead: isolated worker pools for trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a job service over HTTP",
        description="Serve the job types of a JobRegistry over HTTP.",
    )
    serve.add_argument(
        "registry",
        metavar="MODULE:REGISTRY",
        help="e.g. examples.service_jobs:registry",
    )
    for name, text in _OPTIONS.items():
        serve.add_argument(f"--{name}", help=text)
    return parser


def load_registry(spec: str) -> JobRegistry:
    """Import ``module:attribute`` (the current directory is importable).

    Raises:
      ValueError: with what is wrong and what is expected.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not MODULE:REGISTRY, e.g. myjobs:registry")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    registry = getattr(module, attribute, None)
    if not isinstance(registry, JobRegistry):
        raise ValueError(
            f"{spec!r} is {registry!r}, not a bulkhead.service.JobRegistry"
        )
    return registry


async def serve(
    config: ServiceConfig,
    registry: JobRegistry,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``registry`` until SIGTERM or SIGINT, then drain and return.

    ``nursery.start(serve, ...)`` returns the URLs it listens on.
    """
    service = Service(config, registry)
    app = create_app(service)
    http = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    http.bind = [f"{host}:{config.port}"]
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


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bulkhead`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    flags = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_"))
        for name in _OPTIONS
    }
    try:
        config = ServiceConfig.load(flags, os.environ)
        registry = load_registry(args.registry)
    except (ConfigError, ValueError) as exc:
        print(f"bulkhead serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    try:
        trio.run(serve, config, registry)
    except ValueError as exc:  # a registry that does not fit the pools
        log.error("cannot start: %s", exc, extra={"event": "failed"})
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
