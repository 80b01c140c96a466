"""Config helpers for the workflow: load the config schema, give ``--config`` values the schema's types.

``snakemake --config aracne='{bootstraps: 200}'`` parses the nested value with YAML's BaseLoader,
so every scalar inside it arrives as a string (``'200'``, ``'true'``, ``'null'``) and the schema
rejects it ("'200' is not of type 'integer'"). :func:`coerce_to_schema` walks the config beside
the schema and re-reads such strings with :func:`yaml.safe_load` where the schema does not accept
a string at that place, before the config is validated. :func:`validate_config` then checks the
config against the schema and fills in its defaults (as Snakemake's ``validate(set_default=True)``),
raising a :class:`~netpert.errors.ConfigError` of one or two lines: the key, what is wrong, a
"did you mean" for a misspelled key, and where the value came from (``--config`` or a config file).
:func:`check_input` stops a run whose config key ``input`` names a file that does not exist. Nothing
here reads the workflow's config by itself: the Snakefile passes it in.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from netpert.errors import ConfigError

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
    the Snakefile calls it on ``config`` before :func:`validate_config`. Returns ``config``."""
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    coerced = coerce_to_schema(dict(config), schema)
    config.clear()
    config.update(coerced)
    return config


# --------------------------------------------------------------------------------------------- validation
#: where a config value came from: a label (``--config``, ``config file /abs/path.yaml``) and what it gave
Source = tuple[str, Mapping]


def config_sources(
    configfiles: Sequence[str | os.PathLike] = (),
    command_line: Mapping | None = None,
    given: Sequence[str | os.PathLike] = (),
) -> list[Source]:
    """The layers of a workflow's config, lowest precedence first, as Snakemake merges them: the
    ``configfiles`` not in ``given`` (the Snakefile's ``configfile:``), then the ``given`` ones
    (``--configfile``, in order), then ``--config`` (``command_line``). A file that cannot be read
    is left out (Snakemake has reported it already)."""
    given = [Path(path).absolute() for path in given]
    files = [Path(path).absolute() for path in configfiles]
    sources: list[Source] = []
    for path in [*(f for f in files if f not in given), *given]:
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, Mapping):
            sources.append((f"config file {path}", data))
    if command_line:
        sources.append(("--config", command_line))
    return sources


def _holds(mapping: Mapping, path: Sequence) -> bool:
    node: Any = mapping
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def source_of(path: Sequence, sources: Sequence[Source]) -> str | None:
    """The label of the source that set the config key at ``path`` (the last of ``sources``, in
    precedence order, that holds it; for a list item, the source of the list); None when none did."""
    keys = list(path)
    while keys and not isinstance(keys[-1], str):
        keys.pop()
    for label, data in reversed(sources):
        if _holds(data, keys):
            return label
    return None


def _key_path(path: Sequence) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _default_validator(schema: dict):
    """A Draft 2020-12 validator that fills each ``properties`` default into the instance before
    validating it (the jsonschema FAQ's extension, as Snakemake's ``validate(set_default=True)``;
    defaults are copied, so the schema's own objects never end up in a config)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def _unknown_keys(error) -> list[str]:
    """The keys an ``additionalProperties: false`` error is about, in the config's order."""
    allowed = set(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    return [k for k in error.instance if k not in allowed and not any(re.search(p, k) for p in patterns)]


def _explain(error, sources: Sequence[Source]) -> tuple[list, str]:
    """The key path and the one-line 'what is wrong' of a jsonschema error."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.schema.get("additionalProperties") is False:
        unknown = _unknown_keys(error)
        if unknown:
            allowed = sorted(error.schema.get("properties", {}))
            hints = []
            for key in unknown:
                match = difflib.get_close_matches(key, allowed, n=1)
                if match:
                    hints.append(f"'{match[0]}'" + (f" for '{key}'" if len(unknown) > 1 else ""))
            listed = ", ".join(f"'{k}'" for k in unknown)
            what = f"unknown key ({listed} {'was' if len(unknown) == 1 else 'were'} unexpected)"
            if hints:
                what += "; did you mean " + ", ".join(hints) + "?"
            else:
                what += "; allowed here: " + ", ".join(allowed)
            return path + [unknown[0]] if len(unknown) == 1 else path, what
    if error.validator == "contains" and "const" in error.schema.get("contains", {}):
        what = f"{error.instance!r} must include {error.schema['contains']['const']!r}"
        return path, what + (f" ({error.schema['description']})" if error.schema.get("description") else "")
    return path, error.message


def validate_config(config: dict, schema: dict | str | Path = SCHEMA_PATH, sources: Sequence[Source] = ()) -> dict:
    """Validate ``config`` against ``schema`` and fill in the schema's defaults, in place (every
    ``properties`` default, nested sections included, as Snakemake's ``validate(set_default=True)``).

    A config the schema rejects raises :class:`~netpert.errors.ConfigError`, two lines::

        Error validating config file /abs/my.yaml, key `aracne.bootstrap`:
          unknown key ('bootstrap' was unexpected); did you mean 'bootstraps'?

    naming the key, what is wrong (jsonschema's words; for a misspelled key the close matches among
    the keys allowed there) and the source that set it: the last of ``sources``
    (:func:`config_sources`, lowest precedence first) that holds the key (``--config`` or a config
    file), "the config" when none does. Where the config has several problems, the most relevant
    (:func:`jsonschema.exceptions.best_match`) is told and the count of the others. Returns ``config``.
    """
    from jsonschema.exceptions import best_match

    if not isinstance(schema, dict):
        schema = load_schema(schema)
    errors = list(_default_validator(schema).iter_errors(config))
    if not errors:
        return config
    error = best_match(errors)
    path, what = _explain(error, sources)
    origin = source_of(path, sources) or "the config"
    key = f", key `{_key_path(path)}`" if path else ""
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    raise ConfigError(f"Error validating {origin}{key}:\n  {what}{more}")


def check_input(source: str, base: str | os.PathLike | None = None) -> None:
    """Stop a run whose config key ``input`` names a file that is not there (before any job).

    ``source`` is the config's ``input``: ``embedded:NAME`` is left alone (the job checks the name);
    a path, relative to ``base`` (the working directory when None), must be a file, else
    :class:`~netpert.errors.ConfigError` says so, naming the key, the path and what to give instead.
    """
    if source.startswith("embedded:"):
        return
    path = Path(base or os.getcwd()) / Path(source).expanduser()
    shown = source if Path(source).expanduser().is_absolute() else f"{source} (looked for {path})"
    fix = "give an .h5ad path or embedded:pbmc68k_reduced"
    if not path.exists():
        raise ConfigError(f"config key `input`: file {shown} does not exist; {fix}")
    if not path.is_file():
        raise ConfigError(f"config key `input`: {shown} is not a file; {fix}")
