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

from ._client import AlreadyFinished as AlreadyFinished
from ._client import AsyncClient as AsyncClient
from ._client import Client as Client
from ._client import JobInfo as JobInfo
from ._client import JobRejected as JobRejected
from ._client import NoSuchJob as NoSuchJob
from ._client import RemoteError as RemoteError
from ._client import RequestTooLarge as RequestTooLarge
from ._client import ServiceBusy as ServiceBusy
from ._client import ServiceUnavailable as ServiceUnavailable
from ._client import ServiceUnreachable as ServiceUnreachable
from ._client import Submitted as Submitted
from ._client import Unauthorized as Unauthorized
from ._client import WaitTimeout as WaitTimeout
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
    "AlreadyFinished",
    "ArgumentsInvalid",
    "AsyncClient",
    "BacklogFull",
    "Client",
    "ConfigError",
    "FieldError",
    "JobFinished",
    "JobInfo",
    "JobNotFound",
    "JobRegistry",
    "JobRejected",
    "JobType",
    "JournalUnavailable",
    "NoSuchJob",
    "PoolSpec",
    "PortUnavailable",
    "RemoteError",
    "RequestTooLarge",
    "Service",
    "ServiceBusy",
    "ServiceConfig",
    "ServiceError",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "Submission",
    "SubmissionInvalid",
    "Submitted",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "create_app",
    "serve",
]
