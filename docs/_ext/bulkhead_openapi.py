"""The service's HTTP API reference, generated from its OpenAPI schema.

Two parts:

* At ``builder-inited`` (before any page is read), :func:`write_schema`
  builds the real app, ``create_app(Service(config, registry))``, asks
  FastAPI for its schema and writes it to ``docs/_generated/openapi.json``
  (git-ignored). The config is the one ``bulkhead serve`` starts with
  (``ServiceConfig.load`` with no flags or variables) but for the journal,
  ``:memory:``; the registry is ``examples/service_jobs.py``'s, loaded as
  ``bulkhead serve examples.service_jobs:registry`` loads it. Making a
  ``Service`` opens no file and starts no task or thread (``Service.run``
  opens the journal), so this writes the JSON file and does nothing else.
  The file is rewritten only when the schema changes, so an unchanged
  schema does not make Sphinx read ``service-api.rst`` again.

* ``sphinxcontrib-openapi`` renders that file (``.. openapi-service::`` in
  ``service-api.rst``) with :class:`ServiceApiRenderer`. The stock renderer
  shows each parameter's type only (a nullable one as a Python set, e.g.
  ``{'string', 'null'}``), bodies only as raw JSON schema or made-up
  examples, and lists a response header once per status that sends it.
  This one first rewrites a copy of the schema (:func:`enrich`): each
  parameter gets its type written out and its constraints (choices,
  range, default) as its description, the request body's fields become
  httpdomain ``:reqjson:`` fields, statuses are sorted, a header shared by
  several statuses is listed once naming them, and tags are capitalised
  (they title the groups). After the status codes of each endpoint it adds
  the fields of the successful response's body (``:resjson:``). Everything
  it adds is read from the schema; nothing is written by hand.

  The directive is registered here rather than through the
  ``openapi_renderers`` setting, because a class in ``conf.py``'s settings
  cannot be pickled with the environment, which Sphinx warns about.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinxcontrib.openapi import utils
from sphinxcontrib.openapi.directive import create_directive_from_renderer
from sphinxcontrib.openapi.renderers import HttpdomainOldRenderer

OUTPUT = Path("_generated", "openapi.json")
"""Where the schema goes, relative to the docs source directory."""

ROOT = Path(__file__).resolve().parents[2]
"""The repository, from which ``examples`` is importable."""

REGISTRY = "examples.service_jobs:registry"
"""The registry the documented service runs, as ``make serve`` names it."""


def openapi_schema() -> dict[str, Any]:
    """The schema of the app ``bulkhead serve`` would run for ``REGISTRY``."""
    from bulkhead.service import Service, ServiceConfig, create_app
    from bulkhead.service.cli import load_registry

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    registry = load_registry(REGISTRY)
    config = ServiceConfig.load({"journal": ":memory:"}, {})
    schema: dict[str, Any] = create_app(Service(config, registry)).openapi()
    return schema


def write_schema(app: Sphinx) -> None:
    """Write the schema under the source directory, if it changed."""
    path = Path(app.srcdir) / OUTPUT
    text = json.dumps(openapi_schema(), indent=2) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------ rendering


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of an ``anyOf``/``oneOf``, or the schema itself."""
    return schema.get("anyOf") or schema.get("oneOf") or [schema]


def type_name(schema: dict[str, Any]) -> str:
    """A one-word type: ``integer``, ``integer|string|null``,
    ``array[JobView]``, ``any`` (httpdomain splits field names at spaces)."""
    names = []
    for variant in _variants(schema):
        kind = variant.get("type")
        if kind == "array":
            items = variant.get("items", {})
            kind = f"array[{items.get('title') or type_name(items)}]"
        names.append(kind or "any")
    return "|".join(dict.fromkeys(names))


def _literal(value: Any) -> str:
    return f"``{value if value and isinstance(value, str) else json.dumps(value)}``"


def notes(schema: dict[str, Any], required: bool | None) -> str:
    """The schema's description and constraints as sentences.

    ``required`` is ``None`` for response fields, where it means nothing to
    the reader (pydantic marks every field of a response model required).
    """
    parts = []
    if required is not None:
        parts.append("Required" if required else "Optional")
    for variant in _variants(schema):
        if "enum" in variant:
            parts.append("one of " + ", ".join(map(_literal, variant["enum"])))
        low, high = variant.get("minLength"), variant.get("maxLength")
        if low is not None and high is not None:
            parts.append(f"{low} to {high} characters")
        if "exclusiveMinimum" in variant:
            parts.append(f"more than {variant['exclusiveMinimum']}")
        if "exclusiveMaximum" in variant:
            parts.append(f"less than {variant['exclusiveMaximum']}")
        low, high = variant.get("minimum"), variant.get("maximum")
        if low is not None and high is not None:
            parts.append(f"from {low} to {high}")
        elif low is not None:
            parts.append(f"at least {low}")
        elif high is not None:
            parts.append(f"at most {high}")
    if "default" in schema and not required:
        parts.append(f"default {_literal(schema['default'])}")
    text = "; ".join(parts)
    text = f"{text[:1].upper()}{text[1:]}." if text else ""
    # An array of models: say what each item is.
    description = schema.get("description") or schema.get("items", {}).get(
        "description", ""
    )
    # Field lists take one line: docstrings wrap theirs.
    return " ".join(" ".join(filter(None, [description, text])).split())


def json_fields(role: str, schema: dict[str, Any]) -> Iterator[str]:
    """httpdomain fields (``:reqjson type name: notes``) for an object's
    properties, or nothing if it has none (``dict[str, Any]``)."""
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        needed = (name in required) if role == "reqjson" else None
        yield f":{role} {type_name(field)} {name}: {notes(field, needed)}".rstrip()


def _json_schema(message: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = (
        message.get("content", {}).get("application/json", {}).get("schema", {})
    )
    return schema


def enrich(operation: dict[str, Any]) -> None:
    """Rewrite one operation (references resolved) for the stock renderer."""
    for parameter in operation.get("parameters", []):
        schema = parameter["schema"]
        in_path = parameter["in"] == "path"  # always required: say nothing
        description = notes(
            {**schema, "description": parameter.get("description", "")},
            None if in_path else parameter.get("required", False),
        )
        parameter["schema"] = {"type": type_name(schema)}
        parameter["description"] = description
        parameter["required"] = False  # said in the description already
    body = _json_schema(operation.get("requestBody", {}))
    by_type = by_job_type(body)
    if by_type:
        body = _merged(body)
    fields = json_fields("reqjson", body)
    operation["description"] = "\n\n".join(
        filter(None, [operation.get("description", ""), "\n".join(fields), by_type])
    )
    responses = operation.get("responses", {})
    operation["responses"] = responses = dict(sorted(responses.items()))
    senders: dict[str, list[str]] = {}
    for status, response in responses.items():
        for name in response.get("headers", {}):
            senders.setdefault(name, []).append(status)
    for name, statuses in senders.items():
        first, *others = (responses[status]["headers"] for status in statuses)
        # A header the schema does not describe (Retry-After) still says
        # which statuses send it.
        described = first[name].get("description", "")
        sent = f"with {', '.join(statuses)}"
        first[name]["description"] = (
            f"{described} ({sent})" if described else f"Sent {sent}."
        )
        for headers in others:
            del headers[name]
    operation["tags"] = [tag.capitalize() for tag in operation.get("tags", [])]


def _merged(body: dict[str, Any]) -> dict[str, Any]:
    """One object for a body with a variant per job type: their shared
    fields, ``type`` being one of the types' names."""
    variants = body["oneOf"]
    merged = copy.deepcopy(variants[0])
    names = [v["properties"]["type"]["const"] for v in variants]
    merged["properties"]["type"] = {"type": "string", "enum": names}
    merged["properties"]["args"] = {
        "type": "object",
        "description": "The job function's arguments by name (below); optional "
        "when they all have defaults.",
    }
    merged["required"] = ["type"]
    return merged


def by_job_type(body: dict[str, Any]) -> str:
    """For a body with a variant per job type (``oneOf`` with a ``type``
    discriminator): a list of each type's ``args``; else nothing."""
    if body.get("discriminator", {}).get("propertyName") != "type":
        return ""
    lines = ["``args`` by job type:", ""]
    for variant in body["oneOf"]:
        arguments = variant["properties"]["args"]
        required = set(arguments.get("required", ()))
        name = variant["properties"]["type"]["const"]
        lines += [f"* ``{name}``", ""]
        lines += [
            f"  * ``{arg}`` ({type_name(field)}): {notes(field, arg in required)}"
            for arg, field in arguments.get("properties", {}).items()
        ] or ["  * no arguments"]
        lines.append("")
    return "\n".join(lines)


def response_fields(operation: dict[str, Any]) -> list[str]:
    """``:resjson:`` fields for the first successful response's body."""
    for status, response in operation.get("responses", {}).items():
        if status.startswith("2"):
            return list(json_fields("resjson", _json_schema(response)))
    return []


class ServiceApiRenderer(HttpdomainOldRenderer):
    """sphinxcontrib-openapi's renderer, on a schema :func:`enrich` rewrote."""

    def render_restructuredtext_markup(self, spec: dict[str, Any]) -> Iterator[str]:
        """Resolve references in a copy of ``spec``, enrich it, render it."""
        # The directive caches the parsed file and normalize_spec() changes
        # what it is given, so work on a copy.
        spec = copy.deepcopy(spec)
        utils.normalize_spec(spec, **self._options)
        paths = spec.get("paths", {})
        for path_item in paths.values():
            for operation in path_item.values():
                enrich(operation)
        # Each endpoint is a ".. http:METHOD:: PATH" directive whose body is
        # indented; put its response fields before its response headers,
        # else at its end (the next unindented line).
        pending: list[str] = []
        for line in super().render_restructuredtext_markup(spec):
            if line.startswith("   :resheader") or (line and line[0] != " "):
                yield from pending
                pending = []
            if line.startswith(".. http:"):
                method, _, path = line.removeprefix(".. http:").partition(":: ")
                fields = response_fields(paths[path][method])
                pending = [f"   {field}" for field in fields] + [""] if fields else []
            yield line
        yield from pending


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hook and the ``openapi-service`` directive."""
    app.setup_extension("sphinxcontrib.openapi")
    # The table of options (service.rst), kept in its own module.
    app.setup_extension("bulkhead_options")
    app.add_directive(
        "openapi-service", create_directive_from_renderer(ServiceApiRenderer)
    )
    app.connect("builder-inited", write_schema)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
