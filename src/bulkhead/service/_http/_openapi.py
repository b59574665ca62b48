"""The published schema of ``POST /jobs`` and ``POST /jobs/batch``, made
exactly as precise as the validation: one variant per registered job type,
with that type's arguments, and priorities that name configured pools.

Validation stays with the models and the registry (their messages name the
field); this only makes the schema, hence the docs and generated clients,
say what the service accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .._service import Service
from .._views import pool_name
from ._models import BatchSubmission, JobSubmission


def narrow_submissions(schema: dict[str, Any], service: Service) -> None:
    """Add the bodies of ``POST /jobs`` and ``POST /jobs/batch`` to
    ``schema``, narrowed to what ``service`` accepts (module docstring)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, bodies = models_json_schema(
        [(JobSubmission, "validation"), (BatchSubmission, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components.update(bodies["$defs"])
    base = components["JobSubmission"]
    pools = sorted(service.priorities)
    names = [pool_name(p) for p in pools if pool_name(p) != str(p)]
    choices: list[dict[str, Any]] = [{"type": "string", "enum": names}] if names else []
    priority = {
        "anyOf": [*choices, {"type": "integer", "enum": pools}, {"type": "null"}],
        "default": None,
        "description": base["properties"]["priority"].get("description", ""),
    }
    job_types = list(service.registry)
    # Under a prefix of their own, so that a job's model called, say,
    # Problem cannot replace the service's own schema of that name.
    refs, defs = models_json_schema(
        [(t.arguments, "validation") for t in job_types],
        ref_template="#/components/schemas/args.{model}",
    )
    components.update({f"args.{k}": v for k, v in defs.get("$defs", {}).items()})
    mapping = {}
    for job_type in job_types:
        arguments = job_type.arguments.model_json_schema()
        properties = {
            **base["properties"],
            "type": {"type": "string", "const": job_type.name},
            "args": {
                **refs[(job_type.arguments, "validation")],
                "description": base["properties"]["args"].get("description", ""),
            },
            "priority": priority,
        }
        required = ["type", "args"] if arguments.get("required") else ["type"]
        name = f"JobSubmission_{job_type.name}"
        components[name] = {
            **base,
            "title": f"Submit {job_type.name}",
            "properties": properties,
            "required": required,
        }
        mapping[job_type.name] = f"#/components/schemas/{name}"
    one_of = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]
    body["application/json"]["schema"] = one_of
    components["BatchSubmission"]["properties"]["jobs"]["items"] = one_of
