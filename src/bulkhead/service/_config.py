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


class ConfigError(ValueError):
    """One or more bad configuration values; the message has a line for each."""


@final
@attrs.frozen
class PoolSpec:
    """One pool of the service: its priority, workers and prefetch."""

    priority: int
    workers: int
    queue: int
    """Jobs claimed from the journal ahead of a free worker (the prefetch)."""


PREFETCH_PER_WORKER = 4
"""The default prefetch of a pool, per worker (Celery's default multiplier):
claims of a few jobs each cost a journal round trip per few jobs."""

ROLES = ("read", "submit", "operate")
"""Token roles, each including the ones before it: ``read`` (GET endpoints,
the dashboard, stats), ``submit`` (submit and cancel jobs), ``operate``
(operations on every job a filter matches)."""


@final
@attrs.frozen
class TokenSpec:
    """A named bearer token and its role."""

    name: str
    """Who holds it, as the audit log shows it."""
    role: str
    """One of :data:`ROLES`."""
    token: str = attrs.field(repr=False)


@final
@attrs.frozen
class Option:
    """One setting: its flag ``--name``, its variable ``BULKHEAD_NAME``, its
    default, how its text is parsed, and its ``--help``."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    shown_default: str | None = None
    """The default as ``--help`` shows it, if not ``str(default)``."""

    @property
    def flag(self) -> str:
        """``--name-with-dashes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        """``BULKHEAD_NAME``."""
        return f"BULKHEAD_{self.name.upper()}"

    def describe(self) -> str:
        """The ``--help`` text: what it is, its variable and its default."""
        default = self.shown_default or (
            "none" if self.default is None else str(self.default)
        )
        return f"{self.help} [{self.variable}, default {default}]"


def _options() -> dict[str, Option]:
    options = [
        Option("host", "127.0.0.1", _host, "address to listen on"),
        Option("port", 8080, _int_between(0, 65535), "TCP port, 0 for any free one"),
        Option(
            "token",
            None,
            _token,
            "bearer token, required off loopback; prefer the variable, which ps "
            "does not show",
        ),
        Option(
            "tokens",
            (),
            parse_tokens,
            "named tokens with roles, as NAME:ROLE:TOKEN,... (ROLE read, submit "
            "or operate); BULKHEAD_TOKEN is one named default with every role",
            shown_default="none",
        ),
        Option(
            "tokens_file",
            (),
            _tokens_file,
            "a file of NAME:ROLE:TOKEN lines (# comments), as --tokens",
            shown_default="none",
        ),
        Option(
            "operation_chunk",
            5000,
            _int_between(1, 1_000_000),
            "jobs an operation (requeue, cancel, purge) changes per transaction",
        ),
        Option(
            "pools",
            parse_pools(DEFAULT_POOLS),
            parse_pools,
            "pools as PRIORITY=WORKERS[:PREFETCH],...; PREFETCH (jobs claimed "
            "from the journal ahead of a free worker) defaults to 4 x WORKERS",
            shown_default=DEFAULT_POOLS,
        ),
        Option("job_timeout", None, _optional_seconds, "seconds per attempt"),
        Option("retry_attempts", 1, _int_between(1, 100), "attempts per run of a job"),
        Option(
            "max_attempts",
            5,
            _int_between(1, 1000),
            "runs of a job across restarts before it fails (a job that kills "
            "its process would run for ever)",
        ),
        Option(
            "grace_period",
            30.0,
            _seconds,
            "seconds a shutdown lets jobs finish; jobs still running then are "
            "left for the next start",
        ),
        Option("log_level", "INFO", _log_level, "DEBUG, INFO, WARNING or ERROR"),
        Option(
            "journal",
            "bulkhead-journal.sqlite3",
            _journal,
            "the journal (the queue): a SQLite file, a postgresql:// URL, or "
            ":memory: for none",
        ),
        Option(
            "max_backlog",
            1_000_000,
            _int_between(1, 10**12),
            "jobs waiting in one pool before submissions get 429",
        ),
        Option(
            "max_batch",
            10_000,
            _int_between(1, 1_000_000),
            "most jobs in one POST /jobs/batch",
        ),
        Option(
            "keep_results", 10_000, _int_between(1, 10**9), "most finished jobs kept"
        ),
        Option("keep_results_for", 3600.0, _seconds, "seconds finished jobs are kept"),
        Option(
            "max_body",
            16 * 1024 * 1024,
            _int_between(64, 2**31),
            "largest request body in bytes",
        ),
    ]
    return {option.name: option for option in options}


def parse_pools(text: str) -> tuple[PoolSpec, ...]:
    """Parse ``low=2,normal=4,high=8:100`` (name or number = workers[:queue]).

    Raises:
      ValueError: saying which entry is wrong and what is expected.
    """
    specs: dict[int, PoolSpec] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, size = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r} is not PRIORITY=WORKERS[:PREFETCH]")
        name = name.strip()
        try:
            priority = resolve_priority(int(name) if _is_int(name) else name)
        except ValueError as exc:
            raise ValueError(f"in {entry!r}: {exc}") from None
        workers_text, colon, queue_text = size.partition(":")
        try:
            workers = int(workers_text)
            queue = int(queue_text) if colon else PREFETCH_PER_WORKER * workers
        except ValueError:
            raise ValueError(
                f"in {entry!r}: workers and prefetch must be integers, as in "
                "high=8 or high=8:16"
            ) from None
        if workers < 1 or queue < 0:
            raise ValueError(f"in {entry!r}: need workers >= 1 and prefetch >= 0")
        if priority in specs:
            raise ValueError(f"pool {name!r} is configured twice")
        specs[priority] = PoolSpec(priority, workers, queue)
    if not specs:
        raise ValueError("configure at least one pool, e.g. normal=4")
    return tuple(specs.values())


def parse_tokens(text: str, separator: str = ",") -> tuple[TokenSpec, ...]:
    """Parse ``ci:submit:TOKEN,ops:operate:TOKEN`` (lines of a file with
    ``separator="\\n"``; there, blank lines and ``#`` comments are skipped).

    Raises:
      ValueError: naming the entry (never its token) and what is expected.
    """
    specs: list[TokenSpec] = []
    for number, entry in enumerate(text.split(separator), 1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        name, _, rest = entry.partition(":")
        role, _, token = rest.partition(":")
        where = f"entry {number} ({name or 'no name'})"
        if not name or not token:
            raise ValueError(f"{where} is not NAME:ROLE:TOKEN")
        if role not in ROLES:
            raise ValueError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        try:
            _token(token)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if any(s.name == name for s in specs):
            raise ValueError(f"{where}: the name {name!r} is given twice")
        specs.append(TokenSpec(name, role, token))
    return tuple(specs)


def _tokens_file(text: str) -> tuple[TokenSpec, ...]:
    try:
        with open(text, encoding="utf-8") as file:
            content = file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {exc.strerror}") from None
    return parse_tokens(content, "\n")


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
        raise ValueError(
            "expected a SQLite file path, a postgresql:// URL, or :memory: to "
            "keep nothing"
        )
    return text


OPTIONS: Mapping[str, Option] = _options()
"""Every setting of ``bulkhead serve``, by name: the one place each is
defined."""


def _default(name: str) -> Any:
    return attrs.field(default=OPTIONS[name].default)


@final
@attrs.frozen(kw_only=True)
class ServiceConfig:
    """Everything ``bulkhead serve`` is configured with: one field per
    ``OPTIONS`` entry, which gives its flag, variable and default.

    Build it with :meth:`load` (flags and environment) or directly in tests.
    """

    host: str = _default("host")
    """Address to listen on."""
    port: int = _default("port")
    """TCP port; 0 picks a free one."""
    token: str | None = _default("token")
    """Bearer token every request but ``/health`` and ``/ready`` must carry;
    required off loopback."""
    tokens: tuple[TokenSpec, ...] = _default("tokens")
    """Named tokens with roles, from ``BULKHEAD_TOKENS``."""
    tokens_file: tuple[TokenSpec, ...] = _default("tokens_file")
    """Named tokens with roles, read from ``BULKHEAD_TOKENS_FILE``."""
    operation_chunk: int = _default("operation_chunk")
    """Jobs an operation changes per transaction."""
    pools: tuple[PoolSpec, ...] = _default("pools")
    """The pools, e.g. ``low=2,high=8:16``."""
    job_timeout: float | None = _default("job_timeout")
    """Seconds per attempt; ``None`` for none."""
    retry_attempts: int = _default("retry_attempts")
    """Attempts per run, the first included."""
    max_attempts: int = _default("max_attempts")
    """Runs of a job across restarts before it is failed."""
    grace_period: float = _default("grace_period")
    """Seconds a shutdown lets jobs finish, a hard limit."""
    log_level: str = _default("log_level")
    """The lowest level logged: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``."""
    journal: str = _default("journal")
    """The journal, which is the queue: a SQLite file, a ``postgresql://``
    URL, or ``:memory:``, which keeps nothing."""
    max_backlog: int = _default("max_backlog")
    """Jobs waiting in one pool before submissions get 429."""
    max_batch: int = _default("max_batch")
    """Most jobs in one ``POST /jobs/batch``."""
    keep_results: int = _default("keep_results")
    """Most finished jobs kept readable."""
    keep_results_for: float = _default("keep_results_for")
    """Seconds a finished job stays readable."""
    max_body: int = _default("max_body")
    """Largest request body in bytes; larger gets 413."""

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
        for option in OPTIONS.values():
            text, where = flags.get(option.name), option.flag
            if text is None:
                text, where = env.get(option.variable), option.variable
            if text is None:
                continue
            try:
                values[option.name] = option.parse(text.strip())
            except ValueError as exc:
                errors.append(f"{where}={text!r}: {exc}")
        host = values.get("host", "127.0.0.1")
        if not errors:
            errors += _token_clashes(values)
        guarded = any(values.get(n) for n in ("token", "tokens", "tokens_file"))
        if not errors and not _is_loopback(host) and not guarded:
            errors.append(
                f"host {host!r} is not loopback: set BULKHEAD_TOKEN "
                "(or --token) so that only clients holding it can submit jobs"
            )
        if errors:
            raise ConfigError("bad configuration:\n  " + "\n  ".join(errors))
        return cls(**values)

    def credentials(self) -> tuple[TokenSpec, ...]:
        """Every token it accepts: ``BULKHEAD_TOKEN`` as ``default`` with
        role ``operate``, then ``BULKHEAD_TOKENS``, then the file's."""
        default = (
            () if self.token is None else (TokenSpec("default", "operate", self.token),)
        )
        return default + self.tokens + self.tokens_file

    def loggable(self) -> dict[str, Any]:
        """The configuration as a dict for the start-up log, tokens hidden."""
        values = attrs.asdict(self, recurse=False)
        values["token"] = None if self.token is None else "***"
        for name in ("tokens", "tokens_file"):
            values[name] = [f"{t.name}:{t.role}:***" for t in values[name]]
        values["pools"] = {p.priority: f"{p.workers}:{p.queue}" for p in self.pools}
        if "://" in self.journal:
            values["journal"] = redact(self.journal)
        return values


def _token_clashes(values: Mapping[str, Any]) -> list[str]:
    """Names or tokens given twice across the token options."""
    specs = list(values.get("tokens", ())) + list(values.get("tokens_file", ()))
    if values.get("token") is not None:
        specs.insert(0, TokenSpec("default", "operate", values["token"]))
    errors = []
    names = [s.name for s in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(
            f"token name {name!r} is given twice (BULKHEAD_TOKEN is 'default')"
        )
    tokens = [s.token for s in specs]
    if len(set(tokens)) < len(tokens):
        errors.append("one token is given twice, under two names or roles")
    return errors


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.partition(':')[0]}:***@{host}"
