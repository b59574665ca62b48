"""bulkhead as a service: ``bulkhead serve MODULE:REGISTRY`` (the ``service`` extra).

A :class:`JobRegistry` names the job types a service runs; ``bulkhead
serve`` (or :func:`serve` inside a trio program) puts them behind an HTTP
API: submit with ``POST /jobs``, read with ``GET /jobs/{id}``, cancel with
``DELETE /jobs/{id}``, probe ``/health`` and ``/ready``, watch ``/stats``,
``/workers`` and ``/metrics``. Every accepted job is in a SQLite journal
before its 202 is sent; jobs a crash or a shutdown interrupted run again
at the next start (at least once). SIGTERM or SIGINT drains within the grace
period. :func:`create_app` gives the ASGI app of a :class:`Service`, to
serve it some other way than :func:`serve`.
"""

from ._config import ConfigError as ConfigError
from ._config import PoolSpec as PoolSpec
from ._config import ServiceConfig as ServiceConfig
from ._errors import BacklogFull as BacklogFull
from ._errors import FieldError as FieldError
from ._errors import JobFinished as JobFinished
from ._errors import JobNotFound as JobNotFound
from ._errors import ServiceError as ServiceError
from ._errors import SubmissionInvalid as SubmissionInvalid
from ._errors import Unavailable as Unavailable
from ._http import create_app as create_app
from ._intake import Submission as Submission
from ._journal import JournalUnavailable as JournalUnavailable
from ._registry import ArgumentsInvalid as ArgumentsInvalid
from ._registry import JobRegistry as JobRegistry
from ._registry import JobType as JobType
from ._server import PortUnavailable as PortUnavailable
from ._server import serve as serve
from ._service import Service as Service

__all__ = [
    "ArgumentsInvalid",
    "BacklogFull",
    "ConfigError",
    "FieldError",
    "JobFinished",
    "JobNotFound",
    "JobRegistry",
    "JobType",
    "JournalUnavailable",
    "PoolSpec",
    "PortUnavailable",
    "Service",
    "ServiceConfig",
    "ServiceError",
    "Submission",
    "SubmissionInvalid",
    "Unavailable",
    "create_app",
    "serve",
]
