"""`vsaimage inspect IMG`: one read-only launch, the image's partitions and
roles, its VSA version, glibc, recorded MACs and kernels, the status of each
edit and what each would do (findings), and with --bundle the tarball a
user sends back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vsaimage.commands import bundle, results
from vsaimage.commands.examine import examine, slot_notice
from vsaimage.commands.options import InspectOptions
from vsaimage.commands.planning import arguments_doc, kernel_args
from vsaimage.edits import EditContext, Snapshot
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import VsaError
from vsaimage.guest.layout import partition_facts
from vsaimage.plan import details_doc, plan_step, postconditions
from vsaimage.progress import Progress
from vsaimage.vsa import glibc, initsys, slots, userland
from vsaimage.vsa.release import module_versions, vsa_version
from vsaimage.xen import identity


def inspect(opts: InspectOptions, rep: Progress) -> dict[str, Any]:
    if opts.bundle is not None:  # bad output paths fail before the launch
        bundle.check_output(opts.bundle, force=opts.force,
                            inputs=[opts.image.path] if opts.image.path else [])
    ctx = EditContext()
    found: list[bundle.Gathered] = []
    layout, snap, facts = examine(
        opts.image, opts.roles, ctx, rep,
        also=(lambda g, s: found.append(bundle.gather(g, s))) if opts.bundle is not None else None)
    land = userland.detect(snap)
    doc = results.single("inspect", results.common(), {
        "success": True,
        **results.layout_doc(str(opts.image), layout, facts,
                             slot_notice(opts.image, opts.roles, layout, snap)),
        "vsa_version": vsa_version(snap),
        "glibc": glibc.detect(snap, userland_32bit=land.is_32bit).as_dict(),
        "userland": land.as_dict(),
        "recorded_macs": [{"mac": f.mac, "source": f.source} for f in identity.recorded_macs(snap)],
        "kernel_args": _kernel_args(snap),
        "data_disks": slots.find(snap).as_dict(),
        "kernel_versions": module_versions(snap),
        "boot_kernels": list(layout.kernels),
        "init_system": initsys.detect(snap).as_dict(),
        "md_arrays": bundle.md_arrays(layout.partitions),
        "lvm": bundle.lvm_members(layout.partitions),
        "edits": results.edit_rows(postconditions(snap, ctx), snap) + (
            [results.md_members_row(layout)] if layout.array is not None else []),
        "findings": findings(snap, replace(ctx, partitions=partition_facts(layout))),
    })
    if opts.bundle is not None:
        with rep.phase("write bundle"):
            name = opts.image.path.name if opts.image.path else str(opts.image)
            bundle.write(opts.bundle, bundle.tarball(bundle.manifest(doc, found[0], name), found[0].files))
        doc["bundle"] = str(opts.bundle)
    return doc


def _kernel_args(snap: Snapshot) -> dict[str, object]:
    """The VSA's kernel arguments and those vsaimage adds, as a convert
    without --extra would put them on the guest's command line."""
    vsyscall = glibc.detect(snap).vsyscall_emulate
    return arguments_doc(kernel_args(snap, vsyscall), vsyscall)


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
