"""YAML as ML users write it: `load_yaml` reads numbers in every notation.

PyYAML implements YAML 1.1, whose float needs a dot and a signed exponent, so
`1e-4`, `1E6` and `1.0e6` come back as strings. `NumberLoader` also resolves
the YAML 1.2 forms (unsigned exponents, no dot, `-.5`). Every config, spec
and `--set` value is parsed here; a syntax error becomes `YAMLSyntaxError`
with one line naming the source, line and column.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class NumberLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4, 1E6, 1.0e6, .5 and -.5 as floats."""


NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


class YAMLSyntaxError(ValueError):
    """Text that is not valid YAML; the message is one line with line and column."""


def load_yaml(text: str, source: str) -> Any:
    """Parse `text` with NumberLoader; `source` names it in errors (a path, `--set k=v`)."""
    try:
        return yaml.load(text, Loader=NumberLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise YAMLSyntaxError(f"{source}: not valid YAML{_where(error)}") from None


def _where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f": {problem}"
    return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
