"""JSON Schema of the plan document, generated from the planner's dataclasses.

The generated schema is kept in the repository (siokit/plan.schema.json) so that a reader, a template
author or another tool sees the document's shape without running Python; a unit test keeps the file
equal to what this module generates and validates the planner's output against it.
`siokit plan --schema` prints it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from siokit import planner

SCHEMA_PATH = Path(__file__).resolve().parent / "plan.schema.json"
_SCALARS: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, defs) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], defs)}
    if origin is tuple:
        items = [_type_schema(a, defs) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: a cycle would refer to itself
            defs[name] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {f.name: _type_schema(hints[f.name], defs) for f in dataclasses.fields(cls)}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def json_schema() -> dict[str, Any]:
    """The plan document's schema (draft 2020-12), schema_version fixed to the planner's."""
    defs: dict[str, Any] = {}
    root = _object_schema(planner.Plan, defs)
    root["properties"]["schema_version"] = {"const": planner.SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://siokit.invalid/plan-v{planner.SCHEMA_VERSION}.schema.json",
        "title": "siokit capacity plan",
        "description": "Output of siokit/planner.py: siokit plan --json, /etc/siokit/plan.json, siokit_plan.",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":  # python -m siokit.plan_schema > siokit/plan.schema.json
    print(schema_text(), end="")
