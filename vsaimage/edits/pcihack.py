"""The `bind` half of the PCI step: the pcihack init-bottom script and its
line in scripts/init-bottom/ORDER, which initrd/repack.py puts into (or
takes out of) the archive; and the same bind done again by the guest's
rc.sysinit after it mounts /proc a second time (pci.py writes it). Pure
text.

The script bind-mounts the root's /hack/bus/pci on /proc/bus/pci after the
root is mounted, so the VSA software reads the fake device list (pci.py).
"""

from __future__ import annotations

import re
from typing import Literal

from vsaimage.edits import PciHack

PCIHACK_PATH = "scripts/init-bottom/pcihack"
ORDER_PATH = "scripts/init-bottom/ORDER"
PCIHACK_SCRIPT = b"""\
#!/bin/sh
# Added by vsaimage: show the VSA software the fake PCI device list of the
# real root (the Xen platform device) instead of the domU's /proc/bus/pci.
# Must never fail the boot: every path ends in exit 0.

PREREQ=""
prereqs()
{
	echo "$PREREQ"
}
case $1 in
prereqs)
	prereqs
	exit 0
	;;
esac

src="${rootmnt}/hack/bus/pci"
dst=/proc/bus/pci
if [ ! -d "$dst" ]; then
	echo "pcihack: $dst missing, not mounting"
elif [ ! -d "$src" ]; then
	echo "pcihack: $src missing, not mounting"
elif mount -o bind "$src" "$dst"; then
	echo "pcihack: bind-mounted $src on $dst"
else
	echo "pcihack: bind mount of $src on $dst failed, carrying on"
fi
exit 0
"""

_ORDER_SCRIPT_RE = re.compile(r'^/scripts/init-bottom/\S+(?:\s+"\$@")?\s*$')

Action = Literal["add", "remove", "keep"]
TITLES: dict[Action, str] = {
    "add": "pcihack in the initrd",
    "remove": "no pcihack in the initrd (--pci-hack binary)",
    "keep": "pcihack in the initrd left as given (--skip pci)",
}


def action(pci_hack: PciHack, skip: frozenset[str]) -> Action:
    """What the initrd gets: pcihack with the bind variant, none with the
    binary variant only, and no change at all when the PCI step is skipped."""
    if "pci" in skip:
        return "keep"
    return "remove" if pci_hack is PciHack.BINARY else "add"


def _is_ours(line: str) -> bool:
    return line.split()[:1] == ["/" + PCIHACK_PATH]


def order_with_pcihack(text: str) -> str:
    """ORDER with the pcihack line added: after the script lines, before param.conf.

    Follows the file's line style: `"$@"` only if the existing lines have it
    (squeeze-era ORDER files do not).
    """
    lines = text.splitlines(keepends=True)
    if any(_is_ours(line) for line in lines):
        return text
    scripts = [i for i, line in enumerate(lines) if _ORDER_SCRIPT_RE.match(line)]
    param = next((i for i, line in enumerate(lines) if "/conf/param.conf" in line), None)
    if param is not None:
        scripts = [i for i in scripts if i < param]
    if scripts:
        with_args = any('"$@"' in lines[i] for i in scripts)
        at = scripts[-1] + 1
    else:
        with_args = True
        at = param if param is not None else len(lines)
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    lines.insert(at, "/" + PCIHACK_PATH + (' "$@"' if with_args else "") + "\n")
    return "".join(lines)


def order_without_pcihack(text: str) -> str:
    """ORDER with our line taken out, every other line kept byte for byte."""
    return "".join(line for line in text.splitlines(keepends=True) if not _is_ours(line))


# --- after the guest mounts /proc again ------------------------------------------

# CentOS 5's rc.sysinit runs `mount -n -t proc /proc /proc` without checking
# whether /proc is mounted: the new proc lands on top of the one the initrd
# moved there, hiding pcihack's bind mount. The bind is done again right
# after each such line, in the guest's own rc.sysinit: the earliest place
# that runs after it, long before base_init runs hwid.
RC_SYSINIT = "/etc/rc.d/rc.sysinit"
REBIND = ("# vsaimage: the proc mount above hides the fake PCI list pcihack bound; bind it again\n"
          "[ -d /hack/bus/pci ] && [ -d /proc/bus/pci ] && "
          "mount -n -o bind /hack/bus/pci /proc/bus/pci || :\n")
_PROC_MOUNT_RE = re.compile(r"mount\s(?:[^#;&|]*\s)?-t\s*proc\s(?:[^#;&|]*\s)?/proc/?")


def proc_remounts(text: str) -> list[int]:
    """The (0-based) lines of a shell script that mount proc on /proc
    whatever is there: a `mount ... -t proc ... /proc` command that starts
    its line, not guarded by a test (`[ -r /proc/mounts ] || mount ...`)."""
    return [n for n, line in enumerate(text.splitlines())
            if _PROC_MOUNT_RE.fullmatch(line.strip())]


def _rebound_at(lines: list[str], n: int) -> bool:
    return "".join(lines[n + 1:n + 3]) == REBIND


def with_rebind(text: str) -> tuple[str, list[int]]:
    """`text` with the bind done again after each line that mounts /proc
    again, every other byte kept; and the 1-based numbers of those lines
    (in the result) that did not have it yet."""
    lines = text.splitlines(keepends=True)
    added: list[int] = []
    for n in reversed(proc_remounts(text)):
        if _rebound_at(lines, n):
            continue
        if not lines[n].endswith("\n"):
            lines[n] += "\n"
        lines[n + 1:n + 1] = REBIND.splitlines(keepends=True)
        added.append(n + 1)
    return "".join(lines), sorted(added)


def rebound(text: str) -> bool:
    """Whether every line that mounts /proc again is followed by the bind."""
    lines = text.splitlines(keepends=True)
    return all(_rebound_at(lines, n) for n in proc_remounts(text))
