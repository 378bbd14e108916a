"""Edit `modules`: the kernel modules of the Xen kernel in the guest.

The guest boots the dom0's kernel, so it needs that kernel's modules tree in
/lib/modules/<version>; the tree itself is copied by the convert command (the
change here only names the version). modules.dep is what modprobe needs, and depmod
writes it last, so its presence is the mark of a complete tree.
"""

from __future__ import annotations

import posixpath

from vsaimage.edits import EditContext, InstallModules, Snapshot, StepPlan, decide
from vsaimage.errors import EditError
from vsaimage.kmod.selection import module_name

ROOT = "/lib/modules"


def guest_dir(version: str) -> str:
    """Where the guest keeps the modules of kernel `version`."""
    return f"{ROOT}/{version}"


def dep_path(version: str) -> str:
    return f"{guest_dir(version)}/modules.dep"


def _installed(snap: Snapshot, version: str) -> bool:
    path = dep_path(version)
    data = snap.get(path).data
    if data is not None:
        return len(data) > 0
    return path in snap.paths


def xen_versions(paths: frozenset[str]) -> list[str]:
    """Versions under /lib/modules whose tree has a modules.dep and a
    xen-blkfront module file. Judged from the listing alone, so `inspect`
    needs no version; a kernel with xen-blkfront built in is not recognised
    (its modules.builtin is not read)."""
    with_dep = {
        posixpath.basename(posixpath.dirname(p))
        for p in paths
        if posixpath.dirname(posixpath.dirname(p)) == ROOT and posixpath.basename(p) == "modules.dep"
    }
    found = set()
    for p in paths:
        if p.startswith(ROOT + "/") and module_name(p) == "xen_blkfront":
            version = p[len(ROOT) + 1 :].split("/", 1)[0]
            if version in with_dep:
                found.add(version)
    return sorted(found)


class Modules:
    name = "modules"
    title = "Kernel modules of the Xen kernel (/lib/modules)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return () if ctx.kernel_version is None else (dep_path(ctx.kernel_version),)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        # With the version known, its modules.dep (read) says all; the tree,
        # thousands of files once copied, is listed only to find versions.
        return (ROOT,) if ctx.kernel_version is None else ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        version = ctx.kernel_version
        if version is None:
            raise EditError("the modules step needs the kernel version (--kernel or --kernel-version)")
        changes = [] if _installed(snap, version) else [InstallModules(version)]
        details = {"version": version, "dir": guest_dir(version)}
        return decide(self.name, list(changes), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        if ctx.kernel_version is not None:
            return _installed(snap, ctx.kernel_version)
        return bool(xen_versions(snap.paths))
