"""``bulkhead serve MODULE:REGISTRY``: the job service from the command line.

Also ``python -m bulkhead serve``. Every option has a ``BULKHEAD_*``
environment variable; a flag wins over its variable (both come from one
table, :data:`~bulkhead.service._config.OPTIONS`). Exit status: 0 after a
clean shutdown (SIGTERM or SIGINT), 1 if the shutdown abandoned jobs that
ignored cancellation, 2 for bad configuration, a registry that cannot be
loaded, a busy port or a journal that cannot be opened (one line on
stderr says which).

``bulkhead jobs list|requeue|cancel|purge``: the same operations through
the HTTP API of a running service (``--url``, token from ``--token`` or
``BULKHEAD_TOKEN``). Exit status: 0 when listed, or when the operation is
done; 1 if it ended aborted or failed; 2 for a usage error or a request the
service refused as invalid (422); 3 if the service cannot be reached or
answered another error (401, 403, 404, 5xx).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

from ._config import OPTIONS, ConfigError, ServiceConfig
from ._journal import JournalUnavailable
from ._logging import configure_logging, flush_periodically
from ._registry import JobRegistry, resolve_priority
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
    _add_jobs_commands(commands)
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
    if args.command == "jobs":
        return jobs_command(args)
    flags = {name: getattr(args, name) for name in OPTIONS}
    try:
        config = ServiceConfig.load(flags, os.environ)
        registry = load_registry(args.registry)
        handler = configure_logging(config.log_level)
        try:
            trio.run(_serve, config, registry, handler)
        finally:
            handler.flush()
    except (ConfigError, ValueError, PortUnavailable, JournalUnavailable) as exc:
        print(f"bulkhead serve: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(
    config: ServiceConfig, registry: JobRegistry, handler: logging.Handler
) -> None:
    # A system task, cancelled when the run ends: a nursery here would wrap
    # serve()'s start-up errors in an ExceptionGroup.
    trio.lowlevel.spawn_system_task(flush_periodically, handler)
    await serve(config, registry)


# ------------------------------------------------- bulkhead jobs (a client)

EXIT_ENDED_BADLY = 1
"""``bulkhead jobs``: the operation ended ``aborted`` or ``failed``."""
EXIT_INVALID = 2
"""``bulkhead jobs``: a usage error, or the service answered 422."""
EXIT_SERVICE = 3
"""``bulkhead jobs``: the service is unreachable or answered another error."""
POLL = 0.2
"""Seconds between two looks at a running operation's progress."""
_JOB_COLUMNS = ("id", "type", "priority", "state", "attempts", "accepted_at", "error")
_OPERATION_COLUMNS = ("id", "action", "state", "matched", "done", "who", "reason")


class _Refused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _add_jobs_commands(commands: Any) -> None:
    jobs = commands.add_parser(
        "jobs",
        help="list, requeue, cancel or purge the jobs of a running service",
        description="The jobs of a running bulkhead serve, through its HTTP "
        "API. Mutations are journaled operations with a reason (GET "
        "/operations is their audit log); this waits for one to finish, "
        "showing its progress on stderr.",
    )
    actions = jobs.add_subparsers(dest="jobs_command", required=True)
    helps = {
        "list": "list jobs matching the filters",
        "requeue": "queue failed and cancelled jobs again (attempts reset)",
        "cancel": "cancel queued, scheduled and running jobs",
        "purge": "delete finished jobs",
    }
    for name, text in helps.items():
        command = actions.add_parser(name, help=text, description=text + ".")
        command.add_argument(
            "--url",
            default="http://127.0.0.1:8080",
            help="the service [default http://127.0.0.1:8080]",
        )
        command.add_argument(
            "--token",
            default=os.environ.get("BULKHEAD_TOKEN"),
            help="bearer token [BULKHEAD_TOKEN]; prefer the variable",
        )
        command.add_argument("--state", help="e.g. failed, queued, scheduled")
        command.add_argument("--type", help="job type")
        command.add_argument("--priority", help="pool: low, normal, high, urgent or N")
        command.add_argument("--since", help="accepted at or after (RFC 3339)")
        command.add_argument("--until", help="accepted before (RFC 3339)")
        command.add_argument("--json", action="store_true", help="print JSON")
        if name == "list":
            command.add_argument(
                "--limit", type=int, default=100, help="most jobs shown (100)"
            )
        else:
            command.add_argument(
                "--reason", required=True, help="why (the audit log keeps it)"
            )
            command.add_argument(
                "--no-wait",
                action="store_true",
                help="print the operation's id and return at once",
            )


def jobs_command(args: argparse.Namespace) -> int:
    """``bulkhead jobs ...``; returns the exit status (see the module
    docstring)."""
    import httpx  # only the client commands need it

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    filters = {
        name: getattr(args, name)
        for name in ("state", "type", "priority", "since", "until")
        if getattr(args, name) is not None
    }
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
            if args.jobs_command == "list":
                return _list_jobs(client, filters, args)
            return _operate(client, filters, args)
    except httpx.HTTPError as exc:
        print(f"bulkhead jobs: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except _Refused as exc:
        print(f"bulkhead jobs: {exc}", file=sys.stderr)
        return EXIT_INVALID if exc.status == 422 else EXIT_SERVICE


def _call(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    answer = client.request(method, path, **kwargs)
    if answer.status_code >= 400:
        try:
            message = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = answer.text[:200]
        raise _Refused(
            f"{method} {path}: {answer.status_code}: {message}", answer.status_code
        )
    return answer.json()


def _list_jobs(client: Any, filters: dict[str, str], args: argparse.Namespace) -> int:
    query = _pool_number(filters)
    jobs: list[dict[str, Any]] = []
    after = 0
    while len(jobs) < args.limit:
        page = _call(
            client,
            "GET",
            "/jobs",
            params={
                **query,
                "after": after,
                "limit": min(args.limit - len(jobs), 1000),
            },
        )
        jobs += page["jobs"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    if args.json:
        print(json.dumps(jobs, indent=2))
    else:
        _table(jobs, _JOB_COLUMNS)
    return 0


def _operate(client: Any, filters: dict[str, str], args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"action": args.jobs_command, "reason": args.reason}
    if filters:
        body["filter"] = _pool_number(filters)
    operation = _call(client, "POST", "/operations", json=body)
    id = operation["id"]
    print(
        f"operation {id}: {operation['action']} of {operation['matched']} jobs",
        file=sys.stderr,
    )
    shown = -1
    while operation["state"] == "running" and not args.no_wait:
        if operation["done"] != shown:
            shown = operation["done"]
            print(
                f"operation {id}: {shown}/{operation['matched']}",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(POLL)
        operation = _call(client, "GET", f"/operations/{id}")
    if args.json:
        print(json.dumps(operation, indent=2))
    else:
        _table([operation], _OPERATION_COLUMNS)
    if operation["state"] in ("aborted", "failed"):
        return EXIT_ENDED_BADLY
    return 0


def _pool_number(filters: dict[str, str]) -> dict[str, Any]:
    """``filters`` with ``priority`` as a pool number (the API's form)."""
    resolved: dict[str, Any] = dict(filters)
    if "priority" in filters:
        text = filters["priority"]
        try:
            resolved["priority"] = resolve_priority(
                int(text) if text.lstrip("-").isdigit() else text
            )
        except ValueError as exc:
            raise _Refused(f"--priority: {exc}", 422) from None
    return resolved


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [
        max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)
    ]
    for line in [[c.upper() for c in columns], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
