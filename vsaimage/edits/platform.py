"""Edit 4, `platform`: use the VMware platform description on Xen.

brand.init knows no Xen brand; with the /dev/scsi names of the udev edit the
VMware disk layout is right, so base_init makes platform.xml a symlink to
platform.xml.vmw before it does anything else.
"""

from __future__ import annotations

import posixpath

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shell import find_function
from vsaimage.edits.textfile import indent_of, indent_unit, is_fixed_point, line_end, newline_at, require_text
from vsaimage.errors import EditError

PATH = "/etc/lefthand/brand/brand.init"
FUNCTION = "base_init"
ROOT = "/etc/lefthand"
VMW = "platform.xml.vmw"
MARKER = "# vsaimage: Xen uses the VMware disk layout"


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
    ours naming another directory is replaced, an identical one kept."""
    span = find_function(text, FUNCTION, PATH)
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
        details = {"file": PATH, "link": f"{directory}/platform.xml -> {VMW}"}
        return decide(self.name, text_write(snap, PATH, patch(text, directory)), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), lambda text: patch(text, platform_dir(snap.paths)))
