"""YAML loading that remembers where every key came from.

Users get ``FILE:LINE: message`` for every mistake, so mappings are loaded as :class:`LineDict`,
a dict that also knows the line of itself and of each of its keys. Duplicate keys, which PyYAML
silently merges (last one wins), are an error here.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from swarmctl.errors import InputError


class LineDict(dict):
    """A dict from YAML that knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key_lines = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A list from YAML that knows its own line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.item_lines = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader producing LineDict/LineList and rejecting duplicate keys."""

    file_name = "<yaml>"

    def construct_yaml_map(self, node: yaml.MappingNode):
        data = LineDict()
        data.line = node.start_mark.line + 1
        yield data
        data.update(self._construct_pairs(node, data))

    def _construct_pairs(self, node: yaml.MappingNode, data: LineDict) -> dict[Any, Any]:
        own_keys: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                raise InputError("a mapping key must be a plain value", self.file_name, line) from None
            if key in own_keys:
                raise InputError(f"duplicate key {key!r} (first defined on line {own_keys[key]})", self.file_name, line)
            own_keys[key] = line
        # merge keys (<<: *anchor) are legitimate duplicates: explicit keys override merged ones
        self.flatten_mapping(node)
        pairs: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            pairs[key] = self.construct_object(value_node, deep=True)
            data.key_lines.setdefault(key, key_node.start_mark.line + 1)
        data.key_lines.update(own_keys)
        return pairs

    def construct_yaml_seq(self, node: yaml.SequenceNode):
        data = LineList()
        data.line = node.start_mark.line + 1
        yield data
        data.extend(self.construct_sequence(node, deep=True))
        data.item_lines = [item.start_mark.line + 1 for item in node.value]


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)


def parse_yaml(text: str, file_name: str) -> Any:
    """Parse one YAML document; errors become InputError with the file and line."""
    loader_cls = type("_FileLoader", (_Loader,), {"file_name": file_name})
    loader = loader_cls(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "invalid YAML"
        raise InputError(f"invalid YAML: {problem}", file_name, line) from None
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {e}", file_name) from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is an InputError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", path) from None
    return parse_yaml(text, str(path))


def type_name(value: Any) -> str:
    """How a YAML value's type reads in an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def suggest(key: str, allowed: Sequence[str], list_all: bool = False) -> str:
    """`` (did you mean 'x'?)`` for a misspelt key; with ``list_all``, the choices when none is close."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(allowed)})" if list_all else ""
