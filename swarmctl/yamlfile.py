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
from swarmctl.files import read_regular


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


MAX_BYTES = 1024 * 1024  # an inventory or stack file is kilobytes; more is a mistake or an attack
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_VALUES = 100_000  # values once aliases and merge keys are expanded ("billion laughs")


def _check_depth(text: str, file_name: str) -> None:
    """Nesting deeper than MAX_DEPTH is refused from the event stream (PyYAML's parser is not
    recursive; its composer is, and would overflow the stack on thousands of nested brackets)."""
    loader = yaml.SafeLoader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise InputError(f"nested more than {MAX_DEPTH} levels deep", file_name, line)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, file_name: str) -> None:
    """Refuse a document whose aliases and merge keys expand to more than MAX_VALUES values.

    Sizes are counted on the node graph with each shared (aliased) node counted once per use but
    computed once, so a bomb is measured in linear time without being built.
    """
    sizes: dict[int, int] = {}
    order: list[yaml.Node] = []
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not expanded and children:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_VALUES + 1)
        order.append(node)
    if sizes[id(root)] <= MAX_VALUES:
        return
    # name the innermost node that expands past the limit on its own: where the bomb is
    culprit = next(n for n in order if sizes[id(n)] > MAX_VALUES)
    raise InputError(
        f"aliases and merge keys here expand to more than {MAX_VALUES} values: refusing to expand them",
        file_name,
        culprit.start_mark.line + 1,
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(text: str, file_name: str) -> Any:
    """Parse one YAML document; errors become InputError with the file and line.

    Hostile input is bad input like any other: a size cap, a depth cap and a cap on what aliases
    and merge keys may expand to, each refused in well under a second with the line.
    """
    if len(text) > MAX_BYTES:
        raise InputError(f"the file is {len(text)} bytes; swarmctl reads YAML files of at most {MAX_BYTES}", file_name)
    loader_cls = type("_FileLoader", (_Loader,), {"file_name": file_name})
    try:
        _check_depth(text, file_name)
        loader = loader_cls(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node, file_name)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "invalid YAML"
        if "'\\t'" in problem:  # PyYAML's words for a tab used for indentation
            problem += ": YAML indents with spaces, never tabs"
        raise InputError(f"invalid YAML: {problem}", file_name, line) from None
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {e}", file_name) from None
    except RecursionError:
        raise InputError(f"nested too deeply (more than {MAX_DEPTH} levels)", file_name) from None


def load_yaml(path: Path) -> Any:
    """Read and parse a YAML file; a missing, unreadable, oversized or special file (a FIFO, a link
    to /dev/zero: see files.read_regular) is an InputError."""
    try:
        text = read_regular(path, MAX_BYTES, "YAML files").decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"cannot read: not UTF-8 ({e.reason} at byte {e.start})", path) from None
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
