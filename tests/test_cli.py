"""The command line itself: help with examples, and the README's examples
parse (every flag they use exists)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from support import REPO, run_cli
from vsaimage.cli import _parser

COMMANDS = ("inspect", "convert", "verify", "initrd")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_runnable_example(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.code == 0
    assert "examples:" in r.stdout
    assert f"vsaimage {command} " in r.stdout


def readme_commands() -> list[list[str]]:
    """vsaimage invocations in the README's code blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:\.venv/bin/)?vsaimage (.*)$", line)
        if m:
            found.append(shlex.split(m.group(1).replace("$V", "6.1.0-1-amd64"), comments=True))
    return found


def test_readme_examples_parse() -> None:
    commands = readme_commands()
    assert {c[0] for c in commands} >= set(COMMANDS)
    parser = _parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (usage error) fails the test


def test_usage_error_is_exit_2(tmp_path: Path) -> None:
    r = run_cli("convert", tmp_path / "x.img")  # --kernel, --initrd, -o missing
    assert r.code == 2
    assert "required" in r.stderr
