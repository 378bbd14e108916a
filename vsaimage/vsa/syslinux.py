"""SYSLINUX, EXTLINUX and ISOLINUX configs (syslinux.cfg, extlinux.conf,
isolinux.cfg), read like grub.conf: the oldest VSAs (SAN/iQ 8) boot from a
`boot:` prompt that loads `vmlinuz` and `initrd.gz` with the default label's
APPEND line. Pure: text in, the same shape as grubconf.parse out (entries,
the default, each entry's kernel, initrd and command-line words), so that
the slot choice and the xl config read either alike.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from vsaimage.vsa import grubconf
from vsaimage.vsa.grubconf import Entry, GrubConfig

# The names the three loaders read, and the directories they look in
# (relative to the top of the filesystem they boot from).
NAMES = ("syslinux.cfg", "extlinux.conf", "isolinux.cfg")
DIRECTORIES = ("", "syslinux", "boot/syslinux", "extlinux", "boot/extlinux", "isolinux", "boot/isolinux")
CONFIGS = tuple(posixpath.join(d, n) for d in DIRECTORIES for n in NAMES)

# Keywords that name the kernel of a label (KERNEL guesses the type from the
# file name; the others say it).
_KERNEL_WORDS = ("kernel", "linux")


def is_config(path: str) -> bool:
    """Whether `path` names a SYSLINUX-family config (by its file name)."""
    return posixpath.basename(path).lower() in NAMES


def _split(line: str) -> tuple[str, str]:
    """(keyword in lower case, the rest) of a config line."""
    words = line.strip().split(None, 1)
    if not words:
        return "", ""
    return words[0].lower(), words[1].strip() if len(words) > 1 else ""


def _with_append(entry: Entry, append: str) -> Entry:
    """`entry` with an APPEND line: its words but `initrd=`, which names the
    initrd (the first of a comma-separated list) rather than a kernel
    argument. `APPEND -` means no arguments at all."""
    words = [] if append.strip() == "-" else append.split()
    initrds = [w.removeprefix("initrd=") for w in words if w.startswith("initrd=")]
    args = tuple(w for w in words if not w.startswith("initrd="))
    initrd = entry.initrd or (initrds[-1].split(",")[0] if initrds else "")
    return replace(entry, kernel=args, initrd=initrd)


def parse(text: str) -> GrubConfig:
    """The labels of a SYSLINUX-family config and the one it boots by
    default: `DEFAULT` names a label (or, in the oldest style, a kernel and
    its arguments); without it, the label marked `MENU DEFAULT`, else the
    first. A global APPEND serves the labels that have none of their own."""
    entries: list[Entry] = []
    appended: set[int] = set()
    global_append = ""
    default_name: str | None = None
    default_line = ""
    menu_default: int | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        key, rest = _split(line)
        if key == "label" and rest:
            entries.append(Entry(rest, n))
        elif key in _KERNEL_WORDS and rest and entries:
            entries[-1] = replace(entries[-1], image=rest.split()[0])
        elif key == "append":
            if entries:
                entries[-1] = _with_append(entries[-1], rest)
                appended.add(len(entries) - 1)
            else:
                global_append = rest
        elif key == "initrd" and rest and entries:
            entries[-1] = replace(entries[-1], initrd=rest.split(",")[0].split()[0])
        elif key == "default" and rest:
            default_name, default_line = rest, line.strip()
        elif key == "menu" and rest.lower() == "default" and entries:
            menu_default = len(entries) - 1
    entries = [e if i in appended else _with_append(e, global_append) for i, e in enumerate(entries)]
    if default_name is None:
        first = menu_default if menu_default is not None else 0
        return GrubConfig(tuple(entries), first if entries else None, "")
    index: int | None = next((i for i, e in enumerate(entries) if e.title == default_name), None)
    if index is None and default_name.split()[0] not in {e.title for e in entries}:
        # DEFAULT KERNEL ARGS: no label of that name, a command line of its own
        words = default_name.split()
        entries.append(_with_append(Entry(default_name, 0, image=words[0]), " ".join(words[1:])))
        index = len(entries) - 1
    return GrubConfig(tuple(entries), index, default_line)


def read_config(path: str, text: str) -> GrubConfig:
    """A VSA boot config found at `path`: SYSLINUX-family by its name, else
    grub legacy."""
    return parse(text) if is_config(path) else grubconf.parse(text)
