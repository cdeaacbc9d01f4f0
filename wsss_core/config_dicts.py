"""Plain mappings <-> typed configs, shared by the pipeline config
(wsss_core.pipeline.config) and the study spec (study.spec).

Dotted keys ("section.key") and section mappings ({section: {key: value}})
both address one value; `nest_dotted` and `merge_dotted` turn either form into
nested sections. `build_dataclass` builds a frozen dataclass from one section,
checking every value against its field's annotation, and `plain_data` turns
a built config back into YAML/JSON-ready lists and dicts.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A bad configuration value; the message is one line for the user."""


def nest_dotted(source: Mapping[str, Any]) -> dict[str, Any]:
    """{"cam": {"lr": 0.1}, "cam.lam": 0.5} -> {"cam": {"lr": 0.1, "lam": 0.5}}, a copy.
    Section mappings first, then the dotted keys on top (the more specific key
    wins); a non-mapping section value is kept for the caller to reject."""
    sections = {str(key): value for key, value in source.items() if "." not in str(key)}
    return merge_dotted(sections, {str(key): value for key, value in source.items() if "." in str(key)})


def merge_dotted(base: Mapping[str, Any], dotted: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the nested `base` with each "section.key" value set
    (the key is split at its first dot). ConfigError when the section is not a mapping."""
    nested = copy.deepcopy(dict(base))
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        values = nested.setdefault(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{section}={values!r} is invalid; allowed: a mapping of {section} keys")
        values[name] = value
    return nested


def flatten_sections(nested: Mapping[str, Any]) -> dict[str, Any]:
    """{"section.key": value} of a nested {section: {key: value}} mapping (non-mapping sections left out)."""
    return {f"{section}.{key}": value for section, values in nested.items() if isinstance(values, dict)
            for key, value in values.items()}


def build_dataclass(cls: type, values: Any, section: str) -> Any:
    """`cls(**values)` with every value checked against its field's annotation
    (ints accepted for floats, lists for tuples), then `validate(section)` when
    `cls` has one. ConfigError naming "section.key", the value and what is allowed."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}={values!r} is invalid; allowed: a mapping of {section} keys")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}; allowed: {', '.join(sorted(known))}")
        kwargs[key] = coerce(f"{section}.{key}", value, hints[key])
    try:
        built = cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{section}: {error}".splitlines()[0]) from None
    if hasattr(built, "validate"):
        built.validate(section)
    return built


def coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` checked against the annotation `hint` (bool, int, float, str,
    tuples, dicts, optionals); ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(key, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is invalid; allowed: a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}={list(value)!r} is invalid; allowed: a list of {len(args)} values")
        return tuple(coerce(key, v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} is invalid; allowed: a mapping")
        value_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        return {k: coerce(f"{key}.{k}", v, value_hint) for k, v in value.items()}
    checks: dict[Any, tuple[tuple[type, ...], str]] = {
        bool: ((bool,), "true or false"),
        int: ((int,), "an integer"),
        float: ((int, float), "a number"),
        str: ((str,), "a string"),
    }
    if hint not in checks:
        return value
    types_allowed, allowed = checks[hint]
    if not isinstance(value, types_allowed) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")
    return float(value) if hint is float else value


def plain_data(value: Any) -> Any:
    """Nested dicts, lists and tuples -> dicts and lists (YAML/JSON-ready); other values as they are."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value
