"""``/schedules``: the periodic jobs a service enqueues, read-only.

Schedules are declared in the registry (:meth:`JobRegistry.schedule`), so
this resource only reads; its models live here, next to their one route.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pydantic
from fastapi import APIRouter

from .._service import Service
from ._models import Problem


class LastJob(pydantic.BaseModel):
    """The last run a schedule enqueued."""

    id: int
    state: str
    """Its state as ``GET /jobs/{id}`` names it, or ``unknown`` once its
    record has expired."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


class ScheduleView(pydantic.BaseModel):
    """One periodic job (times RFC 3339, UTC)."""

    name: str
    type: str
    """The job type each run is."""
    priority: int
    """The pool its runs go to."""
    args: dict[str, Any]
    """The runs' arguments."""
    cron: str
    timezone: str
    """The IANA time zone the cron expression is read in."""
    overlap: Literal["skip", "allow"]
    catch_up: Literal["skip", "latest", "all"]
    catch_up_window: float | None
    """Seconds of missed runs caught up, for ``latest`` and ``all``."""
    next_run_at: datetime.datetime
    last_run_at: datetime.datetime | None
    """The fire time of the last run enqueued, by any instance."""
    last_job: LastJob | None
    missed: int
    """Fire times this instance did not run since it started (downtime or
    overlap); ``bulkhead_schedule_missed_total`` in ``/metrics`` has them by
    reason."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


class ScheduleList(pydantic.BaseModel):
    """``GET /schedules``."""

    schedules: list[ScheduleView]


def router(
    service: Service, secured: list[Any], errors: dict[int | str, Any]
) -> APIRouter:
    """The ``/schedules`` route of ``service``."""
    api = APIRouter(tags=["schedules"], dependencies=secured, responses=errors)
    unavailable = {"model": Problem, "description": "The journal cannot be read"}

    @api.get(
        "/schedules",
        summary="Periodic jobs",
        response_model=ScheduleList,
        responses={503: unavailable},
    )
    async def schedules() -> dict[str, Any]:
        """Every schedule in the registry, in registration order, with
        ``next_run_at``, ``last_run_at``, its last run and how many runs
        it missed."""
        return {"schedules": await service.schedules()}

    return api
