"""The read-only commands, `inspect` and `verify`: one read-only appliance
launch on an image, its partition roles, and the status of every edit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from vsaimage import __version__, bundle, glibc, guest, identity, initrd, initrd_modules, unpack
from vsaimage.edits import EditContext, Snapshot, pcihack
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import InitrdError, VsaError
from vsaimage.inspect import (
    VERSION_FILE,
    Layout,
    find_layout,
    module_versions,
    partition_facts,
    read_snapshot,
    vsa_version,
)
from vsaimage.options import InspectOptions, Roles, VerifyOptions
from vsaimage.plan import TITLES, plan_step, postconditions
from vsaimage.report import Reporter
from vsaimage.source import ImageSource, read_input


def _examine(image: ImageSource, roles: Roles, ctx: EditContext, rep: Reporter, *,
             skip: frozenset[str] = frozenset(),
             also: Callable[[guest.Guest, Snapshot], None] | None = None,
             ) -> tuple[Layout, Snapshot, dict[str, Any]]:
    """One read-only launch; `also` reads more while the appliance is up.
    Returns the input's facts (format, virtual size) too."""
    with unpack.readable(image, rep) as (drive, facts):
        with rep.phase("appliance launch"):
            g = guest.launch([drive], warn=rep.warn)
        with g, rep.phase("read image"):
            layout = find_layout(g, str(image), root_part=roles.root_part, boot_part=roles.boot_part)
            snap = read_snapshot(g, ctx, skip=skip, extra=(VERSION_FILE, *glibc.READS, *identity.READS))
            if also is not None:
                also(g, snap)
    return layout, snap, facts


def _layout_doc(image: ImageSource, layout: Layout, facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": str(image),
        "input": facts,
        "partitions": [p.as_dict() for p in layout.partitions],
        "root": layout.root.as_dict(),
        "boot": layout.boot.as_dict() if layout.boot else None,
    }


def _status_rows(status: dict[str, bool]) -> list[dict[str, Any]]:
    return [{"step": name, "title": TITLES[name], "status": "applied" if ok else "not applied"}
            for name, ok in status.items()]


def inspect(opts: InspectOptions, rep: Reporter) -> dict[str, Any]:
    if opts.bundle is not None:  # bad output paths fail before the launch
        bundle.check_output(opts.bundle, force=opts.force,
                            inputs=[opts.image.path] if opts.image.path else [])
    ctx = EditContext()
    found: list[bundle.Gathered] = []
    layout, snap, facts = _examine(
        opts.image, opts.roles, ctx, rep,
        also=lambda g, s: found.append(bundle.gather(g, s, files=opts.bundle is not None)))
    doc = {
        "success": True,
        "command": "inspect",
        "tool_version": __version__,
        **_layout_doc(opts.image, layout, facts),
        "vsa_version": vsa_version(snap),
        "glibc": glibc.detect(snap).as_dict(),
        "recorded_macs": [{"mac": f.mac, "source": f.source} for f in identity.recorded_macs(snap)],
        "kernel_versions": module_versions(snap),
        "boot_kernels": list(layout.kernels),
        "init_system": found[0].init_system,
        "md_arrays": bundle.md_arrays(layout.partitions),
        "lvm": bundle.lvm_members(layout.partitions),
        "edits": _status_rows(postconditions(snap, ctx)),
        "findings": findings(snap, replace(ctx, partitions=partition_facts(layout))),
    }
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
            found[edit.name] = dict(plan_step(edit, snap, ctx).details)
        except VsaError as e:
            found[edit.name] = {"error": e.message, "hint": e.hint}
    return found


def verify(opts: VerifyOptions, rep: Reporter) -> dict[str, Any]:
    ctx = EditContext(pci_hack=opts.pci_hack, kernel_version=opts.kernel_version)
    initrd_ok: bool | None = None
    action = pcihack.action(opts.pci_hack, opts.skip)
    data = read_input(opts.initrd, InitrdError, "an initrd") if opts.initrd is not None else None
    if data is not None and action != "keep":
        initrd_ok = initrd.check(data, action)
    layout, snap, facts = _examine(opts.image, opts.roles, ctx, rep, skip=opts.skip)
    rows = _status_rows(postconditions(snap, ctx, opts.skip))
    if initrd_ok is not None:
        rows.append({"step": "initrd", "title": f"{pcihack.TITLES[action]} ({opts.initrd})",
                     "status": "applied" if initrd_ok else "not applied"})
    if data is not None and opts.kernel_version is not None:
        rows += _initrd_drivers(data, Path("/lib/modules") / opts.kernel_version, layout)
    missing = [r["step"] for r in rows if r["status"] != "applied"]
    return {
        "success": not missing,
        "command": "verify",
        "tool_version": __version__,
        **_layout_doc(opts.image, layout, facts),
        "edits": rows,
        "missing": missing,
    }


def _initrd_drivers(data: bytes, tree: Path, layout: Layout) -> list[dict[str, Any]]:
    """The initrd holds xen_blkfront and the root filesystem's driver, or the
    kernel has them built in: checked only when the kernel's modules tree
    is on this machine (its modules.builtin says what is built in)."""
    if not (tree / "modules.builtin").is_file():
        return []
    found = initrd_modules.check(initrd.prepare(data, action="keep").module_files, tree,
                                 layout.root.partition.fstype)
    return [{"step": "initrd-drivers",
             "title": f"xen_blkfront and the root filesystem's driver in the initrd or built in ({tree})",
             "status": "not applied" if found.missing else "applied",
             "details": {"missing": found.missing}}]
