"""The documentation stays true: every shell block of README.md and docs/ that runs vprbench says how it
is checked, and is checked: run on the embedded data (``check: run``), its commands and options resolved
against the command line (``check: options``, for what needs real data, weights or a GPU), or covered by a
named test (``check: test PATH[::NAME]``). Commands quoted inline (`vprbench ...`) have their options
resolved too."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from vprbench.cli import cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- check: (?P<check>[^>]+?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```",
                   re.S | re.M)  # fmt: skip
INLINE = re.compile(r"`((?:vprbench|torchrun [^`]*-m vprbench) [^`]+)`")


def _blocks():
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start("body")].count("\n") + 1
            yield page, line, m.group("check"), m.group("lang"), m.group("body")


def _commands(body: str) -> list[str]:
    """The vprbench command lines of a shell block (continuations joined, comments dropped)."""
    out, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw.split(" #", 1)[0].rstrip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip()
        if stripped.startswith("vprbench ") or re.match(r"torchrun .*-m vprbench ", stripped):
            out.append(stripped)
    return out


def _argv(command: str) -> list[str]:
    tokens = shlex.split(command.replace("...", ""))
    if tokens[0] == "torchrun":
        tokens = tokens[tokens.index("vprbench") :]
    return tokens[1:]


def _check_options(command: str, where: str) -> None:
    """Every subcommand and --option that ``command`` names exists. Synopsis notation is allowed:
    [--a | --b], alternatives a|b for subcommands, placeholders in capitals."""
    argv = [t.strip("[]") for t in _argv(command)]
    group: click.Command = cli
    for token in argv:
        if not isinstance(group, click.Group):
            break
        if token.startswith("-"):
            continue
        names = token.split("|")
        for name in names:
            assert name in group.commands, (
                f"{where}: `{command}`: no command '{name}' in {group.name}"
            )
        group = group.commands[names[0]]
        if len(names) > 1:
            return  # the synopsis of a group's commands: nothing further to check
    known = {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    for token in argv:
        for part in token.split("|"):
            if part.startswith("--"):
                name = part.split("=", 1)[0]
                assert name in known, f"{where}: `{command}`: {group.name} has no option {name}"


def test_every_block_that_runs_vprbench_says_how_it_is_checked():
    unchecked = [f"{page.relative_to(REPO)}:{line}" for page, line, check, lang, body in _blocks()
                 if lang in ("bash", "sh", "") and _commands(body) and check is None]  # fmt: skip
    assert not unchecked, f"shell blocks without a <!-- check: ... --> comment: {unchecked}"


def test_every_documented_command_and_option_exists():
    seen = 0
    for page, line, _, _, body in _blocks():
        for command in _commands(body):
            _check_options(command, f"{page.relative_to(REPO)}:{line}")
            seen += 1
    for page in PAGES:
        for m in INLINE.finditer(page.read_text()):
            if "<" not in m.group(1):  # not a template such as `vprbench report --recipe <name>`
                _check_options(m.group(1), f"{page.relative_to(REPO)} (inline)")
                seen += 1
    assert seen > 50


def test_the_tests_that_cover_documented_commands_exist():
    covered = [(page, line, check[len("test ") :]) for page, line, check, _, _ in _blocks()
               if check and check.startswith("test ")]  # fmt: skip
    assert covered
    for page, line, target in covered:
        path, _, name = target.partition("::")
        assert (REPO / path).is_file(), f"{page.name}:{line}: {path} does not exist"
        if name:
            tree = ast.parse((REPO / path).read_text())
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in names, f"{page.name}:{line}: no test {name} in {path}"


def test_checks_name_a_known_kind():
    for page, line, check, _, _ in _blocks():
        if check is not None:
            assert check in ("run", "options") or check.startswith("test "), f"{page.name}:{line}"


def test_documented_runs_on_the_embedded_data(tmp_path):
    """Every ``check: run`` block, in page order, in one scratch folder (the clone's recipes beside it)
    with its own data, cache and results: each command exits 0."""
    env = dict(os.environ, VPRBENCH_DATA=str(tmp_path / "data"),
               VPRBENCH_CACHE=str(tmp_path / "cache"), COLUMNS="120")  # fmt: skip
    del env["VPRBENCH_RESULTS"]  # the default ./results, as a user in a fresh folder has it
    (tmp_path / "recipes").symlink_to(REPO / "recipes")  # a clone's recipes, as the pages assume
    ran = []
    for page, line, check, _, body in _blocks():
        if check != "run":
            continue
        for command in _commands(body):
            argv = [sys.executable, "-m", "vprbench", *_argv(command)]
            # a shell glob (results/runs/pixels__*.json) is the user's shell's to expand
            script = " ".join(shlex.quote(a) if "*" not in a else a for a in argv)
            proc = subprocess.run(script, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=900)  # fmt: skip
            assert proc.returncode == 0, (
                f"{page.relative_to(REPO)}:{line}: `{command}` exited {proc.returncode}:\n"
                f"{proc.stderr[-2000:]}"
            )
            ran.append(command)
    assert len(ran) >= 10, ran


@pytest.mark.parametrize("command", ["vprbench datasets frobnicate", "vprbench evaluate --no-such"])
def test_the_option_check_can_fail(command):
    with pytest.raises(AssertionError):
        _check_options(command, "here")


def test_readme_names_every_registered_model_and_protocol():
    from vprbench.datasets.protocols import load_registry
    from vprbench.models.registry import list_models

    readme = (REPO / "README.md").read_text()
    missing = [n for n in [*list_models(), *load_registry()] if f"`{n}`" not in readme]
    assert not missing, f"README.md's tables leave out {missing}"
    assert readme.count("\n") <= 150, "README.md is read in five minutes: at most about 150 lines"


def test_user_facing_text_names_no_development_set_up():
    """README, the docs and the package's messages are read in a user's clone, which has no
    ../shared folder, no issue tracker of ours and no sessions: none of them is referred to."""
    pattern = re.compile(r"\.\./shared/(?!data\b)|shared/reference|[Ii]ssue \d|previous session|"
                         r"this session|review-e1cc")  # fmt: skip
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
             *sorted((REPO / "vprbench").rglob("*.py")), *sorted((REPO / "vprbench").rglob("*.yaml"))]  # fmt: skip
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
