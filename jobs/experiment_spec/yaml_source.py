"""Reading a spec's YAML within the farm's limits, and finding a key's line in it.

`read_yaml` is the one way spec text (a file, an upload, form text) becomes
data: it refuses, while composing, what would take a Mac's memory or the
interpreter's stack (see `_BoundedLoader`). `yaml_locator` is the one way a
field's location becomes the line a message points at; the spec, the suite and
the preflight checks all use it, so every message points the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from jobs import limits
from jobs.experiment_spec.words import Loc, dotted
from jobs.problems import InputError, Problem

LineOf = Callable[[tuple[str | int, ...]], int | None]


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.1 needs `1.0e-5`), like mlx-lm."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _LimitExceeded(Exception):
    """A spec that breaks a YAML limit while it is being read; carries where."""

    def __init__(self, message: str, line: int, loc: Loc) -> None:
        super().__init__(message)
        self.message, self.line, self.loc = message, line, loc


class _BoundedLoader(_SpecLoader):
    """_SpecLoader that refuses, while composing, what would take a Mac's memory or
    the interpreter's stack: nesting deeper than MAX_YAML_DEPTH, more than
    MAX_YAML_VALUES values counting each alias as everything it stands for (the
    "billion laughs" bomb), a recursive alias, and numbers too long to convert.

    PyYAML shares an aliased node rather than copying it, but every walk over the
    result (line lookup, validation, the form) expands it again, so the expanded
    size is what has to stay small."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._path: list[str | int] = []
        self._sizes: dict[str, int] = {}  # anchor -> values its node expands to

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        part = _path_part(index)
        if part is not None:
            self._path.append(part)
        try:
            return self._compose_counted(parent, index)
        finally:
            if part is not None:
                self._path.pop()

    def _compose_counted(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event.anchor, line)
            return super().compose_node(parent, index)
        nested = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nested and self._depth >= limits.MAX_YAML_DEPTH:
            self._refuse(
                f"nested more than {limits.MAX_YAML_DEPTH} levels deep, "
                f"at most {limits.MAX_YAML_DEPTH} allowed",
                line,
            )
        before = self._values
        self._count(1, line, "")
        self._depth += nested
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nested
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            self._check_number(node.value, line)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._sizes[anchor] = self._values - before
        return node

    def _count_alias(self, anchor: str, line: int) -> None:
        if anchor not in self.anchors:
            return  # PyYAML reports the undefined alias itself
        if anchor not in self._sizes:
            self._refuse(f"alias *{anchor} refers to a value it is part of", line)
        self._count(self._sizes[anchor], line, f" (alias *{anchor} expands them)")

    def _count(self, values: int, line: int, why: str) -> None:
        self._values += values
        if self._values > limits.MAX_YAML_VALUES:
            self._refuse(
                f"more than {limits.MAX_YAML_VALUES} YAML values{why}, "
                f"at most {limits.MAX_YAML_VALUES} allowed in a spec",
                line,
            )

    def _check_number(self, text: str, line: int) -> None:
        problem = limits.number_too_long(text)
        if problem:
            self._refuse(problem, line)

    def _refuse(self, message: str, line: int) -> None:
        raise _LimitExceeded(message, line, tuple(self._path))

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        # PyYAML resolves merge keys (<<) by rewriting the node tree in place, but
        # line numbers and duplicate keys are read from that tree afterwards: merge
        # into a copy of the node instead.
        if isinstance(node, yaml.MappingNode):
            node = yaml.MappingNode(
                node.tag, _merged_pairs(node), node.start_mark, node.end_mark, node.flow_style
            )
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep=deep)


_Pairs = list[tuple[yaml.Node, yaml.Node]]


def _merged_pairs(node: yaml.MappingNode) -> _Pairs:
    """The key/value pairs of `node` with merge keys resolved the way PyYAML's
    `flatten_mapping` does (merged pairs first, so the node's own keys win), without
    changing any node. Its cost is bounded: aliases count in MAX_YAML_VALUES."""
    merged: _Pairs = []
    own: _Pairs = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            merged.extend(_merge_source(node, value))
        elif key.tag == "tag:yaml.org,2002:value":  # a plain `=` key is the string "="
            own.append((yaml.ScalarNode("tag:yaml.org,2002:str", key.value, key.start_mark,
                                        key.end_mark, key.style), value))  # fmt: skip
        else:
            own.append((key, value))
    return merged + own


def _merge_source(node: yaml.MappingNode, value: yaml.Node) -> _Pairs:
    if isinstance(value, yaml.MappingNode):
        return _merged_pairs(value)
    if not isinstance(value, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping", node.start_mark,
            f"expected a mapping or list of mappings for merging, but found {value.id}",
            value.start_mark,
        )  # fmt: skip
    parts: list[_Pairs] = []
    for sub in value.value:
        if not isinstance(sub, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"expected a mapping for merging, but found {sub.id}", sub.start_mark,
            )  # fmt: skip
        parts.append(_merged_pairs(sub))
    # Earlier mappings in the list win: PyYAML puts them last.
    return [pair for part in reversed(parts) for pair in part]


def _short_field(loc: Loc, parts: int = 8) -> str:
    """The field a YAML limit was crossed in; a path as deep as the nesting attack
    that got refused is cut after a few steps."""
    field = dotted(loc[:parts]) + ("…" if len(loc) > parts else "")
    return limits.shorten(field, 80)


def _path_part(index: Any) -> str | int | None:
    """The spec path step PyYAML's composer passes as `index`: a mapping value's key
    node, or a list position (None while composing a key)."""
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    return None


def read_yaml(text: str, source: str = "<spec>") -> tuple[yaml.Node | None, Any]:
    """The composed node tree and the loaded data of a spec's YAML, within the limits.

    Refuses with LimitError text over MAX_SPEC_BYTES (before parsing) and anything
    _BoundedLoader refuses, with InputError invalid YAML. Uploads and form text are
    read through here too, so every way in has the same bounds."""
    size_problem = limits.spec_size_problem(limits.text_size(text))
    if size_problem:
        raise limits.LimitError([Problem(source, size_problem)])
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except _LimitExceeded as exc:
        problem = Problem(source, exc.message, exc.line, _short_field(exc.loc))
        raise limits.LimitError([problem]) from None
    except yaml.YAMLError as exc:
        raise InputError([yaml_problem(exc, source)]) from None
    finally:
        loader.dispose()
    return root, data


def line_locator(root: yaml.Node | None) -> LineOf:
    """A function from a key path to the 1-based line of the deepest part of it
    that is in the composed YAML `root`: a mapping key's line, a list item's line.
    None when not even the first part is there (or there is no document).

    Pydantic's "[key]" marker (the location of a mapping key itself) is skipped;
    of two equal keys the last one is found, the one PyYAML keeps."""

    def line_of(loc: Sequence[str | int]) -> int | None:
        node, line = root, None
        for part in loc:
            if part == "[key]":
                continue
            if isinstance(node, yaml.MappingNode):
                match = None
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        match = (key, value)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    return line_of


def yaml_locator(text: str) -> LineOf:
    """`line_locator` for a YAML text. Never raises: text that does not parse
    locates nothing (its problems are reported by whoever reads it).

    Composing builds one node per value written (an alias is a shared node, not a
    copy) and a locator walks a single path, so the value limit of `read_yaml`
    is not needed here; suites, which have no such limit, are located too."""
    try:
        root = yaml.compose(text, Loader=_SpecLoader)
    except (yaml.YAMLError, RecursionError):
        root = None
    return line_locator(root)


def duplicate_keys(node: yaml.Node, source: str, loc: Loc = ()) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first and key.value != "<<":
                out.append(
                    Problem(
                        source,
                        f"duplicate key '{key.value}' (first on line {first[key.value]}) — "
                        "YAML keeps only the last one; remove one of them",
                        line,
                        dotted((*loc, key.value)),
                    )
                )
            first.setdefault(key.value, line)
            out.extend(duplicate_keys(value, source, (*loc, key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.extend(duplicate_keys(item, source, (*loc, i)))
    return out


def yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context})"
        if "\\t" in what:
            what += " — indent with spaces, not tabs"
        elif "block end" in what or "block mapping" in what:
            what += " — check the indentation of this line against the keys above it"
        return Problem(source, f"invalid YAML: {what}", mark.line + 1 if mark else None)
    return Problem(source, f"invalid YAML: {exc}")
