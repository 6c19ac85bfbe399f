"""Reading the YAML files vprbench is configured by (protocol registry, recipes) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vprbench.errors import VPRBenchError


def read_yaml(path: Path, what: str, compose: bool = False):
    """The parsed file (``compose``: the node tree, which keeps line numbers); errors name the file."""
    try:
        text = Path(path).read_text()
        if compose:
            return yaml.compose(text)
        # libyaml's loader where PyYAML was built with it: the registry parses ~10x faster
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise VPRBenchError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise VPRBenchError(f"{path}: not valid YAML ({exc})") from exc


def _to_python(node, path: tuple, lines: dict, source: Path, scalar):
    """A YAML node as Python values, noting each mapping key's line under its path; ``scalar``
    builds a scalar node's value (a SafeConstructor's, as yaml.safe_load would)."""
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise VPRBenchError(
                    f"{source}:{key_node.start_mark.line + 1}: key '{key}' given twice"
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, (*path, key), lines, source, scalar)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_to_python(item, (*path, i), lines, source, scalar))
        return items
    return scalar(node)


def read_yaml_with_lines(path: Path, what: str) -> tuple[Any, dict]:
    """(the parsed file, {key path: line}): for errors that name the line of a key (recipes, the
    published-results registry); a key given twice is an error."""
    node = read_yaml(path, what, compose=True)
    lines: dict = {}
    if node is None:
        return None, lines
    # one constructor per file (it caches what it built): scalars as safe_load builds them, without
    # serialising each one back to text and parsing it again (40x faster on published.yaml)
    scalar = yaml.constructor.SafeConstructor().construct_object
    return _to_python(node, (), lines, Path(path), scalar), lines


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["aggregator=gem", "drm=false"]`` -> ``{"aggregator": "gem", "drm": False}`` (YAML scalars)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise VPRBenchError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
