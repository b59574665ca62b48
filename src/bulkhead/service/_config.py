"""Service configuration: command-line flags over ``BULKHEAD_*`` variables.

Every value is parsed and checked before anything starts; all the bad ones
are reported at once, one line each, naming the flag, the variable and what
a good value looks like.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, final

import attrs

from ._registry import resolve_priority

_T = TypeVar("_T")

DEFAULT_POOLS = "low=2,normal=4,high=8,urgent=2"
DEFAULT_QUEUE = 100
"""Queue size of a pool given without one (``high=8`` means ``high=8:100``)."""


class ConfigError(ValueError):
    """One or more bad configuration values; the message has a line for each."""


@final
@attrs.frozen
class PoolSpec:
    """One pool of the service: its priority, workers and queue size."""

    priority: int
    workers: int
    queue: int


@final
@attrs.frozen(kw_only=True)
class ServiceConfig:
    """Everything ``bulkhead serve`` is configured with.

    Build it with :meth:`load` (flags and environment) or directly in tests.
    """

    host: str = "127.0.0.1"
    """Address to listen on (``BULKHEAD_HOST``, ``--host``)."""
    port: int = 8080
    """TCP port (``BULKHEAD_PORT``, ``--port``); 0 picks a free one."""
    token: str | None = None
    """Bearer token every request but ``/health`` and ``/ready`` must carry
    (``BULKHEAD_TOKEN``, ``--token``); required off loopback."""
    pools: tuple[PoolSpec, ...] = ()
    """The pools (``BULKHEAD_POOLS``, ``--pools``), e.g. ``low=2,high=8:100``."""
    job_timeout: float | None = None
    """Seconds per attempt (``BULKHEAD_JOB_TIMEOUT``); ``None`` for none."""
    retry_attempts: int = 1
    """Attempts per job, the first included (``BULKHEAD_RETRY_ATTEMPTS``)."""
    grace_period: float = 30.0
    """Seconds a shutdown lets accepted jobs finish (``BULKHEAD_GRACE_PERIOD``)."""
    log_level: str = "INFO"
    """``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR`` (``BULKHEAD_LOG_LEVEL``)."""
    journal: str = "bulkhead-journal.sqlite3"
    """SQLite journal file (``BULKHEAD_JOURNAL``); ``:memory:`` keeps nothing
    across restarts."""
    keep_results: int = 10_000
    """Most finished jobs kept readable (``BULKHEAD_KEEP_RESULTS``)."""
    keep_results_for: float = 3600.0
    """Seconds a finished job stays readable (``BULKHEAD_KEEP_RESULTS_FOR``)."""
    max_body: int = 64 * 1024
    """Largest request body in bytes (``BULKHEAD_MAX_BODY``); larger gets 413."""
    max_wait: float = 0.1
    """Seconds a submission waits for room in its pool before it gets 429
    (``BULKHEAD_MAX_WAIT``)."""

    @classmethod
    def load(
        cls, flags: Mapping[str, str | None], env: Mapping[str, str]
    ) -> ServiceConfig:
        """Parse ``flags`` (option name → text, ``None`` if not given) over
        ``env`` (``BULKHEAD_<NAME>``) over the defaults.

        Raises:
          ConfigError: listing every bad value, and a non-loopback host
            without a token.
        """
        errors: list[str] = []
        values: dict[str, Any] = {}

        def take(name: str, parse: Callable[[str], _T]) -> None:
            variable = f"BULKHEAD_{name.upper()}"
            text = flags.get(name)
            where = f"--{name.replace('_', '-')}"
            if text is None:
                text = env.get(variable)
                where = variable
            if text is None:
                return
            try:
                values[name] = parse(text.strip())
            except ValueError as exc:
                errors.append(f"{where}={text!r}: {exc}")

        take("host", _host)
        take("port", _int_between(0, 65535))
        take("token", _token)
        take("pools", parse_pools)
        take("job_timeout", _optional_seconds)
        take("retry_attempts", _int_between(1, 100))
        take("grace_period", _seconds)
        take("log_level", _log_level)
        take("journal", _journal)
        take("keep_results", _int_between(1, 10**9))
        take("keep_results_for", _seconds)
        take("max_body", _int_between(64, 2**30))
        take("max_wait", _seconds)
        values.setdefault("pools", parse_pools(DEFAULT_POOLS))
        host = values.get("host", "127.0.0.1")
        if not errors and not _is_loopback(host) and values.get("token") is None:
            errors.append(
                f"host {host!r} is not loopback: set BULKHEAD_TOKEN "
                "(or --token) so that only clients holding it can submit jobs"
            )
        if errors:
            raise ConfigError("bad configuration:\n  " + "\n  ".join(errors))
        return cls(**values)

    def loggable(self) -> dict[str, Any]:
        """The configuration as a dict for the start-up log, token hidden."""
        values = attrs.asdict(self, recurse=False)
        values["token"] = None if self.token is None else "***"
        values["pools"] = {p.priority: f"{p.workers}:{p.queue}" for p in self.pools}
        return values


def parse_pools(text: str) -> tuple[PoolSpec, ...]:
    """Parse ``low=2,normal=4,high=8:100`` (name or number = workers[:queue]).

    Raises:
      ValueError: saying which entry is wrong and what is expected.
    """
    specs: dict[int, PoolSpec] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, size = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r} is not PRIORITY=WORKERS[:QUEUE]")
        name = name.strip()
        try:
            priority = resolve_priority(int(name) if _is_int(name) else name)
        except ValueError as exc:
            raise ValueError(f"in {entry!r}: {exc}") from None
        workers_text, _, queue_text = size.partition(":")
        try:
            workers = int(workers_text)
            queue = int(queue_text) if queue_text else DEFAULT_QUEUE
        except ValueError:
            raise ValueError(
                f"in {entry!r}: workers and queue must be integers"
            ) from None
        if workers < 1 or queue < 0:
            raise ValueError(f"in {entry!r}: need workers >= 1 and queue >= 0")
        if priority in specs:
            raise ValueError(f"pool {name!r} is configured twice")
        specs[priority] = PoolSpec(priority, workers, queue)
    if not specs:
        raise ValueError("configure at least one pool, e.g. normal=4")
    return tuple(specs.values())


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected an address such as 127.0.0.1 or 0.0.0.0")
    return text


def _token(text: str) -> str:
    if len(text) < 16:
        raise ValueError("a token needs at least 16 characters")
    return text


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds, e.g. 30 or 0.5") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite number of seconds >= 0")
    return value


def _optional_seconds(text: str) -> float | None:
    if text.lower() in ("", "none", "0"):
        return None
    return _seconds(text)


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    assert isinstance(logging.getLevelName(level), int)
    return level


def _journal(text: str) -> str:
    if not text:
        raise ValueError("expected a file path, or :memory: to keep nothing")
    return text
