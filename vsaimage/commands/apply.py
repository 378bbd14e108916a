"""The guest half of a convert, on the mounted output in the launched
appliance: the plan's changes written (files, the boot files, the modules
payload), then every postcondition read back and checked.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

from vsaimage.commands.options import ConvertOptions
from vsaimage.commands.planning import Planned
from vsaimage.edits import InstallModules, MakeLink, UploadFile, WriteFile
from vsaimage.edits.modules import guest_dir
from vsaimage.errors import ImageError, VerifyError
from vsaimage.guest.appliance import Guest
from vsaimage.guest.layout import Layout
from vsaimage.initrd.repack import RepackResult
from vsaimage.kmod.payload import ModulePayload
from vsaimage.outputs.staging import ensure_space
from vsaimage.plan import postconditions, read_snapshot
from vsaimage.progress import Progress
from vsaimage.xen import bootmenu

Repack = concurrent.futures.Future[tuple[Path, RepackResult]]


def edit(g: Guest, opts: ConvertOptions, planned: Planned,
         payload: concurrent.futures.Future[ModulePayload] | None, repack: Repack,
         rep: Progress, label: Path, *, reserve: int) -> list[str]:
    """Apply the plan's guest changes on the mounted output; returns the
    guest files an upload found already there. `reserve`: bytes the output
    directory must also keep free for files written after."""
    plan = planned.plan
    install = next((c for c in plan.changes if isinstance(c, InstallModules)), None)
    tarball = payload.result().tarball.stat().st_size if install and payload else 0
    written = sum(len(c.data) for c in plan.changes if isinstance(c, WriteFile))
    uploads = [c for c in plan.changes if isinstance(c, UploadFile)]
    sources: dict[str, Path] = {}
    if uploads:
        # the initrd the guest's menu boots is the repacked one: wait for it
        # (a second or two more than a direct boot) so that the boot
        # partition's room is known before anything is written
        with rep.phase("initrd repack (wait)"):
            repacked = repack.result()[0]
        sources = {c.path: opts.kernel if c.source == "kernel" else repacked for c in uploads}
        written += sum(os.path.getsize(source) for source in sources.values())
        _check_boot_room(g, sources, planned.layout)
    # the filesystem inside the image needs room for metadata and its journal
    ensure_space(label.parent, tarball + tarball // 8 + written + reserve + 32 * 2**20, label=label)
    if repack.done():  # a failed repack stops the convert before anything is written
        repack.result()
    with rep.phase("edits"):
        g.make_writable([c.path for c in plan.changes if isinstance(c, WriteFile | UploadFile | MakeLink)])
        for c in plan.changes:
            if isinstance(c, WriteFile):
                g.write(c.path, c.data, c.mode)
            elif isinstance(c, MakeLink):
                g.symlink(c.path, c.target)
    unchanged = _upload(g, sources, rep) if sources else []
    if install is not None:
        assert payload is not None, "modules step planned although skipped"
        p = payload.result()
        size = p.tarball.stat().st_size
        with rep.phase("modules transfer", total=size, nbytes=True) as ph:
            g.tar_in(p.tarball, guest_dir(install.version),
                     progress=lambda sent: ph.update(sent, size))
            ph.detail = f"({p.files} files, {p.bytes / 2**20:.0f} MiB)"
    return unchanged


def verify(g: Guest, opts: ConvertOptions, planned: Planned, rep: Progress) -> None:
    """Every postcondition holds on the output, read back from the guest."""
    with rep.phase("verify"):
        g.sync()
        status = postconditions(read_snapshot(g, planned.ctx, skip=opts.skip), planned.ctx, opts.skip)
        failed = [name for name, ok in status.items() if not ok]
        if failed:
            raise VerifyError(f"after the edits, these postconditions do not hold: {', '.join(failed)}")


def _upload(g: Guest, sources: dict[str, Path], rep: Progress) -> list[str]:
    """Copy each host file of `sources` to its guest path; returns the guest
    paths that already held those bytes (not sent again)."""
    total = sum(os.path.getsize(source) for source in sources.values())
    unchanged = []
    with rep.phase("boot files", total=total, nbytes=True) as ph:
        sent = 0
        for path, source in sources.items():
            if not g.upload(source, path):
                unchanged.append(path)
            sent += os.path.getsize(source)
            ph.update(sent, total)
        ph.detail = f"({len(sources)} files, {total / 2**20:.0f} MiB" + (
            f", {len(unchanged)} already there)" if unchanged else ")")
    return unchanged


def _check_boot_room(g: Guest, sources: dict[str, Path], layout: Layout) -> None:
    """The kernel and initrd fit on the filesystem holding /boot (the files
    they replace counted as free)."""
    need = sum(os.path.getsize(s) for s in sources.values())
    free = g.free_bytes(bootmenu.OWN_DIR) + sum(g.file_size(p) for p in sources)
    # a little room for the menu, the directory and the filesystem's blocks
    if need + 2**20 > free:
        holder = layout.boot or layout.root
        raise ImageError(
            f"partition {holder.partition.number} (/boot) has {free / 2**20:.1f} MiB free for the kernel "
            f"and initrd, which need {need / 2**20:.1f} MiB",
            hint="free room in the VSA's /boot, recompress the initrd (--initrd-compression xz), "
                 "or use --boot direct")
