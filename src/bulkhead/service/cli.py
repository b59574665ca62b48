"""``bulkhead serve MODULE:REGISTRY``: the job service from the command line.

Also ``python -m bulkhead serve``. Every option has a ``BULKHEAD_*``
environment variable; a flag wins over its variable (both come from one
table, :data:`~bulkhead.service._config.OPTIONS`). Exit status: 0 after a
clean shutdown (SIGTERM or SIGINT), 1 if the shutdown abandoned jobs that
ignored cancellation, 2 for bad configuration, a registry that cannot be
loaded, a busy port or a journal that cannot be opened (one line on
stderr says which).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import trio

from ._config import OPTIONS, ConfigError, ServiceConfig
from ._journal import JournalUnavailable
from ._logging import configure_logging
from ._registry import JobRegistry
from ._server import PortUnavailable, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkhead", description="bulkhead: isolated worker pools for trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser(
        "serve",
        help="run a job service over HTTP",
        description="Serve the job types of a JobRegistry over HTTP, with the "
        "journal as the queue.",
    )
    serve_command.add_argument(
        "registry",
        metavar="MODULE:REGISTRY",
        help="e.g. examples.service_jobs:registry",
    )
    for option in OPTIONS.values():
        serve_command.add_argument(
            option.flag, dest=option.name, help=option.describe()
        )
    return parser


def load_registry(spec: str) -> JobRegistry:
    """Import ``module:attribute`` (the current directory is importable).

    Raises:
      ValueError: with what is wrong and what is expected.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not MODULE:REGISTRY, e.g. myjobs:registry")
    if module_name.endswith(".py"):
        raise ValueError(
            f"{module_name!r} is a file name: give the module, "
            f"{module_name[:-3].replace('/', '.')}:{attribute}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    if not hasattr(module, attribute):
        registries = [
            name
            for name, value in vars(module).items()
            if isinstance(value, JobRegistry)
        ]
        hint = f"; it has {', '.join(registries)}" if registries else ""
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}{hint}")
    registry = getattr(module, attribute)
    if not isinstance(registry, JobRegistry):
        raise ValueError(
            f"{spec!r} is {registry!r}, not a bulkhead.service.JobRegistry"
        )
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bulkhead`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    flags = {name: getattr(args, name) for name in OPTIONS}
    try:
        config = ServiceConfig.load(flags, os.environ)
        registry = load_registry(args.registry)
        configure_logging(config.log_level)
        trio.run(serve, config, registry)
    except (ConfigError, ValueError, PortUnavailable, JournalUnavailable) as exc:
        print(f"bulkhead serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
