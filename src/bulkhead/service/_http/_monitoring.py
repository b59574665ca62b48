"""Probes and monitoring: ``/health``, ``/ready``, ``/stats``, ``/metrics``,
``/workers``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .._service import Service
from ._errors import problem
from ._models import Problem


def probes(service: Service) -> APIRouter:
    """``/health`` and ``/ready``: no token needed."""
    api = APIRouter(tags=["probes"])

    @api.get(
        "/health",
        summary="Liveness probe",
        response_description="The process serves HTTP",
    )
    async def health() -> dict[str, str]:
        """Liveness: 200 ``{"status": "ok"}`` while the process serves HTTP."""
        return {"status": "ok"}

    @api.get(
        "/ready",
        summary="Readiness probe",
        response_description="The pools run and the journal writes",
        responses={
            503: {
                "model": Problem,
                "description": "Starting, draining, or the journal cannot write",
            }
        },
    )
    async def ready() -> JSONResponse:
        """Readiness: 200 ``{"status": "ready"}`` once the pools run, 503
        while starting, draining, or while the journal cannot write (``error``
        says which)."""
        if service.ready:
            return JSONResponse({"status": "ready"})
        if service.draining:
            return problem(503, "draining")
        if not service.journal.writable:
            return problem(503, "the journal cannot write (see the log)")
        return problem(503, "starting")

    return api


def monitoring(
    service: Service, secured: list[Any], errors: dict[int | str, Any]
) -> APIRouter:
    """``/stats``, ``/metrics`` and ``/workers``."""
    api = APIRouter(tags=["monitoring"], dependencies=secured, responses=errors)

    @api.get("/stats", summary="Service, journal and pool statistics")
    async def stats() -> dict[str, Any]:
        """Counts since start, the journal's rows per pool and state, and
        each pool's statistics.

        A JSON object: ``uptime`` (seconds), ``draining``, ``accepted`` (jobs
        since start), ``refused`` (submissions refused for a full backlog),
        ``requeued`` (jobs an earlier process left running, queued again at
        start), ``interrupted`` (jobs this shutdown stopped; they run again),
        ``in_memory`` (jobs claimed by this instance and not ended), and
        ``journal``: its ``location``, whether it is ``writable``, and
        ``pools``, each pool's rows by state (``queued`` counts scheduled
        jobs too). ``pools`` (by pool name) and ``total`` have the fields of
        :class:`bulkhead.PoolStatistics`.
        """
        return await service.statistics()

    @api.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        response_description="Prometheus text exposition format",
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: per-pool counters, gauges, job durations."""
        return PlainTextResponse(
            generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @api.get("/workers", summary="Workers of each pool")
    async def workers() -> dict[str, Any]:
        """Each pool's workers and the jobs running on them.

        ``pools`` maps each pool's name to its ``priority``, ``workers``,
        ``busy``, ``idle``, ``paused``, and ``running``: the jobs running now
        (``id``, ``type``, ``started_at``), oldest id first.
        """
        return service.workers()

    return api
