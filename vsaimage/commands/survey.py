"""The read-only commands, `inspect` and `verify`: one read-only appliance
launch on an image, its partition roles, and the status of every edit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vsaimage.commands import batch, bundle, results
from vsaimage.commands.options import InspectOptions, Refused, Roles, VerifyBatch, VerifyOptions
from vsaimage.edits import EditContext, Snapshot, pcihack
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import Failure, InitrdError, VsaError
from vsaimage.guest import appliance as guest
from vsaimage.guest.layout import Layout, layout_lines, mount_layout, partition_facts
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd import repack as initrd
from vsaimage.inputs import unpack
from vsaimage.inputs.source import ImageSource, open_input
from vsaimage.kmod import kernel
from vsaimage.model import Drive
from vsaimage.plan import details_doc, plan_step, postconditions, read_snapshot
from vsaimage.progress import Progress
from vsaimage.vsa import glibc
from vsaimage.vsa.release import VERSION_FILE, module_versions, vsa_version
from vsaimage.xen import identity


def _examine(image: ImageSource, roles: Roles, ctx: EditContext, rep: Progress, *,
             skip: frozenset[str] = frozenset(),
             also: Callable[[guest.Guest, Snapshot], None] | None = None,
             ) -> tuple[Layout, Snapshot, dict[str, Any]]:
    """One read-only launch; `also` reads more while the appliance is up.
    Returns the input's facts (format, virtual size) too."""
    with unpack.readable(image, rep) as (drive, facts):
        with rep.phase("appliance launch"):
            g = guest.launch([drive], rep)
        with g, rep.phase("read image"):
            layout, snap = _read(g, image, roles, ctx, rep, skip=skip, also=also)
    return layout, snap, facts


def _read(g: guest.Guest, image: ImageSource, roles: Roles, ctx: EditContext, rep: Progress, *,
          skip: frozenset[str] = frozenset(),
          also: Callable[[guest.Guest, Snapshot], None] | None = None, drive: int = 0,
          ) -> tuple[Layout, Snapshot]:
    """The layout and snapshot of the appliance's `drive`-th disk."""
    layout = mount_layout(g, str(image), root_part=roles.root_part, boot_part=roles.boot_part, drive=drive)
    for line in layout_lines(layout):
        rep.debug(line)
    snap = read_snapshot(g, ctx, skip=skip, extra=(VERSION_FILE, *glibc.READS, *identity.READS))
    if also is not None:
        also(g, snap)
    return layout, snap


def inspect(opts: InspectOptions, rep: Progress) -> dict[str, Any]:
    if opts.bundle is not None:  # bad output paths fail before the launch
        bundle.check_output(opts.bundle, force=opts.force,
                            inputs=[opts.image.path] if opts.image.path else [])
    ctx = EditContext()
    found: list[bundle.Gathered] = []
    layout, snap, facts = _examine(
        opts.image, opts.roles, ctx, rep,
        also=lambda g, s: found.append(bundle.gather(g, s, files=opts.bundle is not None)))
    doc = results.single("inspect", results.common(), {
        "success": True,
        **results.layout_doc(str(opts.image), layout, facts),
        "vsa_version": vsa_version(snap),
        "glibc": glibc.detect(snap).as_dict(),
        "recorded_macs": [{"mac": f.mac, "source": f.source} for f in identity.recorded_macs(snap)],
        "kernel_versions": module_versions(snap),
        "boot_kernels": list(layout.kernels),
        "init_system": found[0].init_system,
        "md_arrays": bundle.md_arrays(layout.partitions),
        "lvm": bundle.lvm_members(layout.partitions),
        "edits": results.edit_rows(postconditions(snap, ctx), snap),
        "findings": findings(snap, replace(ctx, partitions=partition_facts(layout))),
    })
    if opts.bundle is not None:
        with rep.phase("write bundle"):
            name = opts.image.path.name if opts.image.path else str(opts.image)
            bundle.write(opts.bundle, bundle.tarball(bundle.manifest(doc, found[0], name), found[0].files))
        doc["bundle"] = str(opts.bundle)
    return doc


def findings(snap: Snapshot, ctx: EditContext) -> dict[str, object]:
    """What each edit would do to this image (its plan's details: the fstab
    lines to rewrite, what tty1 runs, ...) or why it would stop, so that a
    user sees it before converting. The modules step needs a kernel: left out."""
    found: dict[str, object] = {}
    for edit in ALL_EDITS:
        if edit.name == "modules":
            continue
        try:
            found[edit.name] = details_doc(plan_step(edit, snap, ctx))
        except VsaError as e:
            found[edit.name] = {"error": e.message, "hint": e.hint}
    return found


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
    layout, snap, facts = _examine(opts.image, opts.roles, _verify_ctx(opts), rep, skip=opts.skip)
    return results.single("verify", results.common(), _verify_doc(opts, check, layout, snap, facts))


def _verify_doc(opts: VerifyOptions, check: _InitrdCheck, layout: Layout, snap: Snapshot,
                facts: dict[str, Any]) -> dict[str, Any]:
    rows = results.edit_rows(postconditions(snap, _verify_ctx(opts), opts.skip), snap)
    if check.ok is not None:
        rows.append({"step": "initrd", "title": f"{pcihack.TITLES[check.action]} ({opts.initrd})",
                     "status": "applied" if check.ok else "not applied"})
    if check.module_files is not None and opts.kernel_version is not None:
        rows += _initrd_drivers(check.module_files, kernel.modules_tree(opts.kernel_version), layout)
    return results.verify_image(results.layout_doc(str(opts.image), layout, facts), rows)


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
                        layout, snap = _read(g, o.image, o.roles, _verify_ctx(o), item.rep, skip=o.skip,
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
    found = initrd_modules.check(module_files, tree, layout.root.partition.fstype)
    return [{"step": "initrd-drivers",
             "title": f"xen_blkfront and the root filesystem's driver in the initrd or built in ({tree})",
             "status": "not applied" if found.missing else "applied",
             "details": {"missing": found.missing}}]
