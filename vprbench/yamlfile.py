"""Reading the YAML files vprbench is configured by (protocol registry, recipes) with one-line errors."""

from __future__ import annotations

from pathlib import Path

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
