"""`vsaimage verify IMG...`: one read-only launch (for every image given),
and the status of every edit; with --initrd, the repacked initrd's pcihack
and, with --kernel-version, its drivers. Exit 0 only when all are in
place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsaimage.commands import batch, results
from vsaimage.commands.examine import examine, read, slot_notice
from vsaimage.commands.options import Refused, VerifyBatch, VerifyOptions
from vsaimage.commands.planning import md_needs
from vsaimage.edits import EditContext, Snapshot, pcihack
from vsaimage.errors import Failure, InitrdError
from vsaimage.guest import appliance as guest
from vsaimage.guest.layout import Layout
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd import repack as initrd
from vsaimage.inputs import unpack
from vsaimage.inputs.source import open_input
from vsaimage.kmod import kernel
from vsaimage.model import Drive
from vsaimage.plan import postconditions
from vsaimage.progress import Progress


@dataclass(frozen=True)
class _InitrdCheck:
    """The --initrd of a verify, read once for every image: its pcihack
    postcondition and the kernel modules it holds."""

    ok: bool | None  # None: not checked (no --initrd, or --skip pci)
    action: pcihack.Action
    module_files: tuple[str, ...] | None  # None: not read

    @classmethod
    def of(cls, opts: VerifyOptions) -> _InitrdCheck:
        action = pcihack.action(opts.pci_hack, opts.skip)
        if opts.initrd is None:
            return cls(None, action, None)
        with open_input(opts.initrd, InitrdError, "an initrd") as src:
            ok = initrd.check(src, action) if action != "keep" else None
            # the drivers check needs the kernel's modules tree (--kernel-version)
            module_files = (initrd.prepare(src, action="keep").module_files
                            if opts.kernel_version is not None else None)
        return cls(ok, action, module_files)


def _verify_ctx(opts: VerifyOptions) -> EditContext:
    return EditContext(pci_hack=opts.pci_hack, kernel_version=opts.kernel_version)


def verify(opts: VerifyOptions, rep: Progress) -> dict[str, Any]:
    check = _InitrdCheck.of(opts)
    layout, snap, facts = examine(opts.image, opts.roles, _verify_ctx(opts), rep, skip=opts.skip)
    return results.single("verify", results.common(), _verify_doc(opts, check, layout, snap, facts))


def _verify_doc(opts: VerifyOptions, check: _InitrdCheck, layout: Layout, snap: Snapshot,
                facts: dict[str, Any]) -> dict[str, Any]:
    rows = results.edit_rows(postconditions(snap, _verify_ctx(opts), opts.skip), snap)
    if check.ok is not None:
        rows.append({"step": "initrd", "title": f"{pcihack.TITLES[check.action]} ({opts.initrd})",
                     "status": "applied" if check.ok else "not applied"})
    if check.module_files is not None and opts.kernel_version is not None:
        rows += _initrd_drivers(check.module_files, kernel.modules_tree(opts.kernel_version), layout)
    if layout.array is not None:
        rows.append(results.md_members_row(layout))
    notice = slot_notice(opts.image, opts.roles, layout, snap)
    return results.verify_image(results.layout_doc(str(opts.image), layout, facts, notice), rows)


@dataclass
class _Checked(batch.Item):
    opts: VerifyOptions | None = None
    doc: dict[str, Any] = field(default_factory=dict)


def verify_batch(opts: VerifyBatch, rep: Progress) -> dict[str, Any]:
    """verify several images in one read-only launch; an image that cannot
    be read fails alone."""
    items: list[_Checked] = []
    for entry in opts.images:
        if isinstance(entry, Refused):
            item = _Checked(entry.text, rep.for_image(entry.text))
            batch.fail(item, Failure.of(entry.error))
        else:
            item = _Checked(str(entry.image), rep.for_image(entry.image.name), opts=entry)
        items.append(item)
    live = [(i, i.opts) for i in items if i.opts is not None]
    if not live:
        raise next(e.error for e in opts.images if isinstance(e, Refused))
    check = _InitrdCheck.of(live[0][1])
    launches_before = guest.launch_count
    with contextlib.ExitStack() as stack:
        readable: list[tuple[_Checked, VerifyOptions, Drive, dict[str, Any]]] = []
        for item, o in live:
            with batch.attempt(item, alone=False):
                drive, facts = stack.enter_context(unpack.readable(o.image, item.rep))
                readable.append((item, o, drive, facts))
        if readable:
            with rep.phase("appliance launch"):
                g = guest.launch([drive for _, _, drive, _ in readable], rep)
            with g:
                for n, (item, o, _, facts) in enumerate(readable):
                    with batch.attempt(item, alone=False), item.rep.phase("read image"):
                        layout, snap = read(g, o.image, o.roles, _verify_ctx(o), item.rep, skip=o.skip,
                                             drive=n)
                        item.doc = {"input": item.text, **_verify_doc(o, check, layout, snap, facts)}
                    g.unmount_all()
    docs = [{**i.doc, **results.record(i.rep)} if i.ok else results.failed_image(i) for i in items]
    return results.batch("verify", items, docs,
                         results.common(launches=guest.launch_count - launches_before, rep=rep))


def _initrd_drivers(module_files: tuple[str, ...], tree: Path, layout: Layout) -> list[results.EditRow]:
    """The initrd holds xen_blkfront and the root filesystem's driver, or the
    kernel has them built in: checked only when the kernel's modules tree
    is on this machine (its modules.builtin says what is built in)."""
    if not (tree / "modules.builtin").is_file():
        return []
    found = initrd_modules.check(module_files, tree, layout.root.partition.fstype, md_needs(layout))
    return [{"step": "initrd-drivers",
             "title": f"xen_blkfront and the root filesystem's driver in the initrd or built in ({tree})",
             "status": "not applied" if found.missing else "applied",
             "details": {"missing": found.missing}}]
