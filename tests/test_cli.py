"""The command line itself: help with examples, and the README's examples
parse (every flag they use exists)."""

from __future__ import annotations

import gzip
import re
import shlex
from pathlib import Path

import pytest

import initrd_reader as rd
from support import REPO, run_cli
from vsaimage.cli import docs
from vsaimage.cli.argv import parser
from vsaimage.commands.options import options_of

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
    p = parser()
    for argv in commands:
        p.parse_args(argv)  # SystemExit (usage error) fails the test


def test_readme_lists_the_options_of_the_option_table() -> None:
    """The README's option table is the one the option table makes (the
    argument parser reads the same table): regenerate it with
    `python -m vsaimage.cli.docs` when an option changes."""
    text = (REPO / "README.md").read_text()
    assert docs.BEGIN in text and docs.END in text
    found = text[text.index(docs.BEGIN):text.index(docs.END) + len(docs.END)]
    assert found == docs.table()


def test_every_option_of_the_table_is_parsed() -> None:
    """Each option of the table is an option of each of its commands, and no
    command takes an option twice."""
    for command in COMMANDS:
        actions = {a.dest: a for a in parser()._subparsers._group_actions[0].choices[command]._actions}
        for option in options_of(command):
            assert option.dest in actions, (command, option.flags)
        flags = [f for o in options_of(command) for f in o.flags]
        assert len(flags) == len(set(flags)), command


def test_readme_layout_names_every_module() -> None:
    """The README's layout table names each module of the package, each in
    the package it is in, and nothing else."""
    text = (REPO / "README.md").read_text()
    rows = text.split("<!-- layout:", 1)[1].split("\n\n", 1)[0].splitlines()[3:]
    named = set()
    for row in rows:
        layer, modules = row.split("|")[1:3]
        packages = re.findall(r"`(\w+)/`", layer)
        if packages:
            for package, group in zip(packages, modules.split(";"), strict=True):
                named |= {f"{package}/{m}" for m in re.findall(r"`(\w+\.py)`", group)}
        else:
            named |= set(re.findall(r"`(\w+\.py)`", layer + modules))
    tree = {str(p.relative_to(REPO / "vsaimage")) for p in (REPO / "vsaimage").rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    assert named == tree, (named - tree, tree - named)


def test_usage_error_is_exit_2(tmp_path: Path) -> None:
    r = run_cli("convert", tmp_path / "x.img")  # --kernel, --initrd, -o missing
    assert r.code == 2
    assert "required" in r.stderr


@pytest.mark.parametrize(("flag", "value"), [("--mac", "01:16:3e:0a:bb:cc"), ("--uuid", "nope")])
def test_bad_identity_refused_before_any_work(flag: str, value: str, tmp_path: Path) -> None:
    disk = tmp_path / "x.img"
    disk.write_bytes(bytes(510) + b"\x55\xaa" + bytes(2**20 - 512))
    r = run_cli("convert", disk, "--kernel", tmp_path / "k", "--initrd", tmp_path / "i",
                "-o", tmp_path / "o.img", flag, value)
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("vsaimage: error: ") and value in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [disk]


def test_verbose_shows_what_the_repack_did(tmp_path: Path) -> None:
    """-v adds detail lines on stderr; without it they are not there."""
    m = rd.member
    src = tmp_path / "in.img"
    src.write_bytes(gzip.compress(rd.write_newc([m(".", 0o040755, ino=1), m("scripts", 0o040755, ino=2)])))
    lines = ("input compression: gzip", "added: ('scripts/init-bottom', 'scripts/init-bottom/pcihack')")
    verbose = run_cli("initrd", src, "-o", tmp_path / "v.img", "-v")
    assert verbose.code == 0, verbose.stderr
    assert all(line in verbose.stderr for line in lines), verbose.stderr
    plain = run_cli("initrd", src, "-o", tmp_path / "p.img")
    assert plain.code == 0 and not any(line in plain.stderr for line in lines), plain.stderr


def test_cli_does_not_load_libguestfs() -> None:
    """--help and usage errors stay instant: guestfs is imported by the
    commands that launch the appliance, not by the command line."""
    import subprocess
    import sys

    code = "import sys, vsaimage.cli; assert 'guestfs' not in sys.modules, 'guestfs loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
