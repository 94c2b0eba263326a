"""The contract as an OpenAPI document (components only): platform events and command
parameters, from which the dashboard's types are generated like its REST client
(web/scripts/gen_api.mjs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from iotp.protocol.commands import COMMAND_PARAMS
from iotp.protocol.events import EVENT_PAYLOADS, Event

REF = "#/components/schemas/{model}"


def schema_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [Event, *EVENT_PAYLOADS.values()]
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(top["$defs"])
    for command, shape in COMMAND_PARAMS.items():
        schema = TypeAdapter(shape).json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        name = "".join(part.title() for part in command.split("_"))
        schemas[f"{name}Params"] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "IoT Platform events and command parameters", "version": "1"},
        "paths": {},
        "components": {"schemas": dict(sorted(schemas.items()))},
    }
