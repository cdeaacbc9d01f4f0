"""Command-line overrides of a study spec: `--set KEY=VALUE` and `--grid KEY=A,B,...`.

They edit the spec mapping as read from its file, before `parse_spec`
validates it, so an overridden spec is checked exactly like a written one and
is recorded whole in the study's `study.json` (`wsss study resume` reruns it
without the flags).

`--set section.key=value`:
  - a pipeline key (`data.root`, `cam.epochs`, ...) becomes a fixed key of
    every trial; a searched key is pinned (its axis is dropped);
  - a study setting (`search.num_samples`, `resources.gpus`,
    `failure.max_retries`, ...) replaces the spec's;
  - `name=`, `description=` and `seeds=[0, 1]` replace those top-level keys.
`--grid section.key=a,b,c` sweeps a pipeline key over the listed values: it
replaces the key's axis (keeping its `when` condition) or its fixed value, or
adds an axis after the spec's own.

Values are YAML, parsed by the pipeline's `--set` parser
(`wsss_core.pipeline.config.parse_override`): `cam.resize_long=[64,80]`,
`cam.weights=null`, `cam.lr=1e-3`. Hydra's bare `key=value` form is not
accepted (`wsss study run` names the two flags instead), because a bare
`key=a,b` cannot tell a list value from a sweep.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from study.spec import TOP_KEYS, SpecError

PLAIN_KEYS = ("name", "description", "seeds")
"""Top-level spec keys `--set` replaces whole."""
STRUCTURE_KEYS = ("name", "description", "base", "fixed", "space", "seeds")
"""Top-level spec keys that are not a settings section."""


def settings_sections() -> tuple[str, ...]:
    """The spec's settings sections (search, scheduler, resources, failure, ...)."""
    return tuple(key for key in TOP_KEYS if key not in STRUCTURE_KEYS)


def apply_overrides(raw: dict[str, Any], sets: Sequence[str] = (), grids: Sequence[str] = ()) -> dict[str, Any]:
    """A copy of the spec mapping `raw` with the `--set` and `--grid` items applied.
    Raises SpecError (one line naming the item and what is allowed)."""
    raw = copy.deepcopy(raw)
    fixed = _mapping(raw, "fixed")
    space = _mapping(raw, "space")
    parsed_sets = [(item, *_assignment(item)) for item in sets]
    parsed_grids = [(item, *_sweep(item)) for item in grids]
    both = {key for _, key, _ in parsed_sets} & {key for _, key, _ in parsed_grids}
    if both:
        key = min(both)
        raise SpecError(f"{key} is given to both --set and --grid; allowed: one of them per key")
    for item, key, value in parsed_sets:
        section, _, name = key.partition(".")
        if key in PLAIN_KEYS:
            raw[key] = value
        elif section in settings_sections():
            current = raw.get(section)
            raw[section] = {**(current if isinstance(current, dict) else {}), name: value}
        else:
            _check_pipeline_key(f"--set {item}", key, settings=True)
            space.pop(key, None)
            fixed[key] = value
    for item, key, values in parsed_grids:
        _check_pipeline_key(f"--grid {item}", key, settings=False)
        fixed.pop(key, None)
        current = space.get(key)
        when = current.get("when") if isinstance(current, dict) else None
        space[key] = {"grid": values, **({"when": when} if when else {})}
    raw["fixed"], raw["space"] = fixed, space
    return raw


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(f"{key}={value!r} is invalid; allowed: a mapping of dotted pipeline keys")
    return dict(value)


def _assignment(item: str) -> tuple[str, Any]:
    """(key, YAML value) of one `--set` item."""
    from wsss_core.pipeline.config import ConfigError, parse_override

    key, sep, _ = item.partition("=")
    plain = bool(sep) and key.strip() in PLAIN_KEYS
    try:  # parse_override wants section.key: a top-level key is parsed under a stand-in section
        (key, value), = parse_override(f"spec.{item.strip()}" if plain else item).items()
    except ConfigError as error:
        raise SpecError(f"--set: {_allowed(error)}") from None
    return (key.partition(".")[2] if plain else key), value


def _sweep(item: str) -> tuple[str, list[Any]]:
    """(key, values) of one `--grid KEY=A,B,...` item: the values parse as a YAML flow list."""
    from wsss_core.pipeline.config import ConfigError, parse_override

    key, sep, text = item.partition("=")
    if not sep or not text.strip():
        raise SpecError(f"--grid {item!r} is invalid; allowed: section.key=a,b,c (one or more YAML values)")
    try:
        (key, values), = parse_override(f"{key}=[{text}]").items()
    except ConfigError as error:
        raise SpecError(f"--grid {item!r} is invalid ({_allowed(error)}); allowed: section.key=a,b,c") from None
    return key, values


def _allowed(error: Exception) -> str:
    return str(error).splitlines()[0]


def _check_pipeline_key(where: str, key: str, *, settings: bool) -> None:
    """SpecError unless `key` is section.name of a pipeline config field; the
    message lists the study settings too where they are allowed (`--set`)."""
    from wsss_core.pipeline.config import SECTIONS

    section, _, name = key.partition(".")
    if section not in SECTIONS:
        allowed = f"a pipeline key ({', '.join(f'{s}.*' for s in SECTIONS)})"
        if settings:
            allowed += f", a study setting ({', '.join(f'{s}.*' for s in settings_sections())}) or {', '.join(PLAIN_KEYS)}"
        raise SpecError(f"{where}: unknown section {section!r}; allowed: {allowed}")
    fields = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if name not in fields:
        raise SpecError(f"{where}: unknown key {key}; allowed: {', '.join(f'{section}.{f}' for f in fields)}")
