"""Config helpers for the workflow: load the config schema, give ``--config`` values the schema's types.

``snakemake --config aracne='{bootstraps: 200}'`` parses the nested value with YAML's BaseLoader,
so every scalar inside it arrives as a string (``'200'``, ``'true'``, ``'null'``) and the schema
rejects it ("'200' is not of type 'integer'"). :func:`coerce_to_schema` walks the config beside
the schema and re-reads such strings with :func:`yaml.safe_load` where the schema does not accept
a string at that place, before the config is validated. Nothing here reads the workflow's config
by itself: the Snakefile passes it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: the workflow's config schema (JSON Schema 2020-12, with the defaults)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_TYPE_OF = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null", list: "array", dict: "object"}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema as a dict (YAML or JSON file)."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _resolve(schema: dict, root: dict) -> dict:
    """``schema`` with a local ``$ref`` (``#/...``) followed; other schemas as they are."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/") and seen < 32:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _alternatives(schema: dict, root: dict) -> list[dict]:
    """``schema`` and, recursively, the branches of its ``anyOf`` / ``oneOf`` / ``allOf``."""
    schema = _resolve(schema, root)
    out = [schema]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            out += _alternatives(sub, root)
    return out


def accepted_types(schema: dict, root: dict | None = None) -> set[str] | None:
    """The JSON types ``schema`` allows (from ``type``, ``enum``, ``const`` and its branches);
    None when it does not constrain the type."""
    root = schema if root is None else root
    types: set[str] = set()
    constrained = False
    for alt in _alternatives(schema, root):
        t = alt.get("type")
        if t is not None:
            constrained = True
            types |= {t} if isinstance(t, str) else set(t)
        elif "enum" in alt or "const" in alt:
            constrained = True
            values = alt.get("enum", []) + ([alt["const"]] if "const" in alt else [])
            types |= {_TYPE_OF.get(type(v), "string") for v in values}
        elif any(k in alt for k in ("properties", "additionalProperties")):
            constrained = True
            types.add("object")
        elif any(k in alt for k in ("items", "prefixItems")):
            constrained = True
            types.add("array")
    if "number" in types:
        types.add("integer")
    return types if constrained else None


def _is(value, types: set[str]) -> bool:
    return any(_CHECKS[t](value) for t in types if t in _CHECKS)


def _parse_scalar(text: str, types: set[str]):
    """``text`` read as YAML (``'200'`` -> 200, ``'true'`` -> True, ``'null'`` -> None); a number
    YAML 1.1 leaves a string (``1e-8``) is read by float() where the schema wants a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and types & {"number", "integer"}:
        try:
            number = float(value)
        except ValueError:
            return text
        value = int(number) if "number" not in types and number.is_integer() else number
    return value


def coerce_to_schema(value, schema: dict, root: dict | None = None):
    """``value`` with its string scalars given the types ``schema`` asks for (a new object; ``value``
    is not changed).

    Only strings at places where the schema does not accept a string are re-read
    (:func:`yaml.safe_load`); a string the schema accepts stays a string (``data.tissue_key:
    'null'`` is the column named null), and a string that does not read as an accepted type is
    left for validation to report. Mappings follow ``properties`` (and ``additionalProperties``
    when it is a schema), lists ``items`` / ``prefixItems``, through ``anyOf`` / ``oneOf`` /
    ``allOf`` and local ``$ref``.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, str):
        types = accepted_types(schema, root)
        if types is None or "string" in types:
            return value
        parsed = _parse_scalar(value, types)
        if not _is(parsed, types):
            return value
        value = parsed
    alts = _alternatives(schema, root)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            subs = [alt["properties"][key] for alt in alts if key in alt.get("properties", {})]
            if not subs:
                subs = [alt["additionalProperties"] for alt in alts if isinstance(alt.get("additionalProperties"), dict)]
            out[key] = coerce_to_schema(item, {"anyOf": subs}, root) if subs else item
        return out
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            subs = [alt["prefixItems"][i] for alt in alts if i < len(alt.get("prefixItems", []))]
            if not subs:
                subs = [alt["items"] for alt in alts if isinstance(alt.get("items"), dict)]
            out.append(coerce_to_schema(item, {"anyOf": subs}, root) if subs else item)
        return out
    return value


def coerce_config(config: dict, schema: dict | str | Path = SCHEMA_PATH) -> dict:
    """The workflow config (``--config`` strings included) coerced to ``schema``'s types, in place:
    the Snakefile calls it on ``config`` before ``validate()``. Returns ``config``."""
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    coerced = coerce_to_schema(dict(config), schema)
    config.clear()
    config.update(coerced)
    return config
