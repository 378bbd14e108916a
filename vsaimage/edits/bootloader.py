"""Edit `bootloader`: with --boot pvgrub or pygrub the disk carries the
Xen kernel and the repacked initrd in /boot/vsaimage/ and a GRUB 2 menu
(/boot/grub/grub.cfg, see xen/bootmenu.py) whose default entry boots them, so the
domU survives the dom0's kernel being upgraded or removed and moves to another
Xen host with its disk alone. With --boot direct the step is not used.
"""

from __future__ import annotations

from vsaimage.edits import EditContext, Snapshot, StepPlan, UploadFile, decide, text_write
from vsaimage.edits.fstab import GRUB_CONFIGS, patch_grub
from vsaimage.errors import EditError
from vsaimage.xen import bootmenu


def _legacy(snap: Snapshot) -> tuple[str | None, str | None]:
    """(the VSA's grub.conf text as the fstab step leaves it, where it was
    read): the menu repeats its entries with the same root= whether or not
    that step has run yet, so planning and checking render the same menu."""
    for path in GRUB_CONFIGS:
        text = snap.text(path)
        if text is not None:
            return patch_grub(text, path)[0], path
    return None, None


def _holds_commands(text: str) -> bool:
    """A grub.cfg of nothing but blank and comment lines is no menu: writing
    ours over it loses nothing."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


class BootLoader:
    name = "bootloader"
    title = "Own kernel and GRUB 2 menu in /boot (--boot pvgrub|pygrub)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (bootmenu.GRUB_CFG, *GRUB_CONFIGS)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return (bootmenu.OWN_DIR,)

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        boot = ctx.boot
        if boot is None:
            return StepPlan(self.name, "skipped", details={"boot": "direct: the xl config names the "
                                                                  "dom0's kernel and initrd"})
        existing = snap.text(bootmenu.GRUB_CFG)
        if existing is not None and not bootmenu.written_by_us(existing) and _holds_commands(existing):
            raise EditError(f"{bootmenu.GRUB_CFG} exists and was not written by vsaimage: this VSA "
                            "boots with GRUB 2, whose menu vsaimage does not edit",
                            hint="convert with --boot direct")
        legacy, where = _legacy(snap)
        changes = [*text_write(snap, bootmenu.GRUB_CFG, bootmenu.render(boot, legacy)),
                   UploadFile(bootmenu.KERNEL, "kernel"), UploadFile(bootmenu.INITRD, "initrd")]
        entries = len(bootmenu.grub_entries(legacy)) if legacy is not None else 0
        return decide(self.name, list(changes), {
            "loader": boot.loader, "menu": bootmenu.GRUB_CFG, "default_entry": boot.title,
            "kernel": bootmenu.KERNEL, "initrd": bootmenu.INITRD, "command_line": boot.cmdline,
            "vsa_entries": f"{entries} from {where}" if where else "none (no grub.conf)"})

    @staticmethod
    def in_use(snap: Snapshot) -> bool:
        """Whether the disk boots through a menu of vsaimage's."""
        text = snap.text(bootmenu.GRUB_CFG)
        return text is not None and bootmenu.written_by_us(text)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        """Converting: the menu is the one planned and both files are there.
        Checking an image: a menu of ours boots files that are there; an
        image without one boots directly and passes."""
        text = snap.text(bootmenu.GRUB_CFG)
        files_there = {bootmenu.KERNEL, bootmenu.INITRD} <= snap.paths
        if ctx.boot is not None:
            return text == bootmenu.render(ctx.boot, _legacy(snap)[0]) and files_there
        if text is None or not self.in_use(snap):
            return True  # a direct boot
        return bootmenu.default_files(text) is not None and files_there
