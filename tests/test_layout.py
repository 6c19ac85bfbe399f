"""The code layout stays one a newcomer can read: every module starts with a docstring saying what it
owns, and a module longer than 400 lines says in that docstring why it is not split."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vprbench"
LIMIT = 400


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_starts_with_a_docstring():
    missing = [str(p.relative_to(PACKAGE)) for p in _modules()
               if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()]  # fmt: skip
    assert not missing, f"modules without a docstring: {missing}"


def test_no_module_grows_past_the_limit_without_saying_why():
    long = []
    for p in _modules():
        text = p.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > LIMIT and "not split" not in doc:
            long.append(f"{p.relative_to(PACKAGE)} ({text.count(chr(10))} lines)")
    assert not long, f"over {LIMIT} lines without a reason in the docstring ('not split'): {long}"


def test_the_command_line_package_only_assembles_its_modules():
    init = (PACKAGE / "cli" / "__init__.py").read_text()
    defined = re.findall(r"^@[\w.]*command\(", init, flags=re.M)
    assert defined == [], f"commands defined in cli/__init__.py instead of their module: {defined}"
    assert len(re.findall(r"^    from vprbench\.cli\.\w+ import", init, flags=re.M)) >= 10
