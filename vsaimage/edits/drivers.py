"""Edit `drivers`: load the Xen PV drivers from rc.drivers.

rc.drivers loads the modules of the hardware the VSA knows (VMware, Hyper-V);
on Xen nothing gives it the block and network front-ends, nor what the system
then expects (vsa/drivers.py). A guarded block at the top of the script,
before its first command, loads them when running on Xen.
"""

from __future__ import annotations

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.textfile import is_fixed_point, line_end, newline_of, require_text
from vsaimage.errors import EditError
from vsaimage.vsa.drivers import XEN_MODULES

PATH = "/etc/lefthand/brand/rc.drivers"
MODULES = XEN_MODULES
BEGIN = "# vsaimage: Xen PV drivers"
END = "# vsaimage: end of Xen PV drivers"

_LINES = (
    BEGIN,
    "# Either test is enough: /proc/xen needs xenfs, /sys/hypervisor needs sysfs.",
    "# `|| true`: a missing or built-in module must not stop a `set -e` script.",
    "if [ -d /proc/xen ] || grep -qs xen /sys/hypervisor/type; then",
    *(f"\tmodprobe {m} || true" for m in MODULES),
    "fi",
    END,
)


def block(newline: str) -> str:
    return newline.join(_LINES) + newline


def patch(text: str) -> str:
    """rc.drivers with the block after the shebang and the leading comments;
    a block of ours already there is brought up to date, or kept as is."""
    nl = newline_of(text)
    pos = 0
    while pos < len(text):
        end = line_end(text, pos)
        line = text[pos:end].strip()
        if line == BEGIN:
            stop = text.find(END, pos)
            if stop < 0:
                raise EditError(f"{PATH}:{text.count(chr(10), 0, pos) + 1}: '{BEGIN}' without '{END}'; "
                                "restore the file", hint="--skip drivers converts without this edit")
            stop = line_end(text, stop)
            return text[:pos] + block(newline_of(text[pos:stop])) + text[stop:]
        if line and not line.startswith("#"):
            break  # the script's first command
        pos = end
    if pos == len(text) and text and not text.endswith("\n"):
        text += nl
        pos = len(text)
    return text[:pos] + block(nl) + text[pos:]


class Drivers:
    name = "drivers"
    title = "Load the Xen PV drivers (rc.drivers)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (PATH,)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, PATH, self.name)
        details = {"file": PATH, "modules": list(MODULES)}
        return decide(self.name, text_write(snap, PATH, patch(text)), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), patch)
