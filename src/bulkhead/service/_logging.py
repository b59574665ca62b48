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
from typing import Any, final

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@final
class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line (no traceback text:
    an exception adds only its type and message)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for ``record``."""
        data: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["exception"] = f"{type(exc).__name__}: {exc}"
        return json.dumps(data, default=str)


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON, from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
