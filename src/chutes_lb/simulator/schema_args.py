"""A value valid for a JSON schema: tool-call arguments and ``response_format`` answers (pure).

Deterministic and small, for the schemas tools and structured outputs use: ``default``,
``const`` and ``enum`` (first value) win; objects get their *required* properties (all
properties when ``all_properties``), arrays ``minItems`` items, strings ``"sim"`` padded or
cut to ``minLength``/``maxLength`` (``format`` uri/date/email... get a value of that format),
numbers the ``minimum`` (or ``exclusiveMinimum`` + 1, or 0 / 1 inside a ``maximum``);
``anyOf``/``oneOf`` take the first non-null branch, ``allOf`` merges its branches, local
``$ref`` (``#/$defs/...``, ``#/definitions/...``) is followed, at most :data:`MAX_DEPTH` deep.
Tests check the output with the ``jsonschema`` validator.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["value_for", "merge_args", "MAX_DEPTH"]

MAX_DEPTH = 12
_FORMATS = {"uri": "https://example.com/sim", "url": "https://example.com/sim", "email": "sim@example.com",
            "date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "time": "00:00:00Z", "uuid": "00000000-0000-4000-8000-000000000000",
            "hostname": "example.com", "ipv4": "127.0.0.1", "ipv6": "::1"}


def _resolve(schema: Any, root: Any, depth: int) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < MAX_DEPTH:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        node: Any = root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return {}
        schema = node
        depth += 1
    return schema


def _string(schema: dict[str, Any]) -> str:
    s = _FORMATS.get(str(schema.get("format", "")), "sim")
    lo = schema.get("minLength")
    hi = schema.get("maxLength")
    if isinstance(lo, int) and len(s) < lo:
        s = s + "x" * (lo - len(s))
    if isinstance(hi, int) and len(s) > hi:
        s = s[:max(hi, 0)]
    return s


def _number(schema: dict[str, Any], integer: bool) -> float | int:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xlo, bool):  # draft 4 spelling
        xlo, lo = (lo if xlo else None), (None if xlo else lo)
    if isinstance(xhi, bool):
        xhi, hi = (hi if xhi else None), (None if xhi else hi)
    if isinstance(lo, (int, float)):
        v: float = lo
    elif isinstance(xlo, (int, float)):
        v = math.floor(xlo) + 1 if integer else xlo + 1
    elif isinstance(hi, (int, float)) and hi < 1:
        v = hi
    elif isinstance(xhi, (int, float)) and xhi <= 1:
        v = math.ceil(xhi) - 1 if integer else xhi - 1
    else:
        v = 1
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and step > 0:
        v = math.ceil(v / step) * step
    return int(math.ceil(v)) if integer else v


def value_for(schema: Any, root: Any = None, depth: int = 0, all_properties: bool = False) -> Any:
    """A value valid for ``schema`` (see the module docstring); ``{}`` for a missing schema."""
    root = schema if root is None else root
    schema = _resolve(schema, root, depth)
    if schema is True or not isinstance(schema, dict) or depth > MAX_DEPTH:
        return {} if depth == 0 else None
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            typed = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            return value_for((typed or branches)[0], root, depth + 1, all_properties)
    branches = schema.get("allOf")
    if isinstance(branches, list) and branches:
        merged: dict[str, Any] = {}
        for b in branches:
            b = _resolve(b, root, depth + 1)
            if isinstance(b, dict):
                for k, v in b.items():
                    if k in ("properties",) and isinstance(v, dict):
                        merged.setdefault("properties", {}).update(v)
                    elif k == "required" and isinstance(v, list):
                        merged.setdefault("required", []).extend(v)
                    else:
                        merged.setdefault(k, v)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return value_for({**merged, **rest}, root, depth + 1, all_properties)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string" if schema else "object"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)] if isinstance(schema.get("required"), list) else []
        names = list(props) if all_properties else [r for r in required]
        out = {name: value_for(props.get(name, {}), root, depth + 1, all_properties) for name in names}
        for name in required:
            out.setdefault(name, "sim")
        return out
    if kind == "array":
        n = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [value_for(p, root, depth + 1, all_properties) for p in prefix][:max(n, len(prefix))]
        if isinstance(items, list):  # draft 4 tuple form
            return [value_for(p, root, depth + 1, all_properties) for p in items]
        return [value_for(items, root, depth + 1, all_properties) for _ in range(n)]
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _number(schema, True)
    if kind == "number":
        return _number(schema, False)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "sim"


def merge_args(defaults: Any, given: Any) -> Any:
    """``given`` over ``defaults`` (shallow, for objects); ``given`` alone when not both objects."""
    if isinstance(defaults, dict) and isinstance(given, dict):
        return {**defaults, **given}
    return given if given is not None else defaults
