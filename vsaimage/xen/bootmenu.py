"""--boot pvgrub|pygrub: the GRUB 2 menu that makes the disk boot its own copy
of the Xen kernel, so the xl config names no file of the dom0.

Both boot loaders read one file, `grub/grub.cfg` of the filesystem holding
/boot: pvgrub2 (Debian's grub-x86_64-xen.bin) searches every partition for
/boot/grub/grub.cfg, then /grub/grub.cfg; pygrub prefers a grub.cfg to the
legacy grub.conf in the same places. The VSA's own grub.conf (GRUB legacy,
read by nothing under Xen) is left as it is; its entries are repeated after
ours, not default, so the menu still shows them. Pure: text in, text out.
"""

from __future__ import annotations

from vsaimage.model import BootFiles
from vsaimage.vsa import grubconf

LOADERS = ("pvgrub", "pygrub")
BOOT_MODES = ("direct", *LOADERS)
# Guest paths (the VSA mounts its boot partition at /boot). The names are
# fixed so that converting again replaces the files instead of adding more.
GRUB_CFG = "/boot/grub/grub.cfg"
OWN_DIR = "/boot/vsaimage"
KERNEL = f"{OWN_DIR}/vmlinuz"
INITRD = f"{OWN_DIR}/initrd.img"
# The first line marks a menu vsaimage wrote (and may write again); no
# version in it, so that a newer vsaimage writes the same bytes.
MARKER = "# GRUB 2 menu written by vsaimage"
ENTRY_ID = "vsaimage-xen"
# The VSA's grub.conf waits 5 s behind a hidden menu; so does this one
# (pygrub shows it on `xl create -c`).
TIMEOUT = 5


def _quote(title: str) -> str:
    # pygrub's parser takes the title up to the next quote of either kind,
    # so no quote may appear inside; grub would also expand $ in "...".
    return "'" + title.replace("'", "").replace('"', "") + "'"


def render(boot: BootFiles, legacy: str | None) -> str:
    """The grub.cfg for `boot`; `legacy` is the VSA's grub.conf, whose
    entries follow ours."""
    lines = [
        MARKER,
        "# for --boot pvgrub / pygrub: entry 0 boots the Xen kernel and initrd in",
        f"# {boot.in_fs(OWN_DIR)}/ of this filesystem with the direct xl config's command line.",
        "# The VSA's own entries (from its grub.conf) follow; they boot its VMware kernel.",
        "set default=0",
        f"set timeout={TIMEOUT}",
        f"menuentry {_quote(boot.title)} --id {ENTRY_ID} {{",
    ]
    if boot.fs_uuid:
        lines.append(f"\tsearch --no-floppy --fs-uuid --set=root {boot.fs_uuid}")
    lines += [f"\tlinux {boot.in_fs(KERNEL)} {boot.cmdline}", f"\tinitrd {boot.in_fs(INITRD)}", "}"]
    for entry in grub_entries(legacy) if legacy is not None else ():
        lines += [f"menuentry {_quote(entry.title)} {{",
                  "\tlinux " + " ".join((entry.image, *entry.kernel))]
        if entry.initrd:
            lines.append(f"\tinitrd {entry.initrd}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def grub_entries(legacy: str) -> list[grubconf.Entry]:
    """The entries of a grub.conf that boot a kernel."""
    return [e for e in grubconf.parse(legacy).entries if e.image]


def written_by_us(text: str) -> bool:
    return text.startswith(MARKER + "\n")


def default_files(text: str) -> tuple[str, str] | None:
    """(kernel, initrd) of the menu's default entry, as its filesystem names
    them, when that entry is ours; None otherwise."""
    body = text.split(f" --id {ENTRY_ID} {{\n", 1)
    # ours must be the first entry, and entry 0 the default
    if len(body) != 2 or "\nset default=0\n" not in body[0] or body[0].count("\nmenuentry ") != 1:
        return None
    found: dict[str, str] = {}
    for line in body[1].split("}", 1)[0].splitlines():
        words = line.split()
        if words and words[0] in ("linux", "initrd") and len(words) > 1:
            found[words[0]] = words[1]
    if "linux" not in found or "initrd" not in found:
        return None
    return found["linux"], found["initrd"]
