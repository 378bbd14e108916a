"""The shell lexer the script edits rely on, and helpers the other edit tests
import: Snapshot building and `sh -n` under dash (bash for bash-only files) and busybox."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from fixtures.build_image import default_busybox
from vsaimage.edits import GuestFile, Snapshot
from vsaimage.edits.shell import find_function, statement_end, tokenize, top_level
from vsaimage.errors import EditError

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = default_busybox()  # make setup fetches it


def snapshot(
    files: Mapping[str, str | bytes], paths: set[str] | None = None, modes: dict[str, int] | None = None
) -> Snapshot:
    """A Snapshot holding `files` (text is encoded latin-1, as the guest's bytes)."""
    modes = modes or {}
    guest = {
        p: GuestFile(p, d.encode("latin-1") if isinstance(d, str) else d, modes.get(p, 0o644))
        for p, d in files.items()
    }
    return Snapshot(guest, frozenset(paths or set()) | frozenset(files))


def syntax_shells(text: str) -> list[list[str]]:
    """Shells able to judge `text`: dash cannot parse the `function` keyword,
    which the VSA's bash accepts, so such files go to bash instead."""
    return [["bash"] if "function " in text else ["/bin/sh"], [str(BUSYBOX), "sh"]]


def assert_sh_syntax(text: str, tmp_path: Path) -> None:
    script = tmp_path / "syntax-check.sh"
    script.write_bytes(text.replace("\r\n", "\n").encode("latin-1"))
    for shell in syntax_shells(text):
        done = subprocess.run([*shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shell}: {done.stderr}"


SPELLINGS = {
    "parens": "f() {\n\techo in\n}\n",
    "space-parens": "f () {\n\techo in\n}\n",
    "next-line": "f()\n{\n\techo in\n}\n",
    "function": "function f {\n\techo in\n}\n",
    "function-parens-next-line": "function f()\n{\n\techo in\n}\n",
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_function_spellings(spelling: str) -> None:
    text = "# f() {\n#   echo decoy\n# }\ng() { :; }\n" + SPELLINGS[spelling] + "f\n"
    span = find_function(text, "f", "/x")
    assert [t.text for t in span.body() if t.kind == "word"] == ["echo", "in"]
    assert text[span.close.start] == "}"


def test_braces_in_strings_params_and_heredocs_do_not_close() -> None:
    text = (
        "f() {\n"
        "\techo '}' \"}\" ${x:- } `echo }` $(echo })\n"
        "\tcat <<-EOF\n}\n\tEOF\n"
        "\techo last # }\n"
        "}\n"
        "g() { :; }\n"
    )
    span = find_function(text, "f", "/x")
    assert text[: span.close.end].endswith("echo last # }\n}")


def test_function_errors_name_the_file() -> None:
    with pytest.raises(EditError, match="/etc/x: function f not found"):
        find_function("# f() {\n# }\necho f\n", "f", "/etc/x")
    with pytest.raises(EditError, match="defined 2 times"):
        find_function("f() { :; }\nf() { :; }\n", "f", "/etc/x")
    with pytest.raises(EditError, match="no closing brace"):
        find_function("f() {\n\techo\n", "f", "/etc/x")
    with pytest.raises(EditError, match="no \\{ \\} body"):
        find_function("f() ( echo )\n", "f", "/etc/x")


def test_statement_end_follows_pipes_and_continuations() -> None:
    text = "a=`x` |\n  tr a b &&\n  echo \\\n  c\nnext\n"
    tokens = top_level(text)
    end = statement_end(tokens, 0)
    assert end is not None and text[end.end :] == "next\n"


def test_command_substitution_tokens_are_nested() -> None:
    tokens = tokenize("x=$(echo {)\n")
    assert {(t.text, t.depth) for t in tokens if t.kind == "word"} == {
        ("x=$(echo {)", 0),
        ("echo", 1),
        ("{", 1),
    }
