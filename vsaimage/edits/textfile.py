"""Helpers shared by the text edits: line-ending detection, marker lookup and
writes that pin a file's mode as well as its content."""

from __future__ import annotations

from collections.abc import Callable

from vsaimage.edits import Change, Snapshot, WriteFile
from vsaimage.errors import EditError, MissingFile


def newline_at(text: str, pos: int) -> str:
    """The line ending of the line that ends at or after `pos` ("\\r\\n" or
    "\\n"), so that inserted lines match their neighbours in CRLF files."""
    end = text.find("\n", pos)
    if end < 0:
        return newline_of(text)
    return "\r\n" if end > 0 and text[end - 1] == "\r" else "\n"


def newline_of(text: str) -> str:
    """The dominant line ending of a whole file."""
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf * 2 >= text.count("\n") else "\n"


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split at "\n" only: str.splitlines would also
    split at form feeds and latin-1 NEL (0x85), bytes a guest file may hold."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def line_end(text: str, pos: int) -> int:
    """Offset just past the line ending that follows `pos` (or len(text))."""
    end = text.find("\n", pos)
    return len(text) if end < 0 else end + 1


def indent_of(text: str, pos: int) -> str:
    """The leading blanks of the line holding `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    end = start
    while end < len(text) and text[end] in " \t":
        end += 1
    return text[start:end]


def indent_unit(indent: str) -> str:
    return "\t" if "\t" in indent else "    "


def ensure_final_newline(text: str) -> str:
    """`text` ending with a line ending, so that a line can be appended."""
    if text == "" or text.endswith("\n"):
        return text
    return text + newline_of(text)


def require_text(snap: Snapshot, path: str, step: str) -> str:
    """The content of `path`, or MissingFile with the --skip hint for `step`."""
    text = snap.text(path)
    if text is None:
        raise MissingFile(
            f"{path} is missing from the guest (needed by step {step})",
            hint=f"--skip {step} converts without this edit",
        )
    return text


def exact_write(snap: Snapshot, path: str, data: bytes, mode: int) -> list[Change]:
    """The change that makes `path` hold `data` with permission bits `mode`;
    none when it already does. Unlike text_write the mode is part of the
    result: a script the guest runs must stay executable."""
    old = snap.get(path)
    if old.data == data and (old.mode is None or old.mode & 0o7777 == mode):
        return []
    return [WriteFile(path, data, mode)]


def is_fixed_point(text: str | None, patch: Callable[[str], str]) -> bool:
    """The postcondition of a text edit: the file exists and patching it
    changes nothing (a file the patch cannot even parse is not patched)."""
    if text is None:
        return False
    try:
        return patch(text) == text
    except EditError:
        return False
