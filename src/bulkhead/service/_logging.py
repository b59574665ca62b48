"""JSON logs: one object a line, through the standard :mod:`logging` module.

Fields passed with ``extra={...}`` become keys of the object, next to
``time``, ``level``, ``logger`` and ``message``; a job's end is logged as
``{"event": "job_finished", "job": 12, "type": "add", "priority": 2,
"attempt": 1, "duration": 0.003, "outcome": "succeeded", ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO, final

import trio

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_encode = json.JSONEncoder(default=str).encode  # one encoder, not one a line


@final
class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line (no traceback text:
    an exception adds only its type and message)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for ``record``."""
        data: dict[str, Any] = {
            # Whole microseconds, truncated: round() costs a float
            # formatting of its own, and this runs once for every job.
            "time": int(record.created * 1e6) / 1e6,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["exception"] = f"{type(exc).__name__}: {exc}"
        return _encode(data)


FLUSH_INTERVAL = 0.1
"""Seconds a line below WARNING may wait in :class:`JsonLinesHandler`."""


@final
class JsonLinesHandler(logging.StreamHandler[TextIO]):
    """JSON lines to ``stream``, written a batch at a time.

    A line below WARNING waits in memory until the next one at WARNING or
    above, until :data:`FLUSH_INTERVAL` passed since the oldest waiting
    one, or until :meth:`flush` (which :func:`flush_periodically` calls), so
    a job's end costs no system call of its own: at thousands of jobs a
    second, one ``write`` per line took more of the service's time than
    running the jobs. A process killed outright loses at most the last
    :data:`FLUSH_INTERVAL` of INFO lines; the journal has the jobs.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._lines: list[str] = []
        self._oldest = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer ``record``'s line; write the buffer when it is due."""
        try:
            line = self.format(record)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)
            return
        now = time.monotonic()
        if not self._lines:
            self._oldest = now
        self._lines.append(line)
        if record.levelno >= logging.WARNING or now - self._oldest >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write every buffered line in one call."""
        with self.lock:  # type: ignore[union-attr]  # created in __init__
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()


def configure_logging(level: str) -> JsonLinesHandler:
    """Send every log record to stderr as JSON, from ``level`` up; return
    the handler (for :func:`flush_periodically`)."""
    handler = JsonLinesHandler(sys.stderr)
    # What no line shows, not collected for each record (the logging HOWTO's
    # "Optimization"): the caller's file and line, thread and process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
    return handler


async def flush_periodically(handler: logging.Handler) -> None:
    """Flush ``handler`` every :data:`FLUSH_INTERVAL` until cancelled, so a
    quiet service's last lines do not wait for the next one."""
    while True:
        await trio.sleep(FLUSH_INTERVAL)
        handler.flush()
