"""JSON schemas made safe for grammar-constrained decoding: every value has a length bound.

A grammar from a bounded schema admits only finitely long texts, so a decode with a token
cap of `max_json_chars` always ends in a complete, valid value, never a truncated one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_STRING = 64  # characters of a free string value (a city, a name, a short note)
DEFAULT_MAX_ITEMS = 8
_INTEGER_CHARS = 17  # "-" and 16 digits: llama.cpp's integer rule
_NUMBER_CHARS = 52  # sign, 16 digits, ".", 16 digits, exponent
_DROP = frozenset({"$schema", "$id", "title", "examples", "format", "pattern", "default"})


def bounded_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy where strings have `maxLength`, arrays `maxItems`, objects no extra keys."""
    out: dict[str, Any] = {k: v for k, v in schema.items() if k not in _DROP}
    kind = out.get("type")
    if "enum" in out or "const" in out:
        return out
    for key in ("anyOf", "oneOf"):
        if key in out:
            out[key] = [bounded_schema(alt) for alt in out[key]]
    if kind == "string":
        out["maxLength"] = min(
            int(out.get("maxLength", DEFAULT_MAX_STRING)), 4 * DEFAULT_MAX_STRING
        )
    elif kind == "array":
        out["items"] = bounded_schema(out.get("items", {"type": "string"}))
        out["maxItems"] = min(int(out.get("maxItems", DEFAULT_MAX_ITEMS)), 4 * DEFAULT_MAX_ITEMS)
    elif kind == "object" or "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: bounded_schema(v) for k, v in out.get("properties", {}).items()}
        out["additionalProperties"] = False
    elif kind is None and not any(k in out for k in ("anyOf", "oneOf")):
        out.update(type="string", maxLength=DEFAULT_MAX_STRING)  # "anything": a short string
    return out


def max_json_chars(schema: Mapping[str, Any]) -> int:
    """An upper bound on the length of any JSON text a bounded schema's grammar admits."""
    if "const" in schema:
        return len(json.dumps(schema["const"]))
    if "enum" in schema:
        return max((len(json.dumps(v)) for v in schema["enum"]), default=4)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return max(max_json_chars(alt) for alt in alternatives)
    kind = schema.get("type")
    if kind == "string":
        return 2 + 6 * int(schema.get("maxLength", DEFAULT_MAX_STRING))  # \uXXXX escapes
    if kind == "integer":
        return _INTEGER_CHARS
    if kind == "number":
        return _NUMBER_CHARS
    if kind in ("boolean", "null"):
        return 5
    if kind == "array":
        item = max_json_chars(schema.get("items", {}))
        return 4 + int(schema.get("maxItems", DEFAULT_MAX_ITEMS)) * (item + 2)
    properties = schema.get("properties", {})
    # each key/value pair: quoted key, optional spaces, colon, comma
    return 4 + sum(len(json.dumps(k)) + 4 + max_json_chars(v) for k, v in properties.items())
