"""Readable spec YAML from the form: what the preview shows and `farm submit` would read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class _SpecDumper(yaml.SafeDumper):
    """Readable spec YAML: lists of scalars on one line (`seeds: [1, 2, 3]`), each
    quantize entry on one line (`- {bits: 4, group_size: 64}`), other mappings in blocks."""


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, list | dict) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


def _represent_dict(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=False)


class _OneLine(dict):  # type: ignore[type-arg]
    """A mapping dumped in flow style."""


def _represent_one_line(dumper: yaml.SafeDumper, value: _OneLine) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value.items(), flow_style=True)


_SpecDumper.add_representer(list, _represent_list)
_SpecDumper.add_representer(dict, _represent_dict)
_SpecDumper.add_representer(_OneLine, _represent_one_line)


def spec_dict_to_yaml(data: Mapping[str, Any]) -> str:
    data = dict(data)
    if isinstance(data.get("quantize"), list):
        data["quantize"] = [_OneLine(q) if isinstance(q, dict) else q for q in data["quantize"]]
    return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, allow_unicode=True, width=100)
