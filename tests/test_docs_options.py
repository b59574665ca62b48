"""The service's docs say what the code does: every option, as OPTIONS has it.

``docs/service.rst`` does not list the options by hand: the
``bulkhead-options`` directive (``docs/_ext/bulkhead_options.py``) renders
them from :data:`bulkhead.service._config.OPTIONS` at build time. These
tests check that the page uses it, that the table it builds is the one
``--help`` prints, and that no page names a variable or flag the service
does not have (a hand-written mention that drifted).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import attrs

import bulkhead
from bulkhead.service._config import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SERVICE_PAGES = ["service.rst", "coming-from-go.rst", "service-api.rst"]

VARIABLE = re.compile(r"\bBULKHEAD_[A-Z_]+\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
BUILD_ONLY = {"BULKHEAD_DOCS_INTERSPHINX"}
"""Variables of the docs build, not of the service."""


def _extension() -> Any:
    path = DOCS / "_ext" / "bulkhead_options.py"
    spec = importlib.util.spec_from_file_location("bulkhead_options", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_service_page_generates_its_options_table() -> None:
    text = (DOCS / "service.rst").read_text()
    assert "\n.. bulkhead-options::\n" in text
    # Not also a hand-written list that could drift: a definition list
    # entry is a line holding only a variable, its meaning indented below.
    assert not re.search(r"^``BULKHEAD_[A-Z_]+``\n   ", text, re.M)


def test_the_generated_table_is_what_help_prints() -> None:
    rows = _extension().rows()
    assert [row[:2] for row in rows] == [
        (option.flag, option.variable) for option in OPTIONS.values()
    ]
    for (_, _, default, text), option in zip(rows, OPTIONS.values(), strict=True):
        assert option.describe().endswith(f"[{option.variable}, default {default}]")
        assert text.lower() == f"{option.help}.".lower()


def test_every_variable_the_docs_name_exists() -> None:
    known = {option.variable for option in OPTIONS.values()} | BUILD_ONLY
    for page in sorted(DOCS.glob("*.rst")):
        named = set(VARIABLE.findall(page.read_text()))
        assert named <= known, f"{page.name} names {sorted(named - known)}"


def test_every_flag_the_service_pages_name_exists() -> None:
    known = {option.flag for option in OPTIONS.values()} | {"--help"}
    for name in SERVICE_PAGES:
        named = set(FLAG.findall((DOCS / name).read_text()))
        assert named <= known, f"{name} names {sorted(named - known)}"


GO_VARIABLES = [
    "SERVER_PORT",
    "SERVER_HOST",
    "WORKER_NUM_WORKERS",
    "WORKER_MAX_CONCURRENCY",
    "WORKER_JOB_TIMEOUT",
    "WORKER_RETRY_ATTEMPTS",
    "LOG_LEVEL",
]
GO_STATS = [
    "jobs_submitted",
    "jobs_completed",
    "jobs_failed",
    "workers_active",
    "queue_size",
    "uptime",
]


def test_coming_from_go_maps_each_go_variable_and_stats_field() -> None:
    text = (DOCS / "coming-from-go.rst").read_text()
    for name in [*GO_VARIABLES, *GO_STATS]:
        assert f"``{name}``" in text, name
    for endpoint in [
        "POST /jobs?type=T&priority=P",
        "GET /stats",
        "GET /workers",
        "GET /health",
    ]:
        assert f"``{endpoint}``" in text, endpoint
    assert "\n   coming-from-go\n" in (DOCS / "index.rst").read_text()


def test_the_go_stats_fields_map_to_fields_bulkhead_has() -> None:
    text = (DOCS / "coming-from-go.rst").read_text()
    pool_fields = attrs.fields_dict(bulkhead.PoolStatistics)
    for field in re.findall(r"``total\.(\w+)``", text):
        assert field in pool_fields, field
    assert re.findall(r"``total\.(\w+)``", text) == ["succeeded", "failed", "busy"]
