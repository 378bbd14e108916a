"""Edit 4, `platform`: use the VMware platform description on Xen.

brand.init knows no Xen brand; with the /dev/scsi names of the udev edit the
VMware disk layout is right, so base_init makes platform.xml a symlink to
platform.xml.vmw before it does anything else.
"""

from __future__ import annotations

import posixpath
import re

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shell import FunctionSpan, find_function, in_command_position
from vsaimage.edits.shellflow import command_words, line_of, places
from vsaimage.edits.textfile import indent_of, indent_unit, is_fixed_point, line_end, newline_at, require_text
from vsaimage.errors import EditError

PATH = "/etc/lefthand/brand/brand.init"
FUNCTION = "base_init"
ROOT = "/etc/lefthand"
VMW = "platform.xml.vmw"
MARKER = "# vsaimage: Xen uses the VMware disk layout"
# Commands that replace or remove the file a later argument names.
_CHANGERS = frozenset({"ln", "cp", "mv", "install", "rm", "unlink"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def platform_dir(paths: frozenset[str]) -> str:
    """The one directory under /etc/lefthand holding platform.xml.vmw."""
    found = sorted(
        posixpath.dirname(p) for p in paths if p.startswith(ROOT + "/") and posixpath.basename(p) == VMW
    )
    if len(found) != 1:
        where = ", ".join(found) if found else "none"
        raise EditError(
            f"expected exactly one {VMW} under {ROOT}, found {len(found)} ({where})",
            hint="--skip platform bypasses the edit",
        )
    return found[0]


def link_line(directory: str) -> str:
    return f"ln -sf {VMW} {directory}/platform.xml  {MARKER}"


def patch(text: str, directory: str) -> str:
    """brand.init with the symlink made first thing in base_init; a line of
    ours naming another directory is replaced, an identical one kept.
    EditError when a later statement of base_init replaces the link on every
    path (see relinks)."""
    span = find_function(text, FUNCTION, PATH)
    for number, content, conditional in relinks(text, span):
        if not conditional:
            raise EditError(
                f"{PATH}:{number} `{content}` replaces platform.xml later in {FUNCTION}, "
                "undoing the link to the VMware description",
                hint="--skip platform converts without this edit",
            )
    wanted = link_line(directory)
    body_start = line_end(text, span.open.end)
    body_end = text.rfind("\n", 0, span.close.start) + 1
    pos = body_start
    while pos < body_end:
        end = line_end(text, pos)
        line = text[pos:end]
        if line.strip().endswith(MARKER):
            content = line.rstrip("\r\n")
            ours = indent_of(text, pos) + wanted
            return text if content == ours else text[:pos] + ours + text[pos + len(content) :]
        pos = end
    first = _first_body_line(text, body_start, body_end)
    indent = indent_of(text, first) if first is not None else indent_of(text, span.open.start)
    if first is None:
        indent += indent_unit(indent)
    line = indent + wanted + newline_at(text, span.open.start)
    return text[:body_start] + line + text[body_start:]


def relinks(text: str, span: FunctionSpan) -> list[tuple[int, str, bool]]:
    """The statements of base_init other than ours that write, link, move or
    remove a platform.xml: (line, content, whether a condition guards it).
    VMware's own base_init links platform.xml.$platform in a `case` branch
    that does not run on Xen (hwid reports `xen` there), so guarded ones are
    only reported: whether they run depends on what the guest sees."""
    where = places(span)
    found: list[tuple[int, str, bool]] = []
    seen: set[int] = set()
    for k in range(span.first, span.last):
        tok = span.tokens[k]
        line, content = line_of(text, tok.start)
        if line in seen or content.endswith(MARKER):
            continue
        if _writes_platform_xml(span, k):
            seen.add(line)
            found.append((line, content, where[k].conditional))
    return found


def _writes_platform_xml(span: FunctionSpan, k: int) -> bool:
    """Token k starts a command changing a platform.xml, or redirects into one."""
    tok = span.tokens[k]
    if tok.kind == "op" and tok.text in (">", ">>", ">|"):
        target = span.tokens[k + 1] if k + 1 < span.last else None
        return target is not None and _names_platform_xml(target.text)
    if tok.kind != "word" or not in_command_position(span.tokens, k):
        return False
    words = command_words(span, k)
    while words and _ASSIGNMENT.match(words[0].text):
        words = words[1:]
    if not words or posixpath.basename(words[0].text) not in _CHANGERS:
        return False
    return any(_names_platform_xml(w.text) for w in words[1:] if not w.text.startswith("-"))


def _names_platform_xml(word: str) -> bool:
    return posixpath.basename(word.replace('"', "").replace("'", "")) == "platform.xml"


def _first_body_line(text: str, start: int, stop: int) -> int | None:
    pos = start
    while pos < stop:
        end = line_end(text, pos)
        if text[pos:end].strip():
            return pos
        pos = end
    return None


class Platform:
    name = "platform"
    title = "platform.xml -> platform.xml.vmw in base_init (brand.init)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (PATH,)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return (ROOT,)

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, PATH, self.name)
        directory = platform_dir(snap.paths)
        new = patch(text, directory)  # refuses an unconditional relink
        details: dict[str, object] = {"file": PATH, "link": f"{directory}/platform.xml -> {VMW}"}
        span = find_function(text, FUNCTION, PATH)
        guarded = [f"{PATH}:{line} `{content}`" for line, content, _ in relinks(text, span)]
        if guarded:
            details["conditional_relinks"] = guarded
        return decide(self.name, text_write(snap, PATH, new), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), lambda text: patch(text, platform_dir(snap.paths)))
