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


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["aggregator=gem", "drm=false"]`` -> ``{"aggregator": "gem", "drm": False}`` (YAML scalars)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise VPRBenchError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
