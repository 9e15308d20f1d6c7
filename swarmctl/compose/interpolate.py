"""``${VAR}`` interpolation in compose files, with the docker CLI's syntax and semantics.

Supported: ``$VAR``, ``${VAR}``, ``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset),
``${VAR:?message}`` (error when unset or empty), ``${VAR?message}`` (error when unset), and ``$$``
for a literal ``$``. Defaults are taken literally (no nesting), as in docker/cli's template package.
Strings that contained a substitution come back as :class:`Interpolated`, so the schema may cast
them to numbers or booleans where a file could only have written a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from swarmctl.errors import InputError
from swarmctl.yamlfile import LineDict, LineList

Lookup = Callable[[str], "str | None"]

_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
_SUBST = rf"{_NAME}(?::?[-?][^}}]*)?"
_PATTERN = re.compile(rf"\$(?:(?P<escaped>\$)|(?P<named>{_SUBST})|{{(?P<braced>{_SUBST})}}|(?P<invalid>))")


class Interpolated(str):
    """A string value produced by substitution (the schema may cast it)."""

    __slots__ = ()


class TemplateError(ValueError):
    pass


def substitute(template: str, lookup: Lookup, unset: list[str] | None = None) -> str:
    """Substitute every ``$`` expression in ``template``.

    Raises:
        TemplateError: an invalid expression or a ``?`` requirement that is not met.
    """

    def repl(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        expr = m.group("named") or m.group("braced")
        if not expr:
            raise TemplateError(f"invalid interpolation format in {template!r}: use ${{NAME}} or $$ for a literal $")
        name = re.match(_NAME, expr).group(0)  # type: ignore[union-attr]
        rest = expr[len(name) :]
        value = lookup(name)
        if rest.startswith(":-"):
            return value if value else rest[2:]
        if rest.startswith("-"):
            return value if value is not None else rest[1:]
        if rest.startswith(":?"):
            if not value:
                raise TemplateError(f"required variable {name} is missing a value: {rest[2:] or 'it must be set'}")
            return value
        if rest.startswith("?"):
            if value is None:
                raise TemplateError(f"required variable {name} is missing a value: {rest[1:] or 'it must be set'}")
            return value
        if value is None:
            if unset is not None and name not in unset:
                unset.append(name)
            return ""
        return value

    return _PATTERN.sub(repl, template)


def interpolate(node: Any, lookup: Lookup, file: str, unset: list[str]) -> Any:
    """A copy of a loaded YAML tree with every string value interpolated (keys are left alone);
    ``unset`` gets ``FILE:LINE: variable NAME`` for each use of a variable that is not set."""
    if isinstance(node, LineDict):
        out = LineDict()
        out.line = node.line
        out.key_lines = dict(node.key_lines)
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("x-") and key != "x-swarmctl":
                out[key] = value  # extension fields are the user's own business (x-swarmctl is ours)
                continue
            out[key] = _one(value, lookup, file, node.line_of(key), unset)
        return out
    if isinstance(node, LineList):
        out_list = LineList(_one(v, lookup, file, node.line_of(i), unset) for i, v in enumerate(node))
        out_list.line = node.line
        out_list.item_lines = list(node.item_lines)
        return out_list
    return node


def _one(value: Any, lookup: Lookup, file: str, line: int, unset: list[str]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value
        missing: list[str] = []
        try:
            result = substitute(value, lookup, missing)
        except TemplateError as e:
            raise InputError(str(e), file, line) from None
        unset += [f"{file}:{line}: variable {name}" for name in missing]  # where each unset one was used
        return Interpolated(result)
    return interpolate(value, lookup, file, unset)


def chain_lookup(*sources: Mapping[str, str]) -> Lookup:
    """Look a name up in each mapping in turn (the first holds the highest priority)."""

    def lookup(name: str) -> str | None:
        for source in sources:
            if name in source:
                return source[name]
        return None

    return lookup


def parse_dotenv(text: str, file: str) -> dict[str, str]:
    """A ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional ``export`` and quotes."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(_NAME, key):
            raise InputError(f"expected NAME=VALUE, got {raw.strip()!r}", file, number)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out
